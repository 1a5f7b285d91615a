"""Broker postbacks: HMAC-signed, in a replay window, applied once. A forged or replayed
postback is refused and changes nothing; a valid one moves the order exactly once.

The live account here trades on the same server's OpenAlgo facade (another user's paper
account), so its orders carry a real broker order id."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx

from tests.accounts.helpers import bearer
from tests.conftest import LiveServer
from tests.signals.helpers import Trader, make_trader
from tradebase.brokers.service import sign

D = Decimal


def _live_account(live: LiveServer) -> tuple[Trader, int, int]:
    """A trader with an openalgo account on this server's facade (its desk a second
    trader's paper account): the trader, the account id and its portfolio id."""
    desk = make_trader(live)
    trader = make_trader(live)
    with live.client() as http:
        account = http.post(
            "/api/v1/accounts",
            json={
                "account_name": "via facade",
                "broker": "openalgo",
                "host_url": f"{live.url}/openalgo",
                "api_key": desk.key,
            },
            headers=trader.auth,
        )
        assert account.status_code == 201, account.text
        assert account.json()["connection_status"] == "disconnected"
        account_id = account.json()["id"]
        portfolio = http.post(
            "/api/v1/portfolios",
            json={"account_id": account_id, "name": "main"},
            headers=trader.auth,
        )
        assert portfolio.status_code == 201, portfolio.text
        pid = portfolio.json()["id"]
        http.post(
            f"/api/v1/portfolios/{pid}/deposits", json={"amount": "10000"}, headers=trader.auth
        )
    return trader, account_id, pid


def _post(
    live: LiveServer, account_id: int, body: dict[str, Any], secret: str, *, at: int | None = None
) -> httpx.Response:
    raw = json.dumps(body).encode()
    stamp = str(at if at is not None else int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Tradebase-Timestamp": stamp,
        "X-Tradebase-Signature": "sha256=" + sign(secret, stamp, raw),
    }
    with live.client() as http:
        return http.post(f"/api/v1/brokers/postbacks/{account_id}", content=raw, headers=headers)


def _state(live: LiveServer, trader: Trader, order_id: int, pid: int) -> tuple[Any, ...]:
    with live.client() as http:
        order = http.get(f"/api/v1/orders/{order_id}", headers=trader.auth).json()
        trades = http.get(f"/api/v1/portfolios/{pid}/trades", headers=trader.auth).json()
        cash = http.get(f"/api/v1/portfolios/{pid}", headers=trader.auth).json()
    return order["status"], order["filled_quantity"], len(trades), cash["cash_balance_usd"]


def test_forged_or_replayed_postbacks_change_nothing_a_valid_one_applies_once(
    live: LiveServer,
) -> None:
    trader, account_id, pid = _live_account(live)
    with live.client() as http:
        checked = http.post(f"/api/v1/accounts/{account_id}/health/check", headers=trader.auth)
        assert checked.json()["connection_status"] == "connected", checked.text
        placed = http.post(
            "/api/v1/orders",
            json={
                "portfolio_id": pid,
                "symbol": "BTC",
                "exchange": "CRYPTO",
                "side": "buy",
                "quantity": "2",
                "order_type": "limit",
                "price": "95",
            },
            headers=trader.auth,
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert order["status"] == "open", order["reject_reason"]
        assert order["account_id"] == account_id
        secret = http.post(
            f"/api/v1/accounts/{account_id}/postback-secret", headers=trader.auth
        ).json()["secret"]
        broker_id = http.get(f"/api/v1/orders/{order['id']}", headers=trader.auth).json()
    exchange_order_id = broker_id.get("exchange_order_id")
    assert exchange_order_id, broker_id
    before = _state(live, trader, order["id"], pid)
    assert before[:3] == ("open", "0", 0)
    fill = {"id": "pb-1", "orderid": exchange_order_id, "order_status": "complete",
            "average_price": "95", "quantity": "2"}  # fmt: skip

    # forged: a wrong secret, a tampered body, no signature at all
    assert _post(live, account_id, fill, "not-the-secret").status_code == 401
    raw = json.dumps(fill).encode()
    stamp = str(int(time.time()))
    good_sig = "sha256=" + sign(secret, stamp, raw)
    tampered = json.dumps({**fill, "average_price": "1"}).encode()
    with live.client() as http:
        answer = http.post(
            f"/api/v1/brokers/postbacks/{account_id}",
            content=tampered,
            headers={"X-Tradebase-Timestamp": stamp, "X-Tradebase-Signature": good_sig},
        )
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "postback_refused"
        assert http.post(f"/api/v1/brokers/postbacks/{account_id}", content=raw).status_code == 401
    # replayed from outside the window (signed correctly, 10 minutes old)
    assert _post(live, account_id, fill, secret, at=int(time.time()) - 600).status_code == 401
    assert _state(live, trader, order["id"], pid) == before

    # valid: filled once, at the postback's price: 2 x 95 = 190 out of 10000
    applied = _post(live, account_id, fill, secret)
    assert applied.status_code == 200, applied.text
    assert applied.json()["status"] == "filled" and applied.json()["changed"] is True
    after = _state(live, trader, order["id"], pid)
    assert after[:3] == ("filled", "2", 1)
    assert D(after[3]) == D(before[3]) - D(190)

    # replayed within the window: the same id is refused, nothing moves
    again = _post(live, account_id, fill, secret)
    assert again.status_code == 409, again.text
    assert _state(live, trader, order["id"], pid) == after
    # a new id about the same fill changes nothing either (the order is filled already)
    other = _post(live, account_id, {**fill, "id": "pb-2"}, secret)
    assert other.status_code == 200 and other.json()["changed"] is False
    assert _state(live, trader, order["id"], pid) == after


def test_a_postback_cancels_a_resting_order(live: LiveServer) -> None:
    trader, account_id, pid = _live_account(live)
    with live.client() as http:
        http.post(f"/api/v1/accounts/{account_id}/health/check", headers=trader.auth)
        order = http.post(
            "/api/v1/orders",
            json={
                "portfolio_id": pid,
                "symbol": "ETH",
                "exchange": "CRYPTO",
                "side": "buy",
                "quantity": "1",
                "order_type": "limit",
                "price": "10",
            },
            headers=trader.auth,
        ).json()
        secret = http.post(
            f"/api/v1/accounts/{account_id}/postback-secret", headers=bearer(trader.key)
        ).json()["secret"]
        exchange_id = http.get(f"/api/v1/orders/{order['id']}", headers=trader.auth).json()[
            "exchange_order_id"
        ]
    answer = _post(
        live, account_id, {"id": "c-1", "orderid": exchange_id, "order_status": "cancelled"}, secret
    )
    assert answer.status_code == 200, answer.text
    assert _state(live, trader, order["id"], pid)[0] == "cancelled"
