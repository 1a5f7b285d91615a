"""``updated_at`` moves on every update, through the ORM or raw SQL; ``created_at`` never does."""

from __future__ import annotations

import time

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tests.conftest import ScratchFactory
from tests.factories import create_account, create_user
from tradebase.core.db import create_db_engine
from tradebase.core.ddl import (
    _existing_triggers,
    ensure_updated_at_triggers,
    missing_updated_at_triggers,
    trigger_name,
)
from tradebase.portfolios.models import TradingAccount
from tradebase.schema import main_metadata


def _stamps(session: Session, account_id: int) -> tuple[object, object]:
    row = session.execute(
        select(TradingAccount.created_at, TradingAccount.updated_at).where(
            TradingAccount.id == account_id
        )
    ).one()
    return row[0], row[1]


def test_orm_update_moves_updated_at_only(session: Session) -> None:
    account = create_account(session, user=create_user(session))
    created, updated = _stamps(session, account.id)
    time.sleep(0.005)  # let the clock move past the insert's millisecond
    account.connection_status = "connected"
    session.flush()
    created2, updated2 = _stamps(session, account.id)
    assert created2 == created
    assert updated2 > updated  # type: ignore[operator]


def test_raw_sql_update_moves_updated_at(session: Session) -> None:
    account = create_account(session, user=create_user(session))
    created, updated = _stamps(session, account.id)
    time.sleep(0.005)
    session.execute(
        text("UPDATE trading_accounts SET connection_status = 'error' WHERE id = :id"),
        {"id": account.id},
    )
    session.expire_all()
    created2, updated2 = _stamps(session, account.id)
    assert created2 == created
    assert updated2 > updated  # type: ignore[operator]


def test_every_table_with_updated_at_has_its_trigger(session: Session) -> None:
    connection = session.connection()
    assert missing_updated_at_triggers(connection, main_metadata.tables) == []
    with_column = {
        name
        for name, table in main_metadata.tables.items()
        if "updated_at" in table.c and not name.endswith("_archive")
    }
    triggers = {
        table for table, name in _existing_triggers(connection) if name == trigger_name(table)
    }
    assert triggers == with_column
    assert {"users", "orders", "positions", "trading_accounts", "strategies"} <= with_column


def test_triggers_touch_only_the_tables_named_and_survive_odd_names(
    scratch_factory: ScratchFactory, backend: str
) -> None:
    scratch = scratch_factory.new(backend, "triggers")
    engine = create_db_engine(scratch.main_url, scratch.settings())
    odd = "Order-Items_" + "x" * 50  # mixed case, a dash, and too long for a plain name
    foreign = "someone_elses_table"
    try:
        with engine.begin() as conn:
            quote = conn.dialect.identifier_preparer.quote
            for name in (odd, foreign):
                conn.exec_driver_sql(
                    f"CREATE TABLE {quote(name)} (id INTEGER PRIMARY KEY, note VARCHAR(10),"
                    f" updated_at {'TIMESTAMP' if backend == 'postgresql' else 'DATETIME'})"
                )
            assert ensure_updated_at_triggers(conn, [odd, "not_there"]) == [odd]
            assert ensure_updated_at_triggers(conn, [odd]) == []  # a second run does nothing
            assert missing_updated_at_triggers(conn, [odd, foreign]) == [foreign]
            conn.exec_driver_sql(f"INSERT INTO {quote(odd)} (id, note) VALUES (1, 'a')")
            conn.exec_driver_sql(f"UPDATE {quote(odd)} SET note = 'b' WHERE id = 1")
            stamped = conn.exec_driver_sql(f"SELECT updated_at FROM {quote(odd)}").scalar()
            assert stamped is not None
    finally:
        with engine.begin() as conn:
            for name in (odd, foreign):
                conn.exec_driver_sql(
                    f"DROP TABLE IF EXISTS {conn.dialect.identifier_preparer.quote(name)}"
                )
        engine.dispose()
