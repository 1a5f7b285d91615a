"""Outgoing webhooks against real receivers on loopback: signed, retried with growing
gaps, disabled after 10 failures, re-enabled and test-sent; the order path never waits
for a receiver."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.accounts.helpers import assert_error_shape, bearer, make_key, make_user
from tests.alerts.receiver import Receiver, verify
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
def hooks_live(
    backend: str,
    scratch_factory: ScratchFactory,
    tmp_path_factory: pytest.TempPathFactory,
    _registry: dict[str, LiveServer],
) -> LiveServer:
    """A server whose dispatcher looks often and retries after 0.1 s, 0.2 s … 0.8 s."""
    if backend not in _registry:
        scratch = scratch_factory.new(backend, "hooks")
        settings = scratch.settings().model_copy(
            update={
                "data_dir": tmp_path_factory.mktemp("hooks-data"),
                "login_attempts_per_minute": 100_000,
                "webhook_poll_seconds": 0.05,
                "webhook_retry_base_seconds": 0.1,
                "webhook_retry_max_seconds": 0.8,
                "webhook_concurrency": 8,
            }
        )
        for database in Database:
            migrate.upgrade(database, "head", settings=settings)
        _registry[backend] = LiveServer(scratch, settings)
    return _registry[backend]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def _trader(live: LiveServer) -> tuple[str, int]:
    person = make_user(live)
    _, key = make_key(live, person)
    with live.client(headers=bearer(key)) as http:
        account = http.post("/api/v1/accounts", json={"account_name": "paper"})
        portfolio = http.post(
            "/api/v1/portfolios", json={"account_id": account.json()["id"], "name": "main"}
        )
        pid = portfolio.json()["id"]
        assert http.post(f"/api/v1/portfolios/{pid}/deposits", json={"amount": "100000"}).is_success
    return key, pid


def _buy(http, pid: int, price: str = "100"):  # type: ignore[no-untyped-def]
    return http.post(
        "/api/v1/orders",
        json={
            "portfolio_id": pid,
            "symbol": "ACME",
            "side": "buy",
            "quantity": "1",
            "price": price,
        },
    )


def _until(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_signed_event_reaches_a_real_receiver(hooks_live: LiveServer, receiver: Receiver) -> None:
    key, pid = _trader(hooks_live)
    with hooks_live.client(headers=bearer(key)) as http:
        created = http.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["order.filled"], "description": "mine"},
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        secret = hook["secret"]
        assert secret and hook["secret_last4"] == secret[-4:]
        assert hook["signature_header"] == "X-Tradebase-Signature"
        order = _buy(http, pid)
        assert order.status_code == 201, order.text
        [request] = receiver.wait(1)
        assert verify(secret, request)
        assert not verify(secret + "x", request)
        sent = json.loads(request.body)
        assert sent["type"] == "order.filled" and sent["data"]["order_id"] == order.json()["id"]
        assert sent["data"]["average_fill_price"] == order.json()["average_fill_price"]
        assert request.headers["X-Tradebase-Event"] == "order.filled"
        assert request.headers["X-Tradebase-Event-Id"] == str(sent["id"])
        # the outbox has the same event
        events = http.get("/api/v1/events", params={"after_id": sent["id"] - 1}).json()
        assert events[0] == sent
        # the attempt is recorded; the secret is never shown again
        deliveries = _until(
            lambda: [
                d
                for d in http.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
                if d["status"] == "succeeded"
            ]
        )
        assert [(d["attempt"], d["response_status"], d["event_id"]) for d in deliveries] == [
            (1, 200, str(sent["id"]))
        ]
        again = http.get(f"/api/v1/webhooks/{hook['id']}").json()
        assert "secret" not in again and again["last_called_at"] and again["failure_count"] == 0
        assert receiver.wait(2, timeout=0.5) == [request]  # the rejected order was not sent


def test_a_failing_receiver_gets_growing_gaps_and_the_webhook_is_disabled_after_10(
    hooks_live: LiveServer, receiver: Receiver
) -> None:
    receiver.status = 500
    key, pid = _trader(hooks_live)
    with hooks_live.client(headers=bearer(key)) as http:
        hook = http.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["*"]}).json()
        assert _buy(http, pid).status_code == 201

        def disabled() -> dict[str, object] | None:
            found = http.get(f"/api/v1/webhooks/{hook['id']}").json()
            return found if not found["is_active"] else None

        found = _until(disabled, timeout=30)
        assert found, "the webhook was not disabled"
        assert found["failure_count"] == 10 and "10 consecutive" in found["disabled_reason"]
        attempts = sorted(
            http.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json(), key=lambda d: d["id"]
        )
        assert [d["attempt"] for d in attempts] == list(range(1, 11))
        assert {(d["status"], d["response_status"]) for d in attempts} == {("failed", 500)}
        assert len({d["event_id"] for d in attempts}) == 1
        times = [datetime.fromisoformat(d["attempted_at"]) for d in attempts]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        planned = [min(0.1 * 2**i, 0.8) for i in range(9)]
        assert all(gap >= plan - 0.01 for gap, plan in zip(gaps, planned, strict=True)), gaps
        assert gaps[0] < gaps[1] < gaps[2] < gaps[3], gaps
        assert len(receiver.wait(10)) == 10
        time.sleep(1)
        assert len(receiver.requests) == 10  # no attempt after it was disabled
        kinds = [e["type"] for e in http.get("/api/v1/events").json()]
        assert kinds[-1] == "webhook.disabled"

        # re-enable, and a test-send to a receiver that works again
        receiver.status = 200
        enabled = http.post(f"/api/v1/webhooks/{hook['id']}/enable").json()
        assert enabled["is_active"] and enabled["failure_count"] == 0
        assert enabled["disabled_reason"] is None
        tested = http.post(f"/api/v1/webhooks/{hook['id']}/test")
        assert tested.status_code == 200, tested.text
        attempt = tested.json()
        assert (attempt["status"], attempt["response_status"], attempt["event_type"]) == (
            "succeeded",
            200,
            "webhook.test",
        )
        last = receiver.requests[-1]
        assert verify(hook["secret"], last) and json.loads(last.body)["type"] == "webhook.test"
        # and new events flow again
        assert _buy(http, pid).status_code == 201
        assert len(receiver.wait(12)) == 12


def test_a_receiver_that_sleeps_5_s_does_not_slow_the_orders(
    hooks_live: LiveServer, receiver: Receiver
) -> None:
    receiver.sleep = 5.0
    key, pid = _trader(hooks_live)
    with hooks_live.client(headers=bearer(key)) as http:
        assert http.post(
            "/api/v1/webhooks", json={"url": receiver.url, "events": ["order.filled"]}
        ).is_success
        assert _buy(http, pid).status_code == 201
        receiver.wait(1)  # the first delivery is now in the receiver's sleep
        took = []
        for i in range(4):
            started = time.monotonic()
            placed = _buy(http, pid, price=str(100 + i))
            took.append(time.monotonic() - started)
            assert placed.status_code == 201, placed.text
            time.sleep(0.2)  # the dispatcher sends each while the next is placed
        assert max(took) < 1.0, took
        assert len(receiver.wait(5, timeout=10)) == 5


def test_bad_subscriptions_are_refused_and_webhooks_are_private(
    hooks_live: LiveServer, receiver: Receiver
) -> None:
    key, _ = _trader(hooks_live)
    other, _ = _trader(hooks_live)
    with hooks_live.client(headers=bearer(key)) as http:
        for url in ("ftp://example.com/hook", "javascript:alert(1)", "file:///etc/passwd"):
            refused = http.post("/api/v1/webhooks", json={"url": url, "events": ["*"]})
            assert refused.status_code == 422, refused.text
            assert_error_shape(refused.json(), 422)
            assert refused.json()["error"]["code"] == "webhook_url_invalid"
            assert "http:// or https://" in refused.json()["error"]["message"]
        typo = http.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["order.fill"]})
        assert typo.status_code == 422 and "order.fill" in typo.json()["error"]["message"]
        short = http.post(
            "/api/v1/webhooks", json={"url": receiver.url, "events": ["*"], "secret": "short"}
        )
        assert short.status_code == 422
        own = http.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["order.*"], "secret": "s" * 20 + "WXYZ"},
        ).json()
        assert own["secret"] is None and own["secret_last4"] == "WXYZ"
        patched = http.patch(f"/api/v1/webhooks/{own['id']}", json={"is_active": False}).json()
        assert not patched["is_active"] and patched["disabled_reason"] == "paused by the user"
    with hooks_live.client(headers=bearer(other)) as http:
        assert http.get(f"/api/v1/webhooks/{own['id']}").status_code == 404
        assert http.get(f"/api/v1/webhooks/{own['id']}/deliveries").status_code == 404
        assert http.post(f"/api/v1/webhooks/{own['id']}/test").status_code == 404
        assert http.delete(f"/api/v1/webhooks/{own['id']}").status_code == 404
        assert http.get("/api/v1/webhooks").json() == []
    with hooks_live.client(headers=bearer(key)) as http:
        assert http.delete(f"/api/v1/webhooks/{own['id']}").status_code == 204
        assert http.get(f"/api/v1/webhooks/{own['id']}").status_code == 404
