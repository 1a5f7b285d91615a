"""The floor of bench/bench_signals.py: the same framework and server as Tradebase's webhook
(FastAPI, the same uvicorn, the same route shape and thread pool) doing the writes a
signal needs, as literal SQL on the bare driver, with none of Tradebase's code: no ORM, no
checks, no risk limits, no P&L arithmetic beyond a running sum.

Two transactions, as Tradebase's inbox does: store the signal (INSERT, COMMIT); then claim
it, read the position and the cash, insert the order and its three events, update the
position, insert the trade, update the cash and add the ledger row, append an audit entry
(claim the chain head, insert, hash, move the head), record the signal's outcome, COMMIT.
The two are a group's, as in Tradebase's group commit (signals/batch.py): one writer thread
stores the signals that arrive together in one transaction and executes them in the next
(``RAW_GROUP=0``: two transactions per request, the writers of the process taking turns).
It runs against a database migrated by Tradebase, so every index, trigger and constraint
Tradebase's writes pay for is paid here too.

What it tells: how close any implementation of the same data model can come to the bare
one-INSERT endpoint; the distance from Tradebase to this floor is Tradebase's own cost.

    RAW_DB=sqlite:///path/tradebase.db  or  RAW_DB=postgresql://user@host:port/db
    RAW_IDS=<user_id>,<account_id>,<portfolio_id>
    python bench/raw_signal_app.py --port 8002 [--log-level warning]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import sqlite3
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool


class Store:
    """One connection per thread; ``signal`` is the two transactions of one signal."""

    def __init__(self, url: str, ids: str) -> None:
        self.postgres = url.startswith("postgresql")
        self.url = url if self.postgres else url.removeprefix("sqlite:///")
        self.user_id, self.account_id, self.portfolio_id = (int(i) for i in ids.split(","))
        self.local = threading.local()
        self.writer = threading.Lock()  # SQLite: the writers of the process take turns

    def _connect(self) -> Any:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            if self.postgres:
                import psycopg

                conn = psycopg.connect(self.url, autocommit=True)
            else:
                conn = sqlite3.connect(self.url, isolation_level=None, check_same_thread=False)
                for pragma in ("busy_timeout = 5000", "journal_mode = WAL",
                               "synchronous = NORMAL", "foreign_keys = ON"):  # fmt: skip
                    conn.execute(f"PRAGMA {pragma}")
            self.local.conn = conn
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def _run(self, conn: Any, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return conn.execute(self._sql(sql), args)

    def _insert(self, conn: Any, sql: str, args: tuple[Any, ...]) -> int:
        if self.postgres:
            return int(conn.execute(self._sql(sql + " RETURNING id"), args).fetchone()[0])
        return int(conn.execute(sql, args).lastrowid)

    def _value(self, value: Any) -> Any:
        if self.postgres:
            return value
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return str(value) if isinstance(value, Decimal) else value

    def signal(self, key: str, raw: bytes) -> dict[str, Any]:
        """One signal in two transactions of its own (``RAW_GROUP=0``)."""
        conn = self._connect()
        if self.postgres:
            return self._signal(conn, key, raw)
        with self.writer:
            return self._signal(conn, key, raw)

    def _transaction(self, conn: Any) -> None:
        self._run(conn, "BEGIN" if self.postgres else "BEGIN IMMEDIATE")

    def _signal(self, conn: Any, key: str, raw: bytes) -> dict[str, Any]:
        at = datetime.now(UTC)
        self._transaction(conn)
        signal_id, body = self._store(conn, raw, at)
        self._run(conn, "COMMIT")
        self._transaction(conn)
        answer = self._execute(conn, signal_id, body, at)
        self._run(conn, "COMMIT")
        return answer

    def _store(self, conn: Any, raw: bytes, at: datetime) -> tuple[int, dict[str, Any]]:
        v = self._value
        body = json.loads(raw)
        side = str(body["action"]).lower()
        quantity, price = Decimal(str(body["quantity"])), Decimal(str(body["price"]))
        idem = hashlib.sha256(f"{body['order_id']}|{int(at.timestamp()) // 120}".encode())
        signal_id = self._insert(
            conn,
            "INSERT INTO signals (user_id, order_id, order_id_shifted, sender_order_id, source,"
            " symbol, exchange, direction, quantity, price, status, hedging_enabled, raw_payload,"
            " content_type, source_ip, received_at, created_at, updated_at)"
            " VALUES (?,?,?,?,'webhook',?,?,?,?,?,'received',?,?,'application/json','127.0.0.1',"
            "?,?,?)",
            (self.user_id, idem.hexdigest(), "s" + idem.hexdigest()[1:], body["order_id"],
             body["symbol"], body["exchange"], side, v(quantity), v(price),
             False if self.postgres else 0, raw.decode(), v(at), v(at), v(at)),
        )  # fmt: skip
        return signal_id, body

    def _execute(
        self, conn: Any, signal_id: int, body: dict[str, Any], at: datetime
    ) -> dict[str, Any]:
        v = self._value
        side = str(body["action"]).lower()
        quantity, price = Decimal(str(body["quantity"])), Decimal(str(body["price"]))
        user, account, portfolio = self.user_id, self.account_id, self.portfolio_id
        self._run(
            conn,
            "UPDATE signals SET status='processing', updated_at=? WHERE id=? AND status='received'",
            (v(at), signal_id),
        )
        lock = " FOR UPDATE" if self.postgres else ""
        cash = Decimal(
            str(
                self._run(
                    conn, f"SELECT cash_balance_usd FROM portfolios WHERE id=?{lock}", (portfolio,)
                ).fetchone()[0]
            )
        )
        pos_id, held, cost = self._run(
            conn,
            "SELECT id, quantity, cost_basis FROM positions WHERE portfolio_id=? AND symbol=?"
            f" AND exchange='paper' AND product='NRML' AND status='open'{lock}",
            (portfolio, body["symbol"]),
        ).fetchone()
        value = quantity * price
        order_id = self._insert(
            conn,
            "INSERT INTO orders (user_id, account_id, portfolio_id, signal_id, client_order_id,"
            " symbol, exchange, side, order_type, product, time_in_force, status, quantity,"
            " filled_quantity, price, average_fill_price, fee, fee_currency, tag, created_at,"
            " updated_at, placed_at, filled_at)"
            " VALUES (?,?,?,?,?,?,?,?,'market','NRML','GTC','filled',?,?,?,?,?,'USD','bench',"
            "?,?,?,?)",
            (user, account, portfolio, signal_id, f"signal-{signal_id}-{account}-0",
             body["symbol"], body["exchange"], side, v(quantity), v(quantity), v(price),
             v(price), v(Decimal(0)), v(at), v(at), v(at), v(at)),
        )  # fmt: skip
        events = [
            (order_id, "created", None, "pending", None, None, v(at), v(at)),
            (order_id, "accepted", "pending", "open", None, None, v(at), v(at)),
            (order_id, "filled", "open", "filled", v(quantity), v(price), v(at), v(at)),
        ]
        sql = self._sql(
            "INSERT INTO order_events (order_id, event_type, from_status, to_status, quantity,"
            " price, occurred_at, created_at) VALUES (?,?,?,?,?,?,?,?)"
        )
        if self.postgres:
            with conn.cursor() as cursor:
                cursor.executemany(sql, events)
        else:
            conn.executemany(sql, events)
        signed = quantity if side == "buy" else -quantity
        held, cost = Decimal(str(held)) + signed, Decimal(str(cost)) + signed * price
        self._run(
            conn,
            "UPDATE positions SET quantity=?, cost_basis=?, current_price=?, updated_at=?"
            " WHERE id=?",
            (v(held), v(cost), v(price), v(at), pos_id),
        )
        trade_id = self._insert(
            conn,
            "INSERT INTO trades (user_id, portfolio_id, order_id, position_id, symbol, exchange,"
            " side, quantity, price, value, fee, fee_currency, status, metadata, executed_at,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,'USD','filled','{}',?,?,?)",
            (user, portfolio, order_id, pos_id, body["symbol"], body["exchange"], side,
             v(quantity), v(price), v(value), v(Decimal(0)), v(at), v(at), v(at)),
        )  # fmt: skip
        cash -= signed * price
        self._run(
            conn,
            "UPDATE portfolios SET cash_balance_usd=?, updated_at=? WHERE id=?",
            (v(cash), v(at), portfolio),
        )
        self._run(
            conn,
            "INSERT INTO cash_movements (portfolio_id, user_id, kind, amount, balance_after,"
            " trade_id, note, created_at) VALUES (?,?,'trade',?,?,?,?,?)",
            (portfolio, user, v(-signed * price), v(cash), trade_id, f"order {order_id}", v(at)),
        )
        if self.postgres:
            head = self._run(
                conn, "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1 FOR UPDATE"
            ).fetchone()
        else:
            self._run(conn, "UPDATE audit_chain_head SET updated_at = ? WHERE id = 1", (v(at),))
            head = self._run(
                conn, "SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1"
            ).fetchone()
        details = json.dumps({"symbol": body["symbol"], "side": side, "status": "filled"})
        entry_id = self._insert(
            conn,
            "INSERT INTO audit_log (timestamp, user_id, actor_user_id, actor, action,"
            " resource_type, resource_id, details, prev_hash)"
            " VALUES (?,?,?,'bench','order.placed','order',?,?,?)",
            (v(at), user, user, str(order_id), details, head[1] or "0" * 64),
        )
        digest = hashlib.sha256(f"{entry_id}{at}{head[1]}{details}".encode()).hexdigest()
        self._run(conn, "UPDATE audit_log SET row_hash = ? WHERE id = ?", (digest, entry_id))
        self._run(
            conn,
            "UPDATE audit_chain_head SET last_id = ?, last_hash = ?, entries = entries + 1,"
            " updated_at = ? WHERE id = 1",
            (entry_id, digest, v(at)),
        )
        outcome = json.dumps({"orders": [{"id": order_id, "status": "filled"}]})
        self._run(
            conn,
            "UPDATE signals SET status='processed', account_id=?, position_status='open',"
            " trade_direction='long', outcome=?, processed_at=?, updated_at=? WHERE id=?",
            (account, outcome, v(at), v(at), signal_id),
        )
        return {"signal": {"id": signal_id, "status": "processed"}, "duplicate": False}


class Grouped:
    """Tradebase's group commit (signals/batch.py) on the bare driver: the signals that
    arrive together are stored in one transaction and executed in the next, by one
    writer thread; each request waits in the thread pool until its group is committed."""

    def __init__(self, store: Store, limit: int = 64) -> None:
        self.store, self.limit = store, limit
        self.queue: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="signal-writer", daemon=True).start()

    def signal(self, key: str, raw: bytes) -> dict[str, Any]:
        item: list[Any] = [raw, threading.Event(), None]
        self.queue.put(item)
        item[1].wait()
        if isinstance(item[2], BaseException):
            raise item[2]
        return cast(dict[str, Any], item[2])

    def _loop(self) -> None:
        store = self.store
        conn = store._connect()
        while True:
            group = [self.queue.get()]
            while len(group) < self.limit:
                try:
                    group.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            at = datetime.now(UTC)
            try:
                store._transaction(conn)
                stored = [store._store(conn, item[0], at) for item in group]
                store._run(conn, "COMMIT")
                store._transaction(conn)
                for item, (signal_id, body) in zip(group, stored, strict=True):
                    item[2] = store._execute(conn, signal_id, body, at)
                store._run(conn, "COMMIT")
            except BaseException as exc:
                store._run(conn, "ROLLBACK")
                for item in group:
                    item[2] = exc
            for item in group:
                item[1].set()


def create_app() -> FastAPI:
    store = Store(os.environ["RAW_DB"], os.environ["RAW_IDS"])
    writer = Grouped(store) if os.environ.get("RAW_GROUP", "1") != "0" else store
    app = FastAPI()

    @app.post("/webhook/{key}")
    async def webhook(key: str, request: Request) -> JSONResponse:
        raw = await request.body()
        return JSONResponse(await run_in_threadpool(writer.signal, key, raw))

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="the signal's writes on the bare driver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    uvicorn.run(
        "raw_signal_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
