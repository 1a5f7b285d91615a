"""Resting orders filled by price bars on the paper broker, worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817 - the hand-worked figures read better

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.factories import create_user
from tradebase.core.auth import Principal
from tradebase.marketdata.schemas import BarIn
from tradebase.marketdata.service import price as price_service
from tradebase.orders.models import OrderEvent, Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Portfolio, Position
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

ADMIN = Principal(user_id=0, username="feeder", role="admin", via="cli")


def _setup(session: Session) -> tuple[Principal, Portfolio]:
    user = create_user(session)
    who = Principal(user_id=user.id, username=user.username, role="trader")
    account = account_service.create(session, who, account_name="paper two", fee_rate=D("0.001"))
    portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
    portfolio_service.deposit(session, who, portfolio.id, D(10000))
    return who, portfolio


def _bar(minute: int, o: str, h: str, low: str, c: str, v: str) -> BarIn:
    return BarIn(
        timestamp=datetime(2026, 11, 23, 14, minute, tzinfo=UTC),
        open=D(o),
        high=D(h),
        low=D(low),
        close=D(c),
        volume=D(v),
    )


def _post(session: Session, *bars: BarIn) -> int:
    return price_service.ingest(
        session, ADMIN, symbol="ACME", exchange="paper", timeframe="1m", bars=list(bars)
    ).fills


def test_a_partially_filled_limit_order_then_a_stop_gapping_through(session: Session) -> None:
    who, portfolio = _setup(session)
    buy = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D(10),
        order_type="limit",
        price=D(100),
        participation=D("0.1"),
    )
    assert buy.status == "open"
    # Bar 1 dips to 99: the limit fills at 100, but only 10% of its volume of 40: 4.
    assert _post(session, _bar(0, "101", "102", "99", "101", "40")) == 1
    session.refresh(buy)
    assert (buy.status, buy.filled_quantity, buy.average_fill_price, buy.fee) == (
        "partially_filled",
        D(4),
        D(100),
        D("0.4"),
    )
    # Bar 2 opens at 99, below the limit: the rest (6 of a possible 10) fills at the open.
    assert _post(session, _bar(1, "99", "100", "98", "99", "100")) == 1
    session.refresh(buy)
    # (4 x 100 + 6 x 99) / 10 = 99.4; fees 0.4 + 0.594
    assert (buy.status, buy.filled_quantity, buy.average_fill_price, buy.fee) == (
        "filled",
        D(10),
        D("99.4"),
        D("0.994"),
    )
    session.refresh(portfolio)
    assert portfolio.cash_balance_usd == D("9005.006")  # 10000 - 400.4 - 594.594
    events = session.scalars(
        select(OrderEvent.to_status).where(OrderEvent.order_id == buy.id).order_by(OrderEvent.id)
    ).all()
    assert events == ["pending", "open", "partially_filled", "filled"]

    stop = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="sell",
        quantity=D(10),
        order_type="stop_loss",
        trigger_price=D(95),
    )
    assert _post(session, _bar(2, "97", "98", "95.5", "96", "100")) == 0  # not reached
    # A gap down through the stop: it fills at the open, 93.
    assert _post(session, _bar(3, "93", "94", "92", "93.5", "100")) == 1
    trade = session.scalars(select(Trade).where(Trade.order_id == stop.id)).one()
    # 930 - 994 (cost) - 0.93 (fee) - 0.994 (opening fees) = -65.924
    assert (trade.price, trade.fee, trade.pnl) == (D(93), D("0.93"), D("-65.924"))
    position = session.scalars(select(Position).where(Position.portfolio_id == portfolio.id)).one()
    session.refresh(position)
    assert (position.status, position.quantity, position.realized_pnl, position.exit_price) == (
        "closed",
        D(0),
        D("-65.924"),
        D(93),
    )
    # Replaying a bar already stored fills nothing twice.
    assert _post(session, _bar(3, "93", "94", "92", "93.5", "100")) == 0


def test_a_resting_buy_without_the_cash_is_cancelled_with_the_reason(session: Session) -> None:
    who, portfolio = _setup(session)
    big = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D(1000),
        order_type="limit",
        price=D(100),
    )
    assert _post(session, _bar(10, "100", "101", "99", "100", "5000")) == 0
    session.refresh(big)
    assert big.status == "cancelled" and "not enough cash" in (big.reject_reason or "")
    session.refresh(portfolio)
    assert portfolio.cash_balance_usd == D(10000)


def test_amending_a_resting_order(session: Session) -> None:
    import pytest

    from tradebase.orders.errors import AmendRefused

    who, portfolio = _setup(session)
    resting = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D(5),
        order_type="limit",
        price=D(90),
    )
    order_service.amend(session, who, resting.id, price=D(95), quantity=D(6))
    assert (resting.price, resting.quantity) == (D(95), D(6))
    # The amended limit fills where the old one would not have: low 94 reaches 95.
    assert _post(session, _bar(20, "96", "97", "94", "96", "100")) == 1
    session.refresh(resting)
    assert (resting.status, resting.average_fill_price, resting.filled_quantity) == (
        "filled",
        D(95),
        D(6),
    )
    events = session.scalars(
        select(OrderEvent.event_type)
        .where(OrderEvent.order_id == resting.id)
        .order_by(OrderEvent.id)
    ).all()
    assert events == ["created", "accepted", "amended", "filled"]
    with pytest.raises(AmendRefused):
        order_service.amend(session, who, resting.id, price=D(96))  # filled: nothing to amend
