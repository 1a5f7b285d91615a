"""Retention with a fixed clock: exactly the rows past each limit go (deleted, or archived
as they were plus archived_at), nothing else moves, the audit chain verifies afterwards
from its checkpoint, and an interrupted run leaves whole batches only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import ScratchFactory
from tests.factories import create_account, create_portfolio, create_user
from tradebase.audit import service as audit_module
from tradebase.audit.service import audit as audit_service
from tradebase.config import Settings, SettingsError
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.ops import retention as retention_module
from tradebase.ops.retention import Action, TableReport, policies
from tradebase.ops.retention import retention as retention_service
from tradebase.schema import main_metadata

AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)  # the run's clock
SECOND = timedelta(seconds=1)
CUTOFFS = {  # the seeds' limits, counted back from AT
    "messages": AT - timedelta(days=90),
    "llm_usage": AT - timedelta(days=365),
    "audit_log": datetime(2019, 6, 15, 12, 0, tzinfo=UTC),
    "bot_metrics": AT - timedelta(days=30),
    "system_metrics": AT - timedelta(days=7),
    "orders": AT - timedelta(days=30),  # with TRADEBASE_RETENTION_ORDERS=30d
    "price_data": datetime(2024, 6, 15, 12, 0, tzinfo=UTC),
    "job_runs": AT - timedelta(days=90),
}
# Each table gets rows at these distances from its limit: the negative ones are past it.
OFFSETS = (-400 * 86400, -2, -1, 0, 1, 3600)
PAST = sum(1 for o in OFFSETS if o < 0)
TABLE = {name: main_metadata.tables[name] for name in main_metadata.tables}


def _settings(**changes: Any) -> Settings:
    return Settings(retention_orders="30d", **changes)


# --- policies and settings (no database) --------------------------------------------------


def test_the_default_policies_are_the_seeds() -> None:
    described = {p.table: p.describe() for p in policies(Settings())}
    assert described == {
        "messages": "archive after 90 days",
        "llm_usage": "delete after 365 days",
        "audit_log": "archive after 7 years",
        "bot_metrics": "delete after 30 days",
        "system_metrics": "delete after 7 days",
        "orders": "off (kept; TRADEBASE_RETENTION_ORDERS)",
        "price_data": "delete after 2 years",
        "job_runs": "delete after 90 days",
        "events": "delete after 30 days",
        "webhook_deliveries": "delete after 30 days",
        "portfolio_snapshots": "kept forever",
        "trades": "kept forever",
    }


def test_settings_override_a_policy_and_a_wrong_one_names_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADEBASE_RETENTION_ORDERS", "30d")
    monkeypatch.setenv("TRADEBASE_RETENTION_MESSAGES", "4W:delete")
    monkeypatch.setenv("TRADEBASE_RETENTION_BOT_METRICS", "off")
    by_table = {p.table: p for p in policies(Settings())}
    assert by_table["orders"].action is Action.archive  # the table's archive, by default
    assert by_table["orders"].describe() == "archive after 30 days"
    assert by_table["messages"].describe() == "delete after 4 weeks"
    assert by_table["bot_metrics"].action is Action.keep
    for value in ("90", "90x", "0d", "90d:shred", "forever"):
        with pytest.raises(ValidationError, match="is not a retention"):
            Settings(retention_messages=value)
    with pytest.raises(SettingsError, match="TRADEBASE_RETENTION_PRICE_DATA: price_data has no"):
        policies(Settings(retention_price_data="2y:archive"))
    with pytest.raises(SettingsError, match="TRADEBASE_RETENTION_AUDIT_LOG: the audit log is"):
        policies(Settings(retention_audit_log="7y:delete"))


def test_years_are_calendar_years_and_days_are_days() -> None:
    by_table = {p.table: p for p in policies(Settings())}
    leap = datetime(2028, 2, 29, 9, 30, tzinfo=UTC)
    assert by_table["audit_log"].cutoff(leap) == datetime(2021, 2, 28, 9, 30, tzinfo=UTC)
    assert by_table["price_data"].cutoff(AT) == CUTOFFS["price_data"]
    assert by_table["system_metrics"].cutoff(AT) == AT - timedelta(days=7)
    assert by_table["trades"].cutoff(AT) is None


# --- rows on both sides of every limit ----------------------------------------------------


@pytest.fixture
def factory(session: Session) -> sessionmaker[Session]:
    """Units of work on the test's connection: their commits are savepoints, rolled back
    with the test."""
    return sessionmaker(
        bind=session.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
    )


class Clock:
    """The audit service's clock, set by the test, so entries can be years old."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = AT
        monkeypatch.setattr(audit_module, "utc_now", lambda: self.now)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def _at(table: str, offset: int) -> datetime:
    return CUTOFFS[table] + timedelta(seconds=offset)


