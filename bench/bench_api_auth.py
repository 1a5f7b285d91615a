"""API-key authentication overhead per request.

Two measurements, each against a baseline in the same run (medians of rounds):

* service level: ``unit_of_work`` + ``api_key.authenticate`` (hash lookup, rate-limit
  upsert, usage update: one committed transaction) against an empty ``unit_of_work``;
* HTTP level, a real uvicorn server on loopback, one keep-alive client: ``GET /health`` (no
  auth, no database) against ``GET /api/v1/keys/{id}`` with a key (auth + one indexed read).

    python bench/bench_api_auth.py [--requests 1000] [--rounds 5] [--postgres URL] [--redis URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tradebase.accounts.cli import CLI
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.app import create_app
from tradebase.config import Settings
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work


def _per_request_us(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def run(settings: Settings, n: int, rounds: int) -> dict[str, float]:
    for database in Database:
        migrate.upgrade(database, settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    with unit_of_work(factory=factory) as session:
        user, _ = user_service.create(
            session,
            username=f"bench{time.time_ns()}",
            email=f"b{time.time_ns()}@example.com",
            password="benchmark password",
        )
        key_row, key = api_key_service.create(
            session, CLI, name="bench", owner=user, rate_limit_per_minute=10_000_000
        )
        key_id = key_row.id

    def empty() -> None:
        with unit_of_work(factory=factory) as s:
            s.connection()

    def authenticate() -> None:
        with unit_of_work(factory=factory) as s:
            api_key_service.authenticate(s, key, settings=settings)

    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}")
    headers = {"Authorization": f"Bearer {key}"}

    def health() -> None:
        client.get("/health").raise_for_status()

    def keyed() -> None:
        client.get(f"/api/v1/keys/{key_id}", headers=headers).raise_for_status()

    ways = {"uow": empty, "auth": authenticate, "health": health, "keyed": keyed}
    for fn in ways.values():
        fn()  # warm up
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            results[name].append(_per_request_us(fn, n))
    client.close()
    server.should_exit = True
    thread.join()
    engines.dispose()
    return {name: statistics.median(values) for name, values in results.items()}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def report(title: str, r: dict[str, float]) -> None:
    print(f"\n{title}")
    print(
        f"  service: empty unit of work {r['uow']:8.0f} us; + authenticate {r['auth']:8.0f} us"
        f" -> auth costs {r['auth'] - r['uow']:6.0f} us"
    )
    print(
        f"  HTTP:    GET /health {r['health']:8.0f} us ({1e6 / r['health']:5.0f}/s);"
        f" keyed GET {r['keyed']:8.0f} us ({1e6 / r['keyed']:5.0f}/s)"
        f" -> +{r['keyed'] - r['health']:6.0f} us per request"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", help="URL of a scratch PostgreSQL database")
    parser.add_argument("--redis", help="Redis URL: count rate limits there")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tb-bench-auth-"))
    report("SQLite", run(Settings(data_dir=folder), args.requests, args.rounds))
    if args.redis:
        report(
            "SQLite + Redis counters",
            run(Settings(data_dir=folder, redis_url=args.redis), args.requests, args.rounds),
        )
    if args.postgres:
        settings = Settings(
            data_dir=folder, database_url=args.postgres, credentials_database_url=args.postgres
        )
        report("PostgreSQL", run(settings, args.requests, args.rounds))


if __name__ == "__main__":
    main()
