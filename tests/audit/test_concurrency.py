"""Four OS processes append 1,000 entries each at the same time: one linear chain."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.audit import GENESIS, hand_hash, head_row, new_chain_db, read_entries
from tests.conftest import ScratchFactory
from tradebase.audit.service import audit as audit_service
from tradebase.core.db import unit_of_work

pytestmark = pytest.mark.slow

PROCESSES = 4
PER_PROCESS = 1_000

# Each writer connects, waits for the start file, then appends one entry per unit of work.
WRITER = """
import sys, time
from pathlib import Path
from sqlalchemy import text
from tradebase.audit.service import audit
from tradebase.config import Settings
from tradebase.core.db import Database, Engines, unit_of_work

n, count, go = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
engines = Engines(Settings())
factory = engines.session_factory(Database.main)
with unit_of_work(factory=factory, write=False) as session:
    session.execute(text("SELECT 1"))
Path(f"{go}.ready{n}").touch()
while not go.exists():
    time.sleep(0.001)
for i in range(count):
    with unit_of_work(factory=factory) as session:
        audit.record(session, action="order.placed", actor=f"writer-{n}", resource_id=i,
                     details={"writer": n, "i": i})
engines.dispose()
"""


def test_four_processes_append_one_linear_chain(
    scratch_factory: ScratchFactory, backend: str, tmp_path: Path
) -> None:
    db = new_chain_db(scratch_factory, backend, "procs")
    env = {**os.environ, **db.scratch.env(), "TRADEBASE_DATA_DIR": str(tmp_path)}
    env.pop("TRADEBASE_ENV_FILE", None)
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(n), str(PER_PROCESS), str(go)],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"go.ready{n}").exists() for n in range(PROCESSES)):
        assert all(w.poll() is None for w in writers), [w.stderr.read() for w in writers]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.01)
    go.touch()  # all four start appending at once
    failures = []
    for writer in writers:
        _, err = writer.communicate(timeout=600)
        if writer.returncode != 0:
            failures.append(err)
    assert failures == []

    with db.engine.connect() as conn:
        entries = read_entries(conn)
        head = head_row(conn)
        per_writer = {
            actor: count
            for actor, count in conn.execute(
                text("SELECT actor, COUNT(*) FROM audit_log GROUP BY actor")
            )
        }
        unhashed = conn.execute(
            text("SELECT COUNT(*) FROM audit_log WHERE row_hash IS NULL")
        ).scalar_one()
    with unit_of_work(factory=db.factory, write=False) as session:
        result = audit_service.verify(session)
    db.engines.dispose()

    total = PROCESSES * PER_PROCESS
    assert per_writer == {f"writer-{n}": PER_PROCESS for n in range(PROCESSES)}
    assert unhashed == 0
    # The chain, checked here without the service: one link per entry, no fork, every
    # hash right, and the head on the last entry.
    assert entries[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["row_hash"] for a, b in itertools.pairwise(entries))
    assert len({entry["prev_hash"] for entry in entries}) == total
    assert all(hand_hash(entry) == entry["row_hash"] for entry in entries)
    assert head == (entries[-1]["id"], entries[-1]["row_hash"], total)
    # The writers really ran at the same time: their entries interleave.
    switches = sum(a["actor"] != b["actor"] for a, b in itertools.pairwise(entries))
    assert switches > PROCESSES
    assert result.ok and result.checked == total, result
