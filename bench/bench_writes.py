"""Single-row committed writes: Tradebase's unit of work against the bare driver.

Each round inserts N rows into ``system_metrics``, one transaction per row, in three ways:

* ``raw``: the bare driver (sqlite3 / psycopg) with the same connection settings: the
  baseline, measured in the same run;
* ``core``: ``unit_of_work()`` + a Core ``INSERT`` (exact decimals, UTC types, BEGIN IMMEDIATE);
* ``orm``: ``unit_of_work()`` + ``session.add()`` of a model.

Prints the median rows/s of the rounds and each way's ratio to the baseline.

    python bench/bench_writes.py [--rows 3000] [--rounds 5] [--postgres URL]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert

from tradebase.config import Settings
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.metrics.models import SystemMetric


def _rate(fn: Callable[[int], None], rows: int) -> float:
    start = time.perf_counter()
    fn(rows)
    return rows / (time.perf_counter() - start)


def run(settings: Settings, raw: Callable[[int], None], rows: int, rounds: int) -> dict[str, float]:
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)

    def core(n: int) -> None:
        for i in range(n):
            with unit_of_work(factory=factory) as session:
                session.execute(
                    insert(SystemMetric).values(
                        component="bench", timestamp=datetime.now(UTC), cpu_percent=Decimal(i % 100)
                    )
                )

    def orm(n: int) -> None:
        for i in range(n):
            with unit_of_work(factory=factory) as session:
                session.add(SystemMetric(component="bench", cpu_percent=Decimal(i % 100)))

    ways = {"raw": raw, "core": core, "orm": orm}
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():  # interleaved, so drift hits every way alike
            results[name].append(_rate(fn, rows))
    engines.dispose()
    return {name: statistics.median(rates) for name, rates in results.items()}


def sqlite_bench(rows: int, rounds: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    settings = Settings(data_dir=folder)
    migrate.upgrade(Database.main, settings=settings)
    conn = sqlite3.connect(folder / "tradebase.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")

    def raw(n: int) -> None:
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO system_metrics (component, timestamp, cpu_percent) VALUES (?, ?, ?)",
                ("bench", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), str(i % 100)),
            )
            conn.execute("COMMIT")

    try:
        return run(settings, raw, rows, rounds)
    finally:
        conn.close()


def postgres_bench(url: str, rows: int, rounds: int) -> dict[str, float]:
    import psycopg

    from tradebase.config import normalize_database_url

    settings = Settings(database_url=url)
    migrate.upgrade(Database.main, settings=settings)
    dsn = normalize_database_url(url).set(drivername="postgresql").render_as_string(False)
    conn = psycopg.connect(dsn)

    def raw(n: int) -> None:
        for i in range(n):
            with conn.transaction():
                conn.execute(
                    "INSERT INTO system_metrics (component, timestamp, cpu_percent)"
                    " VALUES (%s, %s, %s)",
                    ("bench", datetime.now(UTC), Decimal(i % 100)),
                )

    try:
        return run(settings, raw, rows, rounds)
    finally:
        conn.close()


def report(title: str, rates: dict[str, float]) -> None:
    base = rates["raw"]
    print(f"\n{title}")
    print(f"{'way':6} {'rows/s':>10} {'vs raw':>8}")
    for name, rate in rates.items():
        print(f"{name:6} {rate:10,.0f} {rate / base:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL URL to a scratch database")
    args = parser.parse_args()
    report("SQLite (WAL, synchronous=NORMAL)", sqlite_bench(args.rows, args.rounds))
    if args.postgres:
        report("PostgreSQL", postgres_bench(args.postgres, args.rows, args.rounds))


if __name__ == "__main__":
    main()
