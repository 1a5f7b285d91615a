"""The outbox: an event is written with the change that causes it, and only then."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D  # noqa: N817

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.conftest import Scratch
from tests.factories import create_user
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.time import utc_now
from tradebase.events.models import Event
from tradebase.events.service import EventTypeInvalid, emit
from tradebase.events.service import event as event_service
from tradebase.ops.retention import retention as retention_service
from tradebase.orders.errors import OrderRejected
from tradebase.orders.matching import Bar
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Portfolio
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service


def _trader(session: Session) -> Principal:
    user = create_user(session)
    return Principal(user_id=user.id, username=user.username, role="trader")


def _portfolio(session: Session, who: Principal) -> Portfolio:
    account = account_service.create(session, who, account_name="paper", fee_rate=D("0.001"))
    portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
    portfolio_service.deposit(session, who, portfolio.id, D(10000))
    return portfolio


def _events(session: Session, who: Principal) -> list[Event]:
    return list(
        session.scalars(select(Event).where(Event.user_id == who.user_id).order_by(Event.id))
    )


def test_fills_rejections_closes_and_cancels_are_events(session: Session) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who)
    buy = order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="buy", quantity=D(2),
        price=D(100), client_order_id="b1",
    )  # fmt: skip
    with pytest.raises(OrderRejected):
        order_service.place(
            session, who, portfolio_id=portfolio.id, symbol="NOPRICE", side="buy", quantity=D(1)
        )
    order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="sell", quantity=D(2),
        price=D(110),
    )  # fmt: skip
    resting = order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="buy", quantity=D(1),
        order_type="limit", price=D(50),
    )  # fmt: skip
    order_service.cancel(session, who, resting.id)
    found = _events(session, who)
    assert [e.event_type for e in found] == [
        "order.filled",
        "order.rejected",
        "position.closed",
        "order.filled",
        "order.cancelled",
    ]
    filled = found[0].payload
    assert filled["order_id"] == buy.id and filled["client_order_id"] == "b1"
    assert (filled["symbol"], filled["side"], filled["status"]) == ("ACME", "buy", "filled")
    assert filled["fill_quantity"] == "2" and filled["average_fill_price"] == "100"
    assert "no price" in found[1].payload["reason"].lower() or found[1].payload["reason"]
    closed = found[2].payload
    assert (closed["symbol"], closed["direction"], closed["exit_price"]) == ("ACME", "long", "110")
    assert D(closed["realized_pnl"]) == D(20) - D("0.2") - D("0.22")  # net of both fees
    assert found[4].payload["order_id"] == resting.id


def test_a_rolled_back_change_leaves_no_event(session: Session) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who)
    savepoint = session.begin_nested()
    order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="buy", quantity=D(1),
        price=D(100),
    )  # fmt: skip
    assert len(_events(session, who)) == 1
    savepoint.rollback()
    assert _events(session, who) == []


def test_callers_emit_their_own_events_and_read_them_back(session: Session) -> None:
    who = _trader(session)
    other = _trader(session)
    emit(session, who.user_id, "failover", {"from": 1, "to": 2, "amount": D("1.50")})
    emit(session, other.user_id, "failover", {"from": 3, "to": 4})
    mine = event_service.list(session, who)
    assert [(e.event_type, e.payload) for e in mine] == [
        ("failover", {"from": 1, "to": 2, "amount": "1.5"})
    ]
    assert event_service.list(session, who, after_id=mine[0].id) == []
    with pytest.raises(EventTypeInvalid):
        emit(session, who.user_id, "Not A Type", {})


def test_old_events_are_pruned(scratch: Scratch) -> None:
    settings = scratch.settings()
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    try:
        with unit_of_work(factory=factory) as session:
            who = _trader(session)
            for _ in range(3):
                emit(session, who.user_id, "failover", {})
        with unit_of_work(factory=factory) as session:
            oldest = min(e.id for e in event_service.list(session, who))
            session.execute(
                update(Event)
                .where(Event.id == oldest)
                .values(created_at=utc_now() - timedelta(days=31))
            )
        [report] = retention_service.prune(factory, settings, tables=["events"])
        assert report.done == 1
        with unit_of_work(factory=factory, write=False) as session:
            assert oldest not in {e.id for e in event_service.list(session, who)}
            assert len(event_service.list(session, who)) == 2
    finally:
        engines.dispose()


def test_an_expired_day_order_is_an_event(session: Session) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who)
    day = order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="buy", quantity=D(1),
        order_type="limit", price=D(50), time_in_force="DAY",
    )  # fmt: skip
    assert day.expires_at is not None
    assert order_service.expire_day_orders(session, at=day.expires_at + timedelta(seconds=1)) == 1
    [expired] = [e for e in _events(session, who) if e.event_type == "order.expired"]
    assert expired.payload["order_id"] == day.id and "DAY order" in expired.payload["reason"]
    assert expired.payload["status"] == "expired"


def test_a_bar_that_fills_part_of_a_resting_order_is_a_partial_fill_then_a_fill(
    session: Session,
) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who)
    resting = order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="buy", quantity=D(2),
        order_type="limit", price=D(50), participation=D("0.5"),
    )  # fmt: skip
    bar = Bar(D(50), D(51), D(49), D(50), D(2))  # half of a volume of 2: 1 of the 2
    at = utc_now()
    order_service.match_bar(session, symbol="ACME", exchange="paper", bar=bar, at=at)
    order_service.match_bar(
        session, symbol="ACME", exchange="paper", bar=bar, at=at + timedelta(minutes=1)
    )
    fills = [e.payload for e in _events(session, who) if e.event_type.startswith("order.")]
    assert [(p["status"], p["fill_quantity"], p["filled_quantity"]) for p in fills] == [
        ("partially_filled", "1", "1"),
        ("filled", "1", "2"),
    ]
    assert {p["order_id"] for p in fills} == {resting.id}
