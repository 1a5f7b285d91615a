"""Response bodies of trading calendars."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class SessionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    day_of_week: int = Field(description="0 = Monday ... 6 = Sunday.")
    is_trading_day: bool
    pre_market_start: dt.time | None
    pre_market_end: dt.time | None
    market_open: dt.time | None
    market_close: dt.time | None
    post_market_start: dt.time | None
    post_market_end: dt.time | None


class HolidayRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    date: dt.date
    description: str | None
    holiday_type: str
    session_open: dt.time | None
    session_close: dt.time | None


class CalendarRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    exchange: str | None
    timezone: str = Field(description="Session times are local times in this zone.")
    description: str | None
    is_active: bool
    aliases: list[str] = Field(description="Exchanges that keep this calendar's hours.")
    sessions: list[SessionRead]
    holidays: list[HolidayRead]


class MarketStatusRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    exchange: str
    calendar: str | None = Field(description="The template used; None: no calendar.")
    at: dt.datetime
    is_open: bool
    reason: str
    day_ends_at: dt.datetime | None = Field(
        description="When the trading day of `at` ends: CNC positions settle after it."
    )
