"""Acceptance: a WebSocket client of one `tradebase serve` process gets the order.filled
event of an order placed through another process on the same database within 1 s: by
PostgreSQL LISTEN/NOTIFY, by Redis pub/sub, and by polling on MariaDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.accounts.helpers import bearer
from tests.conftest import Scratch, free_port, wait_ready
from tests.events.test_stream import buy, next_event, ws_url
from tradebase.accounts.cli import CLI
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

SRC = str(Path(__file__).resolve().parents[2] / "src")
REDIS_URL = os.environ.get("TRADEBASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _require_redis() -> None:
    """Redis is one of the servers this project is tested against: unreachable is a
    failure (start it: redis-server, or the machine's service), not a skip."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        pytest.fail(
            f"Redis at {REDIS_URL} is unreachable: {exc}; start redis-server there or set"
            " TRADEBASE_TEST_REDIS_URL",
            pytrace=False,
        )


def _serve(env: dict[str, str], port: int, cwd: Path, name: str) -> subprocess.Popen[bytes]:
    with (cwd / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tradebase", "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _trader(engines: Engines, name: str) -> tuple[str, int]:
    with unit_of_work(factory=engines.session_factory(Database.main)) as session:
        user, _ = user_service.create(
            session,
            username=name,
            email=f"{name}@example.com",
            role="trader",
            password="pw-stream-12345",
        )
        who = Principal(user_id=user.id, username=user.username, role=user.role, via="python")
        account = account_service.create(session, who, account_name="paper")
        portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
        portfolio_service.deposit(session, who, portfolio.id, Decimal(100_000))
        _, key = api_key_service.create(session, CLI, name="ws", owner=user)
        return key, portfolio.id


CASES = [
    ("postgresql", "listen"),
    ("postgresql", "redis"),
    ("mysql", "poll"),
    ("mysql", "redis"),
    ("sqlite", "redis"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "mechanism"), CASES, ids=[f"{b}-{m}" for b, m in CASES])
def test_an_order_on_one_process_reaches_a_stream_client_of_another_within_1_s(
    scratch: Scratch, tmp_path: Path, mechanism: str
) -> None:
    settings = scratch.settings().model_copy(update={"data_dir": tmp_path})
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    engines = Engines(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBASE_")}
    env |= {**scratch.env(), "TRADEBASE_DATA_DIR": str(tmp_path), "PYTHONPATH": SRC}
    if mechanism == "redis":
        _require_redis()
        env["TRADEBASE_REDIS_URL"] = REDIS_URL
    key, pid = _trader(engines, f"x{uuid.uuid4().hex[:8]}")
    other, _ = _trader(engines, f"y{uuid.uuid4().hex[:8]}")
    engines.dispose()
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    servers = [_serve(env, port, tmp_path, f"serve{i}") for i, port in enumerate(ports)]
    try:
        for url, server in zip(urls, servers, strict=True):
            wait_ready(url, server)
        with (
            connect(ws_url(urls[0]), additional_headers=bearer(key)) as mine,
            connect(ws_url(urls[0]), additional_headers=bearer(other)) as theirs,
        ):
            assert json.loads(mine.recv(timeout=5))["type"] == "hello"
            assert json.loads(theirs.recv(timeout=5))["type"] == "hello"
            time.sleep(0.5)  # the hub's LISTEN / SUBSCRIBE connection is up
            for _ in range(3):
                order = buy(urls[1], key, pid)  # through the other process, committed
                placed = time.monotonic()
                event = next_event(mine, timeout=1.0)
                took = time.monotonic() - placed
                assert event is not None, f"no event within 1 s of the order ({mechanism})"
                assert event["type"] == "order.filled", event
                assert event["data"]["order_id"] == order["id"]
                assert took < 1.0, took
            assert next_event(theirs, timeout=0.5) is None
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
