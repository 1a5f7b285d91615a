"""Portable export and import, and moving an install to another engine.

``tradebase db export DIR`` writes every table of the main and the credentials database
(the ``*_archive`` tables too) as one JSON-lines file per table, ``DIR/<database>/<table>
.jsonl`` (``.jsonl.gz`` with ``--gzip``), and ``DIR/manifest.json`` last: per database
its Alembic revision and, in foreign-key dependency order (``metadata.sorted_tables``),
each table's file, columns with their portable types, row count and SHA-256 of the file
as written. Rows are in primary-key order, one JSON object per line:

* decimals are strings in plain notation, exactly as stored (``"12.5"``, never ``12.5``);
* timestamps are ISO 8601 in UTC with microseconds (``"2026-11-22T12:04:10.777896+00:00"``);
  dates and times of day are ISO 8601 too;
* JSON columns hold the document itself; their SQL NULL is written by leaving the column
  out of the line (``null`` there is JSON's own null, which Tradebase also stores);
  every other column's SQL NULL is ``null``;
* booleans are ``true``/``false``, binary values base64 strings.

``tradebase db import DIR`` checks the manifest and every file's SHA-256 before it
touches a database, refuses a revision this version of Tradebase does not know, migrates
each target to the export's revision (up or down), refuses a target that holds data
unless ``--force`` (a freshly migrated database, holding only what the migrations seed,
counts as empty), then empties it and loads it.

``tradebase db copy --to URL`` does the same straight from the configured databases to
another engine (an install that began on SQLite moves to PostgreSQL or MariaDB in one
command): it migrates the target to the source's revision, which must be this version's
latest, and streams each table in batches of `BATCH_ROWS`. The source is read in one
read transaction per database, so what is copied is one consistent snapshot even while
the server writes.

Decisions:

* One transaction per database on the target: emptying it, every table, and the
  identity counters commit together. A copy or import that fails leaves the target as it
  was (migrated, and as empty as before), so it can simply be run again; nothing needs
  resuming. PostgreSQL and InnoDB hold a few million rows in one transaction without
  trouble; the price is that a failure near the end redoes the whole database.
* PostgreSQL targets are loaded with ``COPY ... FROM STDIN`` (psycopg), every other engine
  with the driver's ``executemany`` (PyMySQL folds it into multi-row INSERTs). A
  PostgreSQL table of `REBUILD_INDEXES_FROM` rows or more is loaded without its secondary
  indexes, which are built afterwards, in the same transaction (MariaDB would commit at
  the first DDL statement, so there indexes are kept up as rows arrive).
* From a SQLite source the driver's values are handed to the target unchanged: the
  stored text of a decimal is its exact plain notation, which NUMERIC parses exactly; a
  timestamp's text is UTC, which PostgreSQL reads as such because the loading
  transaction runs with ``timezone = 'UTC'``; booleans are 0/1; JSON is its text. This
  skips building Python objects for every value: copying 200,000 price bars to
  PostgreSQL took 2.2 s this way, 6.1 s through the column types. Other sources go through
  the models' column types.
* Tables are written in dependency order and rows in primary-key order, so a foreign
  key always points at a row already there; rows that refer to a later row of their own
  table (``orders.parent_order_id``) cannot be, and the copy refuses up front, naming
  them (Tradebase always writes a parent order before its children). Only INSERTs are
  issued, so the ``updated_at`` triggers never fire, and timestamps, JSON and every
  hashed value of the audit chain are kept exactly: ``audit verify`` passes on the copy.
* Identity counters: PostgreSQL's sequences are moved past the largest id
  (``setval(pg_get_serial_sequence(...), max(id) + 1, false)``); MariaDB/MySQL's
  AUTO_INCREMENT and SQLite's rowids follow the largest id inserted by themselves.

Secrets stay as they are in the credentials database: encrypted, bound to their rows.
Reading them on the target needs the same master key (``TRADEBASE_SECRET_KEY`` or the
key file in the data folder), which is never exported.

A limit of the target, not of the copy: MariaDB/MySQL's TIME columns (the calendars'
times of day) hold whole seconds, as the schema declares them, so the 24-hour session's
close 23:59:59.999999 arrives there as 23:59:59, as it does on a MariaDB install migrated
from scratch. Everything else arrives exactly as it was.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Time,
    cast,
    inspect,
    select,
)
from sqlalchemy.engine import URL, Connection, Dialect, make_url
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from tradebase import __version__
from tradebase.config import Settings, get_settings
from tradebase.core import migrate
from tradebase.core.db import SQLITE_BEGIN_OPTION, Database, create_db_engine, database_url
from tradebase.core.ddl import JSONDoc
from tradebase.core.errors import BadRequest, Conflict
from tradebase.core.money import ExactDecimal, check_fits
from tradebase.core.time import UTCDateTime, ensure_utc
from tradebase.schema import metadata_for

FORMAT = "tradebase-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BATCH_ROWS = 10_000
# Rows from which a PostgreSQL table is loaded without its secondary indexes, which are
# built again afterwards: below this, keeping them up row by row costs less.
REBUILD_INDEXES_FROM = 100_000
_READ_CHUNK = 1 << 20


# --- errors -------------------------------------------------------------------------------


class TransferError(BadRequest):
    """An export, import or copy that cannot be done as asked."""


class ExportInvalid(TransferError):
    """The export's manifest or one of its files does not verify; the message names it."""


