"""Trading hours: is a market open at a given moment, and if not, why not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradebase.calendars.models import MarketHoliday, TradingHoursTemplate, TradingSession
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
    return session.scalars(
        select(TradingHoursTemplate).where(
            TradingHoursTemplate.exchange == code, TradingHoursTemplate.is_active.is_(True)
        )
    ).first()


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


def trading_day_close(session: Session, exchange: str, at: datetime) -> datetime | None:
    """The close (UTC) of the trading day that *at* belongs to: the regular session's close
    later on *at*'s local date, else that of the next trading day. Weekends and full-day
    holidays are skipped, as `is_open` does; a session open until 23:59:59 ends at midnight.
    A moment at or after a close belongs to the next day. None for an exchange without a
    calendar, or one that does not trade within two weeks."""
    template = template_for(session, exchange)
    if template is None:
        return None
    zone = ZoneInfo(template.timezone)
    local = ensure_utc(at).astimezone(zone)
    closes: dict[int, list[time]] = {}
    for trading in session.scalars(
        select(TradingSession).where(TradingSession.template_id == template.id)
    ):
        if trading.is_trading_day and trading.market_open and trading.market_close:
            closes.setdefault(trading.day_of_week, []).append(trading.market_close)
    horizon = [local.date() + timedelta(days=n) for n in range(15)]
    closed_days = set(
        session.scalars(
            select(MarketHoliday.date).where(
                MarketHoliday.template_id == template.id,
                MarketHoliday.date >= horizon[0],
                MarketHoliday.date <= horizon[-1],
                MarketHoliday.holiday_type != "special",
            )
        )
    )
    for day in horizon:
        if day in closed_days:
            continue
        for close in sorted(closes.get(day.weekday(), [])):
            if close >= _END_OF_DAY:  # 23:59:59.999999 (23:59:59 on MariaDB): midnight
                moment = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
            else:
                moment = datetime.combine(day, close, tzinfo=zone)
            if moment > local:
                return moment.astimezone(UTC)
    return None


# A session that runs to the end of the day; MariaDB's TIME keeps no microseconds.
_END_OF_DAY = time(23, 59, 59)
