"""Prepared statements (core/prepared.py) and attached rows (core/models.py) behave like
SQLAlchemy's own execution and loading, on every engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy import Table, bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from tests.factories import create_account, create_order, create_portfolio, create_user
from tradebase.core.models import attach, load
from tradebase.core.prepared import Prepared, connection_of
from tradebase.metrics.models import SystemMetric
from tradebase.orders.models import Order
from tradebase.portfolios.models import Portfolio

_metrics = cast(Table, SystemMetric.__table__)
_orders = cast(Table, Order.__table__)
INSERT_METRIC = Prepared(insert(_metrics).returning(_metrics.c.id))
READ_METRICS = Prepared(
    select(_metrics.c.id, _metrics.c.timestamp, _metrics.c.cpu_percent, _metrics.c.memory_mb)
    .where(_metrics.c.component == bindparam("component"))
    .order_by(_metrics.c.id)
)
SET_CPU = Prepared(
    update(_metrics)
    .where(_metrics.c.component == bindparam("which"))
    .values(cpu_percent=bindparam("cpu"))
)
AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def metric(component: str, cpu: str, at: datetime = AT) -> dict[str, Any]:
    return {"component": component, "timestamp": at, "cpu_percent": Decimal(cpu)}


def test_rows_come_back_as_sqlalchemy_reads_them(session: Session) -> None:
    first = INSERT_METRIC.scalar(session, metric("prep-a", "12.50"))
    INSERT_METRIC.run_many(
        session,
        [metric("prep-a", "0.000000000000000001"), metric("prep-a", "99", AT + timedelta(1))],
    )
    rows = READ_METRICS.rows(session, {"component": "prep-a"})
    assert isinstance(first, int) and rows[0].id == first
    assert [(r.cpu_percent, r.memory_mb) for r in rows] == [
        (Decimal("12.5"), None),
        (Decimal("0.000000000000000001"), None),
        (Decimal("99"), None),
    ]
    assert [str(r.cpu_percent) for r in rows] == ["12.5", "1E-18", "99"]  # canonical
    assert rows[0].timestamp == AT and rows[0].timestamp.tzinfo is not None
    orm = session.execute(
        select(SystemMetric.cpu_percent, SystemMetric.timestamp)
        .where(SystemMetric.component == "prep-a")
        .order_by(SystemMetric.id)
    ).all()
    assert [(r.cpu_percent, r.timestamp) for r in rows] == [tuple(r) for r in orm]


def test_run_counts_the_rows_it_changed(session: Session) -> None:
    for cpu in ("1", "2", "3"):
        INSERT_METRIC.run(session, metric("prep-b", cpu))
    assert SET_CPU.run(session, {"which": "prep-b", "cpu": Decimal("7.25")}) == 3
    assert SET_CPU.run(session, {"which": "nothing", "cpu": Decimal(1)}) == 0
    stored = session.scalars(
        select(SystemMetric.cpu_percent).where(SystemMetric.component == "prep-b")
    ).all()
    assert stored == [Decimal("7.25")] * 3


def test_an_aware_time_in_another_zone_is_stored_as_utc(session: Session) -> None:
    ahead = AT.astimezone(timezone(timedelta(hours=5, minutes=30)))
    INSERT_METRIC.run(session, metric("prep-c", "1", ahead))
    (row,) = READ_METRICS.rows(session, {"component": "prep-c"})
    assert row.timestamp == AT and row.timestamp.utcoffset() == timedelta(0)


def test_a_computed_default_must_be_given(session: Session) -> None:
    with pytest.raises(ValueError, match=r"system_metrics\.timestamp has a computed default"):
        INSERT_METRIC.run(session, {"component": "prep-d"})
    with pytest.raises(StatementError, match="float"):
        INSERT_METRIC.run(session, {**metric("prep-d", "1"), "cpu_percent": 1.5})


def test_constant_defaults_are_applied(session: Session) -> None:
    user = create_user(session)
    portfolio = create_portfolio(session, account=create_account(session, user=user))
    insert_order = Prepared(insert(_orders).returning(_orders.c.id))
    order_id = insert_order.scalar(
        session,
        {
            "user_id": user.id,
            "account_id": portfolio.account_id,
            "portfolio_id": portfolio.id,
            "symbol": "ACME",
            "exchange": "paper",
            "side": "buy",
            "order_type": "market",
            "quantity": Decimal(2),
            "created_at": AT,
            "updated_at": AT,
        },
    )
    row = session.execute(
        text("SELECT status, product, time_in_force FROM orders WHERE id = :id"), {"id": order_id}
    ).one()
    assert tuple(row) == ("pending", "NRML", "GTC")  # the models' defaults, not NULL


def test_driver_errors_are_sqlalchemys(session: Session) -> None:
    user = create_user(session)
    portfolio = create_portfolio(session, account=create_account(session, user=user))
    create_order(session, portfolio=portfolio, client_order_id="prep-dup")
    insert_order = Prepared(insert(_orders))
    values = {
        "user_id": user.id,
        "account_id": portfolio.account_id,
        "portfolio_id": portfolio.id,
        "client_order_id": "prep-dup",
        "symbol": "ACME",
        "exchange": "paper",
        "side": "buy",
        "order_type": "market",
        "quantity": Decimal(1),
        "created_at": AT,
        "updated_at": AT,
    }
    with pytest.raises(IntegrityError), session.begin_nested():
        insert_order.run(session, values)
    with pytest.raises(IntegrityError), session.begin_nested():  # CHECK quantity > 0
        insert_order.run(session, {**values, "client_order_id": "other", "quantity": Decimal(-1)})


def test_a_rolled_back_savepoint_takes_the_rows_with_it(session: Session) -> None:
    INSERT_METRIC.run(session, metric("prep-e", "1"))
    with pytest.raises(RuntimeError), session.begin_nested():
        INSERT_METRIC.run(session, metric("prep-e", "2"))
        raise RuntimeError("undo")
    assert [r.cpu_percent for r in READ_METRICS.rows(session, {"component": "prep-e"})] == [1]


def test_the_connection_is_remembered_per_transaction(migrated: Any) -> None:
    with Session(migrated.main) as session:
        first = connection_of(session)
        assert connection_of(session) is first is session.connection()
        session.commit()
        second = connection_of(session)
        assert second is session.connection()
        session.rollback()


def test_attach_gives_a_loaded_object_and_load_the_one_the_session_holds(
    session: Session,
) -> None:
    user = create_user(session)
    account = create_account(session, user=user)
    portfolio = create_portfolio(session, account=account, cash="12.50")
    assert load(session, Portfolio, {"id": portfolio.id}) is portfolio
    session.expunge(portfolio)
    row = session.execute(select(*cast(Table, Portfolio.__table__).c).where(
        cast(Table, Portfolio.__table__).c.id == portfolio.id
    )).one()  # fmt: skip
    loaded = load(session, Portfolio, dict(row._mapping))
    assert loaded is not portfolio and loaded.cash_balance_usd == Decimal("12.5")
    assert session.get(Portfolio, portfolio.id) is loaded  # in the identity map, no query
    assert loaded not in session.dirty
    with pytest.raises(ValueError, match=r"Order\.id is needed"):
        attach(session, Order, {"symbol": "ACME"})


def test_a_rolled_back_savepoint_forgets_what_core_wrote(session: Session) -> None:
    # move_cash writes the balance with Core and tells the loaded portfolio; a rollback
    # must not leave the object with the undone balance, nor an attached row that is gone.
    from tradebase.core.auth import Principal
    from tradebase.portfolios.models import CashMovementKind
    from tradebase.portfolios.service import portfolio as portfolio_service

    user = create_user(session)
    portfolio = create_portfolio(session, account=create_account(session, user=user), cash="100")
    savepoint = session.begin_nested()
    portfolio_service.move_cash(session, portfolio, Decimal("-40"), CashMovementKind.withdrawal)
    assert portfolio.cash_balance_usd == Decimal(60)
    order = attach(session, Order, {**_order_values(portfolio), "id": 10**9})
    savepoint.rollback()
    assert portfolio.cash_balance_usd == Decimal(100)  # reloaded from the row
    assert order not in session
    who = Principal(user_id=user.id, username=user.username, role="trader")
    assert portfolio_service.get(session, who, portfolio.id) is portfolio


def _order_values(portfolio: Portfolio) -> dict[str, Any]:
    return {
        "user_id": portfolio.user_id,
        "account_id": portfolio.account_id,
        "portfolio_id": portfolio.id,
        "symbol": "ACME",
        "exchange": "paper",
        "side": "buy",
        "order_type": "market",
        "quantity": Decimal(1),
        "created_at": AT,
        "updated_at": AT,
    }