def _rows(conn: Connection | Session, table: str, where: str = "") -> dict[int, dict[str, Any]]:
    query = select(TABLE[table])
    if where:
        query = query.where(text(where))
    return {row.id: dict(row._mapping) for row in conn.execute(query)}


class World:
    """Rows at every offset of OFFSETS in each policy table, plus orders in every
    situation, trades and snapshots; ``past[table]`` are the ids that should go."""

    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.past: dict[str, set[int]] = {}
        self.kept: dict[str, set[int]] = {}
        # other tests' job runs in the shared database (this session rolls back)
        session.execute(TABLE["job_runs"].delete())
        user = create_user(session)
        self.user_id = user.id
        self.portfolio = create_portfolio(session, account=create_account(session, user=user))
        conversation = session.execute(
            insert(TABLE["conversations"]).values(user_id=user.id, title="chat")
        ).inserted_primary_key
        assert conversation is not None
        self.conversation_id = conversation[0]
        self._audit(clock)
        for offset in OFFSETS:
            self._add("messages", offset, conversation_id=self.conversation_id, role="user",
                      content=f"hello {offset}", created_at=_at("messages", offset),
                      meta={"offset": offset})  # fmt: skip
            self._add("llm_usage", offset, timestamp=_at("llm_usage", offset), provider="openai",
                      model="gpt", input_tokens=10, output_tokens=5,
                      cost_usd=Decimal("0.000123456789012345"), user_id=user.id)  # fmt: skip
            self._add("bot_metrics", offset, bot_type="telegram",
                      timestamp=_at("bot_metrics", offset), errors_count=1)  # fmt: skip
            self._add("system_metrics", offset, component="api",
                      timestamp=_at("system_metrics", offset), cpu_percent=Decimal(12))  # fmt: skip
            self._add("price_data", offset, symbol="ACME", exchange="paper", timeframe="1m",
                      timestamp=_at("price_data", offset), open=Decimal(10), high=Decimal(11),
                      low=Decimal(9), close=Decimal("10.5"), volume=Decimal(100))  # fmt: skip
            self._add("orders", offset, **self._order("cancelled", offset))
            self._add("job_runs", offset, job="snapshot", slot_at=_at("job_runs", offset),
                      status="succeeded", host="w1", pid=7, started_at=_at("job_runs", offset),
                      lease_until=_at("job_runs", offset))  # fmt: skip
        self._special_orders()
        self.trades = self._count("trades")
        self.snapshots = self._count("portfolio_snapshots")
        session.flush()

    def _count(self, table: str) -> int:
        return int(self.session.scalar(text(f"SELECT COUNT(*) FROM {table}")) or 0)

    def _add(self, table: str, offset: int | None, **values: Any) -> int:
        if "meta" in values:
            values["metadata"] = values.pop("meta")
        key = self.session.execute(insert(TABLE[table]).values(**values)).inserted_primary_key
        assert key is not None
        row_id = int(key[0])
        past = offset is not None and offset < 0
        (self.past if past else self.kept).setdefault(table, set()).add(row_id)
        return row_id

    def _order(self, status: str, offset: int, **extra: Any) -> dict[str, Any]:
        moment = _at("orders", offset)
        values = {
            "user_id": self.user_id,
            "account_id": self.portfolio.account_id,
            "portfolio_id": self.portfolio.id,
            "symbol": "ACME",
            "exchange": "paper",
            "side": "buy",
            "order_type": "market",
            "status": status,
            "quantity": Decimal("1.5"),
            "created_at": moment - timedelta(days=1),
            "updated_at": moment,
            "algo_params": {"note": "x"},
        }
        return values | extra

    def _event(self, order_id: int, offset: int) -> int:
        return self._add("order_events", None, order_id=order_id, event_type="cancelled",
                         from_status="open", to_status="cancelled",
                         occurred_at=_at("orders", offset), details={"reason": "test"})  # fmt: skip

    def _special_orders(self) -> None:
        old = -86400
        # Past the limit but still in use: open; filled with a fill (trades keep order_id);
        # pointed at by an alert; a finished parent with a child; a child of an open parent.
        self._add("orders", None, **self._order("open", old))
        filled = self._add("orders", None, **self._order("filled", old))
        self.session.execute(
            insert(TABLE["trades"]).values(
                user_id=self.user_id, portfolio_id=self.portfolio.id, order_id=filled,
                symbol="ACME", exchange="paper", side="buy", quantity=Decimal(1),
                price=Decimal(10), value=Decimal(10), executed_at=_at("orders", old),
            )
        )  # fmt: skip
        alerted = self._add("orders", None, **self._order("rejected", old))
        self.session.execute(
            insert(TABLE["alerts"]).values(
                user_id=self.user_id, title="rejected", message="m", order_id=alerted
            )
        )
        parent = self._add("orders", None, **self._order("cancelled", old, order_type="twap"))
        self.child = self._add(
            "orders", old, **self._order("cancelled", old, parent_order_id=parent)
        )
        live_parent = self._add("orders", None, **self._order("open", old, order_type="twap"))
        self._add("orders", None, **self._order("expired", old, parent_order_id=live_parent))
        # Events of an order that goes (into order_events_archive) and of one that stays.
        gone = min(self.past["orders"])
        self.events_gone = {self._event(gone, old), self._event(gone, old + 1)}
        self.events_kept = {self._event(filled, old)}
        # The newest row of every table stays within its limit (SQLite reuses the largest id).
        self._add("orders", 7200, **self._order("cancelled", 7200))

    def _audit(self, clock: Clock) -> None:
        for offset in OFFSETS:
            clock.now = _at("audit_log", offset)
            entry = audit_service.record(
                self.session, action="login.ok", actor="dana", details={"offset": offset}
            )
            past = offset < 0
            (self.past if past else self.kept).setdefault("audit_log", set()).add(entry.id)
        clock.now = AT


