"""HTTP routes: place, list, read and cancel orders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import AwareDatetime

from tradebase.accounts.schemas import MAX_ID
from tradebase.brokers.service import broker as broker_service
from tradebase.core.auth import Principal
from tradebase.core.db import Database, unit_of_work
from tradebase.core.http import SessionDep, engines_of, require
from tradebase.orders import schemas
from tradebase.orders.models import OrderSide, OrderStatus
from tradebase.orders.service import order as order_service

router = APIRouter(prefix="/api/v1/orders", tags=["orders"])
ReadOrders = Annotated[Principal, Depends(require("read:orders"))]
WriteOrders = Annotated[Principal, Depends(require("write:orders"))]
OrderId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.OrderRead)
def place_order(
    body: schemas.OrderCreate, principal: WriteOrders, request: Request
) -> schemas.OrderRead:
    """Place an order; a market order on a paper account fills at once. A refused order
    answers 422 with the reason and is kept as rejected. On a live broker account the
    order is stored pending, then sent (outside the transaction) and the answer is the
    order as the broker left it, or, when the broker is unreachable, the order it failed
    over to on the next healthy account."""
    engines = engines_of(request)
    with unit_of_work(factory=engines.session_factory(Database.main)) as session:
        order = order_service.place(session, principal, **body.model_dump())
        placed = schemas.OrderRead.model_validate(order)
    if placed.status != OrderStatus.pending:
        return placed
    carried = broker_service.dispatch(engines, placed.id)
    with unit_of_work(factory=engines.session_factory(Database.main), write=False) as session:
        return schemas.OrderRead.model_validate(order_service.get(session, principal, carried))


@router.get("", response_model=list[schemas.OrderRead])
def list_orders(
    principal: ReadOrders,
    session: SessionDep,
    portfolio_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    symbol: Annotated[str | None, Query(max_length=50)] = None,
    status: OrderStatus | None = None,
    side: OrderSide | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    after_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Cursor: the last id of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[schemas.OrderRead]:
    """Orders, newest first; pass the last id you got as ``after_id`` for the next page."""
    orders = order_service.list(
        session,
        principal,
        portfolio_id=portfolio_id,
        symbol=symbol,
        status=status,
        side=side,
        since=since,
        until=until,
        after_id=after_id,
        limit=limit,
    )
    return [schemas.OrderRead.model_validate(o) for o in orders]


@router.get("/{order_id}", response_model=schemas.OrderRead)
def read_order(order_id: OrderId, principal: ReadOrders, session: SessionDep) -> schemas.OrderRead:
    return schemas.OrderRead.model_validate(order_service.get(session, principal, order_id))


@router.get("/{order_id}/events", response_model=list[schemas.OrderEventRead])
def order_events(
    order_id: OrderId, principal: ReadOrders, session: SessionDep
) -> list[schemas.OrderEventRead]:
    return [
        schemas.OrderEventRead.model_validate(e)
        for e in order_service.events(session, principal, order_id)
    ]


@router.patch("/{order_id}", response_model=schemas.OrderRead)
def amend_order(
    order_id: OrderId, body: schemas.OrderAmend, principal: WriteOrders, session: SessionDep
) -> schemas.OrderRead:
    """Change the price, stop or quantity of a resting order."""
    order = order_service.amend(session, principal, order_id, **body.model_dump())
    return schemas.OrderRead.model_validate(order)


@router.delete("/{order_id}", response_model=schemas.OrderRead)
def cancel_order(order_id: OrderId, principal: WriteOrders, request: Request) -> schemas.OrderRead:
    """Cancel an order; on a live account the broker cancels it first."""
    order = broker_service.cancel(engines_of(request), principal, order_id)
    return schemas.OrderRead.model_validate(order)
