"""HTTP routes: trading calendars and whether a market is open."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AwareDatetime

from tradebase.calendars import schemas
from tradebase.calendars import service as calendar_service
from tradebase.core.auth import Principal
from tradebase.core.http import SessionDep, require
from tradebase.core.time import utc_now

router = APIRouter(prefix="/api/v1/calendars", tags=["calendars"])
ReadMarket = Annotated[Principal, Depends(require("read:market"))]


@router.get("", response_model=list[schemas.CalendarRead])
def list_calendars(principal: ReadMarket, session: SessionDep) -> list[schemas.CalendarRead]:
    """Every trading hours template, with its weekly sessions and its holidays."""
    return [schemas.CalendarRead.model_validate(c) for c in calendar_service.calendars(session)]


@router.get("/{exchange}/status", response_model=schemas.MarketStatusRead)
def market_status(
    exchange: Annotated[str, Path(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.:-]+$")],
    principal: ReadMarket,
    session: SessionDep,
    at: Annotated[AwareDatetime | None, Query(description="When (default: now).")] = None,
) -> schemas.MarketStatusRead:
    """Whether *exchange* trades at ``at``, the reason, and when that trading day ends (an
    exchange without a calendar is always open)."""
    state = calendar_service.status(session, exchange, at or utc_now())
    return schemas.MarketStatusRead.model_validate(state)
