"""Retention: how long each table keeps its rows, and `prune`, which deletes or archives the
rows past their limit (``tradebase db prune``, and the worker's prune job).

The defaults are seed 002's retention table, seed 003's orders archive (off by default)
and seed 004's two years of price_data; ``TRADEBASE_RETENTION_<TABLE>`` overrides each.
A row is past its limit when it is *older* than the limit: its timestamp is before
``at - limit`` (a row exactly at the limit stays).

Rows go in batches of ``TRADEBASE_RETENTION_BATCH_SIZE``, one transaction each: an archive
batch copies the rows into ``<table>_archive`` (with ``archived_at``) and deletes the same
ids, so a run that is killed leaves whole batches only, and running again carries on.

Referential integrity comes first. A row that another row still points at stays: through a
SET NULL key the link would be lost (a trade keeps its ``order_id``), through a key to the
same table the children would go with it (an algo parent keeps its children). Rows that a
CASCADE key ties to it go along: into their own archive table when archiving (an order's
events into ``order_events_archive``), and the database deletes them when deleting. A
table whose rows another table points at through CASCADE without an archive table of its
own keeps those rows when archiving. Orders are archived only once finished (filled,
cancelled, rejected or expired), aged by ``updated_at``: their last change; a child order
waits for its parent to finish, and a parent stays while it has children.

The audit log goes through `AuditService.archive`, which moves a prefix of the chain and the
checkpoint that ``tradebase audit verify`` resumes from (docs/audit.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, cast

from sqlalchemy import (
    Column,
    ColumnElement,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from tradebase.audit.models import AuditLog
from tradebase.audit.service import audit as audit_service
from tradebase.config import ENV_PREFIX, RetentionRule, Settings, SettingsError, parse_retention
from tradebase.core.db import unit_of_work
from tradebase.core.time import UTCDateTime, ensure_utc, utc_now
from tradebase.orders.models import OrderStatus
from tradebase.schema import main_metadata

ARCHIVE_SUFFIX: Final = "_archive"
_audit_log = cast(Table, AuditLog.__table__)
IN_CHUNK: Final = 1_000  # ids per IN (...) list: well inside every engine's parameter limit
TERMINAL_ORDER_STATUSES: Final = (
    OrderStatus.filled,
    OrderStatus.cancelled,
    OrderStatus.rejected,
    OrderStatus.expired,
)


class Action(StrEnum):
    delete = "delete"
    archive = "archive"
    keep = "keep"


@dataclass(frozen=True)
class _Known:
    table: str
    column: str | None  # the timestamp a row ages by; None: kept forever
    setting: str | None  # the Settings field that overrides the default


# In the order db prune works through them and prints them.
_KNOWN: Final = (
    _Known("messages", "created_at", "retention_messages"),
    _Known("llm_usage", "timestamp", "retention_llm_usage"),
    _Known("audit_log", "timestamp", "retention_audit_log"),
    _Known("bot_metrics", "timestamp", "retention_bot_metrics"),
    _Known("system_metrics", "timestamp", "retention_system_metrics"),
    _Known("orders", "updated_at", "retention_orders"),
    _Known("price_data", "timestamp", "retention_price_data"),
    _Known("job_runs", "started_at", "retention_job_runs"),  # the worker's history
    _Known("events", "created_at", "retention_events"),  # the outbox (events/)
    _Known("webhook_deliveries", "created_at", "retention_webhook_deliveries"),
    _Known("portfolio_snapshots", None, None),  # the equity curve: seed 002 keeps it forever
    _Known("trades", None, None),  # the fills ledger that positions and cash are rebuilt from
)
TABLES: Final = tuple(known.table for known in _KNOWN)


@dataclass(frozen=True)
class Policy:
    """What happens to one table's rows: *action* once *keep_for* has passed since *column*."""

    table: str
    column: str | None
    action: Action
    keep_for: RetentionRule | None
    setting: str | None

    @property
    def env_name(self) -> str | None:
        return None if self.setting is None else ENV_PREFIX + self.setting.upper()

    def cutoff(self, at: datetime) -> datetime | None:
        """Return the moment before which rows are past the limit (None: kept forever)."""
        rule = self.keep_for
        if rule is None or self.action is Action.keep:
            return None
        at = ensure_utc(at)
        if rule.unit == "years":  # calendar years: 29 February goes back to 28 February
            year = at.year - rule.amount
            try:
                return at.replace(year=year)
            except ValueError:
                return at.replace(year=year, day=28)
        days = rule.amount * (7 if rule.unit == "weeks" else 1)
        return at - timedelta(days=days)

    def describe(self) -> str:
        if self.action is Action.keep:
            if self.setting is None:
                return "kept forever"
            return f"off (kept; {self.env_name})"
        assert self.keep_for is not None
        amount, unit = self.keep_for.amount, self.keep_for.unit
        if amount == 1:
            unit = unit.removesuffix("s")
        return f"{self.action} after {amount} {unit}"


