"""Database upkeep: ``tradebase db maintain``, and the worker's maintenance job.

Per engine, for the tables of Tradebase's schema (the SQLAlchemy metadata of each database
and its Alembic version table; other tables in the same database are not listed, and are
left alone but by SQLite's VACUUM and ANALYZE, which are of the whole file):

* SQLite: ``PRAGMA integrity_check`` first (a database that fails it is not vacuumed or
  analyzed, only reported), then ``ANALYZE`` and ``PRAGMA optimize``, ``VACUUM`` (which
  rewrites the whole file: on SQLite it is always "full") and
  ``PRAGMA wal_checkpoint(TRUNCATE)`` so the write-ahead log gives its space back too.
  Sizes per table (with its indexes) come from the ``dbstat`` virtual table when SQLite
  was built with it; else only the file's size is known.
* PostgreSQL: ``VACUUM (ANALYZE)`` per table, ``VACUUM (FULL, ANALYZE)`` with ``full``
  (which locks each table while it is rewritten), outside a transaction. Sizes are
  ``pg_total_relation_size`` (table, indexes and TOAST). The slowest statements come from
  ``pg_stat_statements`` when the extension is installed in the database and loaded.
* MariaDB/MySQL: ``OPTIMIZE TABLE`` (InnoDB recreates and analyzes the table) and
  ``ANALYZE TABLE``; sizes are ``data_length + index_length`` from
  ``information_schema.tables``; the slowest statements come from
  ``performance_schema.events_statements_summary_by_digest`` when performance_schema is ON.

Row counts are exact (``COUNT(*)``); on PostgreSQL ``estimate_rows`` takes
``pg_class.reltuples`` instead, which costs nothing on a big table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from tradebase.core import migrate
from tradebase.core.db import Database, Engines, create_db_engine

Progress = Callable[[str, int, int | None], None]

DBSTAT_QUERY = "SELECT name, pgsize FROM dbstat WHERE aggregate = TRUE"  # SQLite 3.31+
INTEGRITY_LIMIT = 10_000  # problems PRAGMA integrity_check reports at most
PG_STAT_STATEMENTS_FIX = (
    "CREATE EXTENSION pg_stat_statements in this database and add pg_stat_statements to"
    " shared_preload_libraries in postgresql.conf (restart the server)"
)
PERFORMANCE_SCHEMA_FIX = (
    "set performance_schema=ON under [mysqld] in the server's configuration and restart it"
)


class MaintainError(Exception):
    """Maintenance that cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class TableReport:
    """One table: its rows and the bytes it takes (table and indexes) where known."""

    name: str
    rows: int | None  # None: could not be counted (see DatabaseReport.problems)
    size: int | None  # bytes, table + indexes; None when the engine does not tell
    rows_estimated: bool = False


@dataclass(frozen=True)
class Statement:
    """One normalized statement as the engine recorded it."""

    query: str
    calls: int
    mean_ms: float
    total_ms: float


@dataclass
class DatabaseReport:
    database: Database
    engine: str  # "sqlite", "postgresql", "mariadb" or "mysql"
    target: str  # the file or the server database (no password)
    ran: list[str] = field(default_factory=list)  # what was run, in order
    # ["ok"], or the problems found; None where the engine has no check run here
    integrity: list[str] | None = None
    tables: list[TableReport] = field(default_factory=list)
    sizes_note: str | None = None  # why sizes per table are unknown
    size_before: int | None = None  # SQLite: bytes of the database before VACUUM
    size_after: int | None = None  # SQLite: after; PostgreSQL: pg_database_size
    statements: list[Statement] = field(default_factory=list)
    statements_note: str | None = None  # why there are no slowest statements
    notes: list[str] = field(default_factory=list)  # what the engine said along the way
    problems: list[str] = field(default_factory=list)  # errors of single steps
    seconds: float = 0.0

    @property
    def integrity_ok(self) -> bool:
        return self.integrity is None or self.integrity == ["ok"]

    @property
    def total_rows(self) -> int:
        return sum(t.rows or 0 for t in self.tables)

    @property
    def total_size(self) -> int | None:
        """The sum of the tables' sizes, or None where the engine does not tell them."""
        if not self.tables or any(t.size is None for t in self.tables):
            return None
        return sum(t.size or 0 for t in self.tables)

    @property
    def reclaimed(self) -> int | None:
        if self.size_before is None or self.size_after is None:
            return None
        return self.size_before - self.size_after

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["database"] = self.database.value
        data.update(
            integrity_ok=self.integrity_ok,
            total_rows=self.total_rows,
            total_size=self.total_size,
            reclaimed=self.reclaimed,
        )
        return data


