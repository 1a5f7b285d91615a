"""twap and vwap parents releasing market children on the bar clock, worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.orders.test_resting_orders import ADMIN, _setup
from tradebase.marketdata.schemas import BarIn
from tradebase.marketdata.service import price as price_service
from tradebase.orders.models import Order


def _bars(session: Session, day: int, closes_and_volumes: list[tuple[str, str]]) -> int:
    bars = [
        BarIn(
            timestamp=datetime(2026, 11, day, 14, 15 * i, tzinfo=UTC),
            open=D(c),
            high=D(c),
            low=D(c),
            close=D(c),
            volume=D(v),
        )
        for i, (c, v) in enumerate(closes_and_volumes)
    ]
    return price_service.ingest(
        session, ADMIN, symbol="ALGO", exchange="paper", timeframe="15m", bars=bars
    ).fills


def _children(session: Session, parent: Order) -> list[tuple[D, D]]:
    rows = session.scalars(
        select(Order).where(Order.parent_order_id == parent.id).order_by(Order.id)
    )
    return [(row.quantity, row.average_fill_price) for row in rows]  # type: ignore[misc]


def test_a_twap_of_four_children(session: Session) -> None:
    from tradebase.orders.service import order as order_service

    who, portfolio = _setup(session)  # fee rate 0.1%, no slippage
    parent = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ALGO",
        side="buy",
        quantity=D(10),
        order_type="twap",
        slices=4,
        duration_seconds=3600,
    )
    assert parent.status == "open"
    # One bar every 15 minutes = 3600 s / 4: each releases one child of 10 / 4 = 2.5.
    assert _bars(session, 24, [("100", "1"), ("101", "1"), ("102", "1"), ("103", "1")]) == 4
    session.refresh(parent)
    assert _children(session, parent) == [
        (D("2.5"), D(100)),
        (D("2.5"), D(101)),
        (D("2.5"), D(102)),
        (D("2.5"), D(103)),
    ]
    # (250 + 252.5 + 255 + 257.5) / 10 = 101.5; fees 0.1% of 1015 = 1.015
    assert (parent.status, parent.filled_quantity, parent.average_fill_price, parent.fee) == (
        "filled",
        D(10),
        D("101.5"),
        D("1.015"),
    )


def test_a_vwap_follows_the_volume_profile(session: Session) -> None:
    from tradebase.orders.service import order as order_service

    who, portfolio = _setup(session)
    # Two days of history at 14:00, 14:15, 14:30, 14:45: average volumes 100, 200, 200, 200.
    _bars(session, 22, [("50", "100"), ("50", "300"), ("50", "200"), ("50", "400")])
    _bars(session, 23, [("50", "100"), ("50", "100"), ("50", "200"), ("50", "0")])
    parent = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ALGO",
        side="buy",
        quantity=D(14),
        order_type="vwap",
        slices=4,
        duration_seconds=3600,
        lookback_days=5,
    )
    assert _bars(session, 24, [("60", "1"), ("60", "1"), ("60", "1"), ("60", "1")]) == 4
    session.refresh(parent)
    # 14 x 100/700 = 2, then 4, 4, and the remainder 4
    assert [q for q, _ in _children(session, parent)] == [D(2), D(4), D(4), D(4)]
    assert (parent.status, parent.filled_quantity) == ("filled", D(14))
