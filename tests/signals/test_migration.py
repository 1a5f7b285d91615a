"""main_0009 (signals inbox) upgrades, keeps the sender's order_id, and downgrades."""

from __future__ import annotations

from sqlalchemy import inspect, text

from tests.conftest import Scratch
from tradebase.core import migrate
from tradebase.core.db import Database, create_db_engine


def test_inbox_migration_up_down_up(scratch: Scratch) -> None:
    settings = scratch.settings()
    migrate.upgrade(Database.main, "main_0008", settings=settings)
    engine = create_db_engine(scratch.main_url, settings, pooled=False)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (username, email, password_hash, role, settings)"
                    " VALUES ('old', 'old@example.com', 'x', 'trader', '{}')"
                )
            )
            user_id = conn.execute(text("SELECT id FROM users WHERE username = 'old'")).scalar()
            conn.execute(
                text(
                    "INSERT INTO signals (user_id, order_id, source, status, hedging_enabled,"
                    " received_at) VALUES (:u, 'Long', 'webhook', 'processed', false,"
                    " CURRENT_TIMESTAMP)"
                ),
                {"u": user_id},
            )
        migrate.upgrade(Database.main, "head", settings=settings)
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT order_id, sender_order_id, order_id_shifted FROM signals")
            ).one()
            assert tuple(row) == ("Long", "Long", "Long")
            indexes = {i["name"]: i for i in inspect(conn).get_indexes("signals")}
            assert indexes["uq_signals_user_order_id_shifted"]["unique"]
        migrate.downgrade(Database.main, "main_0008", settings=settings)
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("signals")}
            assert "sender_order_id" not in columns and "order_id_shifted" not in columns
            assert conn.execute(text("SELECT order_id FROM signals")).scalar() == "Long"
        migrate.upgrade(Database.main, "head", settings=settings)
        assert migrate.current_revision(Database.main, settings=settings) == migrate.head_revision(
            Database.main
        )
    finally:
        engine.dispose()