def maintain(
    engines: Engines,
    databases: Sequence[Database],
    *,
    vacuum: bool = True,
    analyze: bool = True,
    full: bool = False,
    top: int = 10,
    estimate_rows: bool = False,
    progress: Progress | None = None,
) -> list[DatabaseReport]:
    """Vacuum, analyze and check each of *databases*; report their tables and sizes.

    ``full`` rewrites every table on PostgreSQL (``VACUUM FULL``: it takes an exclusive
    lock per table); SQLite's VACUUM and MariaDB's OPTIMIZE always rewrite. ``top`` is
    how many of the slowest statements to report (0: none). ``estimate_rows`` takes
    PostgreSQL's estimate instead of counting. ``progress(label, done, total)`` is called
    as the steps of each database go by. A failed integrity check is reported (see
    `DatabaseReport.integrity_ok`), not raised; an unreachable database raises
    `MaintainError`.
    """
    reports: list[DatabaseReport] = []
    files: dict[str, DatabaseReport] = {}  # SQLite files done: one may hold both databases
    for database in databases:
        started = time.monotonic()
        engine, owned = _engine(engines, database)
        file = _sqlite_file(engine)
        try:
            report = DatabaseReport(database, _engine_name(engine), _describe(engine))
            runner = _RUNNERS.get(engine.dialect.name)
            if runner is None:
                raise MaintainError(
                    f"{database.value} database: tradebase db maintain does not know the"
                    f" {engine.dialect.name} engine (SQLite, PostgreSQL, MariaDB and MySQL)"
                )
            job = _Job(database, report, vacuum, analyze, full, top, estimate_rows, progress)
            job.shared_with = files.get(file) if file else None
            try:
                conn = engine.connect()
            except DBAPIError as exc:
                variable = "CREDENTIALS_DATABASE_URL" if database is Database.credentials else ""
                raise MaintainError(
                    f"cannot connect to the {database.value} database at {report.target}:"
                    f" {str(exc.orig).strip()}; check TRADEBASE_{variable or 'DATABASE_URL'}"
                    " and that the server is running"
                ) from None
            with conn:
                # Outside any transaction: VACUUM needs that. On the one-shot engine this
                # does not leak into a pool.
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                report.engine = _engine_name(engine)  # MariaDB is known once connected
                job.names = _our_tables(conn, database)
                if not job.names:
                    raise MaintainError(
                        f"the {database.value} database at {report.target} has no Tradebase"
                        " tables: run tradebase db upgrade first"
                    )
                runner(conn, job)
        except DBAPIError as exc:
            reason = str(exc.orig).strip()
            raise MaintainError(
                f"maintaining the {database.value} database at {report.target} failed:"
                f" {reason}{_hint(reason)}"
            ) from exc
        finally:
            if owned:
                engine.dispose()
        report.seconds = time.monotonic() - started
        reports.append(report)
        if file:
            files.setdefault(file, report)
    return reports


def _sqlite_file(engine: Engine) -> str | None:
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return str(Path(str(url.database)).expanduser().resolve())


def _hint(reason: str) -> str:
    if "malformed" in reason:
        return "; restore the latest backup (tradebase db restore)"
    if "locked" in reason:
        return (
            "; another connection kept the database busy longer than"
            " TRADEBASE_SQLITE_BUSY_TIMEOUT_MS: run it again when the server is quiet, or"
            " with --no-vacuum"
        )
    return ""


def _engine(engines: Engines, database: Database) -> tuple[Engine, bool]:
    """A one-shot engine for *database* (its connection settings do not leak into the pool
    of *engines*), and whether it is ours to dispose of: an in-memory SQLite database is
    seen only through its own engine."""
    shared = engines.engine(database)
    url = shared.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return shared, False
    if "mode=memory" in str(url):
        return shared, False
    return create_db_engine(url, engines.settings, pooled=False), True


