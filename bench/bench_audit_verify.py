"""``audit verify`` on a chain of 1,000,000 entries: entries/second against a plain read.

Builds the chain once per engine with a bulk path (hashes from the service's own
``entry_hash``, one transaction, a few appends through ``record()`` on top to prove the
entries are genuine), checks it verifies, then interleaves rounds of:

* ``read``: the bare driver (sqlite3 / psycopg) fetching the same 13 columns of every
  row, in batches: the baseline, measured in the same run;
* ``verify``: ``audit.verify()`` in a read-only ``unit_of_work``.

Prints the median of the rounds, entries/s, and verify's cost relative to the read.

    python bench/bench_audit_verify.py [--entries 1000000] [--rounds 3] [--postgres URL]

``--postgres`` takes a scratch database: its audit log is replaced.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tradebase.audit.service import GENESIS_HASH, audit, entry_hash
from tradebase.config import Settings, normalize_database_url
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work

COLUMNS = (
    "id, timestamp, user_id, actor, action, resource_type, resource_id, ip_address,"
    " user_agent, details, message, prev_hash, row_hash"
)
ACTIONS = ("login.ok", "login.failed", "order.placed", "order.cancelled", "credential.read")
FETCH = 10_000


def entries(count: int) -> Iterator[tuple[Any, ...]]:
    """Genuine chain entries 1..count: (id, timestamp, ..., details (dict), ..., hashes)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS_HASH
    for i in range(1, count + 1):
        values = [
            i,
            start + timedelta(microseconds=1_337 * i),
            None,
            f"user{i % 50}",
            ACTIONS[i % len(ACTIONS)],
            "order" if i % 2 else None,
            str(i) if i % 2 else None,
            f"10.{i % 200}.{i % 100}.{i % 250}",
            "Mozilla/5.0 (X11; Linux x86_64) tradebase-bench/1.0",
            {"symbol": "BTC/USDT", "qty": "0.0125", "i": i} if i % 3 else None,
            f"entry {i}" if i % 10 == 0 else None,
            prev,
        ]
        digest = entry_hash(values)
        yield (*values, digest)
        prev = digest


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_seconds(fn: Callable[[], int], expected: int) -> float:
    start = time.perf_counter()
    got = fn()
    elapsed = time.perf_counter() - start
    assert got == expected, f"walked {got} entries, expected {expected}"
    return elapsed


def _finish(settings: Settings, count: int, extra: int) -> int:
    """Append *extra* entries through the service on top of the bulk chain; verify once."""
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    for i in range(extra):
        with unit_of_work(factory=factory) as session:
            audit.record(session, action="bench.check", actor="bench", details={"n": i})
    with unit_of_work(factory=factory, write=False) as session:
        result = audit.verify(session)
    engines.dispose()
    assert result.ok and result.checked == count + extra, result
    return result.checked


def _rounds(settings: Settings, read: Callable[[], int], total: int, rounds: int) -> dict[str, Any]:
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)

    def verify() -> int:
        with unit_of_work(factory=factory, write=False) as session:
            result = audit.verify(session)
        assert result.ok, result
        return result.checked

    times: dict[str, list[float]] = {"read": [], "verify": []}
    rss_before = _rss_mib()
    for _ in range(rounds):  # interleaved, so drift hits both alike
        times["read"].append(_median_seconds(read, total))
        times["verify"].append(_median_seconds(verify, total))
    engines.dispose()
    return {
        "entries": total,
        "read": statistics.median(times["read"]),
        "verify": statistics.median(times["verify"]),
        "rss_before": rss_before,
        "rss_after": _rss_mib(),
    }


