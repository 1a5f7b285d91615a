"""Declarative bases for the two databases, the naming convention and shared columns."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Index, Integer, MetaData, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import NullType

from tradebase.core.ddl import JSONDoc
from tradebase.core.money import ExactDecimal
from tradebase.core.time import UTCDateTime, utc_now, utcnow_sql

# Constraint names are part of the schema: migrations and error messages refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TYPE_ANNOTATION_MAP: dict[Any, Any] = {
    Decimal: ExactDecimal(),
    datetime: UTCDateTime(),
    dict[str, Any]: JSONDoc(),
    list[Any]: JSONDoc(),
    list[str]: JSONDoc(),
}


class Base(DeclarativeBase):
    """Tables of the main database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = TYPE_ANNOTATION_MAP


class CredentialsBase(DeclarativeBase):
    """Tables of the credentials database (encrypted secrets, kept apart from trading data)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = TYPE_ANNOTATION_MAP


def created_at_column() -> Mapped[datetime]:
    return mapped_column(default=utc_now, server_default=utcnow_sql())


def updated_at_column() -> Mapped[datetime]:
    # The ORM stamps updates itself (microsecond precision); a trigger on every engine
    # stamps rows that raw SQL updates without setting updated_at (core.ddl).
    return mapped_column(default=utc_now, onupdate=utc_now, server_default=utcnow_sql())


class Timestamps:
    """``created_at`` set once on insert, ``updated_at`` moved on every update."""

    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


def archive_table(source: Table, metadata: MetaData | None = None) -> Table:
    """A ``<table>_archive`` copy of *source* for retention: same columns and types, no
    foreign keys, unique or check constraints (archived rows outlive their parents), plus
    ``archived_at`` and an index on it.
    """
    metadata = metadata if metadata is not None else source.metadata
    name = f"{source.name}_archive"
    columns = []
    for col in source.columns:
        # A foreign key column's type is only known once its parent table exists.
        type_ = Integer() if isinstance(col.type, NullType) else col.type
        columns.append(
            Column(
                col.name,
                type_,
                primary_key=col.primary_key,
                nullable=col.nullable,
                autoincrement=False,
            )
        )
    columns.append(
        Column("archived_at", UTCDateTime(), nullable=False, server_default=utcnow_sql())
    )
    table = Table(name, metadata, *columns)
    Index(f"ix_{name}_archived_at", table.c.archived_at)
    return table