# --- shared ---------------------------------------------------------------------------


@dataclass
class _Job:
    database: Database
    report: DatabaseReport
    vacuum: bool
    analyze: bool
    full: bool
    top: int
    estimate_rows: bool
    progress: Progress | None
    names: list[str] = field(default_factory=list)
    shared_with: DatabaseReport | None = None  # SQLite: the file was maintained with it
    done: int = 0
    total: int = 0

    def start(self, steps: int) -> None:
        self.total = steps
        self.tick(0)

    def tick(self, steps: int = 1) -> None:
        self.done += steps
        if self.progress is not None:
            self.progress(f"maintaining {self.database.value}", self.done, self.total)

    def run(self, conn: Connection, sql: str, label: str | None = None) -> list[Any]:
        """Run *sql*, record it under *label* (default: the statement), return its rows."""
        result = conn.exec_driver_sql(sql)
        self.report.ran.append(label or sql)
        return list(result.fetchall()) if result.returns_rows else []


def _engine_name(engine: Engine) -> str:
    name = engine.dialect.name
    if name in ("mysql", "mariadb"):
        return "mariadb" if getattr(engine.dialect, "is_mariadb", False) else "mysql"
    return name


def _describe(engine: Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}" if url.database else "SQLite in memory"
    return url.render_as_string(hide_password=True)


def _our_tables(conn: Connection, database: Database) -> list[str]:
    """The tables of *database*'s schema (and its version table) that exist, by name."""
    from sqlalchemy import inspect

    from tradebase.schema import metadata_for

    wanted = set(metadata_for(database).tables) | {migrate.VERSION_TABLES[database]}
    present = set(inspect(conn).get_table_names())
    return sorted(wanted & present)


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def _count(conn: Connection, job: _Job, name: str) -> int | None:
    try:
        sql = f"SELECT COUNT(*) FROM {_quote(conn, name)}"  # noqa: S608 - a quoted identifier
        return int(conn.exec_driver_sql(sql).scalar_one())
    except DBAPIError as exc:
        job.report.problems.append(f"{name}: cannot count the rows: {exc.orig}")
        return None


def _sorted(tables: list[TableReport]) -> list[TableReport]:
    return sorted(tables, key=lambda t: (-(t.size or 0), t.name))


# --- SQLite ---------------------------------------------------------------------------


def _sqlite_size(conn: Connection) -> int:
    pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    return pages * int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())


def _sqlite(conn: Connection, job: _Job) -> None:
    report = job.report
    if job.shared_with is not None:  # one file for both databases: maintained already
        first = job.shared_with
        report.integrity = first.integrity
        report.notes.append(
            f"this file holds the {first.database.value} database too: it was checked,"
            f" analyzed and vacuumed with it"
        )
        job.start(len(job.names) + 1)
        report.size_after = _sqlite_size(conn)
        _sqlite_tables(conn, job)
        return
    job.start(1 + int(job.analyze) + int(job.vacuum) + len(job.names) + 1)
    try:
        rows = job.run(conn, f"PRAGMA integrity_check({INTEGRITY_LIMIT})", "PRAGMA integrity_check")
    except DBAPIError as exc:  # damage so bad that the check itself stops
        report.ran.append("PRAGMA integrity_check")
        report.integrity = [f"the check stopped: {exc.orig}"]
    else:
        report.integrity = [str(row[0]) for row in rows] or ["ok"]
        if len(rows) == INTEGRITY_LIMIT:
            report.integrity.append(f"(stopped after the first {INTEGRITY_LIMIT} problems)")
    job.tick()
    report.size_before = _sqlite_size(conn)
    if not report.integrity_ok:
        report.notes.append(
            "integrity check failed: VACUUM and ANALYZE were not run, so that nothing"
            " rewrites the damaged database"
        )
        job.tick(int(job.analyze) + int(job.vacuum))
    else:
        if job.analyze:
            job.run(conn, "ANALYZE")
            job.run(conn, "PRAGMA optimize")
            job.tick()
        if job.vacuum:
            job.run(conn, "VACUUM")
            journal = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()).lower()
            if journal == "wal":
                busy, log, moved = job.run(conn, "PRAGMA wal_checkpoint(TRUNCATE)")[0]
                if busy:
                    report.notes.append(
                        f"the write-ahead log could not be emptied ({moved} of {log} pages"
                        " copied back): other connections are reading; it shrinks at the"
                        " next checkpoint"
                    )
            job.tick()
    report.size_after = _sqlite_size(conn)
    _sqlite_tables(conn, job)


