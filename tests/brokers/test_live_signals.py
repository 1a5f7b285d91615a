"""Signals and mirror orders on a live broker account: stored pending in their units of
work, then sent to the broker right after the answer (not at the next health check).
The broker is this same server's OpenAlgo facade, trading on another user's paper book."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import LiveServer
from tests.signals.helpers import Trader, make_trader


def _live_account(live: LiveServer, trader: Trader, desk: Trader, **extra: Any) -> int:
    with live.client() as http:
        made = http.post(
            "/api/v1/accounts",
            json={"account_name": "at the desk", "broker": "openalgo",
                  "host_url": f"{live.url}/openalgo", "api_key": desk.key, **extra},
            headers=trader.auth,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        account_id = int(made.json()["id"])
        book = http.post(
            "/api/v1/portfolios",
            json={"account_id": account_id, "name": "live"},
            headers=trader.auth,
        )
        assert book.status_code == 201, book.text
        funded = http.post(
            f"/api/v1/portfolios/{book.json()['id']}/deposits",
            json={"amount": "5000"},
            headers=trader.auth,
        )
        assert funded.status_code == 201
    return account_id


def _order(live: LiveServer, trader: Trader, order_id: int, seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    with live.client() as http:
        while True:
            order = http.get(f"/api/v1/orders/{order_id}", headers=trader.auth).json()
            if order["status"] != "pending" or time.monotonic() > deadline:
                return order
            time.sleep(0.05)


def test_a_signal_to_a_live_account_is_sent_after_the_answer(live: LiveServer) -> None:
    desk = make_trader(live)  # the broker's side
    trader = make_trader(live)
    _live_account(live, trader, desk)
    with live.client() as http:
        sent = http.post(
            f"/webhook/{trader.webhook_key}",
            json={"ticker": "LIVE", "side": "buy", "qty": "2", "price": "25",
                  "account": "at the desk", "order_id": "l1"},
        )  # fmt: skip
        assert sent.status_code == 200, sent.text
        [placed] = sent.json()["signal"]["outcome"]["orders"]
        assert placed["status"] == "pending"  # stored; sent once the answer was out
    order = _order(live, trader, placed["id"])
    assert (order["status"], order["filled_quantity"], order["average_fill_price"]) == (
        "filled", "2", "25",
    )  # fmt: skip
    assert order["exchange_order_id"]
    with live.client() as http:  # the desk's paper book holds the other side of it
        rows = http.get(
            f"/api/v1/portfolios/{desk.portfolio_id}/positions", headers=desk.auth
        ).json()
    assert [(p["symbol"], p["direction"], p["quantity"]) for p in rows] == [("LIVE", "long", "2")]


def test_a_mirrored_leg_on_a_live_account_is_sent_after_the_answer(live: LiveServer) -> None:
    desk = make_trader(live)
    trader = make_trader(live)
    live_id = _live_account(live, trader, desk, priority=5)
    with live.client() as http:
        mirrored = http.post(
            "/api/v1/mirror-orders",
            json={"symbol": "MIRL", "side": "buy", "quantity": "1", "price": "40"},
            headers=trader.auth,
        )
        assert mirrored.status_code == 201, mirrored.text
        legs = {leg["account_id"]: leg for leg in mirrored.json()["legs"]}
    assert set(legs) == {trader.account_id, live_id}
    order = _order(live, trader, legs[live_id]["order_id"])
    assert (order["status"], order["average_fill_price"]) == ("filled", "40")
    paper = _order(live, trader, legs[trader.account_id]["order_id"])
    assert paper["status"] == "filled"
