"""Streaming connections: server A follows the live stream of B, the Tradebase that is the
broker of A's live account. A limit order resting at B fills there when a bar reaches it,
and A learns it from the stream within seconds, with no health check; the connection is a
websocket_connections row (connected, messages counted, heartbeats), disconnected when B
goes away and connected again when B returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.brokers.test_failover import Server, _server, _user
from tests.conftest import ScratchFactory
from tradebase.accounts.cli import CLI
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.brokers.models import WebsocketConnection
from tradebase.brokers.stream import stream_url
from tradebase.core.crypto import KeyStore
from tradebase.core.db import Database
from tradebase.credentials.service import CredentialService
from tradebase.orders.models import Order
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

pytestmark = pytest.mark.slow


def test_stream_url_of_a_facade_host() -> None:
    assert stream_url("http://127.0.0.1:5000/openalgo") == "ws://127.0.0.1:5000/api/v1/stream"
    assert stream_url("https://desk.example.com/tb/openalgo/") == (
        "wss://desk.example.com/tb/api/v1/stream"
    )
    assert stream_url("http://10.0.0.5:8000") == "ws://10.0.0.5:8000/api/v1/stream"


def _until(what: Callable[[], Any], seconds: float, message: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(message)


def _with_env(server: Server, extra: dict[str, str]) -> None:
    """Start *server* with *extra* in its environment too."""
    server.env = lambda: {**Server.env(server), **extra}  # type: ignore[method-assign]


def _connections(server: Server) -> list[WebsocketConnection]:
    with server.session(write=False) as session:
        return list(session.scalars(select(WebsocketConnection).order_by(WebsocketConnection.id)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_fill_at_the_broker_arrives_by_its_stream(
    backend: str, scratch_factory: ScratchFactory, tmp_path: Path
) -> None:
    b = _server(scratch_factory, backend, "b", tmp_path)
    a = _server(scratch_factory, backend, "a", tmp_path)
    desk, desk_key = _user(b, "desk")
    with b.session() as session:
        account = account_service.create(session, desk, account_name="desk paper")
        book = portfolio_service.create(session, desk, account_id=account.id, name="main")
        portfolio_service.deposit(session, desk, book.id, Decimal(100_000))
        admin, _ = user_service.create(
            session, username="ops", email="ops@example.com", role="admin",
            password="pw-ops-secret-1",
        )  # fmt: skip
        _, admin_key = api_key_service.create(
            session, CLI, name="bars", owner=admin, rate_limit_per_minute=100_000
        )
    trader, a_key = _user(a, "trader")
    with a.session() as session:
        live = account_service.create(
            session, trader, account_name="on B", broker="openalgo",
            host_url=f"{b.url}/openalgo", is_primary=True, priority=1,
        )  # fmt: skip
        portfolio = portfolio_service.create(session, trader, account_id=live.id, name="main")
        portfolio_service.deposit(session, trader, portfolio.id, Decimal(100_000))
        live_id, live_pid = live.id, portfolio.id
    credentials = a.engines.session_factory(Database.credentials)()
    CredentialService(KeyStore.from_settings(a.settings)).set_secret(
        credentials, user_id=trader.user_id, owner_type="account", owner_id=live_id,
        kind="broker_api_key", value=desk_key,
    )  # fmt: skip
    credentials.commit()
    credentials.close()
    _with_env(b, {"TRADEBASE_STREAM_HEARTBEAT_SECONDS": "0.5"})
    _with_env(a, {"TRADEBASE_BROKER_STREAM_RETRY_SECONDS": "0.5"})
    try:
        b.start()
        a.start()
        connected = _until(
            lambda: [c for c in _connections(a) if c.status == "connected"],
            20,
            "A never connected to B's stream",
        )
        [first] = connected
        assert first.account_id == live_id and first.connected_at is not None
        with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {a_key}"}) as http:
            placed = http.post(
                "/api/v1/orders",
                json={"portfolio_id": live_pid, "symbol": "ETH", "exchange": "CRYPTO",
                      "side": "buy", "quantity": "2", "order_type": "limit", "price": "90"},
            )  # fmt: skip
            assert placed.status_code == 201, placed.text
            assert placed.json()["status"] == "open", placed.json()
            order_id = placed.json()["id"]
        bar = {"timestamp": "2026-11-30T10:00:00Z", "open": "95", "high": "96", "low": "89",
               "close": "91", "volume": "100"}  # fmt: skip
        posted = httpx.post(
            f"{b.url}/api/v1/prices",
            json={"symbol": "ETH", "exchange": "CRYPTO", "bars": [bar]},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert posted.status_code == 201 and posted.json()["fills"] == 1, posted.text
        started = time.monotonic()

        def filled() -> Order | None:
            with a.session(write=False) as session:
                order = session.get(Order, order_id)
                return order if order is not None and order.status == "filled" else None

        order = _until(filled, 10, "A did not learn of the fill")
        assert time.monotonic() - started < 5  # the health check runs every 30 s; not it
        assert (order.filled_quantity, order.average_fill_price) == (Decimal(2), Decimal(90))
        row = _until(
            lambda: [c for c in _connections(a) if c.messages_received >= 3],
            10,
            "the stream's messages were not counted",
        )[0]
        assert row.id == first.id and row.last_heartbeat is not None
        assert row.last_heartbeat > first.connected_at
        b.kill()
        gone = _until(
            lambda: [c for c in _connections(a) if c.id == first.id and c.status != "connected"],
            15,
            "the lost stream stayed connected",
        )[0]
        assert gone.status == "disconnected" and gone.disconnected_at is not None
        b.start()
        again = _until(
            lambda: [c for c in _connections(a) if c.status == "connected"],
            20,
            "A did not connect again when B returned",
        )
        assert again[0].id != first.id
    finally:
        a.kill()
        b.kill()
    a.engines.dispose()
    b.engines.dispose()
