"""Portable schema pieces shared by the models and the migrations.

Migrations import this module (``import tradebase.core.ddl as tb``), so what is here is a
stable interface: change a helper's output only together with a migration.

* Column types: `ExactDecimal`, `UTCDateTime`, `JSONDoc` (JSONB on PostgreSQL), `BigID`.
* `num_key`: a decimal column in an index (``col + 0`` on SQLite, where an index on the
  text itself would need the tb_decimal collation from every writer).
* CHECK constraints: `ck_in` (an enumeration) and `ck` (portable expressions; decimal
  columns are text on SQLite and are compared after ``CAST(... AS REAL)``).
* ``updated_at`` triggers on every engine, so a row written by raw SQL is stamped too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Integer, inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import JSON, TypeDecorator, TypeEngine

from tradebase.core.money import ExactDecimal, num_key
from tradebase.core.time import SQLITE_NOW, UTCDateTime, utcnow_sql

__all__ = [
    "BigID",
    "ExactDecimal",
    "JSONDoc",
    "UTCDateTime",
    "ck",
    "ck_in",
    "ensure_updated_at_triggers",
    "json_default",
    "num_key",
    "trigger_name",
    "updated_at_trigger_sql",
    "utcnow_sql",
]


class JSONDoc(TypeDecorator[Any]):
    """The engine's JSON type: JSONB on PostgreSQL, JSON elsewhere."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(JSON())


class BigID(TypeDecorator[int]):
    """A 64-bit surrogate key; INTEGER on SQLite, where only that is a rowid alias."""

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Integer())
        return dialect.type_descriptor(BigInteger())


class json_default(ColumnElement[Any]):  # noqa: N801 - reads like SQL
    """A JSON literal as a server default: ``'{}'``, or ``('{}')`` on MySQL/MariaDB, which
    take JSON defaults only as expressions."""

    inherit_cache = True
    _traverse_internals = [("literal", InternalTraversal.dp_string)]

    def __init__(self, literal: str = "{}") -> None:
        self.literal = literal
        self.type = JSON()


@compiles(json_default)
def _json_default(element: json_default, compiler: SQLCompiler, **kw: Any) -> str:
    return "'" + element.literal.replace("'", "''") + "'"


@compiles(json_default, "mysql")
@compiles(json_default, "mariadb")
def _json_default_mysql(element: json_default, compiler: SQLCompiler, **kw: Any) -> str:
    return "('" + element.literal.replace("'", "''") + "')"


# --- CHECK constraints -----------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(num|len):([a-z_][a-z0-9_]*)\}")


class _PortableCheck(ColumnElement[bool]):
    """A CHECK expression with ``{num:col}`` (decimal column) and ``{len:col}`` (length in
    characters) placeholders, rendered for each engine."""

    __visit_name__ = "tradebase_portable_check"
    inherit_cache = False

    type = Boolean()

    def __init__(self, template: str) -> None:
        self.template = template


def _render_template(template: str, dialect: str, quote: Callable[[str], str] | None = None) -> str:
    def replace(match: re.Match[str]) -> str:
        kind, column = match.group(1), match.group(2)
        if quote is not None:
            column = quote(column)
        if kind == "num":
            # On SQLite `col + 0` is the number in the text; CAST(col ...) would still be
            # "the column" and need its tb_decimal collation, which the sqlite3 shell lacks.
            return f"({column} + 0)" if dialect == "sqlite" else column
        if dialect in ("mysql", "mariadb"):
            return f"CHAR_LENGTH({column})"
        if dialect == "mssql":
            return f"LEN({column})"
        return f"length({column})"

    return _PLACEHOLDER.sub(replace, template)


@compiles(_PortableCheck)
def _portable_check(element: _PortableCheck, compiler: SQLCompiler, **kw: Any) -> str:
    return _render_template(element.template, compiler.dialect.name)


