"""``tradebase audit verify`` and ``tradebase audit export`` against real databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from sqlalchemy import text
from typer.testing import CliRunner, Result

from tests.audit import ChainDB, build_chain, new_chain_db, read_entries
from tests.conftest import ScratchFactory
from tradebase.audit import cli as audit_cli
from tradebase.config import get_settings

root = typer.Typer()
root.add_typer(audit_cli.app, name="audit")


@root.callback()
def _root() -> None:
    """The test's stand-in for the tradebase command."""


@pytest.fixture
def db(scratch_factory: ScratchFactory, backend: str) -> Iterator[ChainDB]:
    chain_db = new_chain_db(scratch_factory, backend, "cli")
    build_chain(chain_db, 30)
    yield chain_db
    chain_db.engines.dispose()


def run(db: ChainDB, *args: str) -> Result:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(root, ["audit", *args], env=db.scratch.env())
    finally:
        get_settings.cache_clear()


def test_verify_exits_0_on_an_intact_chain_and_1_naming_the_bad_entry(db: ChainDB) -> None:
    with db.engine.connect() as conn:
        last_id, last_hash = conn.execute(
            text("SELECT id, row_hash FROM audit_log ORDER BY id DESC")
        ).first()  # type: ignore[misc]
    ok = run(db, "verify")
    assert ok.exit_code == 0
    assert ok.stdout.splitlines() == [
        "chain of 30 entries verifies",
        f"anchor: {last_id}:{last_hash}",
    ]
    assert run(db, "verify", "--anchor", f"{last_id}:{last_hash}").exit_code == 0
    forged = run(db, "verify", "--anchor", f"{last_id}:{'0' * 64}")
    assert forged.exit_code == 1
    assert f"entry {last_id} does not match the anchor" in forged.stdout
    assert run(db, "verify", "--anchor", "12:abc").exit_code == 2

    with db.engine.begin() as conn:
        target = conn.execute(text("SELECT id FROM audit_log ORDER BY id")).scalars().all()[16]
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = :id"), {"id": target})
    broken = run(db, "verify")
    assert broken.exit_code == 1
    assert f"entry {target} was altered" in broken.stdout


def test_verify_shows_progress_on_long_runs(db: ChainDB, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_cli, "PROGRESS_FROM", 10)
    result = run(db, "verify")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "chain of 30 entries verifies"


def test_export_writes_json_lines(db: ChainDB, tmp_path: Path) -> None:
    with db.engine.connect() as conn:
        entries = read_entries(conn)
        failed = conn.execute(
            text("SELECT COUNT(*) FROM audit_log WHERE action = 'login.failed'")
        ).scalar_one()
        user_id, of_user = conn.execute(
            text("SELECT user_id, COUNT(*) FROM audit_log WHERE user_id IS NOT NULL"
                 " GROUP BY user_id ORDER BY user_id")
        ).first()  # type: ignore[misc]  # fmt: skip

    everything = run(db, "export")
    assert everything.exit_code == 0, everything.output
    lines = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [line["id"] for line in lines] == [entry["id"] for entry in entries]
    assert lines[5]["row_hash"] == entries[5]["row_hash"]
    assert "exported 30 entries" in everything.stderr

    by_action = run(db, "export", "--action", "login.failed")
    assert {json.loads(line)["action"] for line in by_action.stdout.splitlines()} == {
        "login.failed"
    }
    assert len(by_action.stdout.splitlines()) == failed > 0

    by_user = run(db, "export", "--user", str(user_id))
    assert len(by_user.stdout.splitlines()) == of_user

    since = entries[3]["timestamp"].isoformat()
    until = entries[9]["timestamp"].replace(tzinfo=None).isoformat()  # no zone: UTC
    window = run(db, "export", "--since", since, "--until", until)
    assert [json.loads(line)["id"] for line in window.stdout.splitlines()] == [
        entry["id"] for entry in entries[3:9]
    ]

    target = tmp_path / "audit.jsonl"
    to_file = run(db, "export", "--output", str(target), "--action", "login.failed")
    assert to_file.exit_code == 0 and to_file.stdout == ""
    assert target.read_text(encoding="utf-8") == by_action.stdout
    assert f"exported {failed} entries to {target}" in to_file.stderr


def test_export_refuses_a_bad_time(db: ChainDB) -> None:
    result = run(db, "export", "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since" in result.stderr and "ISO 8601" in result.stderr
