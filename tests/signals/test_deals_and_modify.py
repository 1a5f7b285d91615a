"""deal_id labels the position a signal opens and names the one a close ends; a
``trade_action: modify`` signal amends the resting orders an earlier signal placed."""

from __future__ import annotations

import uuid
from typing import Any

from tests.accounts.helpers import assert_error_shape, bearer, make_key, make_user
from tests.conftest import LiveServer
from tests.signals.helpers import Trader, make_trader


def _hedged_book(live: LiveServer, trader: Trader) -> int:
    with live.client() as http:
        account = http.post("/api/v1/accounts", json={"account_name": "deals"}, headers=trader.auth)
        assert account.status_code == 201, account.text
        book = http.post(
            "/api/v1/portfolios",
            json={"account_id": account.json()["id"], "name": "deals", "position_mode": "hedging"},
            headers=trader.auth,
        )
        assert book.status_code == 201, book.text
        pid = int(book.json()["id"])
        funded = http.post(
            f"/api/v1/portfolios/{pid}/deposits", json={"amount": "10000"}, headers=trader.auth
        )
        assert funded.status_code == 201
    return pid


def _send(live: LiveServer, trader: Trader, body: dict[str, Any]) -> Any:
    with live.client() as http:
        return http.post(f"/webhook/{trader.webhook_key}", json=body)


def _positions(live: LiveServer, trader: Trader, pid: int) -> list[tuple[str, str, str | None]]:
    with live.client() as http:
        rows = http.get(
            f"/api/v1/portfolios/{pid}/positions",
            params={"status": ""},
            headers=trader.auth,
        ).json()
    return sorted((p["direction"], p["quantity"], p["status"]) for p in rows)


def test_deals_open_beside_each_other_and_close_by_label(live: LiveServer) -> None:
    trader = make_trader(live)
    pid = _hedged_book(live, trader)
    base = {"ticker": "DEAL", "hedging_enabled": True, "price": "50", "account": "deals"}
    long = _send(
        live, trader, {**base, "side": "buy", "qty": "3", "deal_id": "L1", "order_id": "a"}
    )
    assert long.status_code == 200, long.text
    short = _send(
        live, trader, {**base, "side": "sell", "qty": "2", "deal_id": "S1", "order_id": "b"}
    )
    assert short.status_code == 200, short.text
    # Closing deal S1 buys 2 (its direction says which side closes it), leaving L1 open.
    close = _send(live, trader, {**base, "trade_action": "close", "deal_id": "S1", "order_id": "c"})
    assert close.status_code == 200, close.text
    [order] = close.json()["signal"]["outcome"]["orders"]
    assert (order["side"], order["quantity"]) == ("buy", "2")
    with live.client() as http:
        rows = http.get(f"/api/v1/portfolios/{pid}/positions", headers=trader.auth).json()
    assert [(p["direction"], p["quantity"], p["deal_id"]) for p in rows] == [("long", "3", "L1")]

    # A partial close by label, then the label is free again once the deal is closed.
    part = _send(
        live, trader,
        {**base, "trade_action": "close", "deal_id": "L1", "qty": "1", "order_id": "d"},
    )  # fmt: skip
    assert part.status_code == 200, part.text
    assert part.json()["signal"]["outcome"]["orders"][0]["quantity"] == "1"
    rest = _send(live, trader, {**base, "trade_action": "close", "deal_id": "L1", "order_id": "e"})
    assert rest.status_code == 200, rest.text
    assert rest.json()["signal"]["outcome"]["orders"][0]["quantity"] == "2"
    again = _send(
        live, trader, {**base, "side": "buy", "qty": "1", "deal_id": "L1", "order_id": "f"}
    )
    assert again.status_code == 200, again.text
    with live.client() as http:
        rows = http.get(f"/api/v1/portfolios/{pid}/positions", headers=trader.auth).json()
    assert [(p["direction"], p["quantity"], p["deal_id"]) for p in rows] == [("long", "1", "L1")]


