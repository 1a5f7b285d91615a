"""DAY and IOC resting orders on the paper broker, worked out by hand.

The paper clock: an order is placed at the (patched) wall clock; bars carry their own
time. New York is UTC-5 in December, so NYSE's 16:00 close is 21:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.orders.test_resting_orders import ADMIN, _setup
from tradebase.core.auth import Principal
from tradebase.marketdata.schemas import BarIn
from tradebase.marketdata.service import price as price_service
from tradebase.orders.errors import OrderRejected
from tradebase.orders.models import Order, OrderEvent, Trade
from tradebase.orders.service import day_end
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Portfolio, Position


def _at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    monkeypatch.setattr("tradebase.orders.service.utc_now", lambda: when)


def dec(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of December 2026, UTC."""
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def _bar(
    session: Session, symbol: str, exchange: str, when: datetime, ohlc: str, volume: str = "100"
) -> int:
    """Post one bar ("open high low close") and return the fills it made."""
    o, h, low, c = (D(x) for x in ohlc.split())
    return price_service.ingest(
        session,
        ADMIN,
        symbol=symbol,
        exchange=exchange,
        timeframe="5m",
        bars=[BarIn(timestamp=when, open=o, high=h, low=low, close=c, volume=D(volume))],
    ).fills


def _events(session: Session, order: Order) -> list[tuple[str, str]]:
    rows = session.execute(
        select(OrderEvent.event_type, OrderEvent.to_status)
        .where(OrderEvent.order_id == order.id)
        .order_by(OrderEvent.id)
    ).all()
    return [(e, s) for e, s in rows]


def _place(session: Session, who: Principal, portfolio: Portfolio, **fields: object) -> Order:
    values: dict[str, object] = {
        "portfolio_id": portfolio.id,
        "symbol": "ACME",
        "side": "buy",
        "quantity": D(10),
        "order_type": "limit",
        "price": D(100),
    } | fields
    return order_service.place(session, who, **values)  # type: ignore[arg-type]


def _trades(session: Session, portfolio: Portfolio) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(Trade).where(Trade.portfolio_id == portfolio.id)
        )
        or 0
    )


# --- DAY ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "placed", "expires"),
    [
        # Tuesday 10:00 in New York: today's 16:00 close
        ("NYSE", dec(1, 15), dec(1, 21)),
        # before the 09:30 open: still today's session
        ("NYSE", dec(1, 12), dec(1, 21)),
        # at the close and after it: the next trading day's
        ("NYSE", dec(1, 21), dec(2, 21)),
        ("NASDAQ", dec(1, 22), dec(2, 21)),
        # Friday evening -> Monday
        ("NYSE", dec(4, 23), dec(7, 21)),
        # Thursday 24 December after the close; the 25th is Christmas -> Monday the 28th
        ("NYSE", dec(24, 21, 30), dec(28, 21)),
        # NSE closes 15:30 in Mumbai (UTC+5:30) = 10:00 UTC
        ("NSE", dec(1, 5), dec(1, 10)),
        # crypto trades until the end of the day, UTC
        ("BINANCE", dec(5, 8), dec(6, 0)),
        # no calendar: 00:00 UTC the next day
        ("paper", dec(1, 15), dec(2, 0)),
        ("paper", dec(1, 23, 59), dec(2, 0)),
    ],
)
def test_when_a_day_order_expires(
    session: Session, exchange: str, placed: datetime, expires: datetime
) -> None:
    assert day_end(session, exchange, placed) == expires


