"""A broker that times out: the order it did receive is found by its client_order_id and
recorded, never placed twice; the order it did not receive fails over. And cancelling a
live order cancels it at the broker.

Between the server and its broker (the same server's OpenAlgo facade, another user's
paper account) runs a real loopback proxy that can hold back placeorder answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.signals.helpers import Trader, make_trader

HOLD = 3.5  # seconds: longer than the live server's broker timeout (3 s)


class Proxy:
    """Forwards POSTs to *upstream*; ``mode`` for placeorder: "pass", "late" (forward,
    then answer after HOLD s) or "drop" (answer after HOLD s without forwarding)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                held = self.path.endswith("/placeorder") and proxy.mode != "pass"
                if held and proxy.mode == "drop":
                    time.sleep(HOLD)
                    status, content = 504, b'{"status": "error", "message": "dropped"}'
                else:
                    answer = httpx.post(
                        proxy.upstream + self.path,
                        content=body,
                        headers={"Content-Type": "application/json"},
                        timeout=30,
                    )
                    status, content = answer.status_code, answer.content
                    if held:
                        time.sleep(HOLD)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(live: LiveServer) -> Iterator[Proxy]:
    running = Proxy(live.url)
    yield running
    running.close()


def _setup(live: LiveServer, proxy: Proxy) -> tuple[Trader, Trader, int, int]:
    """The desk (the broker's user), the trader, the trader's live account and its
    portfolio; the trader's paper account is next in failover order."""
    desk = make_trader(live)
    trader = make_trader(live)
    with live.client() as http:
        account = http.post(
            "/api/v1/accounts",
            json={
                "account_name": "via proxy",
                "broker": "openalgo",
                "host_url": f"{proxy.url}/openalgo",
                "api_key": desk.key,
                "is_primary": True,
                "priority": 1,
            },
            headers=trader.auth,
        ).json()
        pid = http.post(
            "/api/v1/portfolios", json={"account_id": account["id"], "name": "main"},
            headers=trader.auth,
        ).json()["id"]  # fmt: skip
        http.post(
            f"/api/v1/portfolios/{pid}/deposits", json={"amount": "10000"}, headers=trader.auth
        )
        checked = http.post(f"/api/v1/accounts/{account['id']}/health/check", headers=trader.auth)
        assert checked.json()["connection_status"] == "connected", checked.text
    return desk, trader, account["id"], pid


def _order(live: LiveServer, trader: Trader, pid: int, coid: str, **extra: Any) -> dict[str, Any]:
    body = {"portfolio_id": pid, "symbol": "BTC", "exchange": "CRYPTO", "side": "buy",
            "quantity": "1", "price": "100", "client_order_id": coid, **extra}  # fmt: skip
    with live.client() as http:
        answer = http.post("/api/v1/orders", json=body, headers=trader.auth)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _desk_orders(live: LiveServer, desk: Trader, coid: str) -> list[dict[str, Any]]:
    with live.client() as http:
        book = http.post("/openalgo/api/v1/orderbook", json={"apikey": desk.key}).json()
    return [row for row in book["data"]["orders"] if row["client_order_id"] == coid]


def _failovers(live: LiveServer, trader: Trader) -> list[dict[str, Any]]:
    with live.client() as http:
        return list(http.get("/api/v1/failover-events", headers=trader.auth).json())


def test_a_timed_out_order_that_reached_the_broker_is_found_not_placed_twice(
    live: LiveServer, proxy: Proxy
) -> None:
    desk, trader, account_id, pid = _setup(live, proxy)
    proxy.mode = "late"
    order = _order(live, trader, pid, "late-1")
    assert (order["status"], order["account_id"]) == ("filled", account_id), order
    assert order["exchange_order_id"]
    placed = _desk_orders(live, desk, "late-1")
    assert len(placed) == 1 and placed[0]["orderid"] == order["exchange_order_id"]
    assert _failovers(live, trader) == []


def test_a_timed_out_order_the_broker_never_got_fails_over(live: LiveServer, proxy: Proxy) -> None:
    desk, trader, account_id, pid = _setup(live, proxy)
    proxy.mode = "drop"
    order = _order(live, trader, pid, "drop-1")
    assert order["status"] == "filled" and order["account_id"] != account_id, order
    assert order["client_order_id"] == f"drop-1~fo{trader.account_id}"
    assert _desk_orders(live, desk, "drop-1") == []
    (event,) = _failovers(live, trader)
    assert "did not answer placeorder within 3.0 s" in event["reason"], event
    assert (event["from_account_id"], event["to_account_id"], event["success"]) == (
        account_id, trader.account_id, True
    )  # fmt: skip
    with live.client() as http:
        health = http.get(f"/api/v1/accounts/{account_id}/health", headers=trader.auth).json()
    assert health["connection_status"] == "disconnected"


def test_cancelling_a_live_order_cancels_it_at_the_broker(live: LiveServer, proxy: Proxy) -> None:
    desk, trader, _account_id, pid = _setup(live, proxy)
    order = _order(live, trader, pid, "rest-1", order_type="limit", price="50")
    assert order["status"] == "open", order
    with live.client() as http:
        cancelled = http.delete(f"/api/v1/orders/{order['id']}", headers=trader.auth)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    (at_desk,) = _desk_orders(live, desk, "rest-1")
    assert at_desk["order_status"] == "cancelled"


def test_a_live_resting_order_cannot_be_amended_here(live: LiveServer, proxy: Proxy) -> None:
    _desk, trader, _account_id, pid = _setup(live, proxy)
    order = _order(live, trader, pid, "amend-1", order_type="limit", price="40")
    with live.client() as http:
        answer = http.patch(
            f"/api/v1/orders/{order['id']}", json={"price": "41"}, headers=trader.auth
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "amend_refused"