class RevisionUnknown(TransferError):
    """A schema revision this version of Tradebase does not know (a newer one)."""


class SourceNotMigrated(TransferError):
    """The database to export or copy is not at this version's latest revision."""


class RowsOutOfOrder(TransferError):
    """A row refers to a row of its own table that comes after it in id order."""


class TargetNotEmpty(Conflict):
    """The target database holds data: emptying it needs ``--force``."""


# --- progress -----------------------------------------------------------------------------


class Progress(Protocol):
    """What a long transfer reports: the CLI draws a bar from it."""

    def database(self, database: Database, rows: int) -> None:
        """A database's transfer starts: *rows* in all its tables."""

    def table(self, database: Database, name: str, rows: int) -> None:
        """A table starts."""

    def advance(self, rows: int) -> None:
        """*rows* more rows were written."""


class NoProgress:
    def database(self, database: Database, rows: int) -> None:
        pass

    def table(self, database: Database, name: str, rows: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass


# --- portable column types ------------------------------------------------------------------


class Kind(StrEnum):
    """A column's portable type, as the manifest names it."""

    integer = "integer"
    string = "string"
    boolean = "boolean"
    decimal = "decimal"
    timestamp = "timestamp"
    date = "date"
    time = "time"
    json = "json"
    binary = "binary"


# Order matters: Float is a Numeric, Text a String, DateTime neither Date nor Time.
_KINDS: tuple[tuple[type[TypeEngine[Any]], Kind], ...] = (
    (JSON, Kind.json),
    (Boolean, Kind.boolean),
    (Numeric, Kind.decimal),
    (DateTime, Kind.timestamp),
    (Date, Kind.date),
    (Time, Kind.time),
    (LargeBinary, Kind.binary),
    (Integer, Kind.integer),
    (String, Kind.string),
)

# Types for columns an older export has and the models no longer know.
_GENERIC: dict[Kind, Callable[[], TypeEngine[Any]]] = {
    Kind.integer: BigInteger,
    Kind.string: Text,
    Kind.boolean: Boolean,
    Kind.decimal: ExactDecimal,
    Kind.timestamp: UTCDateTime,
    Kind.date: Date,
    Kind.time: Time,
    Kind.json: JSONDoc,
    Kind.binary: LargeBinary,
}


def column_kind(type_: TypeEngine[Any]) -> Kind:
    """The portable type of a column type (a TypeDecorator by what it decorates)."""
    candidates = [type_]
    if isinstance(type_, TypeDecorator):
        candidates.append(type_.impl_instance)
    for candidate in candidates:
        for cls, kind in _KINDS:
            if isinstance(candidate, cls):
                return kind
    raise TypeError(f"no portable type for column type {type_!r}")


@dataclass(frozen=True)
class _Plan:
    """One table as it is read or written: its columns in order and their kinds."""

    table: Table
    columns: tuple[Column[Any], ...]
    kinds: tuple[Kind, ...]

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _plan(table: Table) -> _Plan:
    columns = tuple(table.columns)
    return _Plan(table, columns, tuple(column_kind(c.type) for c in columns))


def _plans(database: Database) -> list[_Plan]:
    return [_plan(t) for t in metadata_for(database).sorted_tables]


# --- the manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TableEntry:
    name: str
    file: str  # relative to the export folder, with forward slashes
    rows: int
    sha256: str
    columns: tuple[tuple[str, Kind], ...]


@dataclass(frozen=True)
class DatabaseEntry:
    revision: str
    engine: str
    tables: tuple[TableEntry, ...]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


@dataclass(frozen=True)
class Manifest:
    tradebase_version: str
    created_at: str
    databases: dict[Database, DatabaseEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tradebase_version": self.tradebase_version,
            "created_at": self.created_at,
            "databases": {
                db.value: {
                    "revision": entry.revision,
                    "engine": entry.engine,
                    "rows": entry.rows,
                    "tables": [
                        {
                            "name": t.name,
                            "file": t.file,
                            "rows": t.rows,
                            "sha256": t.sha256,
                            "columns": {n: k.value for n, k in t.columns},
                        }
                        for t in entry.tables
                    ],
                }
                for db, entry in self.databases.items()
            },
        }

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Read and check ``manifest.json`` of an export folder (its shape, not the files)."""
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ExportInvalid(f"{path}: no manifest: not a Tradebase export") from None
        except (OSError, ValueError) as exc:
            raise ExportInvalid(f"{path}: unreadable manifest: {exc}") from None
        try:
            return cls._parse(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportInvalid(f"{path}: malformed manifest: {exc!r}") from None

    @classmethod
    def _parse(cls, data: Any) -> Manifest:
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {FORMAT!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"format version {data.get('format_version')!r}; this version of Tradebase"
                f" reads version {FORMAT_VERSION}"
            )
        databases: dict[Database, DatabaseEntry] = {}
        for name, entry in data["databases"].items():
            tables = []
            for t in entry["tables"]:
                _check_relative(t["file"])
                tables.append(
                    TableEntry(
                        name=str(t["name"]),
                        file=str(t["file"]),
                        rows=int(t["rows"]),
                        sha256=str(t["sha256"]),
                        columns=tuple((str(n), Kind(k)) for n, k in t["columns"].items()),
                    )
                )
            databases[Database(name)] = DatabaseEntry(
                revision=str(entry["revision"]), engine=str(entry["engine"]), tables=tuple(tables)
            )
        return cls(str(data["tradebase_version"]), str(data["created_at"]), databases)


def _check_relative(name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or not path.parts:
        raise ValueError(f"file {name!r} is not a path inside the export folder")


# --- reading a database ---------------------------------------------------------------------


def _order(plan: _Plan) -> list[Column[Any]]:
    return list(plan.table.primary_key.columns) or list(plan.columns)


def _raw_batches(conn: Connection, plan: _Plan, batch: int) -> Iterator[Sequence[Sequence[Any]]]:
    """Rows as the driver returns them (used for SQLite sources: see the module doc)."""
    quote = conn.dialect.identifier_preparer.quote
    sql = (
        f"SELECT {', '.join(quote(n) for n in plan.names)} FROM {quote(plan.name)}"  # noqa: S608
        f" ORDER BY {', '.join(quote(c.name) for c in _order(plan))}"
    )
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(batch):
            yield rows
    finally:
        cursor.close()


def _typed_batches(conn: Connection, plan: _Plan, batch: int) -> Iterator[list[tuple[Any, ...]]]:
    """Rows through the models' column types; JSON columns as their text (None: SQL NULL)."""
    columns: list[ColumnElement[Any]] = [
        cast(c, Text).label(c.name) if k is Kind.json else c
        for c, k in zip(plan.columns, plan.kinds, strict=True)
    ]
    statement = select(*columns).order_by(*_order(plan))
    result = conn.execution_options(yield_per=batch).execute(statement)
    for part in result.partitions():
        yield [tuple(row) for row in part]


def _count(conn: Connection, name: str) -> int:
    quote = conn.dialect.identifier_preparer.quote
    return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {quote(name)}").scalar_one())  # noqa: S608


def _check_self_references(conn: Connection, plan: _Plan) -> None:
    quote = conn.dialect.identifier_preparer.quote
    for fk in plan.table.foreign_keys:
        if fk.column.table is not plan.table:
            continue
        child, parent = quote(fk.parent.name), quote(fk.column.name)
        table = quote(plan.name)
        row = conn.exec_driver_sql(
            f"SELECT c.{parent}, c.{child} FROM {table} c JOIN {table} p"  # noqa: S608
            f" ON c.{child} = p.{parent} WHERE p.{parent} > c.{parent} ORDER BY c.{parent}"
        ).first()
        if row is not None:
            raise RowsOutOfOrder(
                f"{plan.name} {row[0]} refers to {fk.parent.name} {row[1]}, a later row of the"
                " same table: rows are copied in id order, so this one cannot be",
                details={"table": plan.name, "id": row[0]},
            )


@contextmanager
def _reading(url: URL, settings: Settings) -> Iterator[Connection]:
    """One read transaction on the source: a consistent snapshot of every table."""
    engine = create_db_engine(url, settings, pooled=False)
    try:
        with engine.connect() as conn:
            if conn.dialect.name in ("postgresql", "mysql", "mariadb"):
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
    finally:
        engine.dispose()


def _require_latest(database: Database, url: URL, settings: Settings) -> str:
    current = migrate.current_revision(database, url=url, settings=settings)
    head = migrate.head_revision(database)
    if current != head:
        raise SourceNotMigrated(
            f"the {database.value} database ({_display(url)}) is at revision"
            f" {current or 'base (empty)'}, this version of Tradebase at {head}:"
            " run tradebase db upgrade first"
        )
    return head


def _display(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    return url.render_as_string(hide_password=True)


# --- writing a database ---------------------------------------------------------------------

Convert = Callable[[Any], Any]


def _typed_converters(plan: _Plan, dialect: Dialect) -> list[Convert | None]:
    """Turn values of the models' Python types into what the target's driver takes.

    psycopg's COPY takes the Python objects themselves; other drivers get what
    SQLAlchemy would bind. JSON columns are carried as their text throughout.
    """
    if dialect.name == "postgresql":
        return [None] * len(plan.columns)
    converters: list[Convert | None] = []
    for column, kind in zip(plan.columns, plan.kinds, strict=True):
        if kind is Kind.json:
            converters.append(None)
        else:
            converters.append(column.type.dialect_impl(dialect).bind_processor(dialect))
    return converters


def _converted(
    rows: Sequence[Sequence[Any]], converters: Sequence[Convert | None]
) -> Sequence[Sequence[Any]]:
    active = [(i, f) for i, f in enumerate(converters) if f is not None]
    if not active:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for i, convert in active:
            value = values[i]
            if value is not None:
                values[i] = convert(value)
        out.append(values)
    return out


Put = Callable[[Sequence[Sequence[Any]]], None]


@contextmanager
def _table_writer(conn: Connection, plan: _Plan) -> Iterator[Put]:
    """Write rows of driver values into *plan*'s table: COPY on PostgreSQL, else
    executemany."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(n) for n in plan.names)
    table = quote(plan.name)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:

            def put_copy(rows: Sequence[Sequence[Any]]) -> None:
                for row in rows:
                    copy.write_row(row)

            yield put_copy
        return
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join([marker] * len(plan.names))})"  # noqa: S608
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:

        def put_many(rows: Sequence[Sequence[Any]]) -> None:
            cursor.executemany(sql, rows)

        yield put_many
    finally:
        cursor.close()


@contextmanager
def _loading(url: URL, settings: Settings) -> Iterator[Connection]:
    """The target's one transaction: committed when the block ends, else rolled back."""
    engine = create_db_engine(url, settings, pooled=False)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn = conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # COPY reads a SQLite timestamp's text as local time: make that UTC.
                    conn.exec_driver_sql("SET LOCAL timezone = 'UTC'")
                yield conn
    finally:
        engine.dispose()


def _empty(conn: Connection, names: Sequence[str]) -> None:
    """Delete every row of *names* (given in dependency order), children first."""
    present = set(inspect(conn).get_table_names())
    quote = conn.dialect.identifier_preparer.quote
    for name in reversed(names):
        if name in present:
            conn.exec_driver_sql(f"DELETE FROM {quote(name)}")  # noqa: S608


def _reset_counters(conn: Connection, plans: Sequence[_Plan]) -> None:
    """Move PostgreSQL's sequences past the largest id (other engines follow by
    themselves)."""
    if conn.dialect.name != "postgresql":
        return
    quote = conn.dialect.identifier_preparer.quote
    for plan in plans:
        for column, kind in zip(plan.columns, plan.kinds, strict=True):
            if not column.primary_key or kind is not Kind.integer:
                continue
            sequence = conn.exec_driver_sql(
                "SELECT pg_get_serial_sequence(%s, %s)", (quote(plan.name), column.name)
            ).scalar()
            if sequence is None:
                continue
            conn.exec_driver_sql(
                f"SELECT setval(%s, COALESCE((SELECT MAX({quote(column.name)})"  # noqa: S608
                f" FROM {quote(plan.name)}), 0) + 1, false)",
                (sequence,),
            )


@contextmanager
def _indexes_rebuilt(conn: Connection, plan: _Plan, rows: int, threshold: int) -> Iterator[None]:
    """Load a large PostgreSQL table without its secondary indexes and unique constraints,
    then build them again from the definitions the catalog holds.

    COPY into price_data with its four secondary indexes maintained row by row is about
    1.5 times slower than COPY followed by building them (bench/bench_copy.py). The drop
    and the rebuild are part of the loading transaction, so a failure undoes both.
    Primary keys and unique constraints a foreign key refers to stay.
    """
    if conn.dialect.name != "postgresql" or rows < threshold:
        yield
        return
    quote = conn.dialect.identifier_preparer.quote
    table = quote(plan.name)
    constraints = conn.exec_driver_sql(
        "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
        " WHERE c.conrelid = %s::regclass AND c.contype = 'u' AND NOT EXISTS"
        " (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid)"
        " ORDER BY c.conname",
        (table,),
    ).all()
    indexes = conn.exec_driver_sql(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x"
        " JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
        " ORDER BY i.relname",
        (table,),
    ).all()
    for name, _definition in indexes:
        conn.exec_driver_sql(f"DROP INDEX {quote(name)}")
    for name, _definition in constraints:
        conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}")
    yield
    for name, definition in constraints:
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}")
    for _name, definition in indexes:
        conn.exec_driver_sql(definition)


