"""Helpers of the audit tests: an entry's hash worked out independently, chain databases."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Scratch, ScratchFactory
from tests.factories import create_user
from tradebase.audit.models import AuditLog
from tradebase.audit.service import audit
from tradebase.config import Settings
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work

GENESIS = "0" * 64
ACTIONS = ("login.ok", "login.failed", "order.placed", "order.cancelled", "key.created")


def hand_hash(entry: Mapping[str, Any]) -> str:
    """The SHA-256 of an entry as docs/audit.md defines it, without the service's code."""
    moment: datetime = entry["timestamp"]
    payload = [
        "tradebase-audit-v1",
        entry["id"],
        moment.astimezone(UTC).isoformat(timespec="microseconds"),
        entry["actor_user_id"],
        entry["actor"],
        entry["action"],
        entry["resource_type"],
        entry["resource_id"],
        entry["ip_address"],
        entry["user_agent"],
        entry["details"],
        entry["message"],
        entry["prev_hash"],
    ]
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def read_entries(conn: Connection | Session, where: str = "") -> list[dict[str, Any]]:
    """Every entry in id order, with the model's column types (aware timestamps, JSON)."""
    query = select(AuditLog.__table__).order_by(AuditLog.id)
    if where:
        query = query.where(text(where))
    return [dict(row._mapping) for row in conn.execute(query)]


def count_rows(conn: Connection | Session) -> int:
    return int(conn.execute(text("SELECT COUNT(*) FROM audit_log")).scalar_one())


def head_row(conn: Connection | Session) -> tuple[Any, ...]:
    row = conn.execute(
        text("SELECT last_id, last_hash, entries FROM audit_chain_head WHERE id = 1")
    ).one()
    return tuple(row)


@dataclass
class ChainDB:
    """A migrated scratch main database and its engines."""

    scratch: Scratch
    settings: Settings
    engines: Engines

    @property
    def backend(self) -> str:
        return self.scratch.backend

    @property
    def engine(self) -> Engine:
        return self.engines.engine(Database.main)

    @property
    def factory(self) -> sessionmaker[Session]:
        return self.engines.session_factory(Database.main)

    @contextmanager
    def tampered(self) -> Iterator[tuple[Connection, Session]]:
        """A connection for raw SQL and a session on it, in one transaction rolled back at
        the end, so each tampering starts from the intact chain."""
        with self.engine.connect() as conn:
            trans = conn.begin()
            session = Session(bind=conn, join_transaction_mode="create_savepoint")
            try:
                yield conn, session
            finally:
                session.close()
                trans.rollback()


def new_chain_db(scratch_factory: ScratchFactory, backend: str, label: str) -> ChainDB:
    scratch = scratch_factory.new(backend, label)
    settings = scratch.settings().model_copy(update={"pool_size": 4})
    migrate.upgrade(Database.main, settings=settings)
    return ChainDB(scratch, settings, Engines(settings))


def build_chain(db: ChainDB, entries: int, *, per_unit: int = 500) -> list[int]:
    """Append *entries* varied entries through the service, *per_unit* per transaction;
    return the ids of three users they refer to."""
    with unit_of_work(factory=db.factory) as session:
        users = [create_user(session).id for _ in range(3)]
    for start in range(0, entries, per_unit):
        with unit_of_work(factory=db.factory) as session:
            for i in range(start, min(entries, start + per_unit)):
                audit.record(
                    session,
                    action=ACTIONS[i % len(ACTIONS)],
                    user_id=users[i % 3] if i % 4 else None,
                    actor=f"user-{i % 3}" if i % 4 else "system",
                    resource_type="order" if i % 2 else None,
                    resource_id=i if i % 2 else None,
                    ip_address=f"10.0.{i % 7}.{i % 250}",
                    user_agent="pytest/8 (audit)" if i % 3 else None,
                    details={"i": i, "price": "101.25", "note": "€ é ✓", "tags": ["a", i]}
                    if i % 2
                    else None,
                    message=f"entry {i}" if i % 5 == 0 else None,
                )
    return users
