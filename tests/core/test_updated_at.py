"""``updated_at`` moves on every update, through the ORM or raw SQL; ``created_at`` never does."""

from __future__ import annotations

import time

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tests.factories import create_account, create_user
from tradebase.core.ddl import missing_updated_at_triggers, tables_with_updated_at
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
    assert missing_updated_at_triggers(session.connection()) == []
    with_column = {
        name
        for name, table in main_metadata.tables.items()
        if "updated_at" in table.c and not name.endswith("_archive")
    }
    assert set(tables_with_updated_at(session.connection())) == with_column
    assert {"users", "orders", "positions", "trading_accounts", "strategies"} <= with_column
