"""HTTP routes: mirroring settings and mirrored orders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from tradebase.accounts.schemas import MAX_ID
from tradebase.brokers.service import send_pending
from tradebase.core.auth import Principal
from tradebase.core.db import Database, unit_of_work
from tradebase.core.http import SessionDep, engines_of, require
from tradebase.mirroring import schemas
from tradebase.mirroring.models import MirrorOrder
from tradebase.mirroring.service import mirror as mirror_service
from tradebase.mirroring.service import submit
from tradebase.orders.models import Order, OrderStatus

router = APIRouter(prefix="/api/v1", tags=["mirroring"])
ReadOrders = Annotated[Principal, Depends(require("read:orders"))]
WriteOrders = Annotated[Principal, Depends(require("write:orders"))]
ReadAccount = Annotated[Principal, Depends(require("read:portfolio"))]
WriteAccount = Annotated[Principal, Depends(require("write:portfolio"))]
MirrorId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _read(session: Session, parent: MirrorOrder) -> schemas.MirrorRead:
    body = schemas.MirrorRead.model_validate(parent)
    body.legs = [
        schemas.LegRead.model_validate(leg) for leg in mirror_service.legs(session, parent.id)
    ]
    return body


@router.get("/mirroring", response_model=schemas.MirroringRead)
def read_mirroring(principal: ReadAccount, session: SessionDep) -> schemas.MirroringRead:
    return schemas.MirroringRead.model_validate(mirror_service.settings(session, principal))


@router.put("/mirroring", response_model=schemas.MirroringRead)
def update_mirroring(
    body: schemas.MirroringUpdate, principal: WriteAccount, session: SessionDep
) -> schemas.MirroringRead:
    changed = mirror_service.update_settings(
        session,
        principal,
        rule=body.rule,
        weights=body.weights,
        step=body.step,
        accounts=[a.model_dump() for a in body.accounts],
    )
    return schemas.MirroringRead.model_validate(changed)


@router.post(
    "/mirror-orders",
    response_model=schemas.MirrorRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The client_order_id was used before: that order."}},
)
async def create_mirror_order(
    body: schemas.MirrorCreate, principal: WriteOrders, request: Request
) -> JSONResponse:
    """Place one order on every active account (primary first), sized by the allocation
    rule; each leg is its own order, and a refused leg leaves the others placed."""
    engines = engines_of(request)
    factory = engines.session_factory(Database.main)
    mirror_id, new = await run_in_threadpool(submit, factory, principal, **body.model_dump())
    with unit_of_work(factory=factory, write=False) as session:
        answer = _read(session, mirror_service.get(session, principal, mirror_id))
        # Legs on live broker accounts are stored pending: sent once the answer is out.
        pending = [
            order.id
            for leg in answer.legs
            if leg.order_id is not None
            and (order := session.get(Order, leg.order_id)) is not None
            and order.status == OrderStatus.pending
        ]
    task = BackgroundTask(send_pending, engines, pending) if pending else None
    return JSONResponse(
        answer.model_dump(mode="json"), status_code=201 if new else 200, background=task
    )


@router.get("/mirror-orders", response_model=list[schemas.MirrorRead])
def list_mirror_orders(
    principal: ReadOrders,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[schemas.MirrorRead]:
    return [_read(session, m) for m in mirror_service.list(session, principal, limit)]


@router.get("/mirror-orders/{mirror_id}", response_model=schemas.MirrorRead)
def read_mirror_order(
    mirror_id: MirrorId, principal: ReadOrders, session: SessionDep
) -> schemas.MirrorRead:
    return _read(session, mirror_service.get(session, principal, mirror_id))