def test_deal_refusals_name_the_problem_and_place_nothing(live: LiveServer) -> None:
    trader = make_trader(live)
    pid = _hedged_book(live, trader)
    base = {"ticker": "DEAL", "hedging_enabled": True, "price": "50", "account": "deals"}
    opened = _send(live, trader, {**base, "side": "buy", "qty": "1", "deal_id": "A", "order_id": 1})
    assert opened.status_code == 200, opened.text
    cases = [
        # no such open deal
        ({"trade_action": "close", "deal_id": "nope"}, "deal_id: no open DEAL position 'nope'"),
        # the label is open on the long: a short cannot take it
        ({"side": "sell", "qty": "1", "deal_id": "A"}, "deal_id: 'A' is open already"),
        # a second long would add to deal A under another label
        ({"side": "buy", "qty": "1", "deal_id": "B"}, "the open long DEAL position is deal 'A'"),
        # the wrong side for closing a long
        ({"trade_action": "close", "deal_id": "A", "side": "buy"}, "closes with a sell"),
    ]
    for n, (extra, message) in enumerate(cases):
        sent = _send(live, trader, {**base, **extra, "order_id": f"r{n}"})
        assert sent.status_code == 422, sent.text
        body = sent.json()
        assert_error_shape(body, 422)
        assert message in body["error"]["message"], body
        assert body["error"]["details"]["status"] == "rejected"
    assert _positions(live, trader, pid) == [("long", "1", "open")]


def _limit_buy(live: LiveServer, trader: Trader, symbol: str, order_id: str) -> Any:
    sent = _send(
        live, trader,
        {"ticker": symbol, "side": "buy", "qty": "2", "order_type": "limit",
         "limit_price": "90", "order_id": order_id},
    )  # fmt: skip
    assert sent.status_code == 200, sent.text
    [order] = sent.json()["signal"]["outcome"]["orders"]
    assert order["status"] == "open"
    return order


def test_modify_amends_the_resting_order_and_a_bar_fills_it_at_the_new_price(
    live: LiveServer,
) -> None:
    trader = make_trader(live)
    symbol = "MOD" + uuid.uuid4().hex[:6].upper()
    order = _limit_buy(live, trader, symbol, "entry")
    modify = {"ticker": symbol, "trade_action": "modify", "order_id": "entry",
              "limit_price": "95", "qty": "3"}  # fmt: skip
    changed = _send(live, trader, modify)
    assert changed.status_code == 200, changed.text
    [amended] = changed.json()["signal"]["outcome"]["orders"]
    assert (amended["id"], amended["price"], amended["quantity"], amended["amended"]) == (
        order["id"], "95", "3", True,
    )  # fmt: skip
    # The same modify again is a repeat (its body is its key), answered the same.
    repeat = _send(live, trader, modify)
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["duplicate"] is True
    assert repeat.json()["signal"]["id"] == changed.json()["signal"]["id"]
    with live.client() as http:
        events = http.get(f"/api/v1/orders/{order['id']}/events", headers=trader.auth).json()
        assert [e["event_type"] for e in events].count("amended") == 1
        _, admin_key = make_key(live, make_user(live, role="admin"))
        bar = {"timestamp": "2026-11-23T15:00:00Z", "open": "96", "high": "97", "low": "94",
               "close": "96", "volume": "100"}  # fmt: skip
        posted = http.post(
            "/api/v1/prices", json={"symbol": symbol, "bars": [bar]}, headers=bearer(admin_key)
        )
        assert posted.status_code == 201, posted.text
        filled = http.get(f"/api/v1/orders/{order['id']}", headers=trader.auth).json()
    # 94 <= 95: the amended limit fills, all 3, at 95 (the old 90 would not have).
    assert (filled["status"], filled["filled_quantity"], filled["average_fill_price"]) == (
        "filled", "3", "95",
    )  # fmt: skip


def test_modify_refusals(live: LiveServer) -> None:
    trader = make_trader(live)
    symbol = "MOD" + uuid.uuid4().hex[:6].upper()
    _limit_buy(live, trader, symbol, "kept")
    cases = [
        ({"order_id": "unknown", "limit_price": "95"}, "no resting order was placed"),
        ({"limit_price": "95"}, "order_id: trade_action modify names the order"),
        ({"order_id": "kept"}, "send the new limit_price, stop_price or quantity"),
        ({"order_id": "kept", "qty": "0.5", "comment": "x"}, None),  # fine: 0.5 > 0 filled
        ({"order_id": "kept", "stop_price": "80"}, "a limit order has no trigger_price"),
    ]
    for extra, message in cases:
        sent = _send(live, trader, {"ticker": symbol, "trade_action": "modify", **extra})
        if message is None:
            assert sent.status_code == 200, sent.text
            continue
        assert sent.status_code == 422, sent.text
        assert message in sent.json()["error"]["message"], sent.json()
    # Another user's signals are not found by the same order_id.
    other = make_trader(live)
    sent = _send(
        live, other, {"ticker": symbol, "trade_action": "modify", "order_id": "kept", "qty": "1"}
    )
    assert sent.status_code == 422
    assert "no resting order was placed" in sent.json()["error"]["message"]
