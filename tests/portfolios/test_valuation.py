"""Marking to market, snapshots and the portfolio's figures, worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817

import numpy as np
from sqlalchemy.orm import Session

from tests.factories import create_user
from tradebase.core.auth import Principal
from tradebase.marketdata.schemas import BarIn
from tradebase.marketdata.service import price as price_service
from tradebase.orders.service import order as order_service
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

FEEDER = Principal(user_id=0, username="feeder", role="admin", via="cli")


def _close(session: Session, day: int, close: str) -> None:
    c = D(close)
    price_service.ingest(
        session,
        FEEDER,
        symbol="ACME",
        exchange="paper",
        timeframe="1d",
        bars=[
            BarIn(
                timestamp=datetime(2026, 11, day, tzinfo=UTC),
                open=c,
                high=c,
                low=c,
                close=c,
                volume=D(1),
            )
        ],
    )


def test_equity_snapshots_and_metrics(session: Session) -> None:
    user = create_user(session)
    who = Principal(user_id=user.id, username=user.username, role="trader")
    account = account_service.create(session, who, account_name="valued")
    portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
    portfolio_service.deposit(session, who, portfolio.id, D(10000))
    order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D(10),
        price=D(100),
    )  # no fee, no slippage: cash 9000
    _close(session, 1, "110")
    first = portfolio_service.take_snapshot(
        session, who, portfolio.id, datetime(2026, 11, 1, 23, tzinfo=UTC)
    )
    # 9000 cash + 10 x 110
    assert (first.total_value_usd, first.cash_balance_usd, first.pnl_24h) == (
        D(10100),
        D(9000),
        None,
    )
    assert first.holdings == {
        "ACME:paper:NRML:long": {"quantity": "10", "price": "110", "value": "1100"}
    }
    assert (portfolio.total_pnl, portfolio.total_pnl_percent) == (D(100), D(1))
    _close(session, 2, "105")
    second = portfolio_service.take_snapshot(
        session, who, portfolio.id, datetime(2026, 11, 2, 23, tzinfo=UTC)
    )
    assert (second.total_value_usd, second.pnl_24h, portfolio.daily_pnl) == (
        D(10050),
        D(-50),
        D(-50),
    )
    _close(session, 3, "120")
    order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="sell",
        quantity=D(5),
        price=D(120),
    )  # closes 5: 600 - 500 = +100
    portfolio_service.take_snapshot(
        session, who, portfolio.id, datetime(2026, 11, 3, 23, tzinfo=UTC)
    )
    # cash 9600 + 5 x 120 = 10200
    assert portfolio.total_value_usd == D(10200)
    curve = np.array([10100.0, 10050.0, 10200.0])
    r = curve[1:] / curve[:-1] - 1
    expected_sharpe = r.mean() / r.std(ddof=1) * math.sqrt(365)
    assert abs(float(portfolio.sharpe_ratio) - expected_sharpe) < 1e-9  # type: ignore[arg-type]
    assert abs(float(portfolio.max_drawdown) - (-50 / 10100 * 100)) < 1e-9  # type: ignore[arg-type]
    assert portfolio.win_rate == D(100)  # one closing fill, in profit