def sqlite_bench(count: int, rounds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="tb-bench-audit-"))
    settings = Settings(data_dir=folder)
    migrate.upgrade(Database.main, settings=settings)
    path = folder / "tradebase.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    built = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    last: tuple[Any, ...] = ()

    def rows() -> Iterator[tuple[Any, ...]]:
        nonlocal last
        for entry in entries(count):
            last = entry
            # As SQLAlchemy stores them on SQLite: naive UTC text, JSON text.
            stamp = entry[1].strftime("%Y-%m-%d %H:%M:%S.%f")
            details = None if entry[9] is None else json.dumps(entry[9])
            yield (entry[0], stamp, *entry[2:9], details, *entry[10:])

    conn.executemany(f"INSERT INTO audit_log ({COLUMNS}) VALUES ({', '.join('?' * 13)})", rows())
    conn.execute(
        "UPDATE audit_chain_head SET last_id = ?, last_hash = ?, entries = ? WHERE id = 1",
        (last[0], last[12], count),
    )
    conn.execute("COMMIT")
    print(f"SQLite: built {count:,} entries in {time.perf_counter() - built:.1f} s ({path})")
    total = _finish(settings, count, 3)

    def read() -> int:
        cursor = conn.execute(f"SELECT {COLUMNS} FROM audit_log ORDER BY id")
        seen = 0
        while batch := cursor.fetchmany(FETCH):
            seen += len(batch)
        return seen

    try:
        return _rounds(settings, read, total, rounds)
    finally:
        conn.close()


def postgres_bench(url: str, count: int, rounds: int) -> dict[str, Any]:
    import psycopg

    settings = Settings(database_url=url)
    migrate.upgrade(Database.main, settings=settings)
    dsn = normalize_database_url(url).set(drivername="postgresql").render_as_string(False)
    conn = psycopg.connect(dsn)
    built = time.perf_counter()
    last: tuple[Any, ...] = ()
    with conn.transaction():
        conn.execute("TRUNCATE audit_log RESTART IDENTITY")
        with conn.cursor().copy(f"COPY audit_log ({COLUMNS}) FROM STDIN") as copy:
            for entry in entries(count):
                last = entry
                details = None if entry[9] is None else json.dumps(entry[9])
                copy.write_row((*entry[:9], details, *entry[10:]))
        conn.execute("SELECT setval(pg_get_serial_sequence('audit_log', 'id'), %s)", (count,))
        conn.execute(
            "UPDATE audit_chain_head SET last_id = %s, last_hash = %s, entries = %s WHERE id = 1",
            (last[0], last[12], count),
        )
    conn.execute("ANALYZE audit_log")
    conn.commit()
    print(f"PostgreSQL: built {count:,} entries in {time.perf_counter() - built:.1f} s")
    total = _finish(settings, count, 3)

    def read() -> int:
        seen = 0
        with conn.transaction(), conn.cursor(name="bench_read") as cursor:
            cursor.itersize = FETCH
            cursor.execute(f"SELECT {COLUMNS} FROM audit_log ORDER BY id")
            while batch := cursor.fetchmany(FETCH):
                seen += len(batch)
        return seen

    try:
        return _rounds(settings, read, total, rounds)
    finally:
        conn.close()


def report(title: str, figures: dict[str, Any]) -> None:
    n = figures["entries"]
    read, verify = figures["read"], figures["verify"]
    print(f"\n{title}: {n:,} entries, median of the rounds")
    print(f"{'way':8} {'seconds':>8} {'entries/s':>11} {'vs read':>8}")
    print(f"{'read':8} {read:8.2f} {n / read:11,.0f} {1:8.2f}")
    print(f"{'verify':8} {verify:8.2f} {n / verify:11,.0f} {read / verify:8.2f}")
    print(
        f"peak RSS {figures['rss_before']:.0f} MiB before the rounds,"
        f" {figures['rss_after']:.0f} MiB after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", help="a PostgreSQL URL to a scratch database")
    args = parser.parse_args()
    report("SQLite (WAL)", sqlite_bench(args.entries, args.rounds))
    if args.postgres:
        report("PostgreSQL", postgres_bench(args.postgres, args.entries, args.rounds))


if __name__ == "__main__":
    main()