def _archive_of(table: str) -> Table | None:
    return main_metadata.tables.get(table + ARCHIVE_SUFFIX)


def policies(settings: Settings) -> list[Policy]:
    """Return the policy of every table retention knows, from *settings*; raise
    SettingsError naming the setting when its action does not fit the table."""
    result = []
    for known in _KNOWN:
        if known.setting is None:
            result.append(Policy(known.table, None, Action.keep, None, None))
            continue
        raw: str = getattr(settings, known.setting)
        rule = parse_retention(raw)
        env_name = ENV_PREFIX + known.setting.upper()
        if rule is None:
            result.append(Policy(known.table, known.column, Action.keep, None, known.setting))
            continue
        archived = _archive_of(known.table) is not None
        action = Action(rule.action) if rule.action else None
        if action is None:
            action = Action.archive if archived else Action.delete
        if action is Action.archive and not archived:
            raise SettingsError(
                f"{env_name}: {known.table} has no {known.table}{ARCHIVE_SUFFIX} table to"
                f" archive into; use delete (got {raw!r})"
            )
        if known.table == "audit_log" and action is Action.delete:
            raise SettingsError(
                f"{env_name}: the audit log is archived, never deleted, so that its chain"
                f" keeps verifying; use archive (got {raw!r})"
            )
        result.append(Policy(known.table, known.column, action, rule, known.setting))
    return result


@dataclass
class TableReport:
    """What prune found, and did, for one table."""

    policy: Policy
    cutoff: datetime | None = None
    past_limit: int = 0  # rows older than the limit
    eligible: int = 0  # of those, the rows that may go (the others are still in use)
    done: int = 0  # rows deleted or archived
    along: dict[str, int] = field(default_factory=dict)  # rows that went with them, per table
    batches: int = 0

    @property
    def kept_in_use(self) -> int:
        return self.past_limit - self.eligible


Progress = Callable[[str, int, int], None]  # (table, rows done, rows to do)


def _batch_hook(table: str, stage: str) -> None:
    """Called inside each batch's transaction: ``copied`` after the rows were copied to the
    archive (before they are deleted), ``deleted`` before the commit. Tests interrupt a
    run here."""


@dataclass(frozen=True)
class _Plan:
    # The statements behind one policy.
    policy: Policy
    table: Table
    archive: Table | None
    along: tuple[tuple[Table, Column[Any], Table], ...]  # (child, its key, child's archive)
    past: ColumnElement[bool]
    eligible: ColumnElement[bool]


def _referencing(table: Table) -> list[tuple[Table, Column[Any], str | None]]:
    found = []
    for other in main_metadata.sorted_tables:
        if other.name.endswith(ARCHIVE_SUFFIX):
            continue
        for fk in other.foreign_keys:
            if fk.column.table is table:
                found.append((other, fk.parent, fk.ondelete))
    return found


