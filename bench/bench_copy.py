"""``db copy`` from SQLite to PostgreSQL (and MariaDB): rows/second against the bare drivers.

Builds a SQLite install of --rows rows (default 1,000,000): --orders market orders placed
through the service layer (each with its events, trade, position, cash movement and audit
entry) and OHLCV bars in price_data for the rest, written with the column types' storage
format. Then, in rounds, with the ways interleaved so a noisy neighbour slows each alike:

* ``sqlite read``: the bare sqlite3 driver fetching every row of every table, in id order
  (what any copy has to read);
* ``psycopg COPY``: that read plus psycopg's ``COPY ... FROM STDIN`` of the same rows into
  the same tables, in one transaction: the baseline for PostgreSQL;
* ``db copy``: ``tradebase.ops.transfer.copy_database`` (what ``tradebase db copy`` runs:
  revision checks, one consistent read, the emptiness check, COPY, the sequences);
* with --mysql, ``PyMySQL executemany`` (the bare read plus executemany in batches of
  10,000, one transaction) and ``db copy`` to MariaDB.

The targets are emptied (TRUNCATE) before each way, outside the timings, and the two ways
of a target take turns going first. Prints the median
seconds and rows/s of each way and db copy's rate relative to its baseline.

    python bench/bench_copy.py --postgres postgresql://postgres@127.0.0.1:5432/tb_bench_copy
        [--mysql mysql://root@127.0.0.1:3306/tb_bench_copy] [--rows 1000000] [--orders 1000]
        [--rounds 3] [--mysql-rounds 1] [--sqlite PATH]

The --postgres and --mysql databases are created when missing and their contents replaced.
--sqlite keeps the built install at PATH and reuses it when it is there already.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from sqlalchemy.engine import URL

from tradebase.accounts.service import user as user_service
from tradebase.config import Settings, normalize_database_url
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, create_db_engine, unit_of_work
from tradebase.core.money import to_text
from tradebase.ops.transfer import copy_database
from tradebase.orders.service import order as order_service
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.schema import main_metadata

BATCH = 10_000
SYMBOLS = 20
TABLES = [t.name for t in main_metadata.sorted_tables]


def build(path: Path, rows: int, orders: int) -> None:
    url = f"sqlite:///{path}"
    settings = Settings(database_url=url, credentials_database_url=f"sqlite:///{path}.cred")
    for database in Database:
        migrate.upgrade(database, settings=settings)
    engines = Engines(settings)
    started = time.perf_counter()
    with unit_of_work(factory=engines.session_factory(Database.main)) as session:
        user, _ = user_service.create(
            session, username="bench", email="bench@example.com", password="benchmark pw"
        )
        who = Principal(user_id=user.id, username=user.username, role="trader")
        account = account_service.create(
            session, who, account_name="bench", fee_rate=Decimal("0.001")
        )
        portfolio = portfolio_service.create(session, who, account_id=account.id, name="bench")
        portfolio_service.deposit(session, who, portfolio.id, Decimal(10**12))
    factory = engines.session_factory(Database.main)
    for i in range(orders):
        with unit_of_work(factory=factory) as session:
            order_service.place(
                session,
                who,
                portfolio_id=portfolio.id,
                symbol=f"S{i % SYMBOLS}",
                side="buy" if i % 3 else "sell",
                quantity=Decimal("1.5"),
                price=Decimal(100 + i % 7) + Decimal("0.123456789"),
            )
    engines.dispose()
    print(f"  {orders} orders through the services: {time.perf_counter() - started:.1f} s")

    conn = sqlite3.connect(path)
    existing = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES)
    bars = max(0, rows - existing)
    # Prices from a cycle of canonical decimal texts, as ExactDecimal stores them.
    cycle = [
        tuple(to_text(Decimal(100 + k % 97) + Decimal(k) / 1000 + d) for d in (0, 1, -1))
        for k in range(1000)
    ]
    start = datetime(2024, 1, 1, tzinfo=UTC)

    def bar_rows() -> Any:
        for i in range(bars):
            symbol, minute = divmod(i, bars // SYMBOLS + 1)
            moment = start + timedelta(minutes=minute, microseconds=i % 1000)
            o, h, lo = cycle[i % 1000]
            yield (
                f"S{symbol}",
                "paper",
                "1m",
                moment.strftime("%Y-%m-%d %H:%M:%S.%f"),
                o,
                h,
                lo,
                o,
                f"{i % 977}.12345678",
                o if i % 2 else None,
                i % 50,
            )

    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO price_data (symbol, exchange, timeframe, timestamp, open, high, low,"
        " close, volume, vwap, num_trades) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        bar_rows(),
    )
    conn.execute("COMMIT")
    conn.close()
    print(f"  {bars} price bars: {time.perf_counter() - started:.1f} s")


def count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return sum(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in TABLES)
    finally:
        conn.close()


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]


def read_tables(path: Path) -> Iterator[tuple[str, list[str], Iterator[list[Any]]]]:
    """Every table of the SQLite file with its columns and its rows in batches, in id
    order, in one read transaction: the bare driver's share of any copy."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("BEGIN")
        for table in TABLES:
            names = columns(conn, table)
            cursor = conn.execute(f'SELECT {", ".join(names)} FROM "{table}" ORDER BY id')
            yield table, names, iter(lambda cursor=cursor: cursor.fetchmany(BATCH), [])
        conn.execute("COMMIT")
    finally:
        conn.close()


