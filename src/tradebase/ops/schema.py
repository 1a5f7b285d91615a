"""Schema tools: the DDL of both databases for any engine, and SQL dialect conversion.

* `ddl_statements` compiles the models (tables, indexes, CHECKs and the ``updated_at``
  triggers of `tradebase.core.ddl`) for SQLite, PostgreSQL, MySQL/MariaDB or SQL Server,
  in dependency order. SQL Server gets DDL only (no Tradebase runs on it): strings are
  NVARCHAR, timestamps DATETIME2 in UTC, booleans BIT, keys IDENTITY.
* `convert` translates a SQL script between sqlite, postgres, mysql and tsql with sqlglot,
  statement by statement, and then fixes by AST transforms what sqlglot leaves as it was
  (the transforms below, each named for what it does). A statement that cannot be parsed
  stops the conversion with its line; one that sqlglot can only keep as opaque text
  (triggers, procedures) is copied when the dialects match and left as a comment,
  with a note, when they do not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.dialects.mssql.base import MSDialect, MSTypeCompiler
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import AddConstraint, CreateIndex, CreateTable, sort_tables_and_constraints
from sqlalchemy.sql.ddl import ExecutableDDLElement
from sqlglot import Token, TokenType, exp
from sqlglot.dialects.dialect import Dialect as GlotDialect
from sqlglot.dialects.sqlite import SQLite
from sqlglot.errors import ParseError, TokenError
from sqlglot.parsers.sqlite import SQLiteParser

from tradebase.core.db import Database
from tradebase.core.ddl import PG_UPDATED_AT_FUNCTION, UPDATED_AT, updated_at_trigger_sql
from tradebase.core.money import PRECISION, SCALE, SQLITE_COLLATION

# --- DDL from the models ---------------------------------------------------------------


class DDLDialect(StrEnum):
    """Engines `ddl_statements` writes for (SQLAlchemy's dialect names)."""

    sqlite = "sqlite"
    postgresql = "postgresql"
    mysql = "mysql"
    mssql = "mssql"


class _MSSQLTypes(MSTypeCompiler):
    # Tradebase's strings are Unicode: on SQL Server that is the N types (VARCHAR holds the
    # database's code page only). TEXT is deprecated there; NVARCHAR(max) replaces it.
    def visit_VARCHAR(self, type_: Any, **kw: Any) -> str:  # noqa: N802
        return str(self.visit_NVARCHAR(type_, **kw))  # type: ignore[no-untyped-call]

    def visit_CHAR(self, type_: Any, **kw: Any) -> str:  # noqa: N802
        return str(self.visit_NCHAR(type_, **kw))  # type: ignore[no-untyped-call]

    def visit_TEXT(self, type_: Any, **kw: Any) -> str:  # noqa: N802
        return "NVARCHAR(max)"


class _MSSQLDialect(MSDialect):
    type_compiler_cls = _MSSQLTypes


def sqlalchemy_dialect(dialect: DDLDialect) -> Dialect:
    """The SQLAlchemy dialect the DDL of *dialect* is compiled with."""
    if dialect is DDLDialect.mssql:
        ms = _MSSQLDialect(deprecate_large_types=True)  # type: ignore[no-untyped-call]
        ms.server_version_info = (16,)  # type: ignore[assignment]  # SQL Server 2022: DATE, TIME, DATETIME2 exist
        return ms
    if dialect is DDLDialect.postgresql:
        return postgresql.dialect()  # type: ignore[no-untyped-call]
    if dialect is DDLDialect.mysql:
        return mysql.dialect()
    return sqlite.dialect()


def _metadata(database: Database) -> MetaData:
    from tradebase.schema import metadata_for  # imports every model

    return metadata_for(database)


def ddl_statements(database: Database, dialect: DDLDialect) -> list[str]:
    """The CREATE statements of *database*'s tables, indexes and triggers on *dialect*, in
    dependency order (a table after those it refers to), without terminators."""
    metadata = _metadata(database)
    target = sqlalchemy_dialect(dialect)

    def compiled(element: ExecutableDDLElement) -> str:
        return str(element.compile(dialect=target)).strip()

    statements: list[str] = []
    ordered = sort_tables_and_constraints(  # type: ignore[no-untyped-call]
        sorted(metadata.tables.values(), key=lambda t: t.name)
    )
    for table, foreign_keys in ordered:
        if table is None:  # foreign keys of a cycle, added once both tables exist
            statements += [compiled(AddConstraint(fk)) for fk in foreign_keys]
            continue
        statements.append(
            compiled(CreateTable(table, include_foreign_key_constraints=foreign_keys))
        )
        statements += [
            compiled(CreateIndex(index))
            for index in sorted(table.indexes, key=lambda i: str(i.name))
        ]
    stamped = [
        table
        for table in sorted(metadata.tables.values(), key=lambda t: t.name)
        if UPDATED_AT in table.c and not table.name.endswith("_archive")
    ]
    if stamped and dialect is DDLDialect.postgresql:
        statements.append(PG_UPDATED_AT_FUNCTION)
    for table in stamped:
        key = [column.name for column in table.primary_key.columns]
        statements.append(updated_at_trigger_sql(target, table.name, key))
    return statements


_BATCH_START = re.compile(
    r"^\s*CREATE\s+(OR\s+ALTER\s+)?(TRIGGER|PROCEDURE|PROC|FUNCTION|VIEW)\b", re.I
)


def join_statements(statements: list[str], dialect: DDLDialect | str) -> str:
    """A script of *statements*: each ends with ``;``. On SQL Server a trigger, procedure,
    function or view must be alone in its batch, so ``GO`` lines surround it."""
    parts = []
    for statement in statements:
        if str(dialect) in ("mssql", "tsql") and _BATCH_START.match(statement):
            parts.append(f"GO\n{statement};\nGO")
        else:
            parts.append(f"{statement};")
    return "\n\n".join(parts) + "\n"


def render_ddl(databases: list[Database], dialect: DDLDialect) -> str:
    """The DDL script of *databases* on *dialect*, each under a comment naming it."""
    sections = []
    for database in databases:
        header = (
            f"-- Tradebase {database.value} database: DDL for {dialect.value}, from the models.\n"
            "-- For reading or other tools: `tradebase db upgrade` builds and migrates a"
            " database.\n\n"
        )
        sections.append(header + join_statements(ddl_statements(database, dialect), dialect))
    return "\n".join(sections)


# --- dialect conversion ----------------------------------------------------------------


class SQLDialect(StrEnum):
    """Dialects `convert` reads and writes (sqlglot's names)."""

    sqlite = "sqlite"
    postgres = "postgres"
    mysql = "mysql"
    tsql = "tsql"


class StatementError(Exception):
    """A statement of the input that cannot be read: *line* is where it starts."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Statement:
    """One statement of a script: its text (without the terminator) and its first line."""

    sql: str
    line: int
    tokens: tuple[Token, ...] = field(repr=False)
    batch: str = field(repr=False, default="")  # the text the tokens' offsets refer to
    line_offset: int = field(repr=False, default=0)  # the tokens' line + this: the file's


@dataclass
class Conversion:
    """The converted script and the notes about what needs a look by hand."""

    sql: str
    statements: int
    notes: list[str] = field(default_factory=list)


class TradebaseSQLite(SQLite):
    """SQLite as sqlglot reads it, plus MySQL's inline ``INDEX name (cols)`` and
    ``KEY name (cols)`` in CREATE TABLE, which SQLite itself refuses but schema documents
    written for SQLite (seed 003's) use."""

    class Parser(SQLiteParser):
        def _parse_constraint(self) -> exp.Expr | None:
            if self._inline_index_ahead():
                self._advance()
                name = None if self._curr.token_type == TokenType.L_PAREN else self._parse_id_var()
                columns = self._parse_wrapped_csv(self._parse_ordered)
                return self.expression(
                    exp.IndexColumnConstraint(this=name, expressions=columns, index_type=False)
                )
            return super()._parse_constraint()

        def _inline_index_ahead(self) -> bool:
            # INDEX|KEY [name] ( column ...: a column named "key" is followed by its type
            # instead, and a type's parenthesis holds a number.
            curr = self._curr
            if curr is None or curr.token_type == TokenType.IDENTIFIER:  # "key", quoted
                return False
            if curr.text.upper() not in ("INDEX", "KEY"):
                return False
            ahead = self._tokens[self._index + 1 : self._index + 4]
            if ahead and ahead[0].token_type == TokenType.L_PAREN:
                return len(ahead) > 1 and ahead[1].token_type != TokenType.NUMBER
            return (
                len(ahead) == 3
                and ahead[1].token_type == TokenType.L_PAREN
                and ahead[2].token_type != TokenType.NUMBER
            )


_READERS: dict[SQLDialect, type[GlotDialect]] = {SQLDialect.sqlite: TradebaseSQLite}


def _reader(dialect: SQLDialect) -> GlotDialect:
    return (_READERS.get(dialect) or GlotDialect.get_or_raise(dialect.value).__class__)()


# --- splitting a script into statements


_OPENS_BLOCK = {TokenType.BEGIN, TokenType.CASE}
_NOT_A_BLOCK_AFTER_BEGIN = {
    "TRAN",
    "TRANSACTION",
    "DISTRIBUTED",
    "DEFERRED",
    "IMMEDIATE",
    "EXCLUSIVE",
}
_CLOSES_OTHER = {"IF", "LOOP", "WHILE", "REPEAT"}  # END IF etc. close what BEGIN did not open


def _token_error_line(text: str, error: TokenError) -> int:
    cause = str(error.__cause__ or "")
    found = re.search(r"from (\d+):", cause)
    if found:
        return int(found.group(1))
    start = getattr(error, "start", None)
    if isinstance(start, int):
        return text.count("\n", 0, min(start + 50, len(text))) + 1
    return 1


def _is_block_statement(tokens: list[Token], dialect: SQLDialect) -> bool:
    words = [t.text.upper() for t in tokens[:4]]
    if dialect is SQLDialect.tsql:
        return True  # IF ... BEGIN ... END blocks run at the top level of T-SQL scripts
    return (
        bool(words)
        and words[0] == "CREATE"
        and ("TRIGGER" in words or "PROCEDURE" in words or "FUNCTION" in words)
    )


_GO = re.compile(r"^[ \t]*GO[ \t]*(?:--[^\n]*)?$", re.IGNORECASE | re.MULTILINE)


def _batches(text: str, dialect: SQLDialect) -> Iterator[tuple[str, int]]:
    # GO is not T-SQL but the line on which sqlcmd and SSMS end a batch: it ends any
    # statement or block, so the script is cut there before it is tokenized.
    if dialect is not SQLDialect.tsql:
        yield text, 1
        return
    start = 0
    for match in _GO.finditer(text):
        yield text[start : match.start()], text.count("\n", 0, start) + 1
        start = match.end()
    yield text[start:], text.count("\n", 0, start) + 1


def split_statements(text: str, dialect: SQLDialect) -> Iterator[Statement]:
    """The statements of *text*, split at ``;`` (and at ``GO`` lines in T-SQL) with the
    dialect's own tokenizer, so that strings, comments, quoted names and the
    ``BEGIN … END`` bodies of triggers never split a statement."""
    reader = _reader(dialect)
    for batch, first_line in _batches(text, dialect):
        yield from _split_batch(batch, first_line, dialect, reader)


def _split_batch(
    text: str, first_line: int, dialect: SQLDialect, reader: GlotDialect
) -> Iterator[Statement]:
    try:
        tokens = reader.tokenize(text)
    except TokenError as exc:
        line = first_line + _token_error_line(text, exc) - 1
        raise StatementError(line, f"cannot read the SQL from here: {exc}") from None
    start_offset = 0
    current: list[Token] = []
    depth = 0
    block = False

    def flush(end_offset: int) -> Statement | None:
        if not current:
            return None
        body = text[start_offset:end_offset].strip()
        return Statement(
            body, first_line + current[0].line - 1, tuple(current), text, first_line - 1
        )

    for index, token in enumerate(tokens):
        if token.token_type == TokenType.SEMICOLON and depth == 0:
            statement = flush(token.start)
            if statement:
                yield statement
            current, block, start_offset = [], False, token.end + 1
            continue
        if not current:
            block = _is_block_statement(tokens[index : index + 4], dialect)
        current.append(token)
        if not block:
            continue
        following = tokens[index + 1].text.upper() if index + 1 < len(tokens) else ";"
        if token.token_type in _OPENS_BLOCK:
            if token.token_type == TokenType.BEGIN and (
                following in _NOT_A_BLOCK_AFTER_BEGIN or following == ";"
            ):
                continue
            depth += 1
        elif token.token_type == TokenType.END and depth > 0 and following not in _CLOSES_OTHER:
            depth -= 1
    statement = flush(len(text))
    if statement:
        yield statement


# --- transforms -----------------------------------------------------------------------

_TEXT_TYPES = {
    exp.DType.TEXT,
    exp.DType.MEDIUMTEXT,
    exp.DType.LONGTEXT,
    exp.DType.TINYTEXT,
    exp.DType.NAME,
}
_VARCHAR_TYPES = {exp.DType.VARCHAR, exp.DType.NVARCHAR}
_CHAR_TYPES = {exp.DType.CHAR, exp.DType.NCHAR}
_BINARY_TYPES = {exp.DType.VARBINARY, exp.DType.BINARY, exp.DType.BLOB}
_TIMESTAMP_TYPES = {exp.DType.DATETIME, exp.DType.TIMESTAMP, exp.DType.TIMESTAMPNTZ}
_INTEGER_TYPES = {exp.DType.INT, exp.DType.BIGINT, exp.DType.SMALLINT, exp.DType.TINYINT}
_JSON_TYPES = {exp.DType.JSON, exp.DType.JSONB}
_MSSQL_MAX_N = 4000  # NVARCHAR(n) and NCHAR(n) go up to 4000 characters, then (MAX)
_DEFAULT_SCHEMA = {SQLDialect.tsql: "dbo", SQLDialect.postgres: "public"}
_UTC_NOW_TSQL = {"SYSUTCDATETIME", "GETUTCDATE"}
# Engines whose index names are per schema (a second idx_status on another table clashes)
# and that have no inline INDEX in CREATE TABLE.
_SCHEMA_WIDE_INDEX_NAMES = {SQLDialect.sqlite, SQLDialect.postgres}
_TABLE_WIDE_INDEX_NAMES = {SQLDialect.mysql, SQLDialect.tsql}


def _params(data_type: exp.DataType) -> list[exp.Expr]:
    return list(data_type.expressions or [])


def _is_max(data_type: exp.DataType) -> bool:
    return any(p.name.upper() == "MAX" for p in _params(data_type))


def _length(data_type: exp.DataType) -> int | None:
    for param in _params(data_type):
        value = param.this if isinstance(param, exp.DataTypeParam) else param
        if isinstance(value, exp.Literal) and value.is_int:
            return int(value.name)
    return None


def _dtype(kind: exp.DType, *params: exp.Expr) -> exp.DataType:
    return exp.DataType(this=kind, expressions=[exp.DataTypeParam(this=p) for p in params])


def _max() -> exp.Expr:
    return exp.var("MAX")


def _column_constraints(column: exp.ColumnDef) -> list[exp.ColumnConstraint]:
    return list(column.args.get("constraints") or [])


def _has(column: exp.ColumnDef, kind: type[exp.Expr]) -> bool:
    return any(isinstance(c.kind, kind) for c in _column_constraints(column))


def _drop(column: exp.ColumnDef, kind: type[exp.Expr] | tuple[type[exp.Expr], ...]) -> None:
    column.set(
        "constraints", [c for c in _column_constraints(column) if not isinstance(c.kind, kind)]
    )


def _add(column: exp.ColumnDef, kind: exp.Expr) -> None:
    column.set("constraints", [*_column_constraints(column), exp.ColumnConstraint(kind=kind)])


def _identity(column: exp.ColumnDef) -> bool:
    return _has(column, exp.AutoIncrementColumnConstraint) or _has(
        column, exp.GeneratedAsIdentityColumnConstraint
    )


def _table_elements(create: exp.Create) -> list[exp.Expr]:
    schema = create.this
    return list(schema.expressions) if isinstance(schema, exp.Schema) else []


def _table_name(create: exp.Create) -> str:
    table = create.find(exp.Table)
    return table.name if table is not None else ""


def _primary_key_columns(element: exp.Expr) -> list[str] | None:
    """The columns of a table-level PRIMARY KEY (named or not), else None."""
    node = element
    if isinstance(element, exp.Constraint):
        keys = [e for e in element.expressions if isinstance(e, exp.PrimaryKey)]
        if not keys:
            return None
        node = keys[0]
    if not isinstance(node, exp.PrimaryKey):
        return None
    names = []
    for col in node.expressions:
        target = col.this if isinstance(col, exp.Ordered) else col
        names.append(target.name)
    return names


@dataclass
class _Context:
    source: SQLDialect
    target: SQLDialect
    notes: list[str]
    index_names: set[str] = field(default_factory=set)
    primary_keys: dict[str, list[str]] = field(default_factory=dict)
    pg_function: bool = False
    line: int = 0

    def note(self, message: str) -> None:
        self.notes.append(f"line {self.line}: {message}")


def _unwrap_default_orderings(tree: exp.Expr) -> None:
    # sqlglot gives every key or index column an implicit NULLS FIRST/LAST; PostgreSQL
    # refuses it in a PRIMARY KEY or UNIQUE list. Only an explicit DESC is worth keeping.
    for ordered in list(tree.find_all(exp.Ordered)):
        if not ordered.args.get("desc"):
            ordered.replace(ordered.this)
        else:
            ordered.set("nulls_first", None)


def _sqlite_rowid_identity(create: exp.Create, ctx: _Context) -> None:
    """SQLite's INTEGER PRIMARY KEY numbers rows itself (a rowid alias, with or without
    AUTOINCREMENT): elsewhere that is an identity column."""
    elements = _table_elements(create)
    columns = {c.name: c for c in elements if isinstance(c, exp.ColumnDef)}
    candidates = [c for c in columns.values() if _has(c, exp.PrimaryKeyColumnConstraint)]
    for element in elements:
        keys = _primary_key_columns(element)
        if keys and len(keys) == 1 and keys[0] in columns:
            candidates.append(columns[keys[0]])
    # A key a CHECK constrains (audit_chain_head's id = 1) is no counter, and MySQL
    # refuses AUTO_INCREMENT columns in a CHECK.
    checked = {
        column.name
        for check in create.find_all(exp.CheckColumnConstraint)
        for column in check.find_all(exp.Column)
    }
    for column in candidates:
        kind = column.args.get("kind")
        if (
            isinstance(kind, exp.DataType)
            and kind.this == exp.DType.INT
            and not _identity(column)
            and column.name not in checked
        ):
            _add(column, exp.AutoIncrementColumnConstraint())


def _sqlite_collations(create: exp.Create, ctx: _Context) -> None:
    """Tradebase's decimals are text under the tb_decimal collation on SQLite: elsewhere
    NUMERIC(38, 18). SQLite's own collations (NOCASE, RTRIM) exist nowhere else."""
    for column in create.find_all(exp.ColumnDef):
        for constraint in _column_constraints(column):
            if not isinstance(constraint.kind, exp.CollateColumnConstraint):
                continue
            collation = constraint.kind.this
            name = collation.name if isinstance(collation, exp.Expr) else str(collation)
            if name.lower() == SQLITE_COLLATION:
                column.set(
                    "kind",
                    _dtype(
                        exp.DType.DECIMAL, exp.Literal.number(PRECISION), exp.Literal.number(SCALE)
                    ),
                )
            elif name.upper() != "BINARY":
                ctx.note(f"column {column.name}: SQLite's COLLATE {name} dropped")
        _drop(column, exp.CollateColumnConstraint)


def _sqlite_numeric_keys(create: exp.Create, ctx: _Context) -> None:
    """An index on ``(col + 0)`` is how Tradebase keys a decimal on SQLite (core/money.py
    num_key: the float of its text, so writers need no collation); elsewhere the column
    is NUMERIC and is indexed as it is, and MariaDB has no expression indexes."""
    for add in list(create.find_all(exp.Add)):
        inner = add.parent.this if isinstance(add.parent, exp.Paren) else None
        operand, zero = add.this, add.expression
        if not (isinstance(operand, exp.Column) and isinstance(zero, exp.Literal)):
            continue
        if zero.is_string or zero.this not in ("0", "0.0"):
            continue
        (add.parent if inner is add else add).replace(operand.copy())
        ctx.note(f"index on ({operand.name} + 0): the decimal column {operand.name} itself")


def _utc_now(tree: exp.Expr, ctx: _Context) -> None:
    """SQLite's CURRENT_TIMESTAMP and strftime('…', 'now') are UTC, as are T-SQL's
    SYSUTCDATETIME() and GETUTCDATE(): all become one UTC-now node."""
    if ctx.source is SQLDialect.sqlite:
        for default in list(tree.find_all(exp.DefaultColumnConstraint)):
            value = default.this
            if value is not None and any(
                lit.is_string and lit.name.lower() == "now" for lit in value.find_all(exp.Literal)
            ):
                default.set("this", exp.UtcTimestamp())
        for now in list(tree.find_all(exp.CurrentTimestamp)):
            now.replace(exp.UtcTimestamp())
    if ctx.source is SQLDialect.tsql:
        for call in list(tree.find_all(exp.Anonymous)):
            if call.name.upper() in _UTC_NOW_TSQL:
                call.replace(exp.UtcTimestamp())


def _named_unique(create: exp.Create, ctx: _Context) -> None:
    """MySQL's ``UNIQUE KEY name (cols)`` becomes ``CONSTRAINT name UNIQUE (cols)``,
    which every engine reads."""
    schema = create.this
    if not isinstance(schema, exp.Schema):
        return
    for element in list(schema.expressions):
        if not isinstance(element, exp.UniqueColumnConstraint):
            continue
        inner = element.this
        if isinstance(inner, exp.Schema) and inner.this is not None:
            name = inner.this
            unique = exp.UniqueColumnConstraint(this=exp.Schema(expressions=inner.expressions))
            element.replace(exp.Constraint(this=name.copy(), expressions=[unique]))


def _tsql_storage(tree: exp.Expr, ctx: _Context) -> None:
    """SQL Server's CLUSTERED keys, ``ON [PRIMARY]`` filegroups and WITH (…) index
    options mean nothing elsewhere."""
    for constraint in list(tree.find_all(exp.Constraint)):
        parts = list(constraint.expressions)
        clustered = [p for p in parts if isinstance(p, exp.ClusteredColumnConstraint)]
        if clustered:
            columns = clustered[0].this if isinstance(clustered[0].this, list) else []
            rebuilt: list[exp.Expr] = []
            for part in parts:
                if isinstance(part, exp.PrimaryKeyColumnConstraint):
                    rebuilt.append(exp.PrimaryKey(expressions=[c.copy() for c in columns]))
                elif isinstance(part, exp.UniqueColumnConstraint):
                    rebuilt.append(
                        exp.UniqueColumnConstraint(
                            this=exp.Schema(expressions=[c.copy() for c in columns])
                        )
                    )
            constraint.set("expressions", rebuilt)
        else:
            constraint.set(
                "expressions",
                [p for p in parts if not isinstance(p, exp.Properties | exp.OnProperty)],
            )
    for prop in list(tree.find_all(exp.OnProperty)):
        prop.pop()
    properties = tree.args.get("properties")
    if isinstance(properties, exp.Properties) and not properties.expressions:
        tree.set("properties", None)
    if isinstance(tree, exp.Create) and "INDEX" in str(tree.args.get("kind") or "").upper():
        tree.set("kind", "INDEX")
        params = tree.this.args.get("params") if isinstance(tree.this, exp.Index) else None
        if isinstance(params, exp.IndexParameters):
            params.set("with_storage", None)
            params.set("on", None)


def _default_schema(tree: exp.Expr, ctx: _Context) -> None:
    default = _DEFAULT_SCHEMA.get(ctx.source)
    if default is None:
        return
    for table in tree.find_all(exp.Table):
        if table.args.get("db") is not None and table.db.lower() == default and not table.catalog:
            table.set("db", None)


def _tsql_types(tree: exp.Expr, ctx: _Context) -> None:
    """Strings become NVARCHAR (Unicode), TEXT and JSON NVARCHAR(MAX), timestamps without
    a zone DATETIME2, booleans BIT; identity columns IDENTITY(1,1)."""
    for data_type in list(tree.find_all(exp.DataType)):
        kind = data_type.this
        length = _length(data_type)
        if kind in _TEXT_TYPES or kind in _JSON_TYPES:
            if kind == exp.DType.TEXT and length is not None and length <= _MSSQL_MAX_N:
                data_type.replace(_dtype(exp.DType.NVARCHAR, exp.Literal.number(length)))
            else:
                data_type.replace(_dtype(exp.DType.NVARCHAR, _max()))
        elif kind in _VARCHAR_TYPES:
            if length is None or length > _MSSQL_MAX_N:
                data_type.replace(_dtype(exp.DType.NVARCHAR, _max()))
            else:
                data_type.replace(_dtype(exp.DType.NVARCHAR, exp.Literal.number(length)))
        elif kind in _CHAR_TYPES:
            if length is not None and length > _MSSQL_MAX_N:
                data_type.replace(_dtype(exp.DType.NVARCHAR, _max()))
            else:
                data_type.replace(_dtype(exp.DType.NCHAR, *_params_of(data_type)))
        elif kind in _TIMESTAMP_TYPES:
            data_type.replace(_dtype(exp.DType.DATETIME2, *_params_of(data_type)))
        elif kind == exp.DType.BOOLEAN:
            data_type.replace(exp.DataType(this=exp.DType.BIT))
    for column in tree.find_all(exp.ColumnDef):
        if _identity(column):
            _drop(
                column, (exp.AutoIncrementColumnConstraint, exp.GeneratedAsIdentityColumnConstraint)
            )
            identity = exp.GeneratedAsIdentityColumnConstraint(
                this=False, start=exp.Literal.number(1), increment=exp.Literal.number(1)
            )
            constraints = _column_constraints(column)
            column.set("constraints", [exp.ColumnConstraint(kind=identity), *constraints])
    for default in tree.find_all(exp.DefaultColumnConstraint):
        if isinstance(default.this, exp.Boolean):  # sqlglot would write (1 = 0)
            default.set("this", exp.Literal.number(1 if default.this.this else 0))
    for now in list(tree.find_all(exp.UtcTimestamp)):
        now.replace(exp.Anonymous(this="SYSUTCDATETIME", expressions=[]))


def _params_of(data_type: exp.DataType) -> list[exp.Expr]:
    return [p.this if isinstance(p, exp.DataTypeParam) else p for p in _params(data_type)]


def _from_tsql_types(tree: exp.Expr, ctx: _Context) -> None:
    """T-SQL's (MAX) lengths, BIT booleans and TINYINT have other names elsewhere."""
    for data_type in list(tree.find_all(exp.DataType)):
        kind = data_type.this
        if _is_max(data_type):
            if kind in _BINARY_TYPES:
                data_type.replace(exp.DataType(this=exp.DType.BLOB))
            elif ctx.target is SQLDialect.mysql:
                data_type.replace(exp.DataType(this=exp.DType.LONGTEXT))
            else:
                data_type.replace(exp.DataType(this=exp.DType.TEXT))
        elif kind == exp.DType.BIT:
            data_type.replace(exp.DataType(this=exp.DType.BOOLEAN))
        elif kind == exp.DType.UTINYINT and ctx.target is not SQLDialect.mysql:
            data_type.replace(exp.DataType(this=exp.DType.SMALLINT))


_SERIALS = {
    exp.DType.SERIAL: exp.DType.INT,
    exp.DType.BIGSERIAL: exp.DType.BIGINT,
    exp.DType.SMALLSERIAL: exp.DType.SMALLINT,
}


def _from_postgres_types(tree: exp.Expr, ctx: _Context) -> None:
    """PostgreSQL's SERIAL types are an integer with a sequence: an identity elsewhere;
    JSONB is its binary JSON."""
    for column in list(tree.find_all(exp.ColumnDef)):
        kind = column.args.get("kind")
        if isinstance(kind, exp.DataType) and kind.this in _SERIALS:
            column.set("kind", exp.DataType(this=_SERIALS[kind.this]))
            if not _identity(column):
                _add(column, exp.AutoIncrementColumnConstraint())
    for data_type in list(tree.find_all(exp.DataType)):
        if data_type.this == exp.DType.JSONB:
            data_type.replace(exp.DataType(this=exp.DType.JSON))


def _boolean_defaults(create: exp.Create, ctx: _Context) -> None:
    """``BOOLEAN DEFAULT 1`` is an error on PostgreSQL: write TRUE/FALSE there."""
    for column in create.find_all(exp.ColumnDef):
        kind = column.args.get("kind")
        if not (isinstance(kind, exp.DataType) and kind.this == exp.DType.BOOLEAN):
            continue
        for default in column.find_all(exp.DefaultColumnConstraint):
            value = default.this
            if isinstance(value, exp.Paren):
                value = value.this
            if isinstance(value, exp.Literal) and value.name in ("0", "1"):
                default.set("this", exp.Boolean(this=value.name == "1"))


def _sqlite_types(create: exp.Create, ctx: _Context) -> None:
    """On SQLite an identity is an INTEGER PRIMARY KEY (AUTOINCREMENT, so ids are never
    reused); a decimal keeps its declared precision as NUMERIC(p, s); (MAX) has no
    meaning there; N'…' strings are plain ones."""
    elements = _table_elements(create)
    primary_keys = [(e, _primary_key_columns(e)) for e in elements]
    for column in [e for e in elements if isinstance(e, exp.ColumnDef)]:
        if not _identity(column):
            continue
        _drop(column, (exp.AutoIncrementColumnConstraint, exp.GeneratedAsIdentityColumnConstraint))
        column.set("kind", exp.DataType(this=exp.DType.INT))
        if _has(column, exp.PrimaryKeyColumnConstraint):
            _drop(column, exp.PrimaryKeyColumnConstraint)
        else:
            table_keys = [e for e, cols in primary_keys if cols == [column.name]]
            if not table_keys:
                ctx.note(
                    f"column {column.name}: an identity outside a one-column primary key"
                    " has no SQLite equivalent: dropped"
                )
                continue
            for element in table_keys:
                element.pop()
        _drop(column, exp.NotNullColumnConstraint)
        _add(column, exp.PrimaryKeyColumnConstraint())
        _add(column, exp.AutoIncrementColumnConstraint())
    for data_type in list(create.find_all(exp.DataType)):
        if data_type.this == exp.DType.DECIMAL:  # sqlglot would write REAL(p, s)
            data_type.replace(
                exp.DataType(
                    this=exp.DType.USERDEFINED, kind="NUMERIC", expressions=data_type.expressions
                )
            )
        elif _is_max(data_type):
            data_type.set("expressions", [])
    for national in list(create.find_all(exp.National)):
        national.replace(exp.Literal.string(national.name))


def _mysql_defaults(create: exp.Create, ctx: _Context) -> None:
    """MySQL takes a default for TEXT/JSON columns and a function default such as
    UTC_TIMESTAMP() only as an expression in parentheses."""
    for column in create.find_all(exp.ColumnDef):
        kind = column.args.get("kind")
        textual = isinstance(kind, exp.DataType) and (
            kind.this in _TEXT_TYPES or kind.this in _JSON_TYPES or kind.this in _BINARY_TYPES
        )
        for default in column.find_all(exp.DefaultColumnConstraint):
            value = default.this
            if value is None or isinstance(value, exp.Paren):
                continue
            if (textual and isinstance(value, exp.Literal)) or isinstance(value, exp.UtcTimestamp):
                default.set("this", exp.Paren(this=value.copy()))
        if isinstance(kind, exp.DataType) and not _params(kind):
            if kind.this == exp.DType.VARCHAR:  # MySQL's VARCHAR needs a length
                column.set("kind", exp.DataType(this=exp.DType.TEXT))
            elif kind.this == exp.DType.VARBINARY:
                column.set("kind", exp.DataType(this=exp.DType.LONGBLOB))


def _drop_include(tree: exp.Expr, ctx: _Context) -> None:
    params = tree.this.args.get("params") if isinstance(tree.this, exp.Index) else None
    if isinstance(params, exp.IndexParameters) and params.args.get("include"):
        ctx.note(
            f"index {tree.this.name}: INCLUDE (…) dropped ({ctx.target.value} has no"
            " covering indexes)"
        )
        params.set("include", None)


def _unique_index_name(name: str, table: str, ctx: _Context) -> str:
    if name.lower() not in ctx.index_names:
        ctx.index_names.add(name.lower())
        return name
    renamed = f"{table}_{name}"
    ctx.index_names.add(renamed.lower())
    ctx.note(f"index {name} renamed {renamed}: index names are per schema in {ctx.target.value}")
    return renamed


def _inline_indexes(create: exp.Create, ctx: _Context) -> list[exp.Expr]:
    """``INDEX name (cols)`` inside CREATE TABLE becomes a CREATE INDEX after it."""
    schema = create.this
    if not isinstance(schema, exp.Schema):
        return []
    table = _table_name(create)
    extracted: list[exp.Expr] = []
    for element in list(schema.expressions):
        if not isinstance(element, exp.IndexColumnConstraint):
            continue
        element.pop()
        if element.args.get("kind"):  # FULLTEXT, SPATIAL
            ctx.note(f"{element.args['kind']} index on {table} dropped")
            continue
        columns = [c.copy() for c in element.expressions]
        base = element.name or f"ix_{table}_{'_'.join(c.name for c in columns)}"
        name = _unique_index_name(base, table, ctx)
        index = exp.Create(
            kind="INDEX",
            this=exp.Index(
                this=exp.to_identifier(name),
                table=schema.this.copy(),
                params=exp.IndexParameters(columns=columns),
            ),
        )
        _unwrap_default_orderings(index)
        extracted.append(index)
    return extracted


def _record_primary_key(create: exp.Create, ctx: _Context) -> None:
    for element in _table_elements(create):
        if isinstance(element, exp.ColumnDef) and _has(element, exp.PrimaryKeyColumnConstraint):
            ctx.primary_keys[_table_name(create)] = [element.name]
        keys = _primary_key_columns(element)
        if keys:
            ctx.primary_keys[_table_name(create)] = keys


_SA_DIALECTS = {
    SQLDialect.sqlite: DDLDialect.sqlite,
    SQLDialect.postgres: DDLDialect.postgresql,
    SQLDialect.mysql: DDLDialect.mysql,
    SQLDialect.tsql: DDLDialect.mssql,
}


def _tradebase_trigger(statement: Statement, ctx: _Context) -> list[str] | None:
    """Tradebase's own ``updated_at`` triggers (core.ddl), which sqlglot cannot parse,
    written for the target: recognised by being exactly what core.ddl writes."""
    words = [t.text.upper() for t in statement.tokens]
    if statement.sql == PG_UPDATED_AT_FUNCTION:
        return []  # written again before the first trigger that needs it
    if words[:2] != ["CREATE", "TRIGGER"] or "ON" not in words:
        return None
    table = statement.tokens[words.index("ON") + 1].text
    key = ctx.primary_keys.get(table, ["id"])
    source = sqlalchemy_dialect(_SA_DIALECTS[ctx.source])
    if statement.sql != updated_at_trigger_sql(source, table, key):
        return None
    out = []
    if ctx.target is SQLDialect.postgres and not ctx.pg_function:
        out.append(PG_UPDATED_AT_FUNCTION)
        ctx.pg_function = True
    out.append(updated_at_trigger_sql(sqlalchemy_dialect(_SA_DIALECTS[ctx.target]), table, key))
    return out


def _transform(tree: exp.Expr, ctx: _Context) -> list[exp.Expr]:
    """*tree* converted from ctx.source to ctx.target, with the CREATE INDEX statements
    pulled out of it."""
    source, target = ctx.source, ctx.target
    create = tree if isinstance(tree, exp.Create) else None
    is_table = create is not None and str(create.args.get("kind") or "").upper() == "TABLE"
    if is_table and create is not None:
        _record_primary_key(create, ctx)
    is_index = create is not None and "INDEX" in str(create.args.get("kind") or "").upper()
    extra: list[exp.Expr] = []
    if source is SQLDialect.sqlite and target is not SQLDialect.sqlite and create is not None:
        _sqlite_rowid_identity(create, ctx)
        _sqlite_collations(create, ctx)
    if source != target:
        _utc_now(tree, ctx)
        _default_schema(tree, ctx)
    if source is SQLDialect.tsql and target is not SQLDialect.tsql:
        _tsql_storage(tree, ctx)
        _from_tsql_types(tree, ctx)
    if create is not None and (is_table or is_index):
        _unwrap_default_orderings(create)
    if is_table and create is not None:
        _named_unique(create, ctx)
        if target in _SCHEMA_WIDE_INDEX_NAMES:
            extra = _inline_indexes(create, ctx)
    if is_index and create is not None:
        if source is SQLDialect.sqlite and target is not SQLDialect.sqlite:
            _sqlite_numeric_keys(create, ctx)
        if target in (SQLDialect.sqlite, SQLDialect.mysql):
            _drop_include(create, ctx)
        if target in _SCHEMA_WIDE_INDEX_NAMES and source in _TABLE_WIDE_INDEX_NAMES:
            index = create.this
            if isinstance(index, exp.Index):
                table = index.args.get("table")
                name = _unique_index_name(index.name, table.name if table else "", ctx)
                index.set("this", exp.to_identifier(name))
        elif target in _SCHEMA_WIDE_INDEX_NAMES and isinstance(create.this, exp.Index):
            ctx.index_names.add(create.this.name.lower())
    if source is SQLDialect.postgres and target is not SQLDialect.postgres:
        _from_postgres_types(tree, ctx)
    if target is SQLDialect.tsql:
        _tsql_types(tree, ctx)
        for index in extra:
            _tsql_types(index, ctx)
    elif create is not None:
        if target is SQLDialect.sqlite:
            _sqlite_types(create, ctx)
        if target is SQLDialect.postgres:
            _boolean_defaults(create, ctx)
        if target is SQLDialect.mysql:
            _mysql_defaults(create, ctx)
    return [tree, *extra]


# --- converting -----------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _sqlglot_messages() -> Iterator[_Collect]:
    """sqlglot logs what it cannot translate; collect it as notes instead of letting it
    print to standard error."""
    logger = logging.getLogger("sqlglot")
    handler = _Collect()
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


def _commented(statement: Statement, ctx: _Context, why: str) -> str:
    ctx.note(f"{why}: left as a comment, convert it by hand")
    head = (
        f"-- tradebase schema convert: not converted from {ctx.source.value} to"
        f" {ctx.target.value} (input line {statement.line}): {why}"
    )
    body = "\n".join(f"-- {line}" if line else "--" for line in statement.sql.splitlines())
    return f"{head}\n{body}"


def _describe(statement: Statement) -> str:
    words = [t.text.upper() for t in statement.tokens[:3]]
    return " ".join(words)


def _parse(statement: Statement, reader: GlotDialect) -> list[exp.Expr]:
    try:
        # The statement's own tokens: the script is tokenized once, not twice.
        trees = reader.parser().parse(list(statement.tokens), statement.batch)
        return [e for e in trees if e is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line = statement.line_offset + int(first.get("line") or statement.line)
        description = first.get("description") or str(exc)
        start = statement.tokens[0].start  # past the comments before the statement
        end = min(statement.tokens[-1].end + 1, start + 200)
        snippet = " ".join(statement.batch[start:end].split())[:80]
        raise StatementError(
            statement.line,
            f"cannot parse this statement ({snippet}…): {description}"
            f" (line {line}, column {first.get('col', '?')})",
        ) from None
    except TokenError as exc:
        raise StatementError(statement.line, f"cannot read this statement: {exc}") from None


_PROCEDURAL = {"TRIGGER", "FUNCTION", "PROCEDURE"}


def _translatable(tree: exp.Expr, ctx: _Context) -> bool:
    # Session settings (SET ANSI_NULLS ON, PRAGMA foreign_keys) belong to their engine.
    if isinstance(tree, exp.Command):
        return False
    if ctx.source == ctx.target:
        return True
    if isinstance(tree, exp.Create) and str(tree.kind).upper() in _PROCEDURAL:
        return False  # parsed, but their bodies are in the source's procedural language
    return not isinstance(tree, exp.Pragma | exp.Set)


def convert(
    text: str,
    source: SQLDialect,
    target: SQLDialect,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Conversion:
    """Convert the script *text* from *source* to *target*, statement by statement.

    Raise `StatementError` (naming the line) for a statement that cannot be parsed;
    nothing is converted then. *progress* is called with (done, total) statements.
    """
    statements = list(split_statements(text, source))
    reader = _reader(source)
    notes: list[str] = []
    ctx = _Context(source, target, notes)
    output: list[str] = []
    with _sqlglot_messages() as messages:
        for done, statement in enumerate(statements, 1):
            ctx.line = statement.line
            known = _tradebase_trigger(statement, ctx)
            trees = _parse(statement, reader) if known is None else []
            if known is not None:
                output += known
            elif len(trees) == 1 and _translatable(trees[0], ctx):
                for tree in _transform(trees[0], ctx):
                    output.append(tree.sql(dialect=target.value, pretty=True))
                    for message in messages.messages:
                        ctx.note(message)
                    messages.messages.clear()
            elif source == target:
                output.append(statement.sql)
            else:
                output.append(
                    _commented(
                        statement, ctx, f"{_describe(statement)} is not SQL sqlglot translates"
                    )
                )
            messages.messages.clear()
            if progress is not None:
                progress(done, len(statements))
    script = join_statements(output, target) if output else ""
    return Conversion(script, len(statements), notes)