# --- the target's revision and emptiness ----------------------------------------------------


def _revisions(database: Database) -> list[str]:
    """*database*'s revisions, oldest first."""
    return [rev for rev, _down, _created, _msg in reversed(migrate.history(database))]


def _check_known(database: Database, revision: str, what: str) -> None:
    if revision not in _revisions(database):
        raise RevisionUnknown(
            f"{what} is at {database.value} revision {revision!r}, which this version of"
            f" Tradebase ({__version__}, latest {migrate.head_revision(database)}) does not"
            " know: it is newer; use a newer Tradebase"
        )


def _prepare_target(
    database: Database,
    url: URL,
    revision: str,
    tables: Sequence[str],
    *,
    force: bool,
    settings: Settings,
) -> None:
    """Refuse a target holding data (unless *force*), then migrate it to *revision*."""
    current = migrate.current_revision(database, url=url, settings=settings)
    if current is not None:
        _check_known(database, current, f"the target ({_display(url)})")
        if not force:
            engine = create_db_engine(url, settings, pooled=False)
            try:
                with engine.connect() as conn:
                    holding = _holding_data(conn, database, current, tables)
            finally:
                engine.dispose()
            if holding:
                raise TargetNotEmpty(
                    f"the {database.value} target ({_display(url)}) holds data ({holding}):"
                    " pass --force to empty it first",
                    details={"database": database.value, "table": holding.split(" ")[0]},
                )
    if current == revision:
        return
    order = _revisions(database)
    if current is None or order.index(current) < order.index(revision):
        migrate.upgrade(database, revision, url=url, settings=settings)
    else:
        migrate.downgrade(database, revision, url=url, settings=settings)