@pytest.fixture
def world(session: Session, clock: Clock) -> World:
    return World(session, clock)


def _ids(session: Session, table: str) -> set[int]:
    return set(session.scalars(text(f"SELECT id FROM {table}")))


def _report(reports: list[TableReport]) -> dict[str, TableReport]:
    return {r.policy.table: r for r in reports}


def test_prune_deletes_and_archives_exactly_the_rows_past_each_limit(
    session: Session, factory: sessionmaker[Session], world: World
) -> None:
    before = {table: _rows(session, table) for table in (*CUTOFFS, "order_events")}
    reports = _report(retention_service.prune(factory, _settings(), at=AT))

    for table in CUTOFFS:
        past, kept = world.past[table], world.kept[table]
        assert _ids(session, table) >= kept, table
        assert not _ids(session, table) & past, table
        assert reports[table].done == len(past), table
        if table == "audit_log":  # and the run's own entries
            continue
        assert _ids(session, table) == kept, table
    assert reports["messages"].past_limit == reports["messages"].eligible == PAST
    # Past the limit but in use: open, filled (a trade points at it), alerted, a parent with
    # a child, an expired child of an open parent. The cancelled child of a finished
    # parent goes; its parent follows in a later run, once it has no children.
    assert reports["orders"].past_limit == PAST + 7
    assert reports["orders"].kept_in_use == 6
    assert world.child in world.past["orders"]

    archived_at = AT
    for table in ("messages", "audit_log", "orders"):
        archive = _rows(session, f"{table}_archive")
        assert set(archive) == world.past[table], table
        for row_id, row in archive.items():
            assert row.pop("archived_at") == archived_at
            assert row == before[table][row_id], (table, row_id)
    events = _rows(session, "order_events_archive")
    assert set(events) == world.events_gone
    assert all(events[i].pop("archived_at") == AT and events[i] == before["order_events"][i]
               for i in events)  # fmt: skip
    assert _ids(session, "order_events") >= world.events_kept
    assert not _ids(session, "order_events") & world.events_gone
    assert reports["orders"].along == {"order_events": 2}

    # Kept forever; and a trade still points at its order.
    assert world._count("trades") == world.trades
    assert world._count("portfolio_snapshots") == world.snapshots
    assert session.scalar(text("SELECT COUNT(*) FROM trades WHERE order_id IS NULL")) == 0

    verified = audit_service.verify(session)
    assert verified.ok, verified.message
    checkpoint = audit_service.checkpoint(session)
    assert checkpoint is not None
    assert checkpoint.last_id == max(world.past["audit_log"]) and checkpoint.entries == PAST

    # Again: nothing is past the limit any more but the parent whose child went.
    again = _report(retention_service.prune(factory, _settings(), at=AT))
    assert {t: r.done for t, r in again.items() if r.done} == {"orders": 1}
    assert audit_service.verify(session).ok


