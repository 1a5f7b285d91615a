"""Engines, sessions and the unit of work, for the main and the credentials database.

SQLite runs every connection with WAL, ``synchronous=NORMAL``, a busy timeout and
``foreign_keys=ON``. pysqlite's own transaction handling is switched off and SQLAlchemy
emits ``BEGIN`` itself (the recipe in SQLAlchemy's SQLite dialect docs), so savepoints work
and a writer can take the write lock up front with ``BEGIN IMMEDIATE``: a deferred
transaction that reads and then writes can fail with "database is locked" without ever
waiting, because its snapshot went stale while it read.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, ExceptionContext
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

from tradebase.config import Settings, get_settings
from tradebase.core.errors import TradebaseError
from tradebase.core.money import register_sqlite_functions

SQLITE_BEGIN_OPTION = "tradebase_sqlite_begin"


class Database(StrEnum):
    """The two databases: trading data, and the encrypted credentials kept apart from it."""

    main = "main"
    credentials = "credentials"


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


_BEGIN = {"": "BEGIN", "IMMEDIATE": "BEGIN IMMEDIATE", "EXCLUSIVE": "BEGIN EXCLUSIVE"}


# SQLite's busy handler polls with sleeps of up to 100 ms, so writer threads of one process
# that meet on the write lock wait far longer than the lock is held (a p99 of over a second
# at 8 concurrent webhooks, bench/bench_signals.py). The writing units of work of a process
# take turns on this lock instead, one per file engine (re-entrant: a nested one behaves as
# before); other processes still meet on SQLite's lock and the busy timeout.
class WriterLock:
    """Re-entrant for the thread that took it, and released by whichever thread ends the
    unit of work: FastAPI enters a dependency's unit of work in one thread-pool thread and
    leaves it in another, which a ``threading.RLock`` refuses ("cannot release un-acquired
    lock"). The owner is the thread that acquired it; a release names that owner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a plain Lock may be released by any thread
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, timeout: float) -> int | None:
        """Take the lock (or again, in its owner thread); the owner, or None on timeout."""
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return me
        if not self._lock.acquire(timeout=timeout):
            return None
        self._owner, self._depth = me, 1
        return me

    def release(self, owner: int) -> None:
        assert self._owner == owner, "released by a unit of work that does not hold it"
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()


_WRITERS: weakref.WeakKeyDictionary[Engine, WriterLock] = weakref.WeakKeyDictionary()
_WRITER_WAIT_SECONDS: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()
# The settings each engine was made with: what goes with its data (the credentials' key
# store) follows the engine, not the environment of the moment (several apps, or a
# command under its own environment, can share a process).
_ENGINE_SETTINGS: weakref.WeakKeyDictionary[Engine, Settings] = weakref.WeakKeyDictionary()


def settings_of_engine(bind: Engine | Connection) -> Settings | None:
    """The settings *bind*'s engine was created with (`create_db_engine`), if it was."""
    return _ENGINE_SETTINGS.get(bind.engine)


