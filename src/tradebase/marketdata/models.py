"""OHLCV price history (seed 004 price_data), keyed by (symbol, exchange, timeframe, timestamp)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck
from tradebase.core.models import Base


class PriceData(Base):
    __tablename__ = "price_data"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str] = mapped_column(String(50))
    timeframe: Mapped[str] = mapped_column(String(10), default="1m", server_default="1m")
    timestamp: Mapped[datetime]  # the bar's open time
    open: Mapped[Decimal]
    high: Mapped[Decimal]
    low: Mapped[Decimal]
    close: Mapped[Decimal]
    volume: Mapped[Decimal]
    vwap: Mapped[Decimal | None]
    num_trades: Mapped[int | None]

    __table_args__ = (
        UniqueConstraint("symbol", "exchange", "timeframe", "timestamp", name="uq_price_data_bar"),
        Index("idx_price_symbol_time", "symbol", "timestamp"),
        Index("idx_price_exchange_time", "exchange", "timestamp"),
        Index("idx_price_data_timestamp", "timestamp"),
        ck("high_low", "{num:high} >= {num:low}"),
        ck("open_in_range", "{num:open} >= {num:low} AND {num:open} <= {num:high}"),
        ck("close_in_range", "{num:close} >= {num:low} AND {num:close} <= {num:high}"),
        ck("volume_nonnegative", "{num:volume} >= 0"),
        ck("num_trades_nonnegative", "num_trades >= 0"),
    )