def test_a_day_order_expires_at_the_close_before_the_next_bar_can_fill_it(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    who, portfolio = _setup(session)
    _at(monkeypatch, dec(1, 15))  # 10:00 in New York
    late = _place(session, who, portfolio, symbol="IBM", exchange="NYSE", time_in_force="DAY")
    early = _place(session, who, portfolio, symbol="MSFT", exchange="NYSE", time_in_force="DAY")
    assert (late.status, late.expires_at) == ("open", dec(1, 21))

    # 20:55 UTC (15:55 in New York), the bar dips to 99: the DAY limit at 100 fills.
    assert _bar(session, "MSFT", "NYSE", dec(1, 20, 55), "101 101 99 100") == 1
    session.refresh(early)
    assert (early.status, early.average_fill_price) == ("filled", D(100))

    # 21:05 UTC, after the 16:00 close: the bar crosses the limit too, but the order
    # expired at the close, before this bar is matched.
    assert _bar(session, "IBM", "NYSE", dec(1, 21, 5), "101 101 99 100") == 0
    session.refresh(late)
    assert (late.status, late.filled_quantity) == ("expired", D(0))
    assert _events(session, late) == [
        ("created", "pending"),
        ("accepted", "open"),
        ("expired", "expired"),
    ]
    expired = session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == late.id, OrderEvent.event_type == "expired")
    ).one()
    assert expired.occurred_at == dec(1, 21)
    assert (
        session.scalar(select(func.count()).select_from(Trade).where(Trade.order_id == late.id))
        == 0
    )


