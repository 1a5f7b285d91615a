"""Exact decimals: unit rules, and round trips through every engine."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tests.factories import create_account, create_portfolio, create_user
from tradebase.core.money import canonical, check_fits, to_decimal, to_text
from tradebase.orders.models import Trade

ROUND_TRIP = ["0.1", "0.2", "0.00000001", "12345678901.12345678", "99999999.99999999"]


def test_to_decimal_takes_floats_by_their_shortest_repr() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal("  2.50 ") == Decimal("2.50")
    with pytest.raises(ValueError, match="not a decimal"):
        to_decimal("abc")
    with pytest.raises(ValueError, match="finite"):
        to_decimal("NaN")
    with pytest.raises(TypeError):
        to_decimal(True)


def test_canonical_strips_zeros_without_exponents() -> None:
    assert str(canonical(Decimal("100.000"))) == "100"
    assert str(canonical(Decimal("0.100"))) == "0.1"
    assert str(canonical(Decimal("-0.0"))) == "0"
    assert to_text(Decimal("1E+3")) == "1000"


def test_values_that_do_not_fit_are_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="18 decimal places"):
        check_fits(Decimal("0.0000000000000000001"))
    with pytest.raises(ValueError, match="20 integer digits"):
        check_fits(Decimal("123456789012345678901"))
    assert check_fits(Decimal("99999999999999999999.999999999999999999"))


@given(
    st.decimals(
        min_value=Decimal("-99999999999999999999"),
        max_value=Decimal("99999999999999999999"),
        places=18,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_text_form_round_trips(value: Decimal) -> None:
    assert Decimal(to_text(value)) == value


def _trade(session: Session, portfolio_id: int, user_id: int, **values: object) -> Trade:
    fields: dict[str, object] = {
        "symbol": "BTC/USDT",
        "exchange": "paper",
        "side": "buy",
        "quantity": Decimal("1"),
        "price": Decimal("1"),
        "value": Decimal("1"),
    }
    fields.update(values)
    trade = Trade(user_id=user_id, portfolio_id=portfolio_id, **fields)
    session.add(trade)
    return trade


@pytest.fixture
def portfolio_ids(session: Session) -> tuple[int, int]:
    user = create_user(session)
    portfolio = create_portfolio(session, account=create_account(session, user=user))
    return portfolio.id, user.id


def test_decimals_round_trip_exactly(session: Session, portfolio_ids: tuple[int, int]) -> None:
    ids = []
    for raw in ROUND_TRIP:
        trade = _trade(session, *portfolio_ids, price=Decimal(raw), fee=Decimal(raw))
        session.flush()
        ids.append(trade.id)
    session.expunge_all()
    for raw, trade_id in zip(ROUND_TRIP, ids, strict=True):
        stored = session.get(Trade, trade_id)
        assert stored is not None
        assert stored.price == Decimal(raw)
        assert format(stored.price, "f") == raw  # same digits, not just the same value
        assert isinstance(stored.fee, Decimal)


def test_ten_fees_of_a_tenth_add_up_to_one(
    session: Session, portfolio_ids: tuple[int, int], backend: str
) -> None:
    for _ in range(10):
        _trade(session, *portfolio_ids, fee=Decimal("0.1"))
    session.flush()
    session.expunge_all()
    fees = session.scalars(select(Trade.fee).where(Trade.portfolio_id == portfolio_ids[0])).all()
    assert sum(fees, Decimal(0)) == Decimal("1")
    if backend != "sqlite":  # SQLite's SUM over text goes through binary floats
        total = session.scalar(
            select(func.sum(Trade.fee)).where(Trade.portfolio_id == portfolio_ids[0])
        )
        assert total == Decimal("1")
        raw_total = session.execute(
            text("SELECT SUM(fee) FROM trades WHERE portfolio_id = :p"), {"p": portfolio_ids[0]}
        ).scalar()
        assert raw_total == Decimal("1")


def test_floats_are_refused_on_the_way_in(session: Session, portfolio_ids: tuple[int, int]) -> None:
    _trade(session, *portfolio_ids, fee=0.1)
    with pytest.raises(Exception, match="float"):
        session.flush()
    session.rollback()


def test_ordering_comparisons_are_numeric_on_every_engine(
    session: Session, portfolio_ids: tuple[int, int]
) -> None:
    for raw in ("9", "10", "100", "0.5", "-3"):
        _trade(session, *portfolio_ids, pnl=Decimal(raw))
    session.flush()
    above = session.scalars(
        select(Trade.pnl).where(Trade.portfolio_id == portfolio_ids[0], Trade.pnl > Decimal("9.5"))
    ).all()
    assert sorted(above) == [Decimal("10"), Decimal("100")]
    exact = session.scalars(
        select(Trade.pnl).where(
            Trade.portfolio_id == portfolio_ids[0], Trade.pnl == Decimal("0.50")
        )
    ).all()
    assert exact == [Decimal("0.5")]