@compiles(_PortableCheck, "mssql")
def _portable_check_mssql(element: _PortableCheck, compiler: SQLCompiler, **kw: Any) -> str:
    # SQL Server only gets DDL exports (tradebase schema ddl): OPEN and CLOSE, names of
    # price_data columns, are reserved words there.
    return _render_template(element.template, "mssql", compiler.preparer.quote)


def ck(name: str, template: str) -> CheckConstraint:
    """A portable CHECK, e.g. ``ck("quantity_positive", "{num:quantity} > 0")``.

    Decimal columns are stored as text on SQLite, so comparisons on them must go through
    ``{num:col}`` (a double there: exact to 15 significant digits; the application checks
    exactly); ``{len:col}`` is a length in characters on every engine. *name* is the
    short name: the naming convention makes it ``ck_<table>_<name>``.
    """
    constraint = CheckConstraint(_PortableCheck(template), name=name)
    constraint.info["tradebase_render"] = ("ck", template)
    return constraint


def ck_in(
    name: str, column: str, values: Iterable[str], *, nullable: bool = False
) -> CheckConstraint:
    """A CHECK that *column* holds one of *values* (an enumeration stored as a string)."""
    values = [str(v) for v in values]
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    sql = f"{column} IN ({quoted})"
    if nullable:
        sql = f"{column} IS NULL OR {sql}"
    constraint = CheckConstraint(sql, name=name)
    constraint.info["tradebase_render"] = ("ck_in", column, values, nullable)
    return constraint


def check_name(constraint: CheckConstraint) -> str:
    """The name a CHECK gets in the database (after the ``ck_<table>_`` convention)."""
    name = str(constraint.name)
    if not name.startswith("ck_") and constraint.table is not None:
        name = f"ck_{constraint.table.name}_{name}"
    return name


def render_check(constraint: CheckConstraint, final_name: str) -> str | None:
    """Python source that recreates a `ck`/`ck_in` constraint (for autogenerate)."""
    spec = constraint.info.get("tradebase_render")
    if spec is None:
        return None
    if spec[0] == "ck":
        return f"tb.ck(op.f({final_name!r}), {spec[1]!r})"
    _, column, values, nullable = spec
    extra = ", nullable=True" if nullable else ""
    return f"tb.ck_in(op.f({final_name!r}), {column!r}, {values!r}{extra})"


# --- updated_at triggers ---------------------------------------------------------------

UPDATED_AT = "updated_at"
_PG_FUNCTION = "tradebase_set_updated_at"
_MAX_NAME = 60  # PostgreSQL truncates names at 63 characters, MySQL refuses past 64


def trigger_name(table: str) -> str:
    name = f"trg_{table}_updated_at"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(table.encode()).hexdigest()[:10]
        name = f"trg_{table[:30]}_{digest}_updated_at"
    return name


PG_UPDATED_AT_FUNCTION = (
    f"CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger AS $$ BEGIN "
    "IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN "
    "NEW.updated_at := clock_timestamp(); END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
)
"""The function PostgreSQL's ``updated_at`` triggers call (created before them)."""


