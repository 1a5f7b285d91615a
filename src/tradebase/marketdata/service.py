"""OHLCV bars: stored once each, and on the paper broker they drive resting orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradebase.accounts.service import require_writer
from tradebase.core.auth import Principal
from tradebase.marketdata.models import PriceData
from tradebase.marketdata.schemas import BarIn
from tradebase.orders.matching import Bar
from tradebase.orders.service import order as order_service
from tradebase.portfolios.valuation import mark


@dataclass(frozen=True)
class Ingested:
    stored: int
    duplicates: int
    fills: int


class PriceService:
    def ingest(
        self,
        session: Session,
        principal: Principal,
        *,
        symbol: str,
        exchange: str,
        timeframe: str,
        bars: Sequence[BarIn],
    ) -> Ingested:
        """Store new bars (a bar already stored is skipped) and, in time order, let each
        new one fill the resting orders of its symbol."""
        require_writer(principal)
        stamps = [bar.timestamp for bar in bars]
        known = set(
            session.scalars(
                select(PriceData.timestamp).where(
                    PriceData.symbol == symbol,
                    PriceData.exchange == exchange,
                    PriceData.timeframe == timeframe,
                    PriceData.timestamp.in_(stamps),
                )
            )
        )
        fresh = sorted(
            {bar.timestamp: bar for bar in bars if bar.timestamp not in known}.values(),
            key=lambda b: b.timestamp,
        )
        session.add_all(
            [
                PriceData(
                    symbol=symbol,
                    exchange=exchange,
                    timeframe=timeframe,
                    timestamp=bar.timestamp,
                    open=bar.open,
                    high=bar.high,
                    low=bar.low,
                    close=bar.close,
                    volume=bar.volume,
                    vwap=bar.vwap,
                    num_trades=bar.num_trades,
                )
                for bar in fresh
            ]
        )
        session.flush()
        fills = 0
        for bar in fresh:
            fills += order_service.match_bar(
                session,
                symbol=symbol,
                exchange=exchange,
                bar=Bar(bar.open, bar.high, bar.low, bar.close, bar.volume),
                at=bar.timestamp,
            )
        if fresh:  # open positions follow the latest price
            mark(session, symbol=symbol, exchange=exchange, price=fresh[-1].close)
        return Ingested(len(fresh), len(bars) - len(fresh), fills)


price = PriceService()
