"""UTC time: the one clock and the column type that keeps timestamps aware on every engine.

SQLite and MariaDB store no time zone, and SQLite hands back naive datetimes even for
``DateTime(timezone=True)``. `UTCDateTime` therefore refuses naive input, stores UTC, and
attaches UTC on the way out, so application code only ever sees aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects import mssql, mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

# SQLite's clock as SQLAlchemy stores datetimes there: 'YYYY-MM-DD HH:MM:SS.ffffff'.
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Return *value* in UTC; a naive datetime is an error, never silently assumed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} refused: pass an aware datetime")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps with microseconds on every engine."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "mssql":  # DDL exports only: UTC without an offset, as on MariaDB
            return dialect.type_descriptor(mssql.DATETIME2(precision=6))  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        value = ensure_utc(value)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = (
            datetime.fromisoformat(value)  # written by SQL (a trigger or default) on SQLite
            if isinstance(value, str)
            else value
        )
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


class utcnow_sql(FunctionElement[datetime]):  # noqa: N801 - reads like SQL's now()
    """The database's current UTC time with sub-second precision, as a server default."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(utcnow_sql)
def _utcnow_default(element: utcnow_sql, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow_sql, "sqlite")
def _utcnow_sqlite(element: utcnow_sql, compiler: SQLCompiler, **kw: Any) -> str:
    # Microseconds, as SQLAlchemy writes them, so stamps compare equal to bound values.
    return f"({SQLITE_NOW})"


@compiles(utcnow_sql, "mysql")
@compiles(utcnow_sql, "mariadb")
def _utcnow_mysql(element: utcnow_sql, compiler: SQLCompiler, **kw: Any) -> str:
    # UTC whatever the writing session's time_zone (an expression default, MariaDB 10.2+,
    # MySQL 8.0.13+).
    return "(UTC_TIMESTAMP(6))"


@compiles(utcnow_sql, "mssql")
def _utcnow_mssql(element: utcnow_sql, compiler: SQLCompiler, **kw: Any) -> str:
    return "SYSUTCDATETIME()"  # CURRENT_TIMESTAMP is the server's local time there