def updated_at_trigger_sql(dialect: Dialect, table: str, key: Sequence[str] = ("id",)) -> str:
    """The ``updated_at`` trigger of *table* on *dialect*: it stamps a row whose update left
    ``updated_at`` as it was. *key* (the primary key's columns) is needed on SQL Server
    only, which gets DDL exports (``tradebase schema ddl``), not migrations."""
    quote = dialect.identifier_preparer.quote
    name, target = quote(trigger_name(table)), quote(table)
    if dialect.name == "postgresql":
        return (
            f"CREATE TRIGGER {name} BEFORE UPDATE ON {target} FOR EACH ROW "
            f"EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
    if dialect.name in ("mysql", "mariadb"):
        return (
            f"CREATE TRIGGER {name} BEFORE UPDATE ON {target} FOR EACH ROW "  # noqa: S608
            "SET NEW.updated_at = IF(NEW.updated_at <=> OLD.updated_at, "
            "UTC_TIMESTAMP(6), NEW.updated_at)"
        )
    if dialect.name == "sqlite":
        return (
            f"CREATE TRIGGER {name} AFTER UPDATE ON {target} FOR EACH ROW "  # noqa: S608
            "WHEN NEW.updated_at IS OLD.updated_at BEGIN "
            f"UPDATE {target} SET updated_at = {SQLITE_NOW} WHERE rowid = NEW.rowid; END"
        )
    if dialect.name == "mssql":
        # An AFTER trigger sees the rows as `inserted` (new) and `deleted` (old); its own
        # UPDATE does not fire it again unless RECURSIVE_TRIGGERS is on, and then it finds
        # updated_at moved and stops.
        same = " AND ".join(f"i.{quote(col)} = d.{quote(col)}" for col in key)
        join = " AND ".join(f"t.{quote(col)} = i.{quote(col)}" for col in key)
        return (
            f"CREATE TRIGGER {name} ON {target} AFTER UPDATE AS BEGIN SET NOCOUNT ON; "  # noqa: S608
            f"UPDATE t SET updated_at = SYSUTCDATETIME() FROM {target} AS t "
            f"JOIN inserted AS i ON {join} JOIN deleted AS d ON {same} "
            "WHERE i.updated_at = d.updated_at "
            "OR (i.updated_at IS NULL AND d.updated_at IS NULL); END"
        )
    raise ValueError(f"no updated_at trigger for dialect {dialect.name!r}")


def _existing_triggers(connection: Connection) -> set[tuple[str, str]]:
    """(table, trigger) pairs of the current schema."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        sql = (
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
        )
    elif dialect in ("mysql", "mariadb"):
        sql = (
            "SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE()"
        )
    else:
        sql = "SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'"
    return {(row[0], row[1]) for row in connection.exec_driver_sql(sql)}


def _updated_at_tables(
    connection: Connection, tables: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Of *tables*, those that exist with an ``updated_at`` column, and those without one."""
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    with_column: list[str] = []
    without: list[str] = []
    for table in sorted(set(tables) & present):
        if table.endswith("_archive"):
            continue
        columns = {col["name"] for col in inspector.get_columns(table)}
        (with_column if UPDATED_AT in columns else without).append(table)
    return with_column, without


def ensure_updated_at_triggers(connection: Connection, tables: Iterable[str]) -> list[str]:
    """Give each of *tables* that has ``updated_at`` its trigger, and drop the trigger of
    one that no longer has the column; return the tables that got a new trigger.

    Runs after every migration, for the tables of the database's models: SQLite's batch
    mode recreates tables and loses their triggers, and a migration should not have to
    remember them. Tables that are not Tradebase's are never touched.
    """
    dialect = connection.dialect.name
    quote = connection.dialect.identifier_preparer.quote
    wanted, unwanted = _updated_at_tables(connection, tables)
    existing = _existing_triggers(connection)
    if dialect == "postgresql" and wanted:
        connection.exec_driver_sql(PG_UPDATED_AT_FUNCTION)
    created = []
    for table in wanted:
        if (table, trigger_name(table)) not in existing:
            connection.exec_driver_sql(updated_at_trigger_sql(connection.dialect, table))
            created.append(table)
    for table in unwanted:
        if (table, trigger_name(table)) in existing:
            on = f" ON {quote(table)}" if dialect == "postgresql" else ""
            connection.exec_driver_sql(f"DROP TRIGGER {quote(trigger_name(table))}{on}")
    return created


def missing_updated_at_triggers(connection: Connection, tables: Iterable[str]) -> list[str]:
    """Those of *tables* with ``updated_at`` that have no trigger (``db check`` reports them)."""
    wanted, _ = _updated_at_tables(connection, tables)
    existing = _existing_triggers(connection)
    return [t for t in wanted if (t, trigger_name(t)) not in existing]
