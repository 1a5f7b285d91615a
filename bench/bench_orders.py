"""Market orders placed and filled per second through the service layer, against the bare
driver doing the same writes with one commit per order, in the same run.

Each order, both ways: the order row, three order_events, the position (read, then insert
or update), the trade, the cash update and its ledger row, and the audit entry (lock the
chain head, insert, hash, move the head), in one transaction. The ways take turns in
chunks of --chunk orders, so a noisy neighbour slows every way alike; each round's rate is
orders / the time spent in that way's chunks, and the figure is the median of the rounds.

    python bench/bench_orders.py [--orders 1000] [--rounds 5] [--chunk 50]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

With --postgres, a scratch database is created on that server (and dropped afterwards) and
the same comparison runs there, against psycopg.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tradebase.accounts.service import user as user_service
from tradebase.config import Settings, normalize_database_url
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.orders.service import order as order_service
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

Way = Callable[[int, int], None]  # (first order number, count)


def _setup(settings: Settings) -> tuple[Engines, Principal, int, int, int]:
    for database in Database:
        migrate.upgrade(database, settings=settings)
    engines = Engines(settings)
    with unit_of_work(factory=engines.session_factory(Database.main)) as session:
        user, _ = user_service.create(
            session,
            username=f"b{time.time_ns()}",
            email=f"b{time.time_ns()}@example.com",
            password="benchmark pw",
        )
        who = Principal(user_id=user.id, username=user.username, role="trader")
        account = account_service.create(
            session, who, account_name="bench", fee_rate=Decimal("0.001")
        )
        portfolio = portfolio_service.create(session, who, account_id=account.id, name="bench")
        portfolio_service.deposit(session, who, portfolio.id, Decimal(10**12))
        return engines, who, user.id, account.id, portfolio.id


def service_way(engines: Engines, who: Principal, portfolio_id: int) -> Way:
    factory = engines.session_factory(Database.main)

    def run(first: int, n: int) -> None:
        for i in range(first, first + n):
            with unit_of_work(factory=factory) as session:
                order_service.place(
                    session,
                    who,
                    portfolio_id=portfolio_id,
                    symbol=f"S{i % 20}",
                    side="buy" if i % 3 else "sell",
                    quantity=Decimal(1),
                    price=Decimal(100 + i % 7),
                )

    return run


class RawDriver:
    """The bare driver: sqlite3 (qmark, lastrowid) or psycopg (%s, RETURNING)."""

    def __init__(self, connection: Any, *, postgres: bool) -> None:
        self.conn = connection
        self.postgres = postgres

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s") if self.postgres else sql, args)

    def insert(self, sql: str, args: tuple[Any, ...]) -> int:
        if self.postgres:
            return int(self.execute(sql + " RETURNING id", args).fetchone()[0])
        return int(self.execute(sql, args).lastrowid)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.postgres:
            with self.conn.transaction():
                yield
        else:
            self.conn.execute("BEGIN IMMEDIATE")
            yield
            self.conn.execute("COMMIT")


def raw_way(db: RawDriver, user_id: int, account_id: int, portfolio_id: int) -> Way:
    pg = db.postgres

    def now() -> Any:
        moment = datetime.now(UTC)
        return moment if pg else moment.strftime("%Y-%m-%d %H:%M:%S.%f")

    def number(value: Decimal) -> Any:
        return value if pg else str(value)

    def run(first: int, n: int) -> None:
        for i in range(first, first + n):
            at = now()
            symbol = f"R{i % 20}"
            with db.transaction():
                order_id = db.insert(
                    "INSERT INTO orders (user_id, account_id, portfolio_id, symbol, exchange, side,"
                    " order_type, product, time_in_force, status, quantity, filled_quantity, price,"
                    " average_fill_price, fee, fee_currency, created_at, updated_at, placed_at, filled_at)"
                    " VALUES (?,?,?,?,'paper','buy','market','NRML','GTC','filled',?,?,?,?,?,'USD',?,?,?,?)",
                    (user_id, account_id, portfolio_id, symbol, number(Decimal(1)), number(Decimal(1)),
                     number(Decimal(100)), number(Decimal("100")), number(Decimal("0.1")), at, at, at, at),
                )  # fmt: skip
                for frm, to in ((None, "pending"), ("pending", "open"), ("open", "filled")):
                    db.execute(
                        "INSERT INTO order_events (order_id, event_type, from_status, to_status,"
                        " occurred_at, created_at) VALUES (?, 'created', ?, ?, ?, ?)",
                        (order_id, frm, to, at, at),
                    )
                pos = db.execute(
                    "SELECT id, quantity FROM positions WHERE portfolio_id=? AND symbol=?"
                    " AND exchange='paper' AND product='NRML' AND status='open'",
                    (portfolio_id, symbol),
                ).fetchone()
                if pos is None:
                    pos_id = db.insert(
                        "INSERT INTO positions (portfolio_id, symbol, exchange, product, direction,"
                        " quantity, entry_price, cost_basis, fees_paid, status, open_slot, opened_at,"
                        " created_at, updated_at, unrealized_pnl, unrealized_pnl_percent, realized_pnl)"
                        " VALUES (?,?,'paper','NRML','long',?,?,?,?,'open',1,?,?,?,?,?,?)",
                        (portfolio_id, symbol, number(Decimal(1)), number(Decimal(100)),
                         number(Decimal(100)), number(Decimal("0.1")), at, at, at, number(Decimal(0)),
                         number(Decimal(0)), number(Decimal(0))),
                    )  # fmt: skip
                else:
                    pos_id = pos[0]
                    db.execute(
                        "UPDATE positions SET quantity=?, cost_basis=?, updated_at=? WHERE id=?",
                        (number(Decimal(pos[1]) + 1), number(Decimal(100)), at, pos_id),
                    )
                trade_id = db.insert(
                    "INSERT INTO trades (user_id, portfolio_id, order_id, position_id, symbol, exchange,"
                    " side, quantity, price, value, fee, fee_currency, status, metadata, executed_at,"
                    " created_at, updated_at)"
                    " VALUES (?,?,?,?,?,'paper','buy',?,?,?,?,'USD','filled','{}',?,?,?)",
                    (user_id, portfolio_id, order_id, pos_id, symbol, number(Decimal(1)),
                     number(Decimal(100)), number(Decimal(100)), number(Decimal("0.1")), at, at, at),
                )  # fmt: skip
                balance = number(Decimal(10**12 - i))
                db.execute(
                    "UPDATE portfolios SET cash_balance_usd=?, updated_at=? WHERE id=?",
                    (balance, at, portfolio_id),
                )
                db.execute(
                    "INSERT INTO cash_movements (portfolio_id, user_id, kind, amount, balance_after,"
                    " trade_id, created_at) VALUES (?,?,'trade',?,?,?,?)",
                    (portfolio_id, user_id, number(Decimal("-100.1")), balance, trade_id, at),
                )
                # The audit append: lock the head, insert, hash, move the head.
                if pg:
                    head = db.execute(
                        "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1 FOR UPDATE"
                    ).fetchone()
                else:
                    db.execute("UPDATE audit_chain_head SET updated_at = ? WHERE id = 1", (at,))
                    head = db.execute(
                        "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1"
                    ).fetchone()
                entry_id = db.insert(
                    "INSERT INTO audit_log (timestamp, user_id, actor_user_id, actor, action,"
                    " resource_type, resource_id, details, prev_hash)"
                    " VALUES (?,?,?,'bench','order.placed','order',?,?,?)",
                    (at, user_id, user_id, str(order_id), '{"status":"filled"}', head[1] or "0" * 64),
                )  # fmt: skip
                digest = hashlib.sha256(f"{entry_id}{at}{head[1]}".encode()).hexdigest()
                db.execute("UPDATE audit_log SET row_hash = ? WHERE id = ?", (digest, entry_id))
                db.execute(
                    "UPDATE audit_chain_head SET last_id = ?, last_hash = ?, entries = entries + 1,"
                    " updated_at = ? WHERE id = 1",
                    (entry_id, digest, at),
                )

    return run


def measure(ways: dict[str, Way], n: int, rounds: int, chunk: int) -> dict[str, float]:
    for fn in ways.values():  # warm up: compiled statements, page cache
        fn(0, chunk)
    start = chunk
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        spent = dict.fromkeys(ways, 0.0)
        for _ in range(max(1, n // chunk)):
            for name, fn in ways.items():
                began = time.perf_counter()
                fn(start, chunk)
                spent[name] += time.perf_counter() - began
            start += chunk
        for name in ways:
            results[name].append(max(1, n // chunk) * chunk / spent[name])
    return {name: statistics.median(rates) for name, rates in results.items()}


def report(title: str, rates: dict[str, float]) -> None:
    base = rates["raw"]
    print(f"\n{title}: market orders placed and filled per second")
    for name, rate in rates.items():
        print(f"  {name:8} {rate:8,.0f}/s  {rate / base:5.2f} of raw")


def sqlite_bench(n: int, rounds: int, chunk: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="tb-bench-orders-"))
    engines, who, user_id, account_id, portfolio_id = _setup(Settings(data_dir=folder))
    conn = sqlite3.connect(folder / "tradebase.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    try:
        return measure(
            {
                "raw": raw_way(RawDriver(conn, postgres=False), user_id, account_id, portfolio_id),
                "service": service_way(engines, who, portfolio_id),
            },
            n,
            rounds,
            chunk,
        )
    finally:
        conn.close()
        engines.dispose()


def postgres_bench(server: str, n: int, rounds: int, chunk: int) -> dict[str, float]:
    import psycopg

    admin_url = normalize_database_url(server)
    name = f"tb_bench_orders_{uuid.uuid4().hex[:8]}"
    dsn = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    folder = Path(tempfile.mkdtemp(prefix="tb-bench-orders-"))
    settings = Settings(data_dir=folder, database_url=url)
    engines, who, user_id, account_id, portfolio_id = _setup(settings)
    conn = psycopg.connect(
        admin_url.set(drivername="postgresql", database=name).render_as_string(False)
    )
    conn.autocommit = True  # transactions are explicit, as the service's
    try:
        return measure(
            {
                "raw": raw_way(RawDriver(conn, postgres=True), user_id, account_id, portfolio_id),
                "service": service_way(engines, who, portfolio_id),
            },
            n,
            rounds,
            chunk,
        )
    finally:
        conn.close()
        engines.dispose()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders per way and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=50, help="orders per turn of a way")
    parser.add_argument("--postgres", help="PostgreSQL server URL (a scratch database is made)")
    args = parser.parse_args()
    report("SQLite (WAL, synchronous=NORMAL)", sqlite_bench(args.orders, args.rounds, args.chunk))
    if args.postgres:
        report("PostgreSQL", postgres_bench(args.postgres, args.orders, args.rounds, args.chunk))


if __name__ == "__main__":
    main()
