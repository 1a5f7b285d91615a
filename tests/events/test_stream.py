"""The live stream: authenticated, per user, with heartbeats and replay, in one process
(SQLite in-process, PostgreSQL LISTEN/NOTIFY, MariaDB polling)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.accounts.helpers import bearer, make_key, make_user
from tests.conftest import LiveServer, ScratchFactory
from tradebase.core import migrate
from tradebase.core.db import Database

_servers: dict[str, LiveServer] = {}


@pytest.fixture(scope="module")
def _registry() -> Iterator[dict[str, LiveServer]]:
    yield _servers
    for server in _servers.values():
        server.stop()
    _servers.clear()


@pytest.fixture
def stream_live(
    backend: str,
    scratch_factory: ScratchFactory,
    tmp_path_factory: pytest.TempPathFactory,
    _registry: dict[str, LiveServer],
) -> LiveServer:
    if backend not in _registry:
        scratch = scratch_factory.new(backend, "stream")
        settings = scratch.settings().model_copy(
            update={
                "data_dir": tmp_path_factory.mktemp("stream-data"),
                "login_attempts_per_minute": 100_000,
                "stream_heartbeat_seconds": 0.5,
            }
        )
        for database in Database:
            migrate.upgrade(database, "head", settings=settings)
        _registry[backend] = LiveServer(scratch, settings)
    return _registry[backend]


def ws_url(base: str, query: str = "") -> str:
    return base.replace("http://", "ws://") + "/api/v1/stream" + query


def trader(live: LiveServer, *, scopes: list[str] | None = None) -> tuple[str, int]:
    person = make_user(live)
    _, key = make_key(live, person, scopes=scopes)
    with live.client(headers=bearer(make_key(live, person)[1])) as http:
        account = http.post("/api/v1/accounts", json={"account_name": "paper"}).json()
        pid = http.post(
            "/api/v1/portfolios", json={"account_id": account["id"], "name": "main"}
        ).json()["id"]
        assert http.post(f"/api/v1/portfolios/{pid}/deposits", json={"amount": "100000"}).is_success
    return key, pid


def buy(base: str, key: str, pid: int) -> dict[str, Any]:
    import httpx

    placed = httpx.post(
        base + "/api/v1/orders",
        json={"portfolio_id": pid, "symbol": "ACME", "side": "buy", "quantity": "1", "price": "10"},
        headers=bearer(key),
        timeout=10,
    )
    assert placed.status_code == 201, placed.text
    return dict(placed.json())


def next_event(ws: ClientConnection, timeout: float) -> dict[str, Any] | None:
    """The next message that is not a heartbeat, or None after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            return None
        if message.get("type") != "ping":
            return dict(message)
    return None


def test_an_order_filled_arrives_within_1_s_and_only_for_its_user(
    stream_live: LiveServer,
) -> None:
    key, pid = trader(stream_live)
    other, _ = trader(stream_live)
    with (
        connect(ws_url(stream_live.url), additional_headers=bearer(key)) as mine,
        connect(ws_url(stream_live.url, f"?api_key={other}")) as theirs,
    ):
        hello = json.loads(mine.recv(timeout=5))
        assert hello["type"] == "hello" and hello["heartbeat_seconds"] == 0.5
        assert json.loads(theirs.recv(timeout=5))["type"] == "hello"
        order = buy(stream_live.url, key, pid)  # placed and committed
        placed = time.monotonic()
        event = next_event(mine, timeout=1.0)
        took = time.monotonic() - placed
        assert event is not None, "no event within 1 s of the order"
        assert event["type"] == "order.filled" and event["data"]["order_id"] == order["id"]
        assert took < 1.0, took
        assert next_event(theirs, timeout=0.7) is None  # another user's event never shows
        # heartbeats while quiet
        assert json.loads(mine.recv(timeout=2))["type"] == "ping"
        mine.send(json.dumps({"type": "ping"}))
        assert json.loads(mine.recv(timeout=2))["type"] in ("pong", "ping")