def test_a_dry_run_counts_and_changes_nothing(
    session: Session, factory: sessionmaker[Session], world: World
) -> None:
    tables = (*CUTOFFS, "order_events", "trades", "audit_checkpoint")
    before = {table: _rows(session, table) for table in tables}
    reports = _report(retention_service.prune(factory, _settings(), at=AT, dry_run=True))
    assert {table: _rows(session, table) for table in tables} == before
    for table in CUTOFFS:
        assert reports[table].done == 0
        assert reports[table].eligible == len(world.past[table]), table


def test_only_the_named_tables_are_pruned(
    session: Session, factory: sessionmaker[Session], world: World
) -> None:
    reports = retention_service.prune(factory, _settings(), at=AT, tables=["bot_metrics"])
    assert [r.policy.table for r in reports] == ["bot_metrics"]
    assert _ids(session, "bot_metrics") == world.kept["bot_metrics"]
    assert (
        _ids(session, "system_metrics")
        == world.past["system_metrics"] | world.kept["system_metrics"]
    )


# --- the audit chain after archiving ------------------------------------------------------


def _tampered(session: Session, *statements: str, **params: Any) -> audit_module.VerifyResult:
    savepoint = session.begin_nested()
    try:
        for statement in statements:
            session.execute(text(statement), params)
        return audit_service.verify(session)
    finally:
        savepoint.rollback()


