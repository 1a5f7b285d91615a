"""Trading hours: is a market open at a given moment, and if not, why not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from tradebase.calendars.models import MarketHoliday, TradingHoursTemplate, TradingSession
from tradebase.core.models import load
from tradebase.core.prepared import Prepared
from tradebase.core.time import ensure_utc

# Exchanges that keep another exchange's hours. An exchange with no template and no alias
# (the paper exchange, a custom venue) has no calendar: it is always open.
ALIASES = {
    "NASDAQ": "NYSE",
    "AMEX": "NYSE",
    "ARCA": "NYSE",
    "BSE": "NSE",
    "NFO": "NSE",
    "BFO": "NSE",
    "BINANCE": "CRYPTO",
    "COINBASE": "CRYPTO",
    "KRAKEN": "CRYPTO",
    "BYBIT": "CRYPTO",
    "OKX": "CRYPTO",
    "BITSTAMP": "CRYPTO",
}


@dataclass(frozen=True)
class MarketState:
    open: bool
    reason: str
    template: str | None = None


def template_for(session: Session, exchange: str) -> TradingHoursTemplate | None:
    code = exchange.upper()
    code = ALIASES.get(code, code)
    rows = _TEMPLATE.rows(session, {"code": code})
    return load(session, TradingHoursTemplate, rows[0]._asdict()) if rows else None


# Prepared once: every market order asks (core/prepared.py).
_templates = cast(Table, TradingHoursTemplate.__table__)
_TEMPLATE = Prepared(
    select(_templates)
    .where(_templates.c.exchange == bindparam("code"), _templates.c.is_active.is_(True))
    .order_by(_templates.c.id)
    .limit(1)
)


def is_open(session: Session, exchange: str, at: datetime) -> MarketState:
    """Whether *exchange* trades (regular session) at *at*, with the reason when not."""
    template = template_for(session, exchange)
    if template is None:
        return MarketState(True, f"{exchange} has no trading calendar: always open")
    local = ensure_utc(at).astimezone(ZoneInfo(template.timezone))
    name = template.name
    holiday = session.scalars(
        select(MarketHoliday).where(
            MarketHoliday.template_id == template.id, MarketHoliday.date == local.date()
        )
    ).first()
    if holiday is not None and holiday.holiday_type != "special":
        return MarketState(
            False, f"{name} is closed on {local.date()}: {holiday.description}", name
        )
    sessions = session.scalars(
        select(TradingSession).where(
            TradingSession.template_id == template.id, TradingSession.day_of_week == local.weekday()
        )
    ).all()
    clock = local.time().replace(tzinfo=None)
    for trading in sessions:
        opens, closes = trading.market_open, trading.market_close
        if trading.is_trading_day and opens and closes and opens <= clock <= closes:
            return MarketState(True, f"{name} is open", name)
    when = local.strftime("%A %Y-%m-%d %H:%M %Z")
    if not any(s.is_trading_day for s in sessions):
        return MarketState(
            False, f"{name} does not trade on {local.strftime('%A')}s ({when})", name
        )
    return MarketState(False, f"{name} is outside its trading hours at {when}", name)
