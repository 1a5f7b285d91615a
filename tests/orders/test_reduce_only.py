"""Reduce-only orders: how a hedging position closes, and a guard in netting mode.

Figures worked by hand (fee 0, no slippage, 10,000 deposited)."""

from __future__ import annotations

from decimal import Decimal as D  # noqa: N817 - the hand-worked figures read better

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.factories import create_user
from tradebase.core.auth import Principal
from tradebase.orders.errors import OrderRejected
from tradebase.orders.models import Order, Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Portfolio, Position
from tradebase.portfolios.reconcile import reconcile
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service


def _book(session: Session, mode: str) -> tuple[Principal, Portfolio]:
    user = create_user(session)
    who = Principal(user_id=user.id, username=user.username, role="trader")
    account = account_service.create(session, who, account_name=f"{mode} one")
    portfolio = portfolio_service.create(
        session, who, account_id=account.id, name=mode, position_mode=mode
    )
    portfolio_service.deposit(session, who, portfolio.id, D(10000))
    return who, portfolio


def _place(
    session: Session, who: Principal, portfolio: Portfolio, side: str, qty: str, price: str,
    *, reduce_only: bool = False,
) -> Order:  # fmt: skip
    return order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side=side, quantity=D(qty),
        price=D(price), reduce_only=reduce_only,
    )  # fmt: skip


def _open(session: Session, portfolio: Portfolio) -> dict[str, tuple[D, D]]:
    rows = session.scalars(
        select(Position).where(Position.portfolio_id == portfolio.id, Position.status == "open")
    ).all()
    return {p.direction: (p.quantity, p.cost_basis) for p in rows}


def test_hedging_positions_close_with_reduce_only_orders(session: Session) -> None:
    who, portfolio = _book(session, "hedging")
    _place(session, who, portfolio, "buy", "10", "100")  # long 10, cost 1000
    _place(session, who, portfolio, "sell", "4", "90")  # a short of 4 beside it
    assert _open(session, portfolio) == {"long": (D(10), D(1000)), "short": (D(4), D(360))}
    _place(session, who, portfolio, "sell", "6", "110", reduce_only=True)  # 6 x (110-100)
    assert _open(session, portfolio) == {"long": (D(4), D(400)), "short": (D(4), D(360))}
    _place(session, who, portfolio, "buy", "4", "80", reduce_only=True)  # 4 x (90-80)
    _place(session, who, portfolio, "sell", "4", "105", reduce_only=True)  # 4 x (105-100)
    assert _open(session, portfolio) == {}
    pnls = session.scalars(
        select(Trade.pnl).where(Trade.portfolio_id == portfolio.id).order_by(Trade.id)
    ).all()
    assert pnls == [None, None, D(60), D(40), D(20)]
    session.refresh(portfolio)
    # 10000 - 1000 + 360 + 660 - 320 + 420: flat, and Σ P&L 120 is the change in cash.
    assert portfolio.cash_balance_usd == D(10120)
    report = reconcile(session, portfolio.id)
    assert report.differences == [] and report.fills == 5


@pytest.mark.parametrize("mode", ["hedging", "netting"])
def test_a_reduce_only_order_beyond_the_position_is_refused(session: Session, mode: str) -> None:
    who, portfolio = _book(session, mode)
    _place(session, who, portfolio, "buy", "4", "100")
    with pytest.raises(OrderRejected, match="would exceed the open long of 4 ACME") as refused:
        _place(session, who, portfolio, "sell", "5", "110", reduce_only=True)
    with pytest.raises(OrderRejected, match="open short of 0"):
        _place(session, who, portfolio, "buy", "1", "110", reduce_only=True)
    rejected = session.get(Order, refused.value.details["order_id"])
    assert rejected is not None and rejected.status == "rejected"
    assert refused.value.details["cause"] == "reduce_only_refused"
    assert _open(session, portfolio) == {"long": (D(4), D(400))}
    session.refresh(portfolio)
    assert portfolio.cash_balance_usd == D(9600)
    _place(session, who, portfolio, "sell", "4", "110", reduce_only=True)  # exactly all: fine
    assert _open(session, portfolio) == {}
