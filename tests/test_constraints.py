"""The schema refuses bad rows and cascades deletes as the seeds say, on every engine."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tests.factories import create_account, create_order, create_portfolio, create_user
from tradebase.audit.models import AuditLog
from tradebase.orders.models import Order
from tradebase.portfolios.models import Portfolio, Position, TradingAccount


def refused(session: Session, write: Callable[[], object]) -> IntegrityError:
    """Run *write* in a savepoint and return the IntegrityError it must raise."""
    with pytest.raises(IntegrityError) as info, session.begin_nested():
        write()
        session.flush()
    session.expunge_all()
    return info.value


@pytest.fixture
def portfolio(session: Session) -> Portfolio:
    user = create_user(session)
    return create_portfolio(session, account=create_account(session, user=user))


def test_duplicate_client_order_id_is_refused(session: Session, portfolio: Portfolio) -> None:
    create_order(session, portfolio=portfolio, client_order_id="sig-1-acct-1-leg-0")
    error = refused(
        session,
        lambda: create_order(session, portfolio=portfolio, client_order_id="sig-1-acct-1-leg-0"),
    )
    assert "client" in str(error).lower() or "unique" in str(error).lower()
    # Orders without a client id do not collide with each other.
    create_order(session, portfolio=portfolio)
    create_order(session, portfolio=portfolio)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("side", "hold"),
        ("order_type", "iceberg"),
        ("status", "done"),
        ("product", "XYZ"),
        ("time_in_force", "GTD"),
    ],
)
def test_bad_enum_values_are_refused(
    session: Session, portfolio: Portfolio, field: str, value: str
) -> None:
    def write() -> None:
        order = create_order(session, portfolio=portfolio)
        setattr(order, field, value)

    error = refused(session, write)
    assert f"ck_orders_{field}" in str(error) or "check" in str(error).lower()


@pytest.mark.parametrize("quantity", ["0", "-1", "-0.00000001"])
def test_zero_or_negative_order_quantity_is_refused(
    session: Session, portfolio: Portfolio, quantity: str
) -> None:
    refused(session, lambda: create_order(session, portfolio=portfolio, quantity=Decimal(quantity)))


def test_a_tiny_positive_quantity_is_accepted(session: Session, portfolio: Portfolio) -> None:
    order = create_order(session, portfolio=portfolio, quantity=Decimal("0.000000000000000001"))
    session.expunge_all()
    assert session.get(Order, order.id).quantity == Decimal("0.000000000000000001")  # type: ignore[union-attr]


def test_filled_quantity_cannot_exceed_quantity(session: Session, portfolio: Portfolio) -> None:
    def write() -> None:
        order = create_order(session, portfolio=portfolio, quantity=Decimal("10"))
        order.filled_quantity = Decimal("10.5")

    refused(session, write)


def test_limit_order_needs_a_price(session: Session, portfolio: Portfolio) -> None:
    refused(session, lambda: create_order(session, portfolio=portfolio, order_type="limit"))


def test_two_character_account_name_is_refused(session: Session) -> None:
    user = create_user(session)
    refused(session, lambda: create_account(session, user=user, account_name="ab"))
    create_account(session, user=user, account_name="abc")


def test_account_names_are_unique_per_user(session: Session) -> None:
    alice, bob = create_user(session), create_user(session)
    create_account(session, user=alice, account_name="Zerodha main")
    create_account(session, user=bob, account_name="Zerodha main")
    refused(session, lambda: create_account(session, user=alice, account_name="Zerodha main"))


def test_one_open_position_per_side_many_closed(session: Session, portfolio: Portfolio) -> None:
    def position(status: str = "open") -> Position:
        row = Position(
            portfolio_id=portfolio.id,
            symbol="INFY",
            exchange="NSE",
            product="CNC",
            direction="long",
            quantity=Decimal("5"),
            entry_price=Decimal("1500.5"),
            status=status,
        )
        session.add(row)
        session.flush()
        return row

    position("closed")
    position("closed")
    opened = position("open")
    assert opened.open_slot == 1
    refused(session, position)
    # Raw SQL must keep open_slot in step with status.
    with pytest.raises(IntegrityError), session.begin_nested():
        session.execute(
            text("UPDATE positions SET status = 'closed' WHERE id = :id"), {"id": opened.id}
        )


def test_deleting_a_user_cascades_and_keeps_the_audit_trail(
    session: Session, portfolio: Portfolio
) -> None:
    user_id = portfolio.user_id
    create_order(session, portfolio=portfolio)
    session.add(AuditLog(user_id=user_id, actor="someone", action="login"))
    session.flush()
    session.expunge_all()
    # Delete with SQL, so that the database's ON DELETE rules, not the ORM, do the work.
    session.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})
    session.expunge_all()

    def count(model: type, column: object) -> int:
        return int(session.scalar(select(func.count()).select_from(model).where(column == user_id)))  # type: ignore[arg-type]

    assert count(TradingAccount, TradingAccount.user_id) == 0
    assert count(Portfolio, Portfolio.user_id) == 0
    assert count(Order, Order.user_id) == 0
    entry = session.scalars(select(AuditLog).where(AuditLog.actor == "someone")).one()
    assert entry.user_id is None
    assert entry.action == "login"