def test_resume_after_an_id_replays_what_was_missed(stream_live: LiveServer) -> None:
    key, pid = trader(stream_live)
    with connect(ws_url(stream_live.url), additional_headers=bearer(key)) as ws:
        since = json.loads(ws.recv(timeout=5))["after_id"]
    missed = [buy(stream_live.url, key, pid)["id"] for _ in range(3)]
    with connect(
        ws_url(stream_live.url, f"?after_id={since}"), additional_headers=bearer(key)
    ) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        replayed = [next_event(ws, timeout=2) for _ in range(3)]
        assert [e["data"]["order_id"] for e in replayed if e] == missed
        live_one = buy(stream_live.url, key, pid)["id"]
        event = next_event(ws, timeout=2)
        assert event is not None and event["data"]["order_id"] == live_one


def test_a_rejected_signal_is_streamed(stream_live: LiveServer) -> None:
    key, _ = trader(stream_live)
    with connect(ws_url(stream_live.url), additional_headers=bearer(key)) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        with stream_live.client(headers=bearer(key)) as http:
            refused = http.post("/api/v1/signals", json={"action": "buy", "qty": "1"})
            assert refused.status_code == 422, refused.text
            signal_id = refused.json()["error"]["details"]["signal_id"]
            listed = http.get("/api/v1/events", params={"type": "signal.rejected"}).json()
        event = next_event(ws, timeout=2)
        assert event is not None and event["type"] == "signal.rejected", event
        assert event["data"]["signal_id"] == signal_id and event["data"]["reason"]
        assert [e["id"] for e in listed] == [event["id"]]


# Not on SQLite: one writer at a time there, so ids commit in order.
@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_an_event_that_commits_after_a_later_one_still_arrives(stream_live: LiveServer) -> None:
    """Ids are taken before commit: the hub looks again for the id it skipped."""
    from tradebase.core.db import unit_of_work
    from tradebase.events.service import emit

    key, _ = trader(stream_live)
    with connect(ws_url(stream_live.url), additional_headers=bearer(key)) as ws:
        user_id = json.loads(ws.recv(timeout=5))["user_id"]
        factory = stream_live.engines.session_factory(Database.main)
        with unit_of_work(factory=factory) as slow:
            emit(slow, user_id, "failover", {"which": "slow"})
            slow.flush()
            with unit_of_work(factory=factory) as fast:
                emit(fast, user_id, "failover", {"which": "fast"})
            first = next_event(ws, timeout=2)
            assert first is not None and first["data"] == {"which": "fast"}
        second = next_event(ws, timeout=2)
        assert second is not None and second["data"] == {"which": "slow"}
        assert second["id"] < first["id"]


def _refused(ws: ClientConnection) -> tuple[dict[str, Any], int]:
    error = json.loads(ws.recv(timeout=5))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code


def test_no_key_a_wrong_key_or_a_key_without_the_scope_is_refused(
    stream_live: LiveServer,
) -> None:
    with connect(ws_url(stream_live.url)) as ws:
        ws.send("hello?")
        error, code = _refused(ws)
        assert code == 4401 and error["error"]["code"] == "unauthorized"
    with connect(ws_url(stream_live.url), additional_headers=bearer("tb_nonsense")) as ws:
        error, code = _refused(ws)
        assert code == 4401 and "unknown API key" in error["error"]["message"]
    key, _ = trader(stream_live, scopes=["read:orders"])
    with connect(ws_url(stream_live.url), additional_headers=bearer(key)) as ws:
        error, code = _refused(ws)
        assert code == 4403 and "read:events" in error["error"]["message"]
    # the key in a first message works too
    key, _ = trader(stream_live)
    with connect(ws_url(stream_live.url)) as ws:
        ws.send(json.dumps({"type": "auth", "api_key": key}))
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