def sqlite_read(path: Path) -> None:
    for _table, _names, batches in read_tables(path):
        for _rows in batches:
            pass


def psycopg_copy(path: Path, pg_url: str) -> None:
    with psycopg.connect(pg_url, options="-c timezone=UTC") as pg, pg.cursor() as cursor:
        for table, names, batches in read_tables(path):
            with cursor.copy(f'COPY "{table}" ({", ".join(names)}) FROM STDIN') as copy:
                for rows in batches:
                    for row in rows:
                        copy.write_row(row)
        pg.commit()


def pymysql_executemany(path: Path, mysql: URL) -> None:
    conn = pymysql.connect(
        host=mysql.host,
        port=mysql.port or 3306,
        user=mysql.username,
        password=mysql.password or "",
        database=mysql.database,
        charset="utf8mb4",
        autocommit=False,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
            for table, names, batches in read_tables(path):
                marks = ", ".join(["%s"] * len(names))
                quoted = ", ".join(f"`{n}`" for n in names)
                sql = f"INSERT INTO `{table}` ({quoted}) VALUES ({marks})"
                for rows in batches:
                    cursor.executemany(sql, rows)
        conn.commit()
    finally:
        conn.close()


def truncate(url: URL) -> None:
    engine = create_db_engine(url, Settings(), pooled=False)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    "TRUNCATE " + ", ".join(f'"{t}"' for t in TABLES) + " RESTART IDENTITY"
                )
            else:
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
                for table in TABLES:
                    conn.exec_driver_sql(f"TRUNCATE TABLE `{table}`")
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
    finally:
        engine.dispose()


def create_database(url: URL) -> None:
    admin = url.set(database="postgres" if url.get_backend_name() == "postgresql" else "mysql")
    engine = create_db_engine(admin, Settings(), pooled=False, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if url.get_backend_name() == "postgresql":
                exists = conn.exec_driver_sql(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)
                ).first()
                if not exists:
                    conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
            else:
                conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{url.database}`")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, help="scratch PostgreSQL database URL")
    parser.add_argument("--mysql", help="scratch MariaDB/MySQL database URL")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--mysql-rounds", type=int, default=1, help="rounds with MariaDB (slow: 1 by default)"
    )
    parser.add_argument("--sqlite", type=Path, help="keep (and reuse) the SQLite install here")
    args = parser.parse_args()

    folder = tempfile.TemporaryDirectory(prefix="tb-bench-copy-")
    path = args.sqlite or Path(folder.name) / "tradebase.db"
    if not path.exists():
        print(f"building {path}:")
        build(path, args.rows, args.orders)
    total = count(path)
    print(f"{total:,} rows in the main database ({path})")
    source = normalize_database_url(f"sqlite:///{path}")
    settings = Settings(database_url=str(source), credentials_database_url=f"sqlite:///{path}.cred")

    targets: list[tuple[str, URL, Callable[[], None]]] = []
    pg = normalize_database_url(args.postgres)
    pg_plain = pg.set(drivername="postgresql").render_as_string(hide_password=False)
    targets.append(("PostgreSQL", pg, lambda: psycopg_copy(path, pg_plain)))
    if args.mysql:
        my = normalize_database_url(args.mysql)
        targets.append(("MariaDB", my, lambda: pymysql_executemany(path, my)))
    for _name, url, _baseline in targets:
        create_database(url)
        migrate.upgrade(Database.main, url=url, settings=settings)

    timings: dict[str, list[float]] = {}

    def timed(label: str, work: Callable[[], Any]) -> None:
        started = time.perf_counter()
        work()
        timings.setdefault(label, []).append(time.perf_counter() - started)

    for round_number in range(1, args.rounds + 1):
        timed("sqlite read", lambda: sqlite_read(path))
        for name, url, baseline in targets:
            if name == "MariaDB" and round_number > args.mysql_rounds:
                continue
            ways: list[tuple[str, Callable[[], Any]]] = [
                (f"{name}: bare driver", baseline),
                (
                    f"{name}: db copy",
                    lambda url=url: copy_database(
                        Database.main, url, source=source, settings=settings
                    ),
                ),
            ]
            for label, work in ways if round_number % 2 else reversed(ways):  # take turns first
                truncate(url)
                timed(label, work)
        done = [(k, v[-1]) for k, v in timings.items() if len(v) == round_number]
        print(f"round {round_number}: " + ", ".join(f"{k} {t:.2f} s" for k, t in done))

    print()
    print(f"{total:,} rows; medians of {args.rounds} rounds ({args.mysql_rounds} with MariaDB)")
    print("| way | seconds | rows/s | vs baseline |")
    print("|---|---:|---:|---:|")
    medians = {label: statistics.median(values) for label, values in timings.items()}
    for label, seconds in medians.items():
        baseline = label.replace("db copy", "bare driver")
        ratio = f"{medians[baseline] / seconds:.2f}" if baseline != label else "1.00"
        if label == "sqlite read":
            ratio = ""
        print(f"| {label} | {seconds:.2f} | {total / seconds:,.0f} | {ratio} |")
    folder.cleanup()


if __name__ == "__main__":
    main()
