"""Appending to the chain, its hash, the head, verify's walk and export."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tests.audit import (
    GENESIS,
    ChainDB,
    build_chain,
    count_rows,
    hand_hash,
    head_row,
    new_chain_db,
    read_entries,
)
from tests.conftest import ScratchFactory
from tests.factories import create_user
from tradebase.audit import service as audit_module
from tradebase.audit.models import AuditLog
from tradebase.audit.service import AuditChainBusy, VerifyResult
from tradebase.audit.service import audit as audit_service
from tradebase.core.db import unit_of_work


@pytest.fixture
def db(scratch_factory: ScratchFactory, backend: str) -> Iterator[ChainDB]:
    """A fresh, migrated main database with an empty chain."""
    chain_db = new_chain_db(scratch_factory, backend, "audit")
    yield chain_db
    chain_db.engines.dispose()


def test_an_entry_hashes_what_the_docs_say(db: ChainDB) -> None:
    with unit_of_work(factory=db.factory) as session:
        user = create_user(session)
        first = audit_service.record(
            session,
            action="order.placed",
            user_id=user.id,
            actor=user.username,
            resource_type="order",
            resource_id=42,
            ip_address="2001:db8::1",
            user_agent="curl/8.5",
            details={"qty": Decimal("0.125"), "at": datetime(2026, 1, 2, 3, 4, 5, 6, UTC),
                     "note": "Zürich €", "ok": True, "n": 3, "price": 101.5},
            message="placed an order",
        )  # fmt: skip
        second = audit_service.record(session, action="logout")
    with db.engine.connect() as conn:
        rows = read_entries(conn)
        head = head_row(conn)
    assert [row["id"] for row in rows] == [first.id, second.id]
    one, two = rows
    assert one["details"] == {
        "qty": "0.125",
        "at": "2026-01-02T03:04:05.000006+00:00",
        "note": "Zürich €",
        "ok": True,
        "n": 3,
        "price": 101.5,
    }
    assert one["resource_id"] == "42"
    assert one["prev_hash"] == GENESIS
    assert one["row_hash"] == hand_hash(one) == first.row_hash
    assert two["prev_hash"] == one["row_hash"]
    assert two["row_hash"] == hand_hash(two) == second.row_hash
    assert head == (two["id"], two["row_hash"], 2)


def test_an_entry_is_appended_in_the_callers_transaction(session: Session) -> None:
    # The shared database, in a transaction rolled back after the test.
    before = head_row(session)
    entry = audit_service.record(session, action="settings.changed", actor="tester")
    after = head_row(session)
    stored = session.execute(
        text("SELECT prev_hash, row_hash FROM audit_log WHERE id = :id"), {"id": entry.id}
    ).one()
    assert stored.prev_hash == (before[1] or GENESIS)
    assert after == (entry.id, stored.row_hash, before[2] + 1)
    assert session.get(AuditLog, entry.id) is entry


def test_a_rolled_back_transaction_leaves_no_entry_and_the_head_unmoved(db: ChainDB) -> None:
    build_chain(db, 3)
    with db.engine.connect() as conn:
        head = head_row(conn)
    with pytest.raises(RuntimeError), unit_of_work(factory=db.factory) as session:
        audit_service.record(session, action="order.placed")
        raise RuntimeError("the change it records failed")
    with db.engine.connect() as conn:
        assert (count_rows(conn), head_row(conn)) == (3, head)
    with unit_of_work(factory=db.factory) as session:
        audit_service.record(session, action="order.placed")
    with unit_of_work(factory=db.factory, write=False) as session:
        assert audit_service.verify(session).ok


def test_values_are_cleaned_or_refused(session: Session) -> None:
    entry = audit_service.record(
        session,
        action="login.failed",
        actor="x" * 300,
        user_agent="evil\x00agent" + "a" * 1000,
        ip_address="203.0.113.9",
        details={"agent": "nul\x00", 1: (1, 2)},
    )
    assert entry.user_agent is not None and len(entry.user_agent) == 500
    assert entry.user_agent.startswith("evil\ufffdagent")
    assert entry.actor == "x" * 100
    assert entry.details == {"agent": "nul\ufffd", "1": [1, 2]}
    with pytest.raises(ValueError, match="action"):
        audit_service.record(session, action="")
    with pytest.raises(ValueError, match="action"):
        audit_service.record(session, action="a" * 101)
    with pytest.raises(ValueError, match="nan"):
        audit_service.record(session, action="x", details={"v": float("nan")})
    with pytest.raises(TypeError, match="object"):
        audit_service.record(session, action="x", details={"v": object()})


def test_an_empty_chain_verifies(db: ChainDB) -> None:
    with unit_of_work(factory=db.factory, write=False) as session:
        assert audit_service.verify(session) == VerifyResult(
            True, 0, None, None, "chain of 0 entries verifies"
        )


def test_verify_reports_progress_in_batches(db: ChainDB, monkeypatch: pytest.MonkeyPatch) -> None:
    build_chain(db, 25)
    monkeypatch.setattr(audit_module, "BATCH_SIZE", 10)
    seen: list[int] = []
    with unit_of_work(factory=db.factory, write=False) as session:
        result = audit_service.verify(session, progress=seen.append)
    assert result.ok and result.checked == 25
    assert seen == [10, 20, 25]


def test_verify_walks_on_while_entries_are_appended(
    db: ChainDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Entries committed by another writer during the walk: under READ COMMITTED
    # (PostgreSQL) the walk takes them in; on snapshots (SQLite, MariaDB) it ends where
    # its snapshot does. Either way the chain verifies.
    build_chain(db, 30)
    monkeypatch.setattr(audit_module, "BATCH_SIZE", 7)

    appended: list[int] = []

    def append(_checked: int) -> None:
        if len(appended) < 3:
            with unit_of_work(factory=db.factory) as writer:
                appended.append(audit_service.record(writer, action="order.placed").id)

    with unit_of_work(factory=db.factory, write=False) as session:
        session.execute(select(AuditLog.id).limit(1)).all()  # the snapshot starts here
        result = audit_service.verify(session, progress=append)
    assert result.ok, result
    assert result.checked == (33 if db.backend == "postgresql" else 30)
    with unit_of_work(factory=db.factory, write=False) as session:
        final = audit_service.verify(session)
    assert len(appended) == 3 and final.ok and final.checked == 33


def test_sqlite_appends_in_deferred_transactions_stay_linear(
    scratch_factory: ScratchFactory,
) -> None:
    # Writers that did not start with BEGIN IMMEDIATE: record() takes the write lock with
    # its first statement, so each waits for the lock and then reads the newest head.
    db = new_chain_db(scratch_factory, "sqlite", "deferred")
    threads, per_thread = 4, 100
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with db.factory() as session, session.begin():  # a plain deferred BEGIN
                    audit_service.record(session, action="order.placed", actor=f"w{n}",
                                         resource_id=i)  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    with db.engine.connect() as conn:
        entries = read_entries(conn)
        head = head_row(conn)
    with unit_of_work(factory=db.factory, write=False) as session:
        result = audit_service.verify(session)
    db.engines.dispose()
    total = threads * per_thread
    assert len(entries) == total and result.ok and result.checked == total
    assert head == (entries[-1]["id"], entries[-1]["row_hash"], total)
    assert len({entry["prev_hash"] for entry in entries}) == total  # no fork


def test_sqlite_a_stale_deferred_transaction_cannot_fork_the_chain(
    scratch_factory: ScratchFactory,
) -> None:
    # A deferred transaction that read before another writer committed cannot get
    # SQLite's write lock: record() refuses with a clear error, and nothing forks.
    db = new_chain_db(scratch_factory, "sqlite", "stale")
    build_chain(db, 2)
    stale = db.factory()
    stale.begin()
    stale.execute(text("SELECT COUNT(*) FROM audit_log")).scalar_one()  # its snapshot
    with unit_of_work(factory=db.factory) as other:
        audit_service.record(other, action="login.ok")
    with pytest.raises(AuditChainBusy, match="write lock"):
        audit_service.record(stale, action="login.failed")
    stale.rollback()
    stale.close()
    # Read first, nobody else writes: the deferred transaction appends fine.
    with db.factory() as session, session.begin():
        session.execute(text("SELECT COUNT(*) FROM audit_log")).scalar_one()
        audit_service.record(session, action="logout")
    with unit_of_work(factory=db.factory, write=False) as session:
        result = audit_service.verify(session)
    with db.engine.connect() as conn:
        assert count_rows(conn) == 4 and head_row(conn)[2] == 4
    db.engines.dispose()
    assert result.ok and result.checked == 4


def test_export_writes_json_lines_and_filters(db: ChainDB) -> None:
    users = build_chain(db, 40)
    with db.engine.connect() as conn:
        entries = read_entries(conn)

    def export(**filters: object) -> list[dict[str, object]]:
        out = io.StringIO()
        with unit_of_work(factory=db.factory, write=False) as session:
            count = audit_service.export(session, out, **filters)  # type: ignore[arg-type]
        lines = out.getvalue().splitlines()
        assert count == len(lines)
        return [json.loads(line) for line in lines]

    everything = export()
    assert [line["id"] for line in everything] == [entry["id"] for entry in entries]
    one = everything[1]
    entry = entries[1]
    assert one == {
        **entry,
        "timestamp": entry["timestamp"].isoformat(timespec="microseconds"),
    }
    assert set(one) == {
        "id", "timestamp", "user_id", "actor_user_id", "actor", "action", "resource_type",
        "resource_id", "ip_address", "user_agent", "details", "message", "prev_hash", "row_hash",
    }  # fmt: skip

    with db.engine.connect() as conn:
        failed = conn.execute(
            text("SELECT id FROM audit_log WHERE action = 'login.failed' ORDER BY id")
        ).scalars()
        of_user = conn.execute(
            text("SELECT id FROM audit_log WHERE user_id = :u ORDER BY id"), {"u": users[1]}
        ).scalars()
        expected_failed, expected_user = list(failed), list(of_user)
    assert [line["id"] for line in export(action="login.failed")] == expected_failed
    assert [line["id"] for line in export(user_id=users[1])] == expected_user
    assert expected_failed and expected_user

    since, until = entries[10]["timestamp"], entries[20]["timestamp"]
    window = [line["id"] for line in export(since=since, until=until)]
    assert window == [entry["id"] for entry in entries[10:20]]
    both = export(since=since, until=until, action="login.failed", user_id=users[1])
    assert [line["id"] for line in both] == [
        entry["id"]
        for entry in entries[10:20]
        if entry["action"] == "login.failed" and entry["user_id"] == users[1]
    ]
    with pytest.raises(ValueError, match="naive"):
        export(since=datetime(2026, 1, 1))
