"""Per-engine connection settings and the unit of work."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.conftest import Migrated, ScratchFactory
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, create_db_engine, unit_of_work
from tradebase.metrics.models import BotMetric


def test_sqlite_connections_are_configured(scratch_factory: ScratchFactory) -> None:
    scratch = scratch_factory.new("sqlite", "pragmas")
    settings = scratch.settings().model_copy(update={"sqlite_busy_timeout_ms": 1234})
    engine = create_db_engine(scratch.main_url, settings)
    with engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in (
                "journal_mode", "synchronous", "busy_timeout", "foreign_keys", "temp_store"
            )
        }  # fmt: skip
    engine.dispose()
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 1234,
        "foreign_keys": 1,
        "temp_store": 2,  # memory: savepoint journals are not written to temporary files
    }


def test_a_writing_unit_of_work_holds_the_sqlite_write_lock_from_its_start(
    scratch_factory: ScratchFactory,
) -> None:
    scratch = scratch_factory.new("sqlite", "immediate")
    settings = scratch.settings()
    migrate.upgrade(Database.main, settings=settings)
    factory = Engines(settings).session_factory(Database.main)
    other = sqlite3.connect(scratch.main_url.database, timeout=0, isolation_level=None)
    with unit_of_work(factory=factory, write=False) as session:
        session.execute(text("SELECT 1"))
        other.execute("BEGIN IMMEDIATE")  # a reader does not block a writer
        other.execute("ROLLBACK")
    with unit_of_work(factory=factory) as session:
        session.execute(text("SELECT 1"))  # has not written anything yet
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        session.add(BotMetric(bot_type="telegram"))
    other.execute("BEGIN IMMEDIATE")  # released at commit
    other.execute("ROLLBACK")
    other.close()


def test_a_unit_of_work_is_one_transaction(scratch_factory: ScratchFactory) -> None:
    scratch = scratch_factory.new("sqlite", "uow")
    settings = scratch.settings()
    migrate.upgrade(Database.main, settings=settings)
    factory = Engines(settings).session_factory(Database.main)
    with pytest.raises(RuntimeError), unit_of_work(factory=factory) as session:
        session.add(BotMetric(bot_type="telegram"))
        session.flush()
        raise RuntimeError("half-way")
    with unit_of_work(factory=factory, write=False) as session:
        assert session.execute(text("SELECT count(*) FROM bot_metrics")).scalar() == 0


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_server_engines_use_the_pool_settings(migrated: Migrated) -> None:
    settings = migrated.scratch.settings().model_copy(
        update={"pool_size": 3, "max_overflow": 2, "pool_timeout": 7.0, "pool_recycle": 99}
    )
    engine = create_db_engine(migrated.scratch.main_url, settings)
    pool = engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout, pool._recycle, pool._pre_ping) == (  # type: ignore[attr-defined]
        3,
        2,
        7.0,
        99,
        True,
    )
    with engine.connect() as conn:
        if migrated.backend == "postgresql":
            assert conn.exec_driver_sql("SHOW TIME ZONE").scalar() == "UTC"
        else:
            assert conn.exec_driver_sql("SELECT @@session.time_zone").scalar() == "+00:00"
    engine.dispose()


def test_autocommit_sqlite_connections_commit_each_statement(
    scratch_factory: ScratchFactory,
) -> None:
    scratch = scratch_factory.new("sqlite", "autocommit")
    settings = scratch.settings()
    migrate.upgrade(Database.main, settings=settings)
    engine = create_db_engine(scratch.main_url, settings)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(
            "INSERT INTO bot_metrics (bot_type, timestamp)"
            " VALUES ('a', '2026-01-01 00:00:00.000000')"
        )
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM bot_metrics").scalar() == 1
    engine.dispose()


def test_sqlite_savepoints_go_to_the_driver_and_keep_their_meaning(
    scratch_factory: ScratchFactory,
) -> None:
    # SAVEPOINT, RELEASE and ROLLBACK TO are sent to the driver by core/db.py: a rolled-back
    # savepoint undoes only its own writes, a released one keeps them, nested ones work, and
    # the driver's error comes back as SQLAlchemy's.
    scratch = scratch_factory.new("sqlite", "savepoints")
    engine = create_db_engine(scratch.main_url, scratch.settings())
    sent: list[str] = []
    try:
        with engine.connect() as conn:
            conn.connection.dbapi_connection.set_trace_callback(sent.append)  # type: ignore[union-attr]
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
            conn.commit()
            with conn.begin():
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
                kept = conn.begin_nested()
                conn.exec_driver_sql("INSERT INTO t VALUES (2)")
                inner = conn.begin_nested()
                conn.exec_driver_sql("INSERT INTO t VALUES (3)")
                inner.rollback()
                kept.commit()
                undone = conn.begin_nested()
                conn.exec_driver_sql("INSERT INTO t VALUES (4)")
                undone.rollback()
            assert [r[0] for r in conn.exec_driver_sql("SELECT n FROM t ORDER BY n")] == [1, 2]
            with pytest.raises(OperationalError, match="no such savepoint"):
                engine.dialect.do_release_savepoint(conn, "never_made")
    finally:
        engine.dispose()
    savepoints = [s for s in sent if "SAVEPOINT" in s]
    assert savepoints == [
        "SAVEPOINT sa_savepoint_1",
        "SAVEPOINT sa_savepoint_2",
        "ROLLBACK TO SAVEPOINT sa_savepoint_2",
        "RELEASE SAVEPOINT sa_savepoint_1",
        "SAVEPOINT sa_savepoint_3",
        "ROLLBACK TO SAVEPOINT sa_savepoint_3",
        "RELEASE SAVEPOINT never_made",
    ]