def test_the_audit_chain_verifies_from_its_checkpoint_and_tampering_is_found(
    session: Session, factory: sessionmaker[Session], clock: Clock
) -> None:
    entries = 40
    for i in range(entries):
        clock.now = datetime(2018, 1, 1, tzinfo=UTC) + timedelta(days=60 * i)
        audit_service.record(session, action="order.placed", actor="dana", resource_id=i,
                             details={"i": i, "price": "101.25"})  # fmt: skip
    clock.now = AT
    session.flush()
    ids = sorted(_ids(session, "audit_log"))
    anchor_old = (ids[5], _rows(session, "audit_log", f"id = {ids[5]}")[ids[5]]["row_hash"])
    settings = _settings(retention_batch_size=4)
    (report,) = retention_service.prune(factory, settings, at=AT, tables=["audit_log"])
    archived = {e for e in ids if _rows(session, "audit_log_archive", f"id = {e}")}
    assert report.done == len(archived) == 9 and report.batches == 3  # 2018-01 .. 2019-05
    assert archived == set(ids[:9])
    remaining = sorted(_ids(session, "audit_log"))
    assert remaining[0] == ids[9]

    result = audit_service.verify(session)
    assert result.ok, result.message
    assert result.checked == entries + 3  # the three retention.archived entries
    assert "(9 archived entries in audit_log_archive, checkpoint at entry" in result.message
    assert audit_service.verify(session, anchor=anchor_old).ok  # an anchor into the archive

    first = remaining[0]
    bad = _tampered(session, "UPDATE audit_log SET actor = 'mallory' WHERE id = :i",
                    i=remaining[3])  # fmt: skip
    assert (bad.ok, bad.problem, bad.first_bad_id) == (False, "altered", remaining[3])
    bad = _tampered(session, "UPDATE audit_log_archive SET actor = 'mallory' WHERE id = :i",
                    i=ids[4])  # fmt: skip
    assert (bad.problem, bad.first_bad_id) == ("altered", ids[4])
    assert bad.message.startswith("in audit_log_archive: ")
    bad = _tampered(session, "UPDATE audit_checkpoint SET last_hash = :h", h="f" * 64)
    assert (bad.ok, bad.problem) == (False, "checkpoint mismatch")
    bad = _tampered(session, "UPDATE audit_checkpoint SET entries = entries - 1")
    assert (bad.ok, bad.problem) == (False, "checkpoint mismatch")
    bad = _tampered(session, "DELETE FROM audit_checkpoint")
    assert (bad.ok, bad.problem) == (False, "checkpoint mismatch")
    bad = _tampered(session, "DELETE FROM audit_log_archive WHERE id = :i", i=ids[0])
    assert (bad.ok, bad.problem) == (False, "deleted")
    bad = _tampered(session, "DELETE FROM audit_log WHERE id = :i", i=first)
    assert (bad.ok, bad.problem) == (False, "deleted")

    # With the archive gone (exported and purged), the chain verifies from the checkpoint,
    # and tampering with the checkpoint or the first entry left is still found.
    purged = _tampered(session, "DELETE FROM audit_log_archive")
    assert purged.ok, purged.message
    assert "9 archived entries no longer in the archive" in purged.message
    bad = _tampered(session, "DELETE FROM audit_log_archive",
                    "UPDATE audit_checkpoint SET last_hash = :h", h="e" * 64)  # fmt: skip
    assert (bad.problem, bad.first_bad_id) == ("checkpoint mismatch", first)
    bad = _tampered(session, "DELETE FROM audit_log_archive",
                    "UPDATE audit_checkpoint SET entries = entries + 1")  # fmt: skip
    assert (bad.ok, bad.problem) == (False, "head mismatch")
    bad = _tampered(session, "DELETE FROM audit_log_archive",
                    "UPDATE audit_log SET message = 'x' WHERE id = :i", i=first)  # fmt: skip
    assert (bad.problem, bad.first_bad_id) == ("altered", first)
    bad = _tampered(session, "DELETE FROM audit_log_archive",
                    "INSERT INTO audit_log (id, timestamp, action, prev_hash, row_hash)"
                    " VALUES (:i, :t, 'login.ok', :h, :h)", i=ids[3], t="2019-01-01 00:00:00",
                    h="a" * 64)  # fmt: skip
    assert (bad.problem, bad.first_bad_id) == ("inserted", ids[3])


# --- interruptions -----------------------------------------------------------------------


class Interrupted(Exception):
    pass


def _interrupt(monkeypatch: pytest.MonkeyPatch, table: str, stage: str, batch: int) -> None:
    seen = {"n": 0}

    def hook(name: str, at_stage: str) -> None:
        if (name, at_stage) == (table, stage):
            seen["n"] += 1
            if seen["n"] == batch:
                raise Interrupted(f"killed in batch {batch} of {table}")

    monkeypatch.setattr(retention_module, "_batch_hook", hook)


@pytest.mark.parametrize("table", ["messages", "orders", "audit_log", "llm_usage"])
def test_an_interrupted_run_leaves_whole_batches_and_a_rerun_finishes(
    session: Session,
    factory: sessionmaker[Session],
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    table: str,
) -> None:
    settings = _settings(retention_batch_size=1)
    live_before = _rows(session, table)
    stage = "deleted" if table in ("audit_log", "llm_usage") else "copied"
    _interrupt(monkeypatch, table, stage, batch=2)
    with pytest.raises(Interrupted):
        retention_service.prune(factory, settings, at=AT, tables=[table])
    live = _ids(session, table)
    first_gone = min(world.past[table])
    # Batch 1 committed (with its retention.archived entry), batch 2 undone.
    assert live & set(live_before) == set(live_before) - {first_gone}
    assert len(live - set(live_before)) == (1 if table == "audit_log" else 0)
    if table != "llm_usage":
        archive = _rows(session, f"{table}_archive")
        assert set(archive) == {first_gone}
        assert not live & set(archive)
    if table == "audit_log":
        checkpoint = audit_service.checkpoint(session)
        assert checkpoint is not None and (checkpoint.last_id, checkpoint.entries) == (
            first_gone,
            1,
        )
        assert audit_service.verify(session).ok

    monkeypatch.setattr(retention_module, "_batch_hook", lambda name, stage: None)
    retention_service.prune(factory, settings, at=AT, tables=[table])
    assert not _ids(session, table) & world.past[table]
    assert _ids(session, table) >= world.kept[table]
    if table != "llm_usage":
        assert set(_rows(session, f"{table}_archive")) == world.past[table]
    assert audit_service.verify(session).ok