def test_a_bar_at_the_close_itself_expires_a_day_order(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    who, portfolio = _setup(session)
    _at(monkeypatch, dec(1, 15))
    day = _place(session, who, portfolio, symbol="IBM", exchange="NYSE", time_in_force="DAY")
    gtc = _place(session, who, portfolio, symbol="IBM", exchange="NYSE")
    assert _bar(session, "IBM", "NYSE", dec(1, 21), "99 99 99 99") == 1
    session.refresh(day)
    session.refresh(gtc)
    assert (day.status, gtc.status) == ("expired", "filled")


def test_the_expiry_job_expires_what_is_past_its_close(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    who, portfolio = _setup(session)
    _at(monkeypatch, dec(1, 15))
    nyse = _place(session, who, portfolio, symbol="IBM", exchange="NYSE", time_in_force="DAY")
    paper = _place(session, who, portfolio, time_in_force="DAY")  # expires 00:00 UTC
    gtc = _place(session, who, portfolio)
    assert order_service.expire_day_orders(session, dec(1, 20, 59)) == 0
    assert order_service.expire_day_orders(session, dec(1, 21)) == 1
    assert order_service.expire_day_orders(session, dec(2, 0)) == 1
    assert order_service.expire_day_orders(session, datetime(2026, 12, 9, tzinfo=UTC)) == 0
    for row in (nyse, paper, gtc):
        session.refresh(row)
    assert (nyse.status, paper.status, gtc.status) == ("expired", "expired", "open")


def test_a_partially_filled_day_order_expires_with_what_it_filled(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    who, portfolio = _setup(session)
    _at(monkeypatch, dec(1, 15))
    day = _place(
        session,
        who,
        portfolio,
        symbol="IBM",
        exchange="NYSE",
        time_in_force="DAY",
        participation=D("0.04"),
    )
    # 4% of a volume of 100: 4 of 10 fill at 100 at 16:30 UTC (11:30 in New York).
    assert _bar(session, "IBM", "NYSE", dec(1, 16, 30), "100 100 100 100") == 1
    assert order_service.expire_day_orders(session, dec(1, 21)) == 1
    session.refresh(day)
    assert (day.status, day.filled_quantity) == ("expired", D(4))
    position = session.scalars(select(Position).where(Position.portfolio_id == portfolio.id)).one()
    assert position.quantity == D(4)


# --- IOC ---------------------------------------------------------------------------------


def test_an_ioc_order_fills_what_the_participation_cap_allows_and_cancels_the_rest(
    session: Session,
) -> None:
    who, portfolio = _setup(session)  # 10,000 of cash, fee rate 0.1%
    # The latest bar closes at 100 on a volume of 100 (the earlier one is not the reference).
    _bar(session, "ACME", "paper", dec(1, 14), "90 90 90 90")
    _bar(session, "ACME", "paper", dec(1, 14, 5), "99 101 98 100")
    ioc = _place(
        session, who, portfolio, price=D(101), time_in_force="IOC", participation=D("0.04")
    )
    # 100 is within the limit 101: it fills at 100, 4% of 100 = 4 of 10; 6 are cancelled.
    assert (ioc.status, ioc.filled_quantity, ioc.average_fill_price, ioc.fee) == (
        "cancelled",
        D(4),
        D(100),
        D("0.4"),
    )
    assert ioc.reject_reason == "IOC: not filled immediately"
    assert _events(session, ioc) == [
        ("created", "pending"),
        ("accepted", "open"),
        ("partially_filled", "partially_filled"),
        ("cancelled", "cancelled"),
    ]
    cancelled = session.scalars(
        select(OrderEvent).where(
            OrderEvent.order_id == ioc.id, OrderEvent.event_type == "cancelled"
        )
    ).one()
    assert cancelled.details == {"reason": "IOC: not filled immediately"}
    session.refresh(portfolio)
    assert portfolio.cash_balance_usd == D("9599.6")  # 10000 - 400 - 0.4
    position = session.scalars(select(Position).where(Position.portfolio_id == portfolio.id)).one()
    assert (position.quantity, position.entry_price) == (D(4), D(100))
    # Nothing of it rests: the next bar, far through the limit, fills nothing.
    assert _bar(session, "ACME", "paper", dec(1, 14, 10), "95 95 95 95") == 0


def test_an_ioc_order_that_cannot_fill_is_cancelled_and_moves_nothing(session: Session) -> None:
    who, portfolio = _setup(session)
    _bar(session, "ACME", "paper", dec(1, 14, 5), "99 101 98 100")
    # A buy limit at 99 against the reference price 100 (the bar's low of 98 does not
    # count: an IOC order meets the price now, not the bar gone by).
    ioc = _place(session, who, portfolio, price=D(99), time_in_force="IOC")
    assert (ioc.status, ioc.filled_quantity, ioc.cancelled_at is not None) == (
        "cancelled",
        D(0),
        True,
    )
    assert _events(session, ioc) == [
        ("created", "pending"),
        ("accepted", "open"),
        ("cancelled", "cancelled"),
    ]
    session.refresh(portfolio)
    assert portfolio.cash_balance_usd == D(10000)
    assert _trades(session, portfolio) == 0
    assert (
        session.scalars(select(Position).where(Position.portfolio_id == portfolio.id)).all() == []
    )


def test_ioc_stop_orders_meet_the_reference_price(session: Session) -> None:
    who, portfolio = _setup(session)
    _bar(session, "ACME", "paper", dec(1, 14, 5), "99 101 98 100")
    # A buy stop at 99 is through at 100: it fills there, all of it.
    stop = _place(
        session,
        who,
        portfolio,
        order_type="stop_loss",
        price=None,
        trigger_price=D(99),
        time_in_force="IOC",
    )
    assert (stop.status, stop.filled_quantity, stop.average_fill_price) == ("filled", D(10), D(100))
    # A buy stop_limit stop 99 limit 99.5: triggered at 100, above its limit: cancelled.
    stop_limit = _place(
        session,
        who,
        portfolio,
        order_type="stop_limit",
        price=D("99.5"),
        trigger_price=D(99),
        time_in_force="IOC",
    )
    assert (stop_limit.status, stop_limit.filled_quantity) == ("cancelled", D(0))
    assert stop_limit.triggered_at is not None
    assert [e for e, _ in _events(session, stop_limit)] == [
        "created",
        "accepted",
        "triggered",
        "cancelled",
    ]


def test_an_ioc_order_without_a_price_is_rejected(session: Session) -> None:
    who, portfolio = _setup(session)
    with pytest.raises(OrderRejected) as info:
        _place(session, who, portfolio, symbol="NOBARS", time_in_force="IOC")
    assert info.value.message.startswith("order rejected: no price for NOBARS")
    rejected = session.get(Order, info.value.details["order_id"])
    assert rejected is not None
    assert (rejected.status, rejected.time_in_force) == ("rejected", "IOC")
    assert (rejected.reject_reason or "").startswith("no price for NOBARS")
    assert _events(session, rejected) == [("created", "pending"), ("rejected", "rejected")]
    assert _trades(session, portfolio) == 0


def test_an_ioc_order_on_a_closed_market_is_rejected(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    who, portfolio = _setup(session)
    _bar(session, "IBM", "NYSE", dec(4, 20, 55), "100 100 100 100")
    _at(monkeypatch, dec(5, 16))  # a Saturday
    with pytest.raises(OrderRejected) as info:
        _place(session, who, portfolio, symbol="IBM", exchange="NYSE", time_in_force="IOC")
    assert info.value.details["cause"] == "market_closed"
    assert "does not trade on Saturdays" in info.value.message
