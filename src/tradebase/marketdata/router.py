"""HTTP routes: price bars in (they drive the paper broker)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from tradebase.core.auth import Principal
from tradebase.core.http import SessionDep, require
from tradebase.marketdata.schemas import BarsIn, BarsResult
from tradebase.marketdata.service import price as price_service

router = APIRouter(prefix="/api/v1/prices", tags=["prices"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BarsResult)
def post_bars(
    body: BarsIn,
    principal: Annotated[Principal, Depends(require("write:market"))],
    session: SessionDep,
) -> BarsResult:
    """Store OHLCV bars; each new bar fills the paper orders it reaches (admin or feeder key)."""
    result = price_service.ingest(
        session,
        principal,
        symbol=body.symbol,
        exchange=body.exchange,
        timeframe=body.timeframe,
        bars=body.bars,
    )
    return BarsResult(stored=result.stored, duplicates=result.duplicates, fills=result.fills)