@pytest.mark.parametrize("backend", ["sqlite"])  # the other engines never reuse an id
def test_on_sqlite_the_newest_row_is_never_archived(
    session: Session, factory: sessionmaker[Session], migrated: Any
) -> None:
    user = create_user(session)
    conversation = session.execute(
        insert(TABLE["conversations"]).values(user_id=user.id)
    ).inserted_primary_key
    assert conversation is not None
    old = AT - timedelta(days=200)
    for i in range(3):
        values = {"conversation_id": conversation[0], "role": "user", "created_at": old}
        session.execute(insert(TABLE["messages"]).values(content=str(i), **values))
    ids = sorted(_ids(session, "messages"))
    (report,) = retention_service.prune(factory, _settings(), at=AT, tables=["messages"])
    assert (report.past_limit, report.eligible, report.done) == (3, 2, 2)
    assert _ids(session, "messages") == {ids[-1]}


# --- tradebase db prune --------------------------------------------------------------------


def test_the_cli_prints_each_table_and_exits_0(
    scratch_factory: ScratchFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from tradebase.cli import app

    scratch = scratch_factory.new(backend, "prune")
    settings = scratch.settings()
    migrate.upgrade(Database.main, settings=settings)
    engines = Engines(settings)
    try:
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            world = World(session, Clock(monkeypatch))
    finally:
        engines.dispose()
    monkeypatch.undo()  # the audit clock: the run's own entries are written now
    runner = CliRunner()
    env = {**scratch.env(), "TRADEBASE_RETENTION_ORDERS": "30d"}
    at = ["--at", "2026-06-15T12:00:00"]  # no zone: UTC

    dry = runner.invoke(app, ["db", "prune", "--dry-run", *at], env=env)
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert lines[0] == "retention as of 2026-06-15T12:00:00+00:00 (dry run: nothing changed)"
    assert lines[1].split() == ["table", "policy", "past", "limit", "result"]
    by_table = {line.split()[0]: " ".join(line.split()[1:]) for line in lines[2:]}
    assert by_table == {
        "messages": "archive after 90 days 3 would archive 3",
        "llm_usage": "delete after 365 days 3 would delete 3",
        "audit_log": "archive after 7 years 3 would archive 3",
        "bot_metrics": "delete after 30 days 3 would delete 3",
        "system_metrics": "delete after 7 days 3 would delete 3",
        "orders": "archive after 30 days 10 would archive 4; 6 kept: still in use",
        "price_data": "delete after 2 years 3 would delete 3",
        "job_runs": "delete after 90 days 3 would delete 3",
        "events": "delete after 30 days 0 would delete 0",
        "webhook_deliveries": "delete after 30 days 0 would delete 0",
        "portfolio_snapshots": "kept forever - kept",
        "trades": "kept forever - kept",
    }

    done = runner.invoke(app, ["db", "prune", *at, "--table", "orders", "-t", "audit_log"], env=env)
    assert done.exit_code == 0, done.output
    by_table = {
        line.split()[0]: " ".join(line.split()[1:]) for line in done.stdout.splitlines()[2:]
    }
    assert by_table == {
        "audit_log": "archive after 7 years 3 archived 3",
        "orders": "archive after 30 days 10 archived 4 (and 2 order_events); 6 kept: still in use",
    }
    verified = runner.invoke(app, ["audit", "verify"], env=env)
    assert verified.exit_code == 0, verified.output
    assert "(3 archived entries in audit_log_archive" in verified.stdout
    assert len(world.past["audit_log"]) == 3

    wrong = runner.invoke(app, ["db", "prune", "--table", "nonesuch"], env=env)
    assert wrong.exit_code == 2 and "no retention for nonesuch" in wrong.output
    wrong = runner.invoke(app, ["db", "prune", "--at", "2999-01-01"], env=env)
    assert wrong.exit_code == 2 and "in the future" in wrong.output