def _sqlite_tables(conn: Connection, job: _Job) -> None:
    sizes = _dbstat_sizes(conn, job.report)
    tables = []
    for name in job.names:
        tables.append(TableReport(name, _count(conn, job, name), sizes.get(name)))
        job.tick()
    job.report.tables = _sorted(tables)
    job.report.statements_note = "SQLite does not record statement times"
    job.tick()


def _dbstat_sizes(conn: Connection, report: DatabaseReport) -> dict[str, int]:
    """Bytes per table, its indexes included, from dbstat; {} when SQLite has no dbstat."""
    try:
        pages = conn.exec_driver_sql(DBSTAT_QUERY).fetchall()
    except DBAPIError as exc:
        if "no such table" in str(exc.orig):
            report.sizes_note = (
                "sizes per table are unavailable: this SQLite was built without the dbstat"
                " virtual table (SQLITE_ENABLE_DBSTAT_VTAB); the size is the whole file's"
            )
        else:
            report.sizes_note = f"sizes per table are unavailable: {exc.orig}"
        return {}
    owner: dict[str, str] = dict(
        conn.exec_driver_sql(
            "SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"
        ).fetchall()
    )
    sizes: dict[str, int] = {}
    for name, size in pages:
        table = owner.get(name, name)
        sizes[table] = sizes.get(table, 0) + int(size)
    return sizes


# --- PostgreSQL -----------------------------------------------------------------------


