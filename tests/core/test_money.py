"""Exact decimals: unit rules, and round trips through every engine."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import bindparam, func, select, text, update
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
    with pytest.raises(ValueError, match="decimal places"):
        check_fits(Decimal("1." + "0" * 59 + "1"))  # 61 significant digits
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
    mine = Trade.portfolio_id == portfolio_ids[0]
    fees = session.scalars(select(Trade.fee).where(mine)).all()
    assert sum(fees, Decimal(0)) == Decimal("1")
    # SQL SUM too: NUMERIC on the servers, Tradebase's decimal aggregate on SQLite.
    assert session.scalar(select(func.sum(Trade.fee)).where(mine)) == Decimal("1")
    if backend != "sqlite":  # the servers' own SUM, as any SQL client runs it
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


PNLS = [
    "9",
    "10",
    "100",
    "0.5",
    "-3",
    "-10",
    "12345678901.12345678",
    "12345678901.12345679",
    "1.00000000000000001",
    "1",
]


@pytest.fixture
def pnls(session: Session, portfolio_ids: tuple[int, int]) -> Callable[..., list[Decimal]]:
    for raw in PNLS:
        _trade(session, *portfolio_ids, pnl=Decimal(raw))
    session.flush()
    mine = Trade.portfolio_id == portfolio_ids[0]

    def query(*where: Any, order: Any = None) -> list[Decimal]:
        statement = select(Trade.pnl).where(mine, *where)
        if order is not None:
            statement = statement.order_by(order)
        return list(session.scalars(statement).all())

    return query


def test_sql_ordering_of_decimals_is_numeric_and_exact(pnls: Callable[..., list[Decimal]]) -> None:
    # Worked out by hand: numeric order, telling apart values that differ in the 19th digit.
    expected = sorted(Decimal(p) for p in PNLS)
    assert pnls(order=Trade.pnl) == expected
    assert pnls(order=Trade.pnl.desc()) == expected[::-1]
    assert sorted(pnls(Trade.pnl.between(Decimal(9), Decimal(10)))) == [Decimal(9), Decimal(10)]
    assert pnls(Trade.pnl > Decimal("12345678901.12345678")) == [Decimal("12345678901.12345679")]
    assert pnls(Trade.pnl > 1, Trade.pnl < 2) == [Decimal("1.00000000000000001")]
    assert sorted(pnls(Trade.pnl.in_([Decimal("1.0"), Decimal("-3")]))) == [Decimal(-3), Decimal(1)]
    floor = bindparam("floor", Decimal("99"))  # a bind parameter typed by the comparison
    assert sorted(pnls(Trade.pnl > floor)) == [
        Decimal("100"),
        Decimal("12345678901.12345678"),
        Decimal("12345678901.12345679"),
    ]


def test_sql_min_max_and_sum_are_exact(
    session: Session, portfolio_ids: tuple[int, int], pnls: Callable[..., list[Decimal]]
) -> None:
    mine = Trade.portfolio_id == portfolio_ids[0]
    low, high, total = session.execute(
        select(func.min(Trade.pnl), func.max(Trade.pnl), func.sum(Trade.pnl)).where(mine)
    ).one()
    assert (low, high) == (Decimal("-10"), Decimal("12345678901.12345679"))
    # 9+10+100+0.5-3-10+12345678901.12345678+12345678901.12345679+1.00000000000000001+1
    assert total == Decimal("24691357910.74691357000000001")


def test_sql_arithmetic_on_decimals_is_exact(
    session: Session, portfolio_ids: tuple[int, int]
) -> None:
    trade = _trade(session, *portfolio_ids, pnl=Decimal("12345678901.12345678"))
    session.flush()
    session.execute(
        update(Trade)
        .where(Trade.id == trade.id)
        .values(pnl=Trade.pnl + Decimal("0.00000000000000001"), fee=Trade.price * 3)
    )
    session.execute(update(Trade).where(Trade.id == trade.id).values(value=10 - Trade.price))
    session.expire_all()
    stored = session.get(Trade, trade.id)
    assert stored is not None
    assert stored.pnl == Decimal("12345678901.12345678000000001")
    assert (stored.fee, stored.value) == (Decimal(3), Decimal(9))
    assert session.scalar(select(Trade.id).where(Trade.fee == 3, Trade.id == trade.id)) == trade.id
    # Each operator compiles to its own SQL (the statement cache tells them apart).
    answers = [
        session.scalar(select(expression).where(Trade.id == trade.id))
        for expression in (Trade.fee + 2, Trade.fee - 2, Trade.fee * 2, Trade.fee / 2)
    ]
    assert answers == [Decimal(5), Decimal(1), Decimal(6), Decimal("1.5")]