def _plan(policy: Policy, cutoff: datetime, *, sqlite: bool) -> _Plan:
    table = main_metadata.tables[policy.table]
    assert policy.column is not None
    past = table.c[policy.column] < cutoff
    conditions: list[ColumnElement[bool]] = [past]
    if policy.table == "orders":
        finished = [str(status) for status in TERMINAL_ORDER_STATUSES]
        parent = table.alias("parent")
        conditions.append(table.c.status.in_(finished))
        # A child order (twap/vwap slice, mirrored copy) waits until its parent is finished.
        conditions.append(
            or_(
                table.c.parent_order_id.is_(None),
                exists().where(
                    parent.c.id == table.c.parent_order_id, parent.c.status.in_(finished)
                ),
            )
        )
    archive = _archive_of(policy.table) if policy.action is Action.archive else None
    along: list[tuple[Table, Column[Any], Table]] = []
    for child, key, ondelete in _referencing(table):
        cascades = (ondelete or "").upper() == "CASCADE" and child is not table
        child_archive = _archive_of(child.name)
        if cascades and policy.action is Action.delete:
            continue  # the database deletes them with the row
        if cascades and child_archive is not None:
            along.append((child, key, child_archive))
            # A child whose id SQLite reused for a row of the archive already: keep it here.
            conditions.append(
                ~exists().where(key == table.c.id, child.c.id.in_(select(child_archive.c.id)))
            )
            continue
        if child is table:  # children in the same table: the subquery needs its own name
            children = table.alias("child")
            conditions.append(~exists().where(children.c[key.name] == table.c.id))
        else:
            conditions.append(~exists().where(key == table.c.id))
    if archive is not None:
        conditions.append(~exists().where(archive.c.id == table.c.id))
        if sqlite:
            # SQLite gives a new row the largest id + 1: archiving the newest row would let
            # the next insert reuse an id the archive holds.
            conditions.append(table.c.id < select(func.max(table.c.id)).scalar_subquery())
            for child, key, _ in along:
                newest = select(func.max(child.c.id)).scalar_subquery()
                conditions.append(~exists().where(key == table.c.id, child.c.id == newest))
    return _Plan(policy, table, archive, tuple(along), past, and_(*conditions))


def _count(session: Session, table: Table, condition: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.count()).select_from(table).where(condition)) or 0)


def _chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    return [ids[i : i + IN_CHUNK] for i in range(0, len(ids), IN_CHUNK)]


def _copy(session: Session, source: Table, target: Table, key: Column[Any], ids: Sequence[int],
          at: datetime) -> int:  # fmt: skip
    names = [column.name for column in source.columns]
    moved = 0
    for chunk in _chunks(ids):
        rows = select(
            *[source.c[name] for name in names], literal(at, UTCDateTime()).label("archived_at")
        ).where(key.in_(chunk))
        statement = insert(target).from_select([*names, "archived_at"], rows)
        result = session.connection().execute(
            statement, execution_options={"preserve_rowcount": True}
        )
        moved += result.rowcount
    return moved


def _delete(session: Session, table: Table, key: Column[Any], ids: Sequence[int]) -> None:
    for chunk in _chunks(ids):
        session.execute(delete(table).where(key.in_(chunk)))


