"""Trading hours templates, weekly sessions and market holidays (seed 003)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import ck, ck_in
from tradebase.core.models import Base, Timestamps


class HolidayType(StrEnum):
    full_day = "full_day"
    half_day = "half_day"
    muhurat = "muhurat"
    special = "special"


class TradingHoursTemplate(Timestamps, Base):
    __tablename__ = "trading_hours_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    exchange: Mapped[str | None] = mapped_column(String(50))
    timezone: Mapped[str] = mapped_column(
        String(50), default="Asia/Kolkata", server_default="Asia/Kolkata"
    )
    description: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(default=True, server_default="1")

    __table_args__ = (
        Index("idx_trading_hours_templates_name", "name", unique=True),
        Index("idx_trading_hours_templates_exchange", "exchange"),
    )


class TradingSession(Base):
    __tablename__ = "trading_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(
        ForeignKey("trading_hours_templates.id", ondelete="CASCADE")
    )
    day_of_week: Mapped[int]  # 0 = Monday … 6 = Sunday
    pre_market_start: Mapped[dt.time | None]
    pre_market_end: Mapped[dt.time | None]
    market_open: Mapped[dt.time | None]
    market_close: Mapped[dt.time | None]
    post_market_start: Mapped[dt.time | None]
    post_market_end: Mapped[dt.time | None]
    is_trading_day: Mapped[bool] = mapped_column(default=True, server_default="1")

    __table_args__ = (
        Index("idx_trading_sessions_template_id", "template_id"),
        Index("idx_trading_sessions_day_of_week", "day_of_week"),
        ck("day_of_week_range", "day_of_week BETWEEN 0 AND 6"),
        ck(
            "open_before_close",
            "market_open IS NULL OR market_close IS NULL OR market_open < market_close",
        ),
    )


class MarketHoliday(Base):
    __tablename__ = "market_holidays"

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(
        ForeignKey("trading_hours_templates.id", ondelete="CASCADE")
    )
    date: Mapped[dt.date]
    description: Mapped[str | None] = mapped_column(String(200))
    holiday_type: Mapped[str] = mapped_column(
        String(20), default=HolidayType.full_day, server_default="full_day"
    )
    # A special or muhurat session's own hours, in the template's time zone.
    session_open: Mapped[dt.time | None]
    session_close: Mapped[dt.time | None]

    __table_args__ = (
        UniqueConstraint("template_id", "date"),
        Index("idx_market_holidays_template_id", "template_id"),
        Index("idx_market_holidays_date", "date"),
        ck_in("holiday_type", "holiday_type", list(HolidayType)),
    )
