"""The hash-chained audit log: append, verify, export.

Every entry's ``row_hash`` is the SHA-256 of a canonical serialisation of the entry (its
id, timestamp, fields and ``prev_hash``), and ``prev_hash`` is the previous entry's
``row_hash``, so changing, deleting or inserting a row breaks the chain at that row. The
single ``audit_chain_head`` row records the last entry and the count; appends lock it, so
the chain stays linear when many processes write at once. Retention moves the oldest
entries to ``audit_log_archive`` and records in ``audit_checkpoint`` where the chain goes
on; verify walks the archive, then the log from that checkpoint. See docs/audit.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final, TextIO, cast
from uuid import UUID

from sqlalchemy import (
    Row,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from tradebase.accounts import models as _accounts  # also: audit_log.user_id -> users
from tradebase.audit.models import AuditChainHead, AuditCheckpoint, AuditLog, audit_log_archive
from tradebase.core.auth import Principal
from tradebase.core.errors import Conflict, TradebaseError
from tradebase.core.models import attach
from tradebase.core.prepared import Prepared, connection_of
from tradebase.core.time import UTCDateTime, ensure_utc, utc_now

HASH_VERSION: Final = "tradebase-audit-v1"
GENESIS_HASH: Final = "0" * 64  # prev_hash of the first entry
BATCH_SIZE: Final = 10_000  # rows per verify query: bounds memory whatever the log's size
HEAD_ID: Final = 1

_log = cast(Table, AuditLog.__table__)
_head = cast(Table, AuditChainHead.__table__)
_archive = audit_log_archive
_checkpoint = cast(Table, AuditCheckpoint.__table__)
CHECKPOINT_ID: Final = 1

# Compact, sorted keys (inside details), UTF-8 as is: one byte string per entry.
_ENCODER: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)

# The hashed fields, in the order of the canonical array (after HASH_VERSION).
HASHED_FIELDS: Final = (
    "id",
    "timestamp",
    "actor_user_id",  # not user_id: deleting the user sets that to NULL (ON DELETE SET NULL)
    "actor",
    "action",
    "resource_type",
    "resource_id",
    "ip_address",
    "user_agent",
    "details",
    "message",
    "prev_hash",
)

_LIMITS: Final = {"actor": 100, "resource_id": 100, "ip_address": 45, "user_agent": 500}


class AuditChainHeadMissing(TradebaseError):
    """The ``audit_chain_head`` row (created by the migrations) is gone."""


class AuditChainBusy(Conflict):
    """SQLite refused the write lock to a transaction whose snapshot went stale."""


class AuditChainConflict(Conflict):
    """The chain head moved under a writer that held its lock (never expected)."""


@dataclass(frozen=True)
class ChainHead:
    last_id: int | None
    last_hash: str | None
    entries: int


@dataclass(frozen=True)
class Checkpoint:
    """Where the chain resumes in ``audit_log`` after archiving: the last archived entry
    (the ``prev_hash`` of the first entry left) and how many entries were archived."""

    last_id: int | None
    last_hash: str | None
    entries: int


@dataclass(frozen=True)
class ArchivedBatch:
    """One batch moved to ``audit_log_archive``: how many entries, the first and the last."""

    entries: int
    first_id: int
    last_id: int


@dataclass(frozen=True)
class _Cursor:
    # How far a walk got: the last entry checked, its hash and how many were checked.
    prev_id: int | None
    expected: str
    checked: int


@dataclass(frozen=True)
class _LockedHead:
    last_id: int | None
    last_hash: str | None
    top_id: int | None  # the largest id in audit_log (SQLite only)


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` found: ``ok``, or the first bad entry and what happened to it.

    ``problem`` is one of ``altered``, ``deleted``, ``inserted``, ``head mismatch``,
    ``checkpoint mismatch`` and ``anchor mismatch``.
    """

    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None
    message: str = ""
    last_id: int | None = None  # the verified chain's last entry: an anchor to keep
    last_hash: str | None = None


