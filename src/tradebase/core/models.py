"""Declarative bases for the two databases, the naming convention and shared columns."""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import Column, Index, Integer, MetaData, Table, event
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    configure_mappers,
    make_transient_to_detached,
    mapped_column,
)
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.types import NullType

from tradebase.core.ddl import JSONDoc
from tradebase.core.money import ExactDecimal, canonical
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


_M = TypeVar("_M", bound=DeclarativeBase)


def written(session: Session, obj: Base, **values: Any) -> None:
    """Tell *obj* (loaded in *session*) the values a Core statement just wrote to its row,
    without a flush, and expire them again if the transaction or savepoint rolls back
    (the ORM tracks only the changes it flushes itself)."""
    for name, value in values.items():
        set_committed_value(obj, name, canonical(value) if isinstance(value, Decimal) else value)
    session.info.setdefault(_WRITTEN, {})[id(obj)] = (obj, False)


def attach(
    session: Session, model: type[_M], values: dict[str, Any], *, inserted: bool = True
) -> _M:
    """Put a row just written with Core into *session* as a loaded object, without reading it
    back. *values* are the row's column values as written (and the generated id); a missing
    column takes its scalar default or NULL, and decimals take the canonical form the
    database gives back. A column with any other default must be in *values*.

    The fill path writes with prepared Core statements (an ORM flush costs more than the
    database work, see bench/bench_orders.py) but hands the caller an ORM object.
    """
    state: dict[str, Any] = {}
    for name, key, default in _attach_plan(model):
        value = values.get(name, default)
        if value is _REQUIRED:
            raise ValueError(f"{model.__name__}.{key} is needed to attach a written row")
        state[key] = canonical(value) if isinstance(value, Decimal) else value
    obj = cast(_M, model.__mapper__.class_manager.new_instance())
    obj.__dict__.update(state)  # as the ORM's loader does: no attribute events
    make_transient_to_detached(obj)
    session.add(obj)
    session.info.setdefault(_WRITTEN, {})[id(obj)] = (obj, inserted)
    return obj


_WRITTEN = "tradebase.models.written"  # objects Core wrote in the session's transaction


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous_transaction: Any) -> None:
    # A rolled-back transaction or savepoint may have undone what Core wrote: rows attached
    # as new may not exist any more, values set after an UPDATE may be gone. (Over-eager
    # for a savepoint that came after the writes; that only costs a reload.)
    for obj, inserted in session.info.pop(_WRITTEN, {}).values():
        if obj not in session:
            continue
        if inserted:
            session.expunge(obj)
        else:
            session.expire(obj)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    session.info.pop(_WRITTEN, None)


_REQUIRED = object()


@functools.cache
def _attach_plan(model: type[DeclarativeBase]) -> tuple[tuple[str, str, Any], ...]:
    configure_mappers()  # new_instance() does not configure them, a query or __init__ would
    plan = []
    for column in model.__table__.columns:
        key = model.__mapper__.get_property_by_column(column).key
        default = column.default
        if default is not None:
            value = default.arg if default.is_scalar else _REQUIRED
        elif column.server_default is not None or column.primary_key:
            value = _REQUIRED
        else:
            value = None
        plan.append((column.key, key, value))
    return tuple(plan)


def load(session: Session, model: type[_M], values: dict[str, Any]) -> _M:
    """The object of a row read with Core: the one *session* holds already (as an ORM query
    would return it), else the row attached as a loaded object (see `attach`)."""
    key = model.__mapper__.identity_key_from_primary_key(
        tuple(values[str(c.key)] for c in model.__mapper__.primary_key)
    )
    existing = session.identity_map.get(key)
    if existing is not None:
        return cast(_M, existing)
    return attach(session, model, values, inserted=False)