def _holding_data(
    conn: Connection, database: Database, revision: str, tables: Sequence[str]
) -> str | None:
    """The first table holding rows beyond what the migrations seed, as "name (N rows)"."""
    present = set(inspect(conn).get_table_names())
    seeds: dict[str, list[tuple[Any, ...]]] | None = None
    for name in tables:
        if name not in present:
            continue
        count = _count(conn, name)
        if not count:
            continue
        if seeds is None:
            seeds = _seed_rows(database, revision)
        seeded = seeds.get(name, [])
        if len(seeded) != count or _comparable_rows(conn, database, name) != seeded:
            return f"{name} ({count} rows)"
    return None


def _comparable_rows(conn: Connection, database: Database, name: str) -> list[tuple[Any, ...]]:
    """A table's rows without its timestamps (which migrations stamp when they run)."""
    table = metadata_for(database).tables.get(name)
    if table is None:
        return [("not a table of this version",)]
    present = {c["name"] for c in inspect(conn).get_columns(name)}
    columns = [
        c for c in table.columns if c.name in present and column_kind(c.type) is not Kind.timestamp
    ]
    statement = select(*columns).order_by(*table.primary_key.columns)
    return [tuple(row) for row in conn.execute(statement)]


@functools.cache
def _seed_rows(database: Database, revision: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the migrations up to *revision* leave in an otherwise empty database."""
    with tempfile.TemporaryDirectory(prefix="tradebase-seed-") as folder:
        url = make_url(f"sqlite:///{Path(folder) / 'seed.db'}")
        settings = Settings(database_url=str(url), credentials_database_url=str(url))
        migrate.upgrade(database, revision, url=url, settings=settings)
        engine = create_db_engine(url, settings, pooled=False)
        try:
            with engine.connect() as conn:
                present = set(inspect(conn).get_table_names())
                return {
                    t.name: _comparable_rows(conn, database, t.name)
                    for t in metadata_for(database).sorted_tables
                    if t.name in present
                }
        finally:
            engine.dispose()


# --- results ------------------------------------------------------------------------------


@dataclass
class Transferred:
    """What one database's export, import or copy moved."""

    database: Database
    revision: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


# --- copy -----------------------------------------------------------------------------------


def copy_database(
    database: Database,
    target: URL,
    *,
    source: URL | None = None,
    force: bool = False,
    settings: Settings | None = None,
    progress: Progress | None = None,
    batch: int = BATCH_ROWS,
    rebuild_indexes_from: int = REBUILD_INDEXES_FROM,
) -> Transferred:
    """Copy every table of *database* (by default the configured one) into *target*.

    The target is migrated to the source's revision (this version's latest) and must hold
    no data unless *force*; it is emptied and loaded in one transaction.
    """
    settings = settings or get_settings()
    progress = progress or NoProgress()
    source = source or database_url(database, settings)
    if _same_database(source, target):
        raise TransferError(f"the target is the {database.value} database itself")
    revision = _require_latest(database, source, settings)
    plans = _plans(database)
    names = [p.name for p in plans]
    _prepare_target(database, target, revision, names, force=force, settings=settings)
    result = Transferred(database, revision, _display(target))
    with _reading(source, settings) as reader, _loading(target, settings) as writer:
        counts = {p.name: _count(reader, p.name) for p in plans}
        for plan in plans:
            _check_self_references(reader, plan)
        progress.database(database, sum(counts.values()))
        _empty(writer, names)
        raw = reader.dialect.name == "sqlite"
        for plan in plans:
            progress.table(database, plan.name, counts[plan.name])
            batches = (_raw_batches if raw else _typed_batches)(reader, plan, batch)
            converters = (
                [None] * len(plan.columns) if raw else _typed_converters(plan, writer.dialect)
            )
            written = 0
            with (
                _indexes_rebuilt(writer, plan, counts[plan.name], rebuild_indexes_from),
                _table_writer(writer, plan) as put,
            ):
                for rows in batches:
                    put(_converted(rows, converters))
                    written += len(rows)
                    progress.advance(len(rows))
            result.tables[plan.name] = written
        _reset_counters(writer, plans)
    return result


def _same_database(a: URL, b: URL) -> bool:
    def key(url: URL) -> tuple[Any, ...]:
        if url.get_backend_name() == "sqlite":
            return ("sqlite", str(Path(url.database or "").expanduser().resolve()))
        return (url.get_backend_name(), url.host, url.port, url.database)

    return key(a) == key(b)


# --- export ---------------------------------------------------------------------------------


class _HashingFile:
    """A binary file that hashes what is written to it (under gzip: the compressed bytes)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _encoder(kind: Kind) -> Convert | None:
    if kind is Kind.decimal:
        return lambda v: format(v, "f")
    if kind is Kind.timestamp:
        return lambda v: ensure_utc(v).isoformat(timespec="microseconds")
    if kind in (Kind.date, Kind.time):
        return lambda v: v.isoformat()
    if kind is Kind.binary:
        return lambda v: base64.b64encode(v).decode("ascii")
    if kind is Kind.json:
        return json.loads
    return None


def _encode_lines(plan: _Plan, rows: Sequence[Sequence[Any]]) -> bytes:
    encoders = [_encoder(k) for k in plan.kinds]
    json_columns = {i for i, k in enumerate(plan.kinds) if k is Kind.json}
    names = plan.names
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    lines = []
    for row in rows:
        obj: dict[str, Any] = {}
        for i, value in enumerate(row):
            if value is None:
                if i not in json_columns:  # a JSON column's SQL NULL: left out of the line
                    obj[names[i]] = None
                continue
            encode = encoders[i]
            obj[names[i]] = encode(value) if encode is not None else value
        lines.append(dumps(obj))
    lines.append("")
    return "\n".join(lines).encode("utf-8")


def export(
    folder: Path,
    databases: Sequence[Database] = (Database.main, Database.credentials),
    *,
    compress: bool = False,
    settings: Settings | None = None,
    progress: Progress | None = None,
    batch: int = BATCH_ROWS,
) -> Manifest:
    """Write every table of *databases* into *folder* (new or empty), the manifest last.

    An export that fails removes what it wrote.
    """
    settings = settings or get_settings()
    progress = progress or NoProgress()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise TransferError(f"{folder} exists and is not an empty folder: export into a new one")
    created = not folder.exists()
    written: list[Path] = []
    try:
        entries = {
            database: _export_database(
                database, folder, compress, settings, progress, batch, written
            )
            for database in databases
        }
        manifest = Manifest(
            __version__, datetime.now(UTC).isoformat(timespec="microseconds"), entries
        )
        partial = folder / f".{MANIFEST}.partial"
        written.append(partial)
        partial.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(partial, folder / MANIFEST)
    except BaseException:
        for path in reversed(written):
            path.unlink(missing_ok=True)
        for database in databases:
            with suppress(OSError):
                (folder / database.value).rmdir()
        if created:
            with suppress(OSError):
                folder.rmdir()
        raise
    return manifest


def _export_database(
    database: Database,
    folder: Path,
    compress: bool,
    settings: Settings,
    progress: Progress,
    batch: int,
    written: list[Path],
) -> DatabaseEntry:
    url = database_url(database, settings)
    revision = _require_latest(database, url, settings)
    plans = _plans(database)
    (folder / database.value).mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if compress else ".jsonl"
    tables = []
    with _reading(url, settings) as reader:
        counts = {p.name: _count(reader, p.name) for p in plans}
        progress.database(database, sum(counts.values()))
        for plan in plans:
            progress.table(database, plan.name, counts[plan.name])
            relative = f"{database.value}/{plan.name}{suffix}"
            written.append(folder / relative)
            rows = 0
            with (folder / relative).open("wb") as raw:
                hashing = _HashingFile(raw)
                sink: Any = (
                    gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=6, mtime=0)
                    if compress
                    else hashing
                )
                try:
                    for batch_rows in _typed_batches(reader, plan, batch):
                        sink.write(_encode_lines(plan, batch_rows))
                        rows += len(batch_rows)
                        progress.advance(len(batch_rows))
                finally:
                    if compress:
                        sink.close()
            columns = tuple(zip(plan.names, plan.kinds, strict=True))
            tables.append(
                TableEntry(plan.name, relative, rows, hashing.sha256.hexdigest(), columns)
            )
    return DatabaseEntry(revision, url.get_backend_name(), tuple(tables))


# --- import ---------------------------------------------------------------------------------


def _decoder(kind: Kind) -> Convert:
    if kind is Kind.decimal:
        return lambda v: check_fits(Decimal(_expect(v, str)))
    if kind is Kind.timestamp:
        return lambda v: ensure_utc(datetime.fromisoformat(_expect(v, str)))
    if kind is Kind.date:
        return lambda v: date.fromisoformat(_expect(v, str))
    if kind is Kind.time:
        return lambda v: time.fromisoformat(_expect(v, str))
    if kind is Kind.binary:
        return lambda v: base64.b64decode(_expect(v, str), validate=True)
    if kind is Kind.json:
        return json.dumps  # JSON columns travel as their text
    if kind is Kind.boolean:
        return lambda v: _expect(v, bool)
    if kind is Kind.integer:
        return _integer
    return lambda v: _expect(v, str)


def _expect(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{value!r} is not a {kind.__name__}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _check_files(folder: Path, entry: DatabaseEntry) -> None:
    for table in entry.tables:
        path = folder / table.file
        digest = hashlib.sha256()
        try:
            with path.open("rb") as stream:
                while chunk := stream.read(_READ_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            raise ExportInvalid(f"{path}: missing from the export") from None
        if digest.hexdigest() != table.sha256:
            raise ExportInvalid(
                f"{path}: SHA-256 does not match the manifest: the file is damaged or was changed",
                details={"file": table.file},
            )


def _import_plan(database: Database, table: TableEntry) -> _Plan:
    """The table to load: the models' column types where they know the column."""
    known = metadata_for(database).tables.get(table.name)
    columns = []
    for name, kind in table.columns:
        model = known.columns.get(name) if known is not None else None
        columns.append(Column(name, model.type if model is not None else _GENERIC[kind]()))
    loaded = Table(table.name, MetaData(), *columns)
    if known is not None:
        key = [c.name for c in known.primary_key.columns]
        for name in key:
            if name in loaded.columns:
                loaded.columns[name].primary_key = True
    return _Plan(loaded, tuple(loaded.columns), tuple(k for _n, k in table.columns))


def _file_batches(
    folder: Path, table: TableEntry, plan: _Plan, batch: int
) -> Iterator[list[tuple[Any, ...]]]:
    path = folder / table.file
    names = plan.names
    decoders = [_decoder(k) for k in plan.kinds]
    json_columns = {n for n, k in table.columns if k is Kind.json}
    known = set(names)
    rows: list[tuple[Any, ...]] = []
    line_number = 0
    # Bytes either way: json.loads reads UTF-8 whatever the locale.
    with gzip.open(path) if table.file.endswith(".gz") else path.open("rb") as stream:
        for line_number, line in enumerate(stream, start=1):
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                extra = obj.keys() - known
                if extra:
                    raise ValueError(f"column {sorted(extra)[0]!r} is not in the manifest")
                values: list[Any] = []
                for name, decode in zip(names, decoders, strict=True):
                    if name not in obj:
                        values.append(None)
                        continue
                    value = obj[name]
                    if value is None and name not in json_columns:
                        values.append(None)
                    else:
                        values.append(decode(value))
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise ExportInvalid(f"{path}: line {line_number}: {exc}") from None
            rows.append(tuple(values))
            if len(rows) >= batch:
                yield rows
                rows = []
    if rows:
        yield rows
    if line_number != table.rows:
        raise ExportInvalid(f"{path}: {line_number} rows, the manifest says {table.rows}")


def import_export(
    folder: Path,
    databases: Sequence[Database] | None = None,
    *,
    force: bool = False,
    settings: Settings | None = None,
    progress: Progress | None = None,
    batch: int = BATCH_ROWS,
    rebuild_indexes_from: int = REBUILD_INDEXES_FROM,
) -> list[Transferred]:
    """Load an export into the configured databases (all those it holds by default).

    Checks the manifest and every file first, then per database: migrates the target to
    the export's revision, refuses one holding data unless *force*, empties and loads it
    in one transaction.
    """
    settings = settings or get_settings()
    progress = progress or NoProgress()
    manifest = Manifest.read(folder)
    wanted = list(databases) if databases is not None else list(manifest.databases)
    for database in wanted:
        if database not in manifest.databases:
            raise ExportInvalid(
                f"{folder / MANIFEST}: the export holds no {database.value} database"
            )
    for database in wanted:
        entry = manifest.databases[database]
        _check_known(database, entry.revision, f"the export in {folder}")
        _check_files(folder, entry)
    results = []
    for database in wanted:
        entry = manifest.databases[database]
        target = database_url(database, settings)
        names = [t.name for t in entry.tables]
        _prepare_target(database, target, entry.revision, names, force=force, settings=settings)
        result = Transferred(database, entry.revision, _display(target))
        plans = [_import_plan(database, t) for t in entry.tables]
        with _loading(target, settings) as writer:
            progress.database(database, entry.rows)
            _empty(writer, names)
            for table, plan in zip(entry.tables, plans, strict=True):
                progress.table(database, table.name, table.rows)
                converters = _typed_converters(plan, writer.dialect)
                written = 0
                with (
                    _indexes_rebuilt(writer, plan, table.rows, rebuild_indexes_from),
                    _table_writer(writer, plan) as put,
                ):
                    for rows in _file_batches(folder, table, plan, batch):
                        put(_converted(rows, converters))
                        written += len(rows)
                        progress.advance(len(rows))
                result.tables[table.name] = written
            _reset_counters(writer, plans)
        results.append(result)
    return results
