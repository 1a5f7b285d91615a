"""Prepared statements for the fill path: Core statements compiled once, run on SQLite's
cursor directly.

Placing a market order runs about a dozen small statements in one transaction. Through
SQLAlchemy's execution machinery each costs about 60 µs on SQLite, of which the engine's
own work is 20 µs (bench/bench_orders.py, docs/benchmarks.md). A `Prepared` statement is
compiled by SQLAlchemy for the dialect once per set of parameter names, with the column
types' bind and result processors looked up once, and on SQLite it runs on the DBAPI
cursor of the session's connection, inside the session's transaction. On every other
engine it runs through ``Connection.execute`` unchanged: there the round trip dominates,
and the MariaDB error mapping (core/db.py) is an engine event.

What the shortcut gives up, on SQLite only: engine events and echo for these statements.
Constant column defaults are applied; a computed one (``default=utc_now``, ``onupdate``)
must be given, on every engine (checked when the statement is compiled, so both paths
behave the same). Driver errors are wrapped as SQLAlchemy's (``IntegrityError`` …).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[tuple[str | None, Any, Processor], ...]  # (parameter, literal, processor)
    results: tuple[Processor, ...]
    row: Any  # the namedtuple class of a result row


class Prepared:
    """A statement with bound parameters, run with a mapping of parameter values."""

    def __init__(self, statement: Select[Any] | UpdateBase) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def rows(self, on: Session | Connection, params: Mapping[str, Any]) -> Sequence[Any]:
        """Run the statement and return every row (attribute access by column name)."""
        connection = connection_of(on)
        compiled = self._compile(connection.dialect, params)
        if connection.dialect.name != "sqlite":
            return connection.execute(self.statement, dict(params)).all()
        cursor = self._run(connection, compiled, params)
        try:
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        results, row = compiled.results, compiled.row
        return [
            row(*(p(v) if p else v for p, v in zip(results, values, strict=True)))
            for values in fetched
        ]

    def scalar(self, on: Session | Connection, params: Mapping[str, Any]) -> Any:
        """Run the statement and return the first column of its first row (or None)."""
        found = self.rows(on, params)
        return found[0][0] if found else None

    def run(self, on: Session | Connection, params: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; return the number of rows it changed."""
        connection = connection_of(on)
        compiled = self._compile(connection.dialect, params)
        if connection.dialect.name != "sqlite":
            return int(connection.execute(self.statement, dict(params)).rowcount)
        cursor = self._run(connection, compiled, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def run_many(self, on: Session | Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set (all with the same names)."""
        connection = connection_of(on)
        compiled = self._compile(connection.dialect, params[0])
        if connection.dialect.name != "sqlite":
            connection.execute(self.statement, [dict(p) for p in params])
            return
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        args = [self._args(compiled, p) for p in params]
        try:
            cursor.executemany(compiled.sql, args)
        except connection.dialect.loaded_dbapi.Error as error:
            raise _wrapped(compiled.sql, args, error, connection.dialect) from error
        finally:
            cursor.close()

    def _run(self, connection: Connection, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        args = self._args(compiled, params)
        try:
            cursor.execute(compiled.sql, args)
        except connection.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise _wrapped(compiled.sql, args, error, connection.dialect) from error
        return cursor

    @staticmethod
    def _args(compiled: _Compiled, params: Mapping[str, Any]) -> tuple[Any, ...]:
        try:
            return tuple(
                (processor(params[name]) if processor else params[name])
                if name is not None
                else literal
                for name, literal, processor in compiled.binds
            )
        except (TypeError, ValueError) as error:  # a value its column type refuses
            raise exc.StatementError(str(error), compiled.sql, dict(params), error) from error

    def _compile(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled:
        key = (dialect.name, tuple(sorted(params)))
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = self._prepare(dialect, key[1])
        return found

    def _prepare(self, dialect: Dialect, names: tuple[str, ...]) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect, column_keys=list(names))
        assert isinstance(compiled, SQLCompiler)
        constants: dict[str, Any] = {}
        for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
            default = column.default if column in compiled.insert_prefetch else column.onupdate
            if default is None or not default.is_scalar:
                raise ValueError(
                    f"{column} has a computed default: give it to the prepared statement"
                    f" ({compiled.string[:60]}…)"
                )
            constants[column.key] = default.arg  # type: ignore[attr-defined]
        binds: list[tuple[str | None, Any, Processor]] = []
        for bind_name in compiled.positiontup or ():
            bind = compiled.binds[bind_name]
            processor = bind.type._cached_bind_processor(dialect)
            if bind_name in names:
                binds.append((bind_name, None, processor))
            elif bind.key in names:
                binds.append((bind.key, None, processor))
            elif bind_name in constants:  # a column's constant default
                value = constants[bind_name]
                binds.append((None, processor(value) if processor else value, None))
            elif bind.required or bind.callable is not None:
                raise ValueError(f"no value for the parameter {bind_name!r}")
            else:  # a literal written into the statement
                value = bind.effective_value
                binds.append((None, processor(value) if processor else value, None))
        statement = self.statement
        columns = list(
            statement.selected_columns
            if isinstance(statement, Select)
            else statement.exported_columns  # the RETURNING columns
        )
        results = tuple(  # used on SQLite only (the column type code is None there)
            c.type._cached_result_processor(dialect, None) if dialect.name == "sqlite" else None
            for c in columns
        )
        labels = [getattr(c, "key", None) or f"c{i}" for i, c in enumerate(columns)]
        row = namedtuple("Row", labels, rename=True)  # type: ignore[misc]
        return _Compiled(compiled.string, tuple(binds), results, row)


def connection_of(on: Session | Connection) -> Connection:
    """The connection of *on*: ``session.connection()``, remembered for the session's
    current transaction (asking the session costs more than running a prepared statement).

    Keyed by the innermost transaction too: a ``begin_nested()`` emits its SAVEPOINT only
    when the session is asked for its connection.
    """
    if isinstance(on, Connection):
        return on
    key = (on.get_transaction(), on.get_nested_transaction())
    remembered = on.info.get(_CONNECTION)
    if remembered is not None and key[0] is not None and remembered[0] == key:
        return cast(Connection, remembered[1])
    connection = on.connection()
    on.info[_CONNECTION] = ((on.get_transaction(), on.get_nested_transaction()), connection)
    return connection


_CONNECTION = "tradebase.prepared.connection"


def _wrapped(sql: str, args: Any, error: Exception, dialect: Dialect) -> exc.StatementError:
    return exc.DBAPIError.instance(sql, args, error, dialect.loaded_dbapi.Error, dialect=dialect)
