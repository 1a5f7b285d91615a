"""Market orders placed and filled per second through the service layer, against a raw
driver doing the same writes with one commit per order, in the same run.

Each service order: the order row, three order_events, the trade, the position update, the
cash update and its ledger row, and the audit entry, in one transaction.

    python bench/bench_orders.py [--orders 1000] [--rounds 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from tradebase.accounts.service import user as user_service
from tradebase.config import Settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.orders.service import order as order_service
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service


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


def service_way(engines: Engines, who: Principal, portfolio_id: int) -> Callable[[int], None]:
    factory = engines.session_factory(Database.main)

    def run(n: int) -> None:
        for i in range(n):
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


def raw_sqlite_way(
    path: Path, user_id: int, account_id: int, portfolio_id: int, *, with_audit: bool = False
) -> Callable[[int], None]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")

    def run(n: int) -> None:
        for i in range(n):
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO orders (user_id, account_id, portfolio_id, symbol, exchange, side, order_type,"
                " product, time_in_force, status, quantity, filled_quantity, price, average_fill_price, fee,"
                " created_at, updated_at, placed_at, filled_at) VALUES (?,?,?,?,'paper','buy','market','NRML',"
                "'GTC','filled','1','1','100','100','0.1',?,?,?,?)",
                (user_id, account_id, portfolio_id, f"R{i % 20}", now, now, now, now),
            )
            order_id = cur.lastrowid
            for frm, to in ((None, "pending"), ("pending", "open"), ("open", "filled")):
                conn.execute(
                    "INSERT INTO order_events (order_id, event_type, from_status, to_status,"
                    " occurred_at, created_at) VALUES (?, 'created', ?, ?, ?, ?)",
                    (order_id, frm, to, now, now),
                )
            pos = conn.execute(
                "SELECT id, quantity FROM positions WHERE portfolio_id=? AND symbol=?"
                " AND status='open'",
                (portfolio_id, f"R{i % 20}"),
            ).fetchone()
            if pos is None:
                cur = conn.execute(
                    "INSERT INTO positions (portfolio_id, symbol, exchange, product, direction, quantity,"
                    " entry_price, cost_basis, fees_paid, status, open_slot, opened_at, created_at, updated_at,"
                    " unrealized_pnl, unrealized_pnl_percent, realized_pnl) VALUES (?,?,'paper','NRML','long',"
                    "'1','100','100','0.1','open',1,?,?,?,'0','0','0')",
                    (portfolio_id, f"R{i % 20}", now, now, now),
                )
                pos_id = cur.lastrowid
            else:
                pos_id = pos[0]
                conn.execute(
                    "UPDATE positions SET quantity=?, cost_basis=?, updated_at=? WHERE id=?",
                    (str(Decimal(pos[1]) + 1), "100", now, pos_id),
                )
            cur = conn.execute(
                "INSERT INTO trades (user_id, portfolio_id, order_id, position_id, symbol, exchange, side,"
                " quantity, price, value, fee, status, metadata, executed_at, created_at, updated_at)"
                " VALUES (?,?,?,?,?,'paper','buy','1','100','100','0.1','filled','{}',?,?,?)",
                (user_id, portfolio_id, order_id, pos_id, f"R{i % 20}", now, now, now),
            )
            conn.execute(
                "UPDATE portfolios SET cash_balance_usd=?, updated_at=? WHERE id=?",
                (str(10**12 - i), now, portfolio_id),
            )
            conn.execute(
                "INSERT INTO cash_movements (portfolio_id, user_id, kind, amount, balance_after,"
                " trade_id, created_at) VALUES (?,?,'trade','-100.1',?,?,?)",
                (portfolio_id, user_id, str(10**12 - i), cur.lastrowid, now),
            )
            if with_audit:  # the same audit append: lock the head, insert, hash, move the head
                conn.execute("UPDATE audit_chain_head SET updated_at = ? WHERE id = 1", (now,))
                _last_id, last_hash = conn.execute(
                    "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1"
                ).fetchone()
                cur = conn.execute(
                    "INSERT INTO audit_log (timestamp, user_id, actor_user_id, actor, action,"
                    " resource_type, resource_id, details, prev_hash)"
                    " VALUES (?,?,?,'bench','order.placed','order',?,?,?)",
                    (
                        now,
                        user_id,
                        user_id,
                        str(order_id),
                        '{"status":"filled"}',
                        last_hash or "0" * 64,
                    ),
                )
                digest = hashlib.sha256(f"{cur.lastrowid}{now}{last_hash}".encode()).hexdigest()
                conn.execute(
                    "UPDATE audit_log SET row_hash = ? WHERE id = ?", (digest, cur.lastrowid)
                )
                conn.execute(
                    "UPDATE audit_chain_head SET last_id = ?, last_hash = ?, entries = entries + 1"
                    " WHERE id = 1",
                    (cur.lastrowid, digest),
                )
            conn.execute("COMMIT")

    return run


def measure(ways: dict[str, Callable[[int], None]], n: int, rounds: int) -> dict[str, float]:
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn(n)
            results[name].append(n / (time.perf_counter() - start))
    return {name: statistics.median(rates) for name, rates in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tb-bench-orders-"))
    settings = Settings(data_dir=folder)
    engines, who, user_id, account_id, portfolio_id = _setup(settings)
    rates = measure(
        {
            "raw sqlite3": raw_sqlite_way(
                folder / "tradebase.db", user_id, account_id, portfolio_id
            ),
            "raw + audit": raw_sqlite_way(
                folder / "tradebase.db", user_id, account_id, portfolio_id, with_audit=True
            ),
            "service": service_way(engines, who, portfolio_id),
        },
        args.orders,
        args.rounds,
    )
    base = rates["raw + audit"]
    print("\nSQLite: market orders placed and filled per second")
    for name, rate in rates.items():
        print(f"  {name:12} {rate:8,.0f}/s  {rate / base:5.2f} of raw + audit")
    engines.dispose()


if __name__ == "__main__":
    main()