class RetentionService:
    def policies(self, settings: Settings) -> list[Policy]:
        """Return every table's policy (see the module function)."""
        return policies(settings)

    def prune(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        *,
        at: datetime | None = None,
        dry_run: bool = False,
        tables: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> list[TableReport]:
        """Delete or archive every row past its table's limit as of *at* (default: now),
        one transaction per batch; with *dry_run*, only count them. *tables* limits the
        run to those tables (names from TABLES)."""
        at = ensure_utc(at) if at is not None else utc_now()
        wanted = set(tables) if tables else None
        reports = []
        for policy in policies(settings):
            if wanted is not None and policy.table not in wanted:
                continue
            report = TableReport(policy, policy.cutoff(at))
            reports.append(report)
            if report.cutoff is None:
                continue
            if policy.table == "audit_log":
                self._audit_log(factory, settings, report, at, dry_run, progress)
            else:
                self._table(factory, settings, report, at, dry_run, progress)
        return reports

    def _table(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        report: TableReport,
        at: datetime,
        dry_run: bool,
        progress: Progress | None,
    ) -> None:
        assert report.cutoff is not None
        with unit_of_work(write=False, factory=factory) as session:
            sqlite = session.get_bind().dialect.name == "sqlite"
            plan = _plan(report.policy, report.cutoff, sqlite=sqlite)
            report.past_limit = _count(session, plan.table, plan.past)
            report.eligible = _count(session, plan.table, plan.eligible)
        if dry_run or not report.eligible:
            return
        table, name = plan.table, plan.table.name
        cursor: int | None = None
        while True:
            with unit_of_work(factory=factory) as session:
                query = select(table.c.id).where(plan.eligible).order_by(table.c.id)
                if cursor is not None:
                    query = query.where(table.c.id > cursor)
                query = query.limit(settings.retention_batch_size)
                if plan.archive is not None and not sqlite:
                    query = query.with_for_update()  # the copy is the row that is deleted
                ids = list(session.scalars(query))
                if not ids:
                    return
                along: dict[str, int] = {}
                if plan.archive is not None:
                    for child, key, child_archive in plan.along:
                        along[child.name] = _copy(session, child, child_archive, key, ids, at)
                    _copy(session, table, plan.archive, table.c.id, ids, at)
                    _batch_hook(name, "copied")
                    for child, key, _ in plan.along:
                        _delete(session, child, key, ids)
                _delete(session, table, table.c.id, ids)
                _batch_hook(name, "deleted")
                audit_service.record(
                    session,
                    action=f"retention.{report.policy.action}d",
                    actor="retention",
                    resource_type="table",
                    resource_id=name,
                    details={
                        "rows": len(ids),
                        "first_id": ids[0],
                        "last_id": ids[-1],
                        "before": report.cutoff,
                        **({"with": along} if along else {}),
                    },
                )
            cursor = ids[-1]
            report.done += len(ids)
            report.batches += 1
            for child_name, count in along.items():
                report.along[child_name] = report.along.get(child_name, 0) + count
            if progress is not None:
                progress(name, report.done, report.eligible)

    def _audit_log(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        report: TableReport,
        at: datetime,
        dry_run: bool,
        progress: Progress | None,
    ) -> None:
        assert report.cutoff is not None
        with unit_of_work(write=False, factory=factory) as session:
            report.past_limit = _count(session, _audit_log, _audit_log.c.timestamp < report.cutoff)
            boundary = session.scalar(
                select(func.min(_audit_log.c.id)).where(_audit_log.c.timestamp >= report.cutoff)
            )
            prefix = select(func.count(), func.max(_audit_log.c.id))
            if boundary is not None:
                prefix = prefix.where(_audit_log.c.id < boundary)
            count, through_id = session.execute(prefix).one()
            report.eligible = int(count or 0)
        if dry_run or not report.eligible:
            return
        while True:
            with unit_of_work(factory=factory) as session:
                # Only the entries there were at the start: this run's own entries stay.
                batch = audit_service.archive(
                    session,
                    before=report.cutoff,
                    limit=settings.retention_batch_size,
                    through_id=through_id,
                    now=at,
                )
                if batch is None:
                    return
                _batch_hook("audit_log", "deleted")
                audit_service.record(
                    session,
                    action="retention.archived",
                    actor="retention",
                    resource_type="table",
                    resource_id="audit_log",
                    details={
                        "rows": batch.entries,
                        "first_id": batch.first_id,
                        "last_id": batch.last_id,
                        "before": report.cutoff,
                    },
                )
            report.done += batch.entries
            report.batches += 1
            if progress is not None:
                progress("audit_log", report.done, report.eligible)


retention = RetentionService()
