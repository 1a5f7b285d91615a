"""Trading hours: is a market open at a given moment, and if not, why not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, event, select
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
    # Read once per transaction: every order and signal asks, several times.
    transaction = session.get_transaction()
    memo: tuple[object, dict[str, dict[str, Any] | None]] | None = session.info.get(_MEMO)
    if memo is None or memo[0] is not transaction:
        memo = session.info[_MEMO] = (transaction, {})
    if code not in memo[1]:
        rows = _TEMPLATE.rows(session, {"code": code})
        memo[1][code] = rows[0]._asdict() if rows else None
    found = memo[1][code]
    return None if found is None else load(session, TradingHoursTemplate, found)


_MEMO = "tradebase.calendars.templates"


@event.listens_for(Session, "after_flush")
def _forget_templates(session: Session, _context: Any) -> None:
    """A template written through the session makes its transaction read them again."""
    if _MEMO in session.info and any(
        isinstance(obj, TradingHoursTemplate)
        for obj in (*session.new, *session.dirty, *session.deleted)
    ):
        del session.info[_MEMO]


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


# How far ahead a calendar is searched for the next trading day: a template with no
# trading day within a year has no day end (settlement then waits).
_LOOKAHEAD_DAYS = 370
# 24-hour sessions close at 23:59:59.999999 (23:59:59 where TIME keeps no fraction, MariaDB).
_LAST_SECOND = time(23, 59, 59)


@dataclass(frozen=True)
class Calendar:
    """A template's regular hours, loaded once: enough to find where a trading day ends."""

    name: str
    zone: ZoneInfo
    closes: Mapping[int, time]  # weekday (0 = Monday) -> the last regular close that day
    holidays: frozenset[date]  # local dates without the regular session

    def day_end(self, moment: datetime) -> datetime | None:
        """The close of the trading day *moment* belongs to, in UTC: the first regular close
        at or after *moment*. A moment after a close, or on a day without trading, belongs
        to the next trading day."""
        moment = ensure_utc(moment)
        first = moment.astimezone(self.zone).date()
        for offset in range(_LOOKAHEAD_DAYS):
            day = first + timedelta(days=offset)
            close = self.closes.get(day.weekday())
            if close is None or day in self.holidays:
                continue
            if close >= _LAST_SECOND:  # a session to the end of the day runs to midnight
                end = datetime.combine(day + timedelta(days=1), time(0), self.zone)
            else:
                end = datetime.combine(day, close, self.zone)
            end = end.astimezone(UTC)
            if end >= moment:
                return end
        return None


def calendar_for(session: Session, exchange: str) -> Calendar | None:
    """The calendar of *exchange* (through its alias), or None when it has none."""
    template = template_for(session, exchange)
    if template is None:
        return None
    closes: dict[int, time] = {}
    for trading in session.scalars(
        select(TradingSession).where(TradingSession.template_id == template.id)
    ):
        if trading.is_trading_day and trading.market_open and trading.market_close:
            known = closes.get(trading.day_of_week)
            closes[trading.day_of_week] = max(known or trading.market_close, trading.market_close)
    # As in is_open: a holiday closes the regular session unless it is a special session.
    holidays = frozenset(
        session.scalars(
            select(MarketHoliday.date).where(
                MarketHoliday.template_id == template.id, MarketHoliday.holiday_type != "special"
            )
        )
    )
    return Calendar(template.name, ZoneInfo(template.timezone), closes, holidays)


def midnight_after(moment: datetime) -> datetime:
    """The next 00:00 UTC after *moment*: where the day ends on an exchange without a calendar."""
    return datetime.combine(ensure_utc(moment).date() + timedelta(days=1), time(0), UTC)


def trading_day_end(session: Session, exchange: str, moment: datetime) -> datetime | None:
    """When the trading day of *moment* on *exchange* ends (its regular close; with no
    calendar, the next 00:00 UTC). None when the calendar has no trading day ahead."""
    calendar = calendar_for(session, exchange)
    return midnight_after(moment) if calendar is None else calendar.day_end(moment)


@dataclass(frozen=True)
class CalendarView:
    """A template with its weekly sessions, its holidays and the exchanges that keep its hours."""

    id: int
    name: str
    exchange: str | None
    timezone: str
    description: str | None
    is_active: bool
    aliases: list[str]
    sessions: Sequence[TradingSession]
    holidays: Sequence[MarketHoliday]


def calendars(session: Session) -> list[CalendarView]:
    """Every trading hours template, with its sessions (by weekday) and holidays (by date)."""
    templates = session.scalars(select(TradingHoursTemplate).order_by(TradingHoursTemplate.id))
    sessions = session.scalars(
        select(TradingSession).order_by(
            TradingSession.template_id, TradingSession.day_of_week, TradingSession.id
        )
    ).all()
    holidays = session.scalars(
        select(MarketHoliday).order_by(MarketHoliday.template_id, MarketHoliday.date)
    ).all()
    return [
        CalendarView(
            id=t.id,
            name=t.name,
            exchange=t.exchange,
            timezone=t.timezone,
            description=t.description,
            is_active=t.is_active,
            aliases=sorted(alias for alias, code in ALIASES.items() if code == t.exchange),
            sessions=[s for s in sessions if s.template_id == t.id],
            holidays=[h for h in holidays if h.template_id == t.id],
        )
        for t in templates
    ]


@dataclass(frozen=True)
class MarketStatus:
    exchange: str
    calendar: str | None
    at: datetime
    is_open: bool
    reason: str
    day_ends_at: datetime | None  # when the trading day of *at* ends (CNC settles after)


def status(session: Session, exchange: str, at: datetime) -> MarketStatus:
    """Whether *exchange* trades at *at*, why (not), and when that trading day ends."""
    state = is_open(session, exchange, at)
    return MarketStatus(
        exchange=exchange,
        calendar=state.template,
        at=ensure_utc(at),
        is_open=state.open,
        reason=state.reason,
        day_ends_at=trading_day_end(session, exchange, at),
    )


def trading_day_close(session: Session, exchange: str, at: datetime) -> datetime | None:
    """The close (UTC) of the trading day an order placed at *at* belongs to (DAY orders):
    as `trading_day_end`, except that a moment at the close itself belongs to the next
    trading day. None for an exchange without a calendar."""
    calendar = calendar_for(session, exchange)
    if calendar is None:
        return None
    end = calendar.day_end(at)
    if end is not None and end == ensure_utc(at):
        end = calendar.day_end(at + timedelta(microseconds=1))
    return end
