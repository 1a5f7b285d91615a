"""``db backup`` on a database of 1,000,000 rows: rows/second against bare baselines.

Builds the main database once per engine with a bulk path (98% price_data bars, 2%
system_metrics), then interleaves rounds of:

SQLite (the file is checkpointed first, so a copy is whole):

* ``file copy``: ``shutil.copyfile`` of the database file, the floor (not a consistent
  online method: a copy taken while a server writes can be torn);
* ``sqlite3 backup API``: ``sqlite3.Connection.backup`` in one step into an uncompressed
  file, no manifest: the baseline;
* ``db backup``: ``create_backup`` of both databases (snapshot, row counts, zstd, SHA-256,
  manifest, fsync), as ``tradebase db backup`` runs it;
* ``db backup, gzip``: the same where zstd is not installed (Python's gzip, level 6);
* ``db restore``: ``restore_backup`` of the zstd backup into a fresh data folder
  (SHA-256 check, unpack, row counts, swap in).

PostgreSQL (``--postgres``, a scratch database: its price_data and system_metrics are
replaced):

* ``pg_dump -Fc``: a bare ``pg_dump --format=custom`` of the database: the baseline;
* ``db backup``: ``create_backup`` of the main database (exported snapshot, row counts,
  pg_dump of that snapshot, SHA-256, manifest);
* ``db backup, portable``: the same with ``TRADEBASE_BACKUP_FORMAT=portable`` (the
  JSON-lines export in a compressed tar: what a host without pg_dump gets).

Prints the median of the rounds as rows/second, and each way's time relative to the
baseline.

    python bench/bench_backup.py [--rows 1000000] [--rounds 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tradebase.config import Settings, normalize_database_url
from tradebase.core import migrate
from tradebase.core.db import Database
from tradebase.core.money import register_sqlite_functions
from tradebase.ops import backup as backup_ops

SYMBOLS = [f"SYM{n:02d}" for n in range(20)]
START = datetime(2024, 1, 1, tzinfo=UTC)
PRICE_COLUMNS = (
    "symbol, exchange, timeframe, timestamp, open, high, low, close, volume, vwap, num_trades"
)
METRIC_COLUMNS = "timestamp, component, cpu_percent, memory_mb, active_connections"


def bars(count: int) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        stamp = START + timedelta(minutes=i // len(SYMBOLS))
        base = Decimal(100 + (i % 997)) + Decimal(i % 89) / 100
        yield (
            symbol,
            "bench",
            "1m",
            stamp,
            base,
            base + Decimal("1.25"),
            base - Decimal("0.75"),
            base + Decimal("0.5"),
            Decimal(1000 + i % 5000) / 10,
            base + Decimal("0.1"),
            i % 400,
        )


def metrics(count: int) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        yield (
            START + timedelta(seconds=i),
            "api",
            Decimal(i % 100),
            Decimal(512 + i % 256),
            i % 50,
        )


def _sqlite_text(value: Any) -> Any:
    # As Tradebase stores them on SQLite: naive UTC text, canonical decimal text.
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _split(rows: int) -> tuple[int, int]:
    extra = rows // 50
    return rows - extra, extra


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _report(title: str, rows: int, times: dict[str, list[float]], sizes: dict[str, int]) -> None:
    baseline = statistics.median(next(iter(times.values())))
    print(f"\n{title}: {rows:,} rows, median of {len(next(iter(times.values())))} rounds")
    print(f"| way | seconds | rows/s | vs {next(iter(times))} | size |")
    print("|---|---:|---:|---:|---:|")
    for way, seconds in times.items():
        median = statistics.median(seconds)
        size = f"{sizes[way] / 2**20:,.1f} MiB" if way in sizes else ""
        print(f"| {way} | {median:.2f} | {rows / median:,.0f} | {median / baseline:.2f} | {size} |")


def sqlite_bench(rows: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="tb-bench-backup-"))
    data = folder / "data"
    settings = Settings(data_dir=data)
    for database in Database:
        migrate.upgrade(database, settings=settings)
    path = data / "tradebase.db"
    n_bars, n_metrics = _split(rows)
    built = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    register_sqlite_functions(conn)  # the CHECK constraints compare decimal text
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        f"INSERT INTO price_data ({PRICE_COLUMNS}) VALUES ({', '.join('?' * 11)})",
        (tuple(map(_sqlite_text, row)) for row in bars(n_bars)),
    )
    conn.executemany(
        f"INSERT INTO system_metrics ({METRIC_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        (tuple(map(_sqlite_text, row)) for row in metrics(n_metrics)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = path.stat().st_size
    print(
        f"SQLite: built {rows:,} rows ({n_bars:,} price_data) in"
        f" {time.perf_counter() - built:.1f} s, {size / 2**20:,.1f} MiB ({path})"
    )

    out = folder / "out"
    out.mkdir()
    times: dict[str, list[float]] = {
        "sqlite3 backup API": [],
        "file copy": [],
        "db backup": [],
        "db backup, gzip": [],
        "db restore": [],
    }
    sizes: dict[str, int] = {}

    def bare_api() -> None:
        target = out / "bare.db"
        source = sqlite3.connect(path)
        dest = sqlite3.connect(target)
        source.backup(dest)
        dest.close()
        source.close()
        sizes["sqlite3 backup API"] = target.stat().st_size
        target.unlink()

    def copy() -> None:
        target = out / "copy.db"
        shutil.copyfile(path, target)
        sizes["file copy"] = target.stat().st_size
        target.unlink()

    last: list[Path] = []

    def db_backup(method: str) -> Callable[[], None]:
        def run() -> None:
            original = backup_ops.compression_method
            backup_ops.compression_method = lambda: method  # type: ignore[assignment]
            try:
                result = backup_ops.create_backup(out, settings=settings)
            finally:
                backup_ops.compression_method = original  # type: ignore[assignment]
            assert result.manifest.databases[Database.main].tables["price_data"] == n_bars
            sizes["db backup" if method == "zstd" else "db backup, gzip"] = result.size
            if method == "zstd":
                last.append(result.path)
            else:
                shutil.rmtree(result.path)

        return run

    def restore() -> None:
        fresh = folder / "restored"
        shutil.rmtree(fresh, ignore_errors=True)
        restored = backup_ops.restore_backup(last[-1], settings=Settings(data_dir=fresh))
        assert restored[0].rows >= rows

    for _ in range(rounds):  # interleaved, so drift hits every way alike
        times["sqlite3 backup API"].append(_time(bare_api))
        times["file copy"].append(_time(copy))
        times["db backup"].append(_time(db_backup("zstd")))
        times["db backup, gzip"].append(_time(db_backup("gzip")))
        times["db restore"].append(_time(restore))
        shutil.rmtree(last.pop())
    _report("SQLite", rows, times, sizes)
    shutil.rmtree(folder)


def postgres_bench(url: str, rows: int, rounds: int) -> None:
    import psycopg

    folder = Path(tempfile.mkdtemp(prefix="tb-bench-backup-pg-"))
    settings = Settings(database_url=url, data_dir=folder / "data")
    migrate.upgrade(Database.main, settings=settings)
    libpq = normalize_database_url(url).set(drivername="postgresql")
    dsn = libpq.render_as_string(hide_password=False)
    n_bars, n_metrics = _split(rows)
    built = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            conn.execute("TRUNCATE price_data, system_metrics RESTART IDENTITY")
            with conn.cursor().copy(f"COPY price_data ({PRICE_COLUMNS}) FROM STDIN") as copy:
                for row in bars(n_bars):
                    copy.write_row(row)
            with conn.cursor().copy(f"COPY system_metrics ({METRIC_COLUMNS}) FROM STDIN") as copy:
                for row in metrics(n_metrics):
                    copy.write_row(row)
        conn.execute("ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    print(
        f"\nPostgreSQL: built {rows:,} rows in {time.perf_counter() - built:.1f} s,"
        f" database {size[0] / 2**20 if size else 0:,.1f} MiB"
    )
    pg_dump = backup_ops.find_tool(["pg_dump"], "postgresql", "the benchmark")
    out = folder / "out"
    out.mkdir()
    times: dict[str, list[float]] = {"pg_dump -Fc": [], "db backup": [], "db backup, portable": []}
    sizes: dict[str, int] = {}
    portable = settings.model_copy(update={"backup_format": "portable"})

    def bare() -> None:
        target = out / "bare.pgdump"
        subprocess.run(
            [pg_dump, "--format=custom", f"--file={target}", f"--dbname={dsn}"], check=True
        )
        sizes["pg_dump -Fc"] = target.stat().st_size
        target.unlink()

    def db_backup() -> None:
        result = backup_ops.create_backup(out, databases=[Database.main], settings=settings)
        assert result.manifest.databases[Database.main].tables["price_data"] == n_bars
        sizes["db backup"] = result.size
        shutil.rmtree(result.path)

    def db_backup_portable() -> None:
        result = backup_ops.create_backup(out, databases=[Database.main], settings=portable)
        assert result.manifest.databases[Database.main].tables["price_data"] == n_bars
        sizes["db backup, portable"] = result.size
        shutil.rmtree(result.path)

    for _ in range(rounds):
        times["pg_dump -Fc"].append(_time(bare))
        times["db backup"].append(_time(db_backup))
        times["db backup, portable"].append(_time(db_backup_portable))
    _report("PostgreSQL", rows, times, sizes)
    shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", help="a scratch PostgreSQL database URL")
    parser.add_argument("--no-sqlite", action="store_true", help="Only the PostgreSQL part.")
    args = parser.parse_args()
    print(f"compression: {backup_ops.compression_method()}; {datetime.now(UTC):%Y-%m-%d}")
    if not args.no_sqlite:
        sqlite_bench(args.rows, args.rounds)
    if args.postgres:
        postgres_bench(args.postgres, args.rows, args.rounds)


if __name__ == "__main__":
    main()
