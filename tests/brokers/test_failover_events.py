"""A failover and the account's connection changes are events: in the outbox (GET
/api/v1/events), for webhooks and the live stream, committed with the change."""

from __future__ import annotations

from tests.conftest import LiveServer, free_port
from tests.signals.helpers import make_trader


def test_failover_and_disconnect_are_events(live: LiveServer) -> None:
    trader = make_trader(live)  # its paper account is the fallback
    dead = f"http://127.0.0.1:{free_port()}/openalgo"  # nothing listens there
    with live.client() as http:
        made = http.post(
            "/api/v1/accounts",
            json={"account_name": "gone broker", "broker": "openalgo", "host_url": dead,
                  "api_key": "k-123", "is_primary": True, "priority": 1},
            headers=trader.auth,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        live_id = made.json()["id"]
        book = http.post(
            "/api/v1/portfolios",
            json={"account_id": live_id, "name": "live"},
            headers=trader.auth,
        )
        assert book.status_code == 201, book.text
        pid = book.json()["id"]
        assert (
            http.post(
                f"/api/v1/portfolios/{pid}/deposits", json={"amount": "1000"}, headers=trader.auth
            ).status_code
            == 201
        )
        # The account must have answered once to be "connected" first; unreachable now.
        placed = http.post(
            "/api/v1/orders",
            json={"portfolio_id": pid, "symbol": "FOE", "side": "buy", "quantity": "1",
                  "price": "10", "client_order_id": "fo-1"},
            headers=trader.auth,
        )  # fmt: skip
        assert placed.status_code == 201, placed.text
        moved = placed.json()
        assert moved["account_id"] == trader.account_id, moved  # failed over to paper
        events = http.get("/api/v1/events", params={"after_id": 0}, headers=trader.auth)
        assert events.status_code == 200, events.text
    by_type = {e["type"]: e["data"] for e in events.json()}
    assert by_type["failover"]["from_account_id"] == live_id
    assert by_type["failover"]["to_account_id"] == trader.account_id
    assert by_type["failover"]["success"] is True
    assert by_type["failover"]["new_order_id"] == moved["id"]
    assert "unreachable" in by_type["failover"]["reason"]
    # The original order was rejected on the unreachable account ("failed over").
    rejected = by_type["order.rejected"]
    assert (rejected["order_id"], rejected["account_id"]) == (
        by_type["failover"]["order_id"], live_id,
    )  # fmt: skip
    assert "failed over" in rejected["reason"]
    # A health check of the dead broker changes nothing: it was never connected.
    with live.client() as http:
        checked = http.post(f"/api/v1/accounts/{live_id}/health/check", headers=trader.auth)
        assert checked.status_code == 200, checked.text
        assert checked.json()["connection_status"] == "disconnected"
        after = http.get("/api/v1/events", params={"after_id": 0}, headers=trader.auth).json()
    assert "account.disconnected" not in {e["type"] for e in after}
    assert by_type["order.filled"]["order_id"] == moved["id"]


def test_an_account_that_answers_is_connected_once(live: LiveServer) -> None:
    desk = make_trader(live)  # the broker side: this same server's facade, desk's key
    trader = make_trader(live)
    with live.client() as http:
        made = http.post(
            "/api/v1/accounts",
            json={"account_name": "on the facade", "broker": "openalgo",
                  "host_url": f"{live.url}/openalgo", "api_key": desk.key},
            headers=trader.auth,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        account_id = made.json()["id"]
        for _ in range(2):  # the second check finds it connected already: no new event
            checked = http.post(f"/api/v1/accounts/{account_id}/health/check", headers=trader.auth)
            assert checked.status_code == 200, checked.text
            assert checked.json()["connection_status"] == "connected"
        events = http.get("/api/v1/events", params={"after_id": 0}, headers=trader.auth).json()
    connected = [e["data"] for e in events if e["type"] == "account.connected"]
    assert connected == [{"account_id": account_id, "from": "disconnected", "to": "connected"}]