def _install_sqlite_hooks(engine: Engine, busy_timeout_ms: int, memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, see do_begin
        register_sqlite_functions(dbapi_connection)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            # Savepoint journals in memory, not in temporary files: each signal of a group
            # runs in a savepoint, and with files every page it touched was written out
            # first (an INSERT into orders 190 µs instead of 75, docs/benchmarks.md).
            cursor.execute("PRAGMA temp_store = MEMORY")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _do_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        engine_level = getattr(conn.dialect, "isolation_level", None)
        if "AUTOCOMMIT" in (options.get("isolation_level"), engine_level):
            return
        mode = options.get(SQLITE_BEGIN_OPTION, "")
        # Straight to the driver: no statement events for BEGIN, and a third of the cost
        # of an empty unit of work (bench/bench_orders.py).
        statement = _BEGIN[mode]
        _to_driver(conn, statement)

    # Savepoints straight to the driver too: SQLAlchemy compiles and runs each as a
    # statement (~0.2 ms), and signals take one per signal (signals/batch.py).
    quote = engine.dialect.identifier_preparer.quote
    for method, sql in (
        ("do_savepoint", "SAVEPOINT {}"),
        ("do_release_savepoint", "RELEASE SAVEPOINT {}"),
        ("do_rollback_to_savepoint", "ROLLBACK TO SAVEPOINT {}"),
    ):

        def run(conn: Connection, name: str, sql: str = sql) -> None:
            _to_driver(conn, sql.format(quote(name)))

        setattr(engine.dialect, method, run)


def _to_driver(conn: Connection, statement: str) -> None:
    """Run *statement* on the SQLite driver's connection, without statement events."""
    try:
        conn.connection.dbapi_connection.execute(statement)  # type: ignore[union-attr]
    except sqlite3.Error as error:  # as SQLAlchemy would raise it: OperationalError …
        raise DBAPIError.instance(
            statement, (), error, sqlite3.Error, dialect=conn.dialect
        ) from error


def _install_mysql_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # CURRENT_TIMESTAMP and NOW() answer in UTC, like every other engine here.
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute(
                "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode,"
                " 'STRICT_TRANS_TABLES', 'NO_ZERO_DATE', 'ERROR_FOR_DIVISION_BY_ZERO')"
            )
        finally:
            cursor.close()

    @event.listens_for(engine, "handle_error")
    def _check_violation_is_integrity_error(context: ExceptionContext) -> None:
        # PyMySQL reports a failed CHECK (MySQL 3819, MariaDB 4025) as an OperationalError;
        # it is a refused row like any other constraint, so raise it as one.
        original = context.original_exception
        code = original.args[0] if original is not None and original.args else None
        if code in _MYSQL_CHECK_VIOLATIONS:
            raise IntegrityError(context.statement, context.parameters, original) from original


_MYSQL_CHECK_VIOLATIONS = (3819, 4025)


def create_db_engine(
    url: URL, settings: Settings | None = None, *, pooled: bool = True, **kwargs: Any
) -> Engine:
    """Create an engine for *url* with Tradebase's per-engine connection settings.

    ``pooled=False`` opens a fresh connection each time (migrations and one-shot tools,
    whose connection-level settings must not leak into a pool).
    """
    settings = settings or get_settings()
    backend = url.get_backend_name()
    extra_connect_args = kwargs.pop("connect_args", {})
    options: dict[str, Any] = {}
    if backend == "sqlite":
        memory = _is_memory(url)
        options["connect_args"] = {"check_same_thread": False, **extra_connect_args}
        if memory:
            options["poolclass"] = StaticPool
        elif not pooled:
            options["poolclass"] = NullPool
        else:
            options["pool_size"] = settings.pool_size
            options["max_overflow"] = settings.max_overflow
            options["pool_timeout"] = settings.pool_timeout
        options.update(kwargs)
        engine = create_engine(url, **options)
        _ENGINE_SETTINGS[engine] = settings
        _install_sqlite_hooks(engine, settings.sqlite_busy_timeout_ms, memory)
        if not memory:
            _WRITERS[engine] = WriterLock()
            _WRITER_WAIT_SECONDS[engine] = settings.sqlite_busy_timeout_ms / 1000
        return engine
    if pooled:
        options.update(
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_recycle=settings.pool_recycle,
            pool_pre_ping=settings.pool_pre_ping,
        )
    else:
        options["poolclass"] = NullPool
    connect_args = dict(extra_connect_args)
    if backend == "postgresql":
        connect_args.setdefault("options", "-c timezone=UTC")
    if connect_args:
        options["connect_args"] = connect_args
    options.update(kwargs)
    engine = create_engine(url, **options)
    _ENGINE_SETTINGS[engine] = settings
    if backend in ("mysql", "mariadb"):
        _install_mysql_hooks(engine)
    return engine


def database_url(database: Database, settings: Settings | None = None) -> URL:
    settings = settings or get_settings()
    return settings.main_url if database is Database.main else settings.credentials_url


def ensure_sqlite_parent(url: URL) -> None:
    """Create the folder of a SQLite file database (the default ``tradebase-data/``)."""
    if url.get_backend_name() == "sqlite" and not _is_memory(url) and url.database:
        from pathlib import Path

        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


class Engines:
    """Lazily created engines and session factories for both databases, one set per process."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._engines: dict[Database, Engine] = {}
        self._factories: dict[Database, sessionmaker[Session]] = {}

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def engine(self, database: Database = Database.main) -> Engine:
        if database not in self._engines:
            url = database_url(database, self.settings)
            ensure_sqlite_parent(url)
            self._engines[database] = create_db_engine(url, self.settings)
        return self._engines[database]

    def session_factory(self, database: Database = Database.main) -> sessionmaker[Session]:
        if database not in self._factories:
            self._factories[database] = sessionmaker(
                bind=self.engine(database), expire_on_commit=False, autoflush=True
            )
        return self._factories[database]

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        self._factories.clear()


engines = Engines()


@contextmanager
def unit_of_work(
    database: Database = Database.main,
    *,
    write: bool = True,
    factory: sessionmaker[Session] | None = None,
) -> Iterator[Session]:
    """One transaction: commit when the block ends normally, roll back when it raises.

    On SQLite a writing unit of work starts with ``BEGIN IMMEDIATE`` so that it holds the
    write lock from its first statement; ``write=False`` starts a plain read transaction.
    """
    factory = factory or engines.session_factory(database)
    with factory() as session, _turn(session, write):
        if write and session.get_bind().dialect.name == "sqlite":
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        try:
            yield session
        except TradebaseError as exc:
            if exc.commit_work:
                session.commit()
            else:
                session.rollback()
            raise
        except BaseException:
            session.rollback()
            raise
        else:
            session.commit()


@contextmanager
def _held(lock: WriterLock, timeout: float) -> Iterator[None]:
    """Hold *lock*, waiting at most *timeout* seconds: past it, go on without it and let
    SQLite's own lock and busy timeout decide (so that two units of work nested in
    opposite orders across the two databases cannot wait on each other for ever)."""
    owner = lock.acquire(timeout=timeout)
    try:
        yield
    finally:
        if owner is not None:
            lock.release(owner)


def _turn(session: Session, write: bool) -> Any:
    """The writer lock of a SQLite file engine (held until the commit), else nothing."""
    bind = session.get_bind()
    if not write or not isinstance(bind, Engine) or bind not in _WRITERS:
        return nullcontext()
    return _held(_WRITERS[bind], _WRITER_WAIT_SECONDS.get(bind, 30.0))