# --- the canonical serialisation -------------------------------------------------------


def _iso(value: Any) -> str:
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " ":  # how SQLAlchemy stores one on SQLite
            return f"{value[:10]}T{value[11:]}+00:00"
        value = datetime.fromisoformat(value)
    moment = value
    if not isinstance(moment, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _details(value: Any) -> Any:
    # SQLite and MariaDB hand back JSON text; psycopg hands back the parsed JSONB value.
    return json.loads(value) if isinstance(value, str | bytes) else value


def canonical_entry(values: Sequence[Any]) -> bytes:
    """Return the bytes an entry's hash covers: a compact JSON array of HASH_VERSION and
    the HASHED_FIELDS in order, timestamp as ISO 8601 UTC with microseconds."""
    (id_, timestamp, user_id, actor, action, rtype, rid, ip, agent, details, message, prev) = values
    payload = [
        HASH_VERSION,
        id_,
        _iso(timestamp),
        user_id,
        actor,
        action,
        rtype,
        rid,
        ip,
        agent,
        _details(details),
        message,
        prev,
    ]
    return _ENCODER.encode(payload).encode("utf-8", "surrogatepass")


def entry_hash(values: Sequence[Any]) -> str:
    """Return the hex SHA-256 of `canonical_entry` (values in HASHED_FIELDS order)."""
    return hashlib.sha256(canonical_entry(values)).hexdigest()


def _digest_or_none(values: Sequence[Any]) -> str | None:
    try:
        return entry_hash(values)
    except (ValueError, TypeError):  # a value raw SQL made unreadable: not what was hashed
        return None


# --- input cleaning --------------------------------------------------------------------


def _text(value: str) -> str:
    # PostgreSQL refuses NUL in text; a client's user agent must not make logging fail.
    return value.replace("\x00", "\ufffd")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"audit details cannot hold {value!r}")
        return value
    if isinstance(value, Decimal):
        return str(value)  # exact, as the API writes decimals
    if isinstance(value, datetime):
        return ensure_utc(value).isoformat(timespec="microseconds")
    if isinstance(value, date | UUID):
        return str(value)
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, Mapping):
        return {_text(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    raise TypeError(f"audit details cannot hold a {type(value).__name__}")


def _bounded(name: str, value: str | int | None) -> str | None:
    if value is None:
        return None
    return _text(str(value))[: _LIMITS[name]]


def _required(name: str, value: str | None, limit: int, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not value:
        raise ValueError(f"audit {name} must not be empty")
    if len(value) > limit:
        raise ValueError(f"audit {name} is longer than {limit} characters: {value[:40]!r}…")
    return _text(value)


# --- reading ---------------------------------------------------------------------------


def _raw_columns(table: Table = _log) -> list[ColumnElement[Any]]:
    # Timestamp and details are read as the driver gives them: a row that raw SQL filled
    # with something unparseable must be reported as altered, not crash the walk.
    columns: list[ColumnElement[Any]] = []
    for name in HASHED_FIELDS:
        column = table.c[name]
        if name == "timestamp":
            columns.append(type_coerce(column, String).label(name))
        elif name == "details":
            columns.append(type_coerce(column, Text).label(name))
        else:
            columns.append(column)
    columns.append(table.c.row_hash)
    columns.append(table.c.user_id)
    return columns


def _entry_dict(row: Row[Any]) -> dict[str, Any]:
    entry = dict(row._mapping)
    try:
        entry["timestamp"] = _iso(entry["timestamp"])
    except (ValueError, TypeError):
        entry["timestamp"] = str(entry["timestamp"])
    with suppress(ValueError):  # unparseable details are exported as the text they are
        entry["details"] = _details(entry["details"])
    return entry


# Built once, so SQLAlchemy compiles each of them once per engine.
_READ_HEAD = select(_head.c.last_id, _head.c.last_hash, _head.c.entries).where(
    _head.c.id == HEAD_ID
)
_LOCK_HEAD = _READ_HEAD.with_for_update()
_CLAIM_HEAD = Prepared(  # SQLite: take the write lock and read the head in one statement
    update(_head)
    .where(_head.c.id == HEAD_ID)
    .values(updated_at=bindparam("now", type_=_head.c.updated_at.type))
    .returning(
        _head.c.last_id,
        _head.c.last_hash,
        select(func.max(_log.c.id)).scalar_subquery().label("top_id"),
    )
)
_MOVE_HEAD = Prepared(
    update(_head)
    .where(
        _head.c.id == HEAD_ID,
        _head.c.last_id.is_not_distinct_from(bindparam("old_last_id", type_=_head.c.last_id.type)),
    )
    .values(
        last_id=bindparam("new_last_id"),
        last_hash=bindparam("digest"),
        entries=_head.c.entries + 1,
        updated_at=bindparam("now", type_=_head.c.updated_at.type),
    )
)
_READ_CHECKPOINT = select(
    _checkpoint.c.last_id, _checkpoint.c.last_hash, _checkpoint.c.entries
).where(_checkpoint.c.id == CHECKPOINT_ID)
_INSERT_ROW = Prepared(insert(_log))
_INSERT_RETURNING = insert(_log).returning(_log.c.id, _log.c.timestamp, _log.c.details)
_SET_ROW_HASH = (
    update(_log).where(_log.c.id == bindparam("entry_id")).values(row_hash=bindparam("digest"))
)


class AuditService:
    def chain_head(self, session: Session) -> ChainHead | None:
        """Return the chain head row as it is now (None when it is missing)."""
        row = session.execute(_READ_HEAD).one_or_none()
        if row is None:
            return None
        return ChainHead(row.last_id, row.last_hash, int(row.entries))

    def record(
        self,
        session: Session,
        *,
        action: str,
        user_id: int | None = None,
        actor: str | None = None,
        resource_type: str | None = None,
        resource_id: str | int | None = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
        details: dict[str, Any] | None = None,
        message: str | None = None,
    ) -> AuditLog:
        """Append one entry to the chain inside the caller's transaction (the caller commits).

        The chain head stays locked until that transaction ends, so record late in a long
        transaction. Long actor, resource id, IP and user agent values are cut to their
        column's length; an empty or over-long action or resource type is refused.
        """
        values: dict[str, Any] = {
            "timestamp": utc_now(),
            "user_id": user_id,
            "actor_user_id": user_id,
            "actor": _bounded("actor", actor),
            "action": _required("action", action, 100),
            "resource_type": _required("resource_type", resource_type, 50, optional=True),
            "resource_id": _bounded("resource_id", resource_id),
            "ip_address": _bounded("ip_address", ip_address),
            "user_agent": _bounded("user_agent", user_agent),
            "message": None if message is None else _text(message),
        }
        if details is not None:
            values["details"] = _jsonable(details)

        sqlite = session.get_bind().dialect.name == "sqlite"
        head = self._lock_head(session, sqlite=sqlite)
        values["prev_hash"] = head.last_hash or GENESIS_HASH
        values.setdefault("details", None)
        connection = connection_of(session)
        if sqlite:
            # SQLite reuses the largest rowid after a delete; a fresh id keeps a deleted
            # tail visible as a gap (the head already holds the write lock). With the id
            # known, and SQLite giving back the timestamp and JSON text exactly as written,
            # the hash is computed first and the entry written once.
            values["id"] = max(head.top_id or 0, head.last_id or 0) + 1
            values["row_hash"] = entry_hash([values[name] for name in HASHED_FIELDS])
            _INSERT_ROW.run(connection, values)
        else:
            # The id, and the details as the database gives them back (JSONB normalises
            # numbers), are known only after the INSERT: hash what verify will read, then
            # set row_hash in the same transaction.
            row = connection.execute(_INSERT_RETURNING, values).one()
            values.update(id=row.id, timestamp=row.timestamp, details=row.details)
            values["row_hash"] = entry_hash([values[name] for name in HASHED_FIELDS])
            connection.execute(_SET_ROW_HASH, {"entry_id": row.id, "digest": values["row_hash"]})
        moved = _MOVE_HEAD.run(
            connection,
            {
                "old_last_id": head.last_id,
                "new_last_id": values["id"],
                "digest": values["row_hash"],
                "now": values["timestamp"],
            },
        )
        if moved != 1:
            raise AuditChainConflict("the audit chain head moved while this writer held it")
        return attach(session, AuditLog, values)

    def record_by(
        self,
        session: Session,
        principal: Principal,
        *,
        action: str,
        resource_type: str | None = None,
        resource_id: str | int | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditLog:
        """`record` an action *principal* took: its user, name and address as the actor."""
        return self.record(
            session,
            action=action,
            user_id=principal.user_id,
            actor=principal.username,
            resource_type=resource_type,
            resource_id=resource_id,
            ip_address=principal.ip_address,
            details=details,
        )

    def _lock_head(self, session: Session, *, sqlite: bool) -> _LockedHead:
        if not sqlite:
            row = session.execute(_LOCK_HEAD).one_or_none()
            if row is None:
                raise AuditChainHeadMissing("the audit chain head row is missing")
            return _LockedHead(row.last_id, row.last_hash, None)
        # Write before reading: a deferred transaction's first write waits for the lock
        # (busy timeout), then reads the newest head. A transaction that has read before
        # another writer committed cannot get the lock (SQLITE_BUSY_SNAPSHOT).
        try:
            rows = _CLAIM_HEAD.rows(session, {"now": utc_now()})
        except OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise AuditChainBusy(
                "the audit log could not take SQLite's write lock: this transaction read"
                " the database before another writer committed; write in a unit_of_work()"
                " (BEGIN IMMEDIATE) and retry"
            ) from exc
        if not rows:
            raise AuditChainHeadMissing("the audit chain head row is missing")
        return _LockedHead(rows[0].last_id, rows[0].last_hash, rows[0].top_id)

    def checkpoint(self, session: Session) -> Checkpoint | None:
        """Return the archive checkpoint as it is now (None when its row is missing)."""
        row = session.execute(_READ_CHECKPOINT).one_or_none()
        if row is None:
            return None
        return Checkpoint(row.last_id, row.last_hash, int(row.entries))

    def archive(
        self,
        session: Session,
        *,
        before: datetime,
        limit: int,
        through_id: int | None = None,
        now: datetime | None = None,
    ) -> ArchivedBatch | None:
        """Move the oldest entries recorded before *before* (and up to entry *through_id*),
        at most *limit* of them, to ``audit_log_archive`` with ``archived_at`` *now*, and
        move the checkpoint to the last one, in the caller's transaction; return what moved
        (None: nothing is that old).

        Only a prefix of the chain moves: the walk stops at the first entry at or after
        *before*, so an entry whose clock ran a little behind its predecessor's stays with
        it and the chain left in ``audit_log`` has no gap.
        """
        sqlite = session.get_bind().dialect.name == "sqlite"
        locked = _READ_CHECKPOINT if sqlite else _READ_CHECKPOINT.with_for_update()
        if sqlite:  # take the write lock before reading, as record() does
            session.execute(
                update(_checkpoint)
                .where(_checkpoint.c.id == CHECKPOINT_ID)
                .values(updated_at=_checkpoint.c.updated_at)
            )
        row = session.execute(locked).one_or_none()
        if row is None:
            raise AuditChainHeadMissing("the audit checkpoint row is missing")
        young = select(func.min(_log.c.id)).where(_log.c.timestamp >= ensure_utc(before))
        boundary = session.scalar(young)
        query = select(_log.c.id, _log.c.row_hash).order_by(_log.c.id).limit(limit)
        if boundary is not None:
            query = query.where(_log.c.id < boundary)
        if through_id is not None:
            query = query.where(_log.c.id <= through_id)
        if not sqlite:
            query = query.with_for_update()
        rows = session.execute(query).all()
        if not rows:
            return None
        first, last = rows[0], rows[-1]
        names = [column.name for column in _log.columns]
        moment = ensure_utc(now or utc_now())
        copied = select(
            *[_log.c[name] for name in names], literal(moment, UTCDateTime()).label("archived_at")
        ).where(_log.c.id >= first.id, _log.c.id <= last.id)
        session.execute(insert(_archive).from_select([*names, "archived_at"], copied))
        session.execute(delete(_log).where(_log.c.id >= first.id, _log.c.id <= last.id))
        session.execute(
            update(_checkpoint)
            .where(_checkpoint.c.id == CHECKPOINT_ID)
            .values(
                last_id=last.id,
                last_hash=last.row_hash,
                entries=_checkpoint.c.entries + len(rows),
                updated_at=moment,
            )
        )
        return ArchivedBatch(len(rows), first.id, last.id)

    def verify(
        self,
        session: Session,
        *,
        progress: Callable[[int], None] | None = None,
        anchor: tuple[int, str] | None = None,
    ) -> VerifyResult:
        """Walk the chain in id order and report the first entry that was altered, deleted
        or inserted, then check the last entry and the count against the chain head.

        Entries archived by retention are walked first, in ``audit_log_archive``, and must
        end at the checkpoint; the walk then goes on in ``audit_log`` from the checkpoint,
        whose hash the first entry left there links to. When the archive no longer holds
        them, the walk starts from the checkpoint.

        Reads in batches of BATCH_SIZE; *progress* is called with the number of entries
        checked so far after each batch. *anchor* is an ``(id, row_hash)`` kept outside
        the database (a verified result's ``last_id`` and ``last_hash``): a chain that
        verifies but no longer holds that entry with that hash was rewritten.
        """
        result = VerifyResult(False, 0)
        for _ in range(3):
            checkpoint = self.checkpoint(session)
            result = self._verify(session, checkpoint, progress, anchor)
            # Under READ COMMITTED an archive batch that commits during the walk moves
            # entries out from under it: walk again from the new checkpoint.
            if result.ok or self.checkpoint(session) == checkpoint:
                return result
        return result

    def _verify(
        self,
        session: Session,
        checkpoint: Checkpoint | None,
        progress: Callable[[int], None] | None,
        anchor: tuple[int, str] | None,
    ) -> VerifyResult:
        if checkpoint is None:
            return VerifyResult(
                False, 0, None, "checkpoint mismatch", "the audit checkpoint row is missing"
            )
        archived = self._walk(session, _archive, _Cursor(None, GENESIS_HASH, 0), progress)
        if isinstance(archived, VerifyResult):
            return replace(archived, message=f"in audit_log_archive: {archived.message}")
        start = _Cursor(
            checkpoint.last_id, checkpoint.last_hash or GENESIS_HASH, checkpoint.entries
        )
        if (checkpoint.last_id is None) != (checkpoint.entries == 0) or (
            checkpoint.last_id is not None and checkpoint.last_hash is None
        ):
            return VerifyResult(
                False,
                0,
                checkpoint.last_id,
                "checkpoint mismatch",
                f"the audit checkpoint is inconsistent: entry {checkpoint.last_id},"
                f" {checkpoint.entries} entries archived",
            )
        if archived.checked and archived != start:
            return VerifyResult(
                False,
                archived.checked,
                archived.prev_id,
                "checkpoint mismatch",
                f"audit_log_archive holds {archived.checked} entries up to entry"
                f" {archived.prev_id}, the checkpoint records {checkpoint.entries} up to entry"
                f" {checkpoint.last_id}: the archive or the checkpoint was changed",
            )
        if checkpoint.last_id is not None:
            stray = session.scalar(
                select(func.min(_log.c.id)).where(_log.c.id <= checkpoint.last_id)
            )
            if stray is not None:
                return VerifyResult(
                    False,
                    checkpoint.entries,
                    stray,
                    "inserted",
                    f"entry {stray} was inserted: it is at or before the checkpoint (entry"
                    f" {checkpoint.last_id}), up to which the entries were archived",
                )
        result = self._walk(session, _log, start, progress, checkpoint=checkpoint)
        assert isinstance(result, VerifyResult)
        if result.ok and checkpoint.entries:
            where = "in audit_log_archive" if archived.checked else "no longer in the archive"
            result = replace(
                result,
                message=f"{result.message} ({checkpoint.entries} archived entries {where},"
                f" checkpoint at entry {checkpoint.last_id})",
            )
        if result.ok and anchor is not None:
            return self._check_anchor(session, anchor, result, checkpoint)
        return result

    def _walk(
        self,
        session: Session,
        table: Table,
        start: _Cursor,
        progress: Callable[[int], None] | None,
        *,
        checkpoint: Checkpoint | None = None,
    ) -> VerifyResult | _Cursor:
        # Walk *table* from *start*: the first bad entry as a failed result, else (for the
        # archive) how far it got, or (for audit_log) the result of the checks of the head.
        live = table is _log
        columns = _raw_columns(table)
        sha256 = hashlib.sha256
        encode = _ENCODER.encode
        iso, loads, texts = _iso, json.loads, (str, bytes)
        checked = start.checked
        prev_id = start.prev_id
        expected = start.expected
        refetched = False
        while True:
            query = select(*columns).order_by(table.c.id).limit(BATCH_SIZE)
            if prev_id is not None:
                query = query.where(table.c.id > prev_id)
            rows = session.execute(query).all()
            if not rows:
                if not live:
                    return _Cursor(prev_id, expected, checked)
                # Under READ COMMITTED, entries committed during the walk show up only in
                # a later query: walk on once more if the head is now further than we are.
                head = self.chain_head(session)
                further = (
                    head is not None
                    and head.last_id is not None
                    and (prev_id is None or head.last_id > prev_id)
                )
                if further and not refetched:
                    refetched = True
                    continue
                return self._check_head(session, head, prev_id, expected, checked)
            refetched = False
            orphaned = self._wrongly_orphaned(session, rows)
            for row in rows:
                (
                    rid,
                    ts,
                    uid,
                    actor,
                    action,
                    rtype,
                    res,
                    ip,
                    agent,
                    details,
                    msg,
                    prev,
                    stored,
                    current_uid,
                ) = row
                if (current_uid is not None and current_uid != uid) or rid in orphaned:
                    return VerifyResult(
                        False,
                        checked,
                        rid,
                        "altered",
                        f"entry {rid} was altered: its user_id is {current_uid}, it was"
                        f" recorded for user {uid}",
                    )
                try:
                    digest: str | None = sha256(
                        encode(
                            [HASH_VERSION, rid, iso(ts), uid, actor, action, rtype, res, ip,
                             agent, loads(details) if details.__class__ in texts else details,
                             msg, prev]
                        ).encode("utf-8", "surrogatepass")
                    ).hexdigest()  # fmt: skip
                except (ValueError, TypeError):  # unreadable after raw SQL: not as hashed
                    digest = None
                if digest != stored or prev != expected:
                    boundary = (
                        checkpoint.last_id if checkpoint and checked == start.checked else None
                    )
                    return self._diagnose(
                        session, row, prev_id, expected, digest, checked, table, boundary
                    )
                expected = stored
                prev_id = rid
                checked += 1
            if progress is not None:
                progress(checked)

    def _wrongly_orphaned(self, session: Session, rows: Sequence[Row[Any]]) -> set[int]:
        """Entries whose user_id is NULL although their user still exists: deleting a user
        sets user_id NULL (legitimately); raw SQL doing it to a live user's entry does not."""
        orphans = [
            (row.id, row.actor_user_id)
            for row in rows
            if row.user_id is None and row.actor_user_id is not None
        ]
        if not orphans:
            return set()
        wanted = {uid for _, uid in orphans}
        alive = set(session.scalars(select(_accounts.User.id).where(_accounts.User.id.in_(wanted))))
        return {rid for rid, uid in orphans if uid in alive}

    def _diagnose(
        self,
        session: Session,
        row: Row[Any],
        prev_id: int | None,
        expected: str,
        digest: str | None,
        checked: int,
        table: Table = _log,
        boundary: int | None = None,
    ) -> VerifyResult:
        """Name the first bad entry, given the first row that does not hash or link.

        *boundary* is the checkpoint's entry when the row is the first one after it."""
        rid: int = row.id
        row_hash: str | None = row.row_hash
        prev_hash: str | None = row.prev_hash

        def bad(problem: str, entry_id: int, message: str) -> VerifyResult:
            return VerifyResult(False, checked, entry_id, problem, message)

        def first_with_hash(value: str | None, *, other_than: int | None = None) -> int | None:
            if value is None:
                return None
            query = select(func.min(table.c.id)).where(table.c.row_hash == value)
            if other_than is not None:
                query = query.where(table.c.id != other_than)
            found: int | None = session.scalar(query)
            return found

        content_ok = digest is not None and digest == row_hash
        link_ok = prev_hash == expected
        if not content_ok:
            # Another entry's hash: a copy of it (exactly, but for the id), or a copy that
            # does not link where it stands. One whose hash column alone was overwritten
            # still links, and is reported as altered below.
            original = first_with_hash(row_hash, other_than=rid)
            if original is not None:
                copied = _digest_or_none([original, *row[1:12]]) == row_hash
                if copied or not link_ok:
                    return bad(
                        "inserted", rid, f"entry {rid} was inserted: a copy of entry {original}"
                    )
        head = self.chain_head(session) if table is _log else None
        past_head = head is not None and (head.last_id is None or rid > head.last_id)
        if past_head and head is not None and row_hash != head.last_hash:
            return bad(
                "inserted",
                rid,
                f"entry {rid} was inserted: it comes after the chain head (entry {head.last_id})",
            )
        if not link_ok and prev_id is not None:
            # It links to an earlier entry, skipping the ones just before it.
            linked = first_with_hash(prev_hash)
            if linked is not None and linked < prev_id:
                first = session.scalar(select(func.min(table.c.id)).where(table.c.id > linked))
                assert first is not None
                return bad(
                    "inserted",
                    first,
                    f"entry {first} was inserted: entry {rid} links to entry {linked}, before it",
                )
        if not content_ok:
            return bad("altered", rid, f"entry {rid} was altered: it does not match its hash")
        if prev_id is None:
            return bad(
                "deleted",
                rid,
                f"entry {rid} is the first entry but links to an earlier one:"
                " the entries before it were deleted",
            )
        if boundary is not None and rid == boundary + 1:
            return bad(
                "checkpoint mismatch",
                rid,
                f"entry {rid}, the first after the checkpoint, does not link to the hash the"
                f" checkpoint records for entry {boundary}: the checkpoint was changed",
            )
        if rid == prev_id + 1:
            return bad(
                "altered",
                prev_id,
                f"entry {prev_id} was altered and re-hashed: entry {rid} links to its old hash",
            )
        return bad(
            "deleted",
            rid,
            f"entry {rid} does not link to entry {prev_id}: the entries between them were deleted",
        )

    def _check_head(
        self,
        session: Session,
        head: ChainHead | None,
        last_id: int | None,
        last_hash: str,
        checked: int,
    ) -> VerifyResult:
        if head is None:
            return VerifyResult(
                False, checked, None, "head mismatch", "the chain head row is missing"
            )
        if last_id is None:  # the log is empty
            if head.last_id is None and head.entries == 0:
                return VerifyResult(True, 0, message="chain of 0 entries verifies")
            return VerifyResult(
                False,
                0,
                head.last_id,
                "deleted",
                f"entry {head.last_id} is missing: the chain head records"
                f" {head.entries} entries but the log is empty",
            )
        if head.last_id is None or last_id > head.last_id:
            # Every entry linked, but the chain runs on past its head: forged entries.
            floor = head.last_id if head.last_id is not None else -1
            first = session.scalar(select(func.min(_log.c.id)).where(_log.c.id > floor))
            return VerifyResult(
                False,
                checked,
                first,
                "inserted",
                f"entry {first} was inserted: it comes after the chain head (entry {head.last_id})",
            )
        if last_id < head.last_id:
            return VerifyResult(
                False,
                checked,
                head.last_id,
                "deleted",
                f"entry {head.last_id} is missing: the chain head ends there, the log at"
                f" entry {last_id}; the entries after entry {last_id} were deleted",
            )
        if last_hash != head.last_hash:
            return VerifyResult(
                False,
                checked,
                last_id,
                "head mismatch",
                f"entry {last_id} does not match the chain head's hash: the entry was"
                " re-hashed or the head was changed",
            )
        if checked != head.entries:
            return VerifyResult(
                False,
                checked,
                None,
                "head mismatch",
                f"the chain head counts {head.entries} entries, the log holds {checked}",
            )
        return VerifyResult(
            True,
            checked,
            message=f"chain of {checked} entries verifies",
            last_id=last_id,
            last_hash=last_hash,
        )

    def _check_anchor(
        self,
        session: Session,
        anchor: tuple[int, str],
        result: VerifyResult,
        checkpoint: Checkpoint,
    ) -> VerifyResult:
        entry_id, anchored = anchor
        anchored = anchored.strip().lower()
        stored = session.scalar(select(_log.c.row_hash).where(_log.c.id == entry_id))
        if stored is None:  # archived since: the archive, or the checkpoint, still knows it
            stored = session.scalar(select(_archive.c.row_hash).where(_archive.c.id == entry_id))
            if stored is None and entry_id == checkpoint.last_id:
                stored = checkpoint.last_hash
        if stored == anchored:
            return result
        if stored is None:
            message = f"entry {entry_id} is gone, but an anchor was kept for it"
        else:
            message = f"entry {entry_id} does not match the anchor kept for it"
        return VerifyResult(
            False,
            result.checked,
            entry_id,
            "anchor mismatch",
            f"{message}: the chain was rewritten from there on",
        )

    def iter_entries(
        self,
        session: Session,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        user_id: int | None = None,
        action: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield entries as plain dicts in chain order, filtered by time window
        (``since`` inclusive, ``until`` exclusive), user and action."""
        query = select(*_raw_columns()).order_by(_log.c.id)
        if since is not None:
            query = query.where(_log.c.timestamp >= ensure_utc(since))
        if until is not None:
            query = query.where(_log.c.timestamp < ensure_utc(until))
        if user_id is not None:
            query = query.where(_log.c.user_id == user_id)
        if action is not None:
            query = query.where(_log.c.action == action)
        for row in session.execute(query, execution_options={"yield_per": 2_000}):
            yield _entry_dict(row)

    def export(
        self,
        session: Session,
        out: TextIO,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        user_id: int | None = None,
        action: str | None = None,
    ) -> int:
        """Write the matching entries to *out* as JSON lines in chain order; return how many."""
        count = 0
        for entry in self.iter_entries(
            session, since=since, until=until, user_id=user_id, action=action
        ):
            out.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
        return count


audit = AuditService()
