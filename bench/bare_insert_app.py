"""The baseline of bench/bench_signals.py: a minimal endpoint of the same framework and
server as Tradebase's webhook (FastAPI, the same uvicorn) that does one INSERT and one
COMMIT per request, with the same route shape (``POST /webhook/{key}``, the body read
asynchronously, the database work in Starlette's thread pool, a small JSON answer).

    BARE_DB=sqlite:///path/bare.db  or  BARE_DB=postgresql://user@host:port/db
    python bench/bare_insert_app.py --port 8001 [--log-level warning]

SQLite: one sqlite3 connection per worker thread with Tradebase's pragmas (WAL,
``synchronous=NORMAL``, busy timeout, ``foreign_keys=ON``) and ``BEGIN IMMEDIATE``; the
writers of the process take turns on a lock, as Tradebase's do (``core/db.py``), so none
waits in SQLite's busy handler, which sleeps.
PostgreSQL: one psycopg 3 connection per worker thread (no pool package installed), an
explicit transaction per request.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

TABLE = (
    "CREATE TABLE IF NOT EXISTS bare_signals (id {pk}, key VARCHAR(100) NOT NULL,"
    " raw_payload TEXT NOT NULL, received_at VARCHAR(40) NOT NULL)"
)


class Store:
    """One connection per thread; ``insert`` is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgresql")
        self.local = threading.local()
        self.writer = threading.Lock()
        if not self.postgres:
            self.path = url.removeprefix("sqlite:///")
        conn = self._connect()
        pk = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        conn.execute(TABLE.format(pk=pk))
        if self.postgres:
            conn.commit()

    def _connect(self) -> Any:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            return conn
        if self.postgres:
            import psycopg

            conn = psycopg.connect(self.url)
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        self.local.conn = conn
        return conn

    def insert(self, key: str, raw: bytes) -> int:
        conn = self._connect()
        now = datetime.now(UTC).isoformat()
        text = raw.decode("utf-8", errors="replace")
        if self.postgres:
            row = conn.execute(
                "INSERT INTO bare_signals (key, raw_payload, received_at) VALUES (%s, %s, %s)"
                " RETURNING id",
                (key, text, now),
            ).fetchone()
            conn.commit()
            return int(row[0])
        with self.writer:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.execute(
                    "INSERT INTO bare_signals (key, raw_payload, received_at) VALUES (?, ?, ?)",
                    (key, text, now),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return int(cursor.lastrowid or 0)


def create_app() -> FastAPI:
    store = Store(os.environ["BARE_DB"])
    app = FastAPI()

    @app.post("/webhook/{key}")
    async def webhook(key: str, request: Request) -> JSONResponse:
        raw = await request.body()
        row = await run_in_threadpool(store.insert, key, raw)
        return JSONResponse({"id": row, "status": "stored"})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="the bare INSERT+COMMIT endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    # The flags of `tradebase serve` (src/tradebase/cli.py).
    uvicorn.run(
        "bare_insert_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        proxy_headers=False,
        app_dir=os.path.dirname(os.path.abspath(__file__)),
    )


if __name__ == "__main__":
    main()