def _postgresql(conn: Connection, job: _Job) -> None:
    report = job.report
    per_table = int(job.vacuum or job.analyze) + 1
    job.start(len(job.names) * per_table + 2)
    options = [word for word, on in (("FULL", job.full), ("ANALYZE", job.analyze)) if on]
    command = None
    if job.vacuum:
        command = f"VACUUM ({', '.join(options)})" if options else "VACUUM"
    elif job.analyze:
        command = "ANALYZE"
    for name in job.names if command else []:
        sql = f"{command} {_quote(conn, name)}"
        try:
            job.run(conn, sql)
        except DBAPIError as exc:
            report.problems.append(f"{sql}: {exc.orig}")
        job.tick()
    stats = {
        str(name): (int(size), float(tuples))
        for name, size, tuples in conn.exec_driver_sql(
            "SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        ).fetchall()
    }
    tables = []
    for name in job.names:
        size, tuples = stats.get(name, (None, -1.0))
        if job.estimate_rows and tuples >= 0:  # -1: never vacuumed or analyzed
            tables.append(TableReport(name, int(tuples), size, rows_estimated=True))
        else:
            tables.append(TableReport(name, _count(conn, job, name), size))
        job.tick()
    report.tables = _sorted(tables)
    report.size_after = int(
        conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
    )
    job.tick()
    if job.top > 0:
        _pg_stat_statements(conn, job)
    else:
        report.statements_note = "not asked for (top 0)"
    job.tick()


def _pg_stat_statements(conn: Connection, job: _Job) -> None:
    report = job.report
    installed = conn.exec_driver_sql(
        "SELECT n.nspname, e.extversion FROM pg_extension e"
        " JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"
    ).first()
    if installed is None:
        report.statements_note = f"pg_stat_statements is not installed: {PG_STAT_STATEMENTS_FIX}"
        return
    schema, version = str(installed[0]), str(installed[1])
    # Before 1.8 (PostgreSQL 13) the times were mean_time and total_time.
    major, _, minor = version.partition(".")
    old = (int(major), int(minor or 0)) < (1, 8)
    mean, total = ("mean_time", "total_time") if old else ("mean_exec_time", "total_exec_time")
    view = f"{_quote(conn, schema)}.pg_stat_statements"
    query = text(
        f"SELECT query, calls, {mean}, {total} FROM {view}"  # noqa: S608 - quoted, fixed names
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        f" ORDER BY {mean} DESC LIMIT :top"
    )
    try:
        rows = conn.execute(query, {"top": job.top}).fetchall()
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        if "shared_preload_libraries" in reason:
            report.statements_note = (
                f"pg_stat_statements is installed but not loaded ({reason}): add"
                " pg_stat_statements to shared_preload_libraries in postgresql.conf and"
                " restart the server"
            )
        else:
            report.statements_note = f"pg_stat_statements cannot be read: {reason}"
        return
    report.ran.append(f"pg_stat_statements: the {job.top} slowest by {mean}")
    report.statements = [
        Statement(str(q), int(calls), float(m), float(t)) for q, calls, m, t in rows
    ]
    if not rows:
        report.statements_note = "pg_stat_statements has recorded no statement here yet"


# --- MariaDB / MySQL ------------------------------------------------------------------


def _mysql(conn: Connection, job: _Job) -> None:
    report = job.report
    commands = [
        c for c, on in (("OPTIMIZE TABLE", job.vacuum), ("ANALYZE TABLE", job.analyze)) if on
    ]
    job.start(len(job.names) * (len(commands) + 1) + 2)
    if job.full and job.vacuum:
        report.notes.append("OPTIMIZE TABLE always rebuilds the table: --full changes nothing")
    for command in commands:
        for name in job.names:
            sql = f"{command} {_quote(conn, name)}"
            try:
                rows = job.run(conn, sql)
            except DBAPIError as exc:
                report.problems.append(f"{sql}: {exc.orig}")
                rows = []
            for _table, _op, kind, message in rows:
                kind, message = str(kind).lower(), str(message)
                if kind in ("error", "warning"):
                    report.problems.append(f"{sql}: {kind}: {message}")
                elif kind == "status" and message.lower() not in (
                    "ok",
                    "table is already up to date",
                ):
                    report.problems.append(f"{sql}: {message}")
                elif kind in ("note", "info") and "doing recreate + analyze" not in message:
                    report.notes.append(f"{sql}: {message}")
            job.tick()
    sizes = {
        str(name): int(size)
        for name, size in conn.exec_driver_sql(
            "SELECT table_name, COALESCE(data_length, 0) + COALESCE(index_length, 0)"
            " FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
        ).fetchall()
    }
    report.size_after = int(
        conn.exec_driver_sql(
            "SELECT COALESCE(SUM(data_length + index_length + data_free), 0)"
            " FROM information_schema.tables WHERE table_schema = DATABASE()"
        ).scalar_one()
    )
    job.tick()
    tables = []
    for name in job.names:
        tables.append(TableReport(name, _count(conn, job, name), sizes.get(name)))
        job.tick()
    report.tables = _sorted(tables)
    if job.top > 0:
        _performance_schema(conn, job)
    else:
        report.statements_note = "not asked for (top 0)"
    job.tick()


def _performance_schema(conn: Connection, job: _Job) -> None:
    report = job.report
    on = conn.exec_driver_sql("SELECT @@performance_schema").scalar_one()
    if not int(on):
        report.statements_note = f"performance_schema is OFF: {PERFORMANCE_SCHEMA_FIX}"
        return
    try:
        rows = conn.execute(
            text(
                # Timers are in picoseconds: 1e9 of them are a millisecond.
                "SELECT DIGEST_TEXT, COUNT_STAR, AVG_TIMER_WAIT / 1e9, SUM_TIMER_WAIT / 1e9"
                " FROM performance_schema.events_statements_summary_by_digest"
                " WHERE SCHEMA_NAME = DATABASE() AND DIGEST_TEXT IS NOT NULL"
                " ORDER BY AVG_TIMER_WAIT DESC LIMIT :top"
            ),
            {"top": job.top},
        ).fetchall()
    except DBAPIError as exc:
        report.statements_note = f"performance_schema cannot be read: {exc.orig}"
        return
    report.ran.append(
        "performance_schema.events_statements_summary_by_digest:"
        f" the {job.top} slowest by AVG_TIMER_WAIT"
    )
    report.statements = [
        Statement(str(q), int(calls), float(m), float(t)) for q, calls, m, t in rows
    ]
    if not rows:
        report.statements_note = "performance_schema has recorded no statement here yet"


_RUNNERS: dict[str, Callable[[Connection, _Job], None]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "mysql": _mysql,
    "mariadb": _mysql,
}
