"""Autogenerate hooks: render Tradebase's portable types and constraints in migrations, and
compare types the way each engine reflects them."""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Column
from sqlalchemy import types as sqltypes
from sqlalchemy.sql.schema import DefaultClause

from tradebase.core.ddl import (
    BigID,
    ExactDecimal,
    JSONDoc,
    UTCDateTime,
    check_name,
    json_default,
    render_check,
    utcnow_sql,
)
from tradebase.core.money import SQLITE_COLLATION

_IMPORT = "import tradebase.core.ddl as tb"
_TYPES = {
    ExactDecimal: "tb.ExactDecimal()",
    UTCDateTime: "tb.UTCDateTime()",
    JSONDoc: "tb.JSONDoc()",
    BigID: "tb.BigID()",
}


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    if type_ == "type":
        for cls, source in _TYPES.items():
            if isinstance(obj, cls):
                autogen_context.imports.add(_IMPORT)
                return source
    elif type_ == "server_default":
        arg = obj.arg if isinstance(obj, DefaultClause) else obj
        if isinstance(arg, utcnow_sql):
            autogen_context.imports.add(_IMPORT)
            return "tb.utcnow_sql()"
        if isinstance(arg, json_default):
            autogen_context.imports.add(_IMPORT)
            return f"tb.json_default({arg.literal!r})"
    elif type_ == "check" and isinstance(obj, CheckConstraint):
        rendered = render_check(obj, check_name(obj))
        if rendered is not None:
            autogen_context.imports.add(_IMPORT)
            return rendered
    return False


def compare_type(
    context: MigrationContext,
    inspected_column: dict[str, Any],
    metadata_column: Column[Any],
    inspected_type: sqltypes.TypeEngine[Any],
    metadata_type: sqltypes.TypeEngine[Any],
) -> bool | None:
    """True when the types differ, False when equal, None for Alembic's own comparison."""
    dialect = context.dialect.name
    if isinstance(metadata_type, JSONDoc):
        # MariaDB reflects JSON as LONGTEXT (plus a JSON_VALID check).
        if dialect in ("mysql", "mariadb") and isinstance(inspected_type, sqltypes.String):
            return False
        return not isinstance(inspected_type, sqltypes.JSON)
    if isinstance(metadata_type, ExactDecimal):
        if dialect == "sqlite":
            if not (isinstance(inspected_type, sqltypes.String) and inspected_type.length == 60):
                return True
            # SQLAlchemy does not reflect SQLite collations: read the column's DDL.
            return not _sqlite_collated(context, metadata_column)
        return not (
            isinstance(inspected_type, sqltypes.Numeric)
            and inspected_type.precision == 38
            and inspected_type.scale == 18
        )
    if isinstance(metadata_type, UTCDateTime):
        return not isinstance(inspected_type, sqltypes.DateTime)
    if isinstance(metadata_type, BigID):
        return not isinstance(inspected_type, sqltypes.Integer)
    return None


def compare_server_default(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool:
    """Whether a server default was added or dropped (True: they differ).

    Each engine spells a default its own way ('0' is 0.000000000000000000 on MariaDB,
    true on PostgreSQL), so only the presence of one is compared, which is what a
    migration most often forgets.
    """
    if metadata_column.primary_key:
        return False
    has_inspected = inspected_default is not None and inspected_default.upper() != "NULL"
    return has_inspected != (metadata_default is not None)


def _sqlite_collated(context: MigrationContext, column: Column[Any]) -> bool:
    sql = context.connection.exec_driver_sql(  # type: ignore[union-attr]
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (column.table.name,)
    ).scalar()
    pattern = (
        rf'(^|[\s,(]){re.escape(column.name)}"?\s+VARCHAR\(60\)\s+COLLATE\s+"?{SQLITE_COLLATION}\b'
    )
    return bool(sql and re.search(pattern, sql))


def skip_empty_revision(
    context: MigrationContext, revision: Any, directives: list[MigrationScript]
) -> None:
    """Write no file when autogenerate found no difference."""
    script = directives[0]
    if script.upgrade_ops is not None and script.upgrade_ops.is_empty():
        directives[:] = []
