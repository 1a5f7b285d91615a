"""The webhook over real HTTP: aliases, JSON as text/plain, target positions, refusals."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.accounts.helpers import assert_error_shape
from tests.conftest import LiveServer
from tests.signals.helpers import make_trader, positions
from tradebase.core.db import Database

README = Path(__file__).resolve().parents[2] / "README.md"


def _template() -> str:
    """The README's TradingView alert message, the line after its marker's ```json."""
    lines = README.read_text().splitlines()
    at = lines.index("<!-- tradingview-template -->")
    assert lines[at + 1] == "```json"
    return lines[at + 2]


def _alert(key: str, **values: str) -> str:
    """The template as TradingView sends it: placeholders filled in, the key put in."""
    text = _template().replace("whk_your_webhook_key", key)
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    return text


def test_the_readme_template_as_text_plain_opens_a_position(live: LiveServer) -> None:
    trader = make_trader(live)
    body = _alert(
        trader.webhook_key,
        ticker="AAPL",
        **{
            "strategy.order.action": "buy",
            "strategy.order.contracts": "3",
            "strategy.order.id": "Long",
            "strategy.position_size": "3",
            "close": "190.5",
        },
    )
    with live.client() as http:
        sent = http.post("/webhook", content=body, headers={"Content-Type": "text/plain"})
        assert sent.status_code == 200, sent.text
        answer = sent.json()
        assert answer["duplicate"] is False
        signal = answer["signal"]
        assert (signal["status"], signal["symbol"], signal["direction"]) == (
            "processed",
            "AAPL",
            "buy",
        )
        assert (signal["quantity"], signal["position_size"], signal["price"]) == (
            "3",
            "3",
            "190.5",
        )
        assert signal["sender_order_id"] == "Long"
        [order] = signal["outcome"]["orders"]
        assert order["client_order_id"] == f"signal-{signal['id']}-{trader.account_id}-0"
        assert (order["side"], order["quantity"], order["status"]) == ("buy", "3", "filled")
        assert order["average_fill_price"] == "190.5"  # no slippage on this account
        stored = http.get(f"/api/v1/signals/{signal['id']}", headers=trader.auth).json()
        assert stored["source"] == "webhook" and stored["source_ip"] == "127.0.0.1"
    assert positions(live, trader) == [("AAPL", "long", "3")]


def test_position_size_targets_flat_to_3_to_minus_1_to_0(live: LiveServer) -> None:
    trader = make_trader(live)
    steps = [("3", "buy", "3", [("ES", "long", "3")]), ("-1", "sell", "4", [("ES", "short", "1")])]
    steps.append(("0", "buy", "1", []))
    with live.client() as http:
        for n, (target, side, quantity, expected) in enumerate(steps):
            sent = http.post(
                f"/webhook/{trader.webhook_key}",
                json={"ticker": "ES", "position_size": target, "price": "5000", "order_id": n},
            )
            assert sent.status_code == 200, sent.text
            signal = sent.json()["signal"]
            [order] = signal["outcome"]["orders"]
            assert (order["side"], order["quantity"]) == (side, quantity)
            assert (signal["position_status"], signal["trade_direction"]) == {
                "3": ("open", "long"), "-1": ("open", "short"), "0": ("closed", None)
            }[target]  # fmt: skip
            assert positions(live, trader) == expected
        again = http.post(
            f"/webhook/{trader.webhook_key}",
            json={"ticker": "ES", "position_size": "0", "price": "5000", "order_id": "flat"},
        )
        assert again.status_code == 200 and again.json()["signal"]["outcome"]["orders"] == []


def test_every_alias_as_json_and_as_text_plain(live: LiveServer) -> None:
    trader = make_trader(live)
    forms = [
        {"symbol": "MSFT", "direction": "BUY", "quantity": "2"},
        {"ticker": "MSFT", "action": "Buy", "qty": 2},
        {"ticker": "MSFT", "side": "buy", "contracts": "2"},
    ]
    sent_count = 0
    with live.client() as http:
        for form in forms:
            for as_text in (False, True):
                body = {
                    **form,
                    "price": "400",
                    "order_id": f"alias-{sent_count}",
                    "exchange": "paper",
                    "order_type": "market",
                    "product": "nrml",
                    "trade_action": "open",
                    "hedging_enabled": "false",
                    "deal_id": "D1",
                    "account": "paper acct",
                    "comment": "from a test",
                    "timestamp": "2026-12-01T10:00:00Z",
                }
                headers = {"Content-Type": "text/plain" if as_text else "application/json"}
                sent = http.post(
                    f"/webhook/{trader.webhook_key}", content=json.dumps(body), headers=headers
                )
                assert sent.status_code == 200, (form, as_text, sent.text)
                signal = sent.json()["signal"]
                assert (signal["symbol"], signal["direction"], signal["quantity"]) == (
                    "MSFT",
                    "buy",
                    "2",
                )
                assert (signal["exchange"], signal["product"], signal["deal_id"]) == (
                    "paper",
                    "NRML",
                    "D1",
                )
                assert signal["timestamp"] == "2026-12-01T10:00:00Z"
                assert signal["account_id"] == trader.account_id
                sent_count += 1
        # The same, with the API key instead of the webhook key.
        api = http.post(
            "/api/v1/signals",
            json={"symbol": "MSFT", "side": "sell", "qty": "12", "price": "401"},
            headers=trader.auth,
        )
        assert api.status_code == 200, api.text
        assert api.json()["signal"]["source"] == "api"
    assert positions(live, trader) == []  # 6 buys of 2, one sell of 12


def _refused(live: LiveServer, key: str, body: object, status: int, code: str, text: str) -> dict:
    with live.client() as http:
        sent = http.post(
            f"/webhook/{key}",
            content=body if isinstance(body, str) else json.dumps(body),
            headers={"Content-Type": "text/plain"},
        )
    assert sent.status_code == status, sent.text
    assert_error_shape(sent.json(), status)
    error = sent.json()["error"]
    assert error["code"] == code and text in error["message"], error
    assert error["details"]["status"] == "rejected"
    return error


def test_refusals_are_stored_as_rejected_with_a_precise_error(live: LiveServer) -> None:
    trader = make_trader(live)
    key = trader.webhook_key
    cases = [
        ({"action": "buy", "qty": "1"}, 422, "signal_invalid", "symbol: missing"),
        (
            {"ticker": "X", "action": "buy", "qty": "lots"},
            422,
            "signal_invalid",
            "quantity: 'lots' is not a number",
        ),
        (
            {"ticker": "X", "action": "buy", "qty": "1", "strategy": "nope"},
            422,
            "strategy_unknown",
            "strategy: you have no strategy 'nope'",
        ),
        ("buy 1 X now", 400, "signal_malformed", "not valid JSON"),
        (
            {"ticker": "X", "action": "hold", "qty": "1"},
            422,
            "signal_invalid",
            "direction: 'hold' is not one of buy, sell",
        ),
        (
            {"ticker": "NOPRICE", "action": "buy", "qty": "1"},
            422,
            "order_refused",
            "no price for NOPRICE",
        ),
    ]
    ids = []
    for body, status, code, text in cases:
        error = _refused(live, key, body, status, code, text)
        ids.append(error["details"]["signal_id"])
    with live.client() as http:
        listed = http.get(
            "/api/v1/signals", params={"status": "rejected"}, headers=trader.auth
        ).json()
        assert [s["id"] for s in listed] == ids[::-1]
        assert listed[-1]["error"] == "symbol: missing (send symbol or ticker)"
        assert listed[-2]["quantity"] is None  # the bad value is in raw_payload only
        orders = http.get(
            "/api/v1/orders", params={"portfolio_id": trader.portfolio_id}, headers=trader.auth
        ).json()
        assert orders == []  # a refusal places nothing, not even a rejected order
    assert positions(live, trader) == []


def test_a_paused_user_and_breached_limits_are_refused(live: LiveServer) -> None:
    trader = make_trader(live)
    key = trader.webhook_key
    buy = {"ticker": "IBM", "action": "buy", "qty": "10", "price": "100"}
    with live.client() as http:
        paused = http.put("/api/v1/signals/settings", json={"paused": True}, headers=trader.auth)
        assert paused.status_code == 200 and paused.json()["paused"] is True
    _refused(live, key, {**buy, "order_id": "p"}, 409, "trading_paused", "trading is paused")
    with live.client() as http:
        limits = http.put(
            "/api/v1/signals/settings",
            json={"paused": False, "max_order_value": "999.99", "max_position_size": "15"},
            headers=trader.auth,
        )
        assert limits.status_code == 200, limits.text
    _refused(
        live,
        key,
        {**buy, "order_id": "v"},
        422,
        "risk_limit_breached",
        "max order value: 10 IBM is worth 1000, over the limit of 999.99",
    )
    with live.client() as http:
        ok = http.post(
            f"/webhook/{key}", json={**buy, "qty": "9", "order_id": "ok"}
        )  # 900: within both limits
        assert ok.status_code == 200, ok.text
    _refused(
        live,
        key,
        {**buy, "qty": "7", "price": "10", "order_id": "s"},
        422,
        "risk_limit_breached",
        "max position size: IBM would be 16, over the limit of 15",
    )
    assert positions(live, trader) == [("IBM", "long", "9")]


def test_an_unknown_key_and_a_foreign_address_are_refused_unstored(live: LiveServer) -> None:
    trader = make_trader(live)
    with live.client() as http:
        unknown = http.post("/webhook/whk_nope", json={"ticker": "X", "action": "buy", "qty": 1})
        assert unknown.status_code == 401
        assert unknown.json()["error"]["code"] == "webhook_key_invalid"
        nokey = http.post("/webhook", json={"ticker": "X", "action": "buy", "qty": 1})
        assert nokey.status_code == 401
        allow = http.put(
            "/api/v1/signals/settings", json={"ip_allowlist": ["tradingview"]}, headers=trader.auth
        )
        assert allow.json()["ip_allowlist"] == ["tradingview"]
        foreign = http.post(
            f"/webhook/{trader.webhook_key}", json={"ticker": "X", "action": "buy", "qty": 1}
        )
        assert foreign.status_code == 403
        assert foreign.json()["error"]["details"] == {"ip": "127.0.0.1"}
        big = http.post(
            f"/webhook/{trader.webhook_key}", content=b'{"comment": "' + b"x" * 70_000 + b'"}'
        )
        assert big.status_code == 413
        assert http.get("/api/v1/signals", headers=trader.auth).json() == []


def test_a_repeat_answers_with_the_first_outcome_and_places_nothing(live: LiveServer) -> None:
    trader = make_trader(live)
    url = f"/webhook/{trader.webhook_key}"
    buy = {"ticker": "AMD", "action": "buy", "qty": "2", "price": "150", "order_id": "Long"}
    with live.client() as http:
        first = http.post(url, json=buy)
        again = http.post(url, json={**buy, "price": "151"})  # the same order_id: a repeat
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json()["duplicate"] is True
        assert again.json()["signal"] == first.json()["signal"]
        other = http.post(url, json={**buy, "order_id": "Long2"})
        assert other.status_code == 200 and other.json()["duplicate"] is False
        bad = {"ticker": "AMD", "action": "buy", "qty": "x", "order_id": "bad"}
        refused, refused_again = http.post(url, json=bad), http.post(url, json=bad)
        assert (refused.status_code, refused_again.status_code) == (422, 422)
        details = refused_again.json()["error"]["details"]
        assert details["duplicate"] is True
        assert details["signal_id"] == refused.json()["error"]["details"]["signal_id"]
        # Without an order_id the body is the key: the same bytes are a repeat.
        plain = '{"ticker": "AMD", "action": "sell", "qty": "1", "price": "152"}'
        once = http.post(url, content=plain, headers={"Content-Type": "text/plain"})
        twice = http.post(url, content=plain, headers={"Content-Type": "text/plain"})
        assert (once.json()["duplicate"], twice.json()["duplicate"]) == (False, True)
        signals = http.get("/api/v1/signals", headers=trader.auth).json()
        assert len(signals) == 4
    assert positions(live, trader) == [("AMD", "long", "3")]


def test_passphrase_in_the_body_and_resting_order_types(live: LiveServer) -> None:
    trader = make_trader(live)
    with live.client() as http:
        limit = http.post(
            "/webhook",
            json={"passphrase": trader.webhook_key, "ticker": "TSLA", "side": "buy", "qty": 1,
                  "order_type": "limit", "limit_price": "200.5", "price": "210"},
        )  # fmt: skip
        assert limit.status_code == 200, limit.text
        signal = limit.json()["signal"]
        assert trader.webhook_key not in signal["raw_payload"]
        assert '"passphrase":"[redacted]"' in signal["raw_payload"]
        assert signal["content_type"] == "application/json"
        [order] = signal["outcome"]["orders"]
        assert order["status"] == "open"  # resting until a bar reaches 200.5
        stop = http.post(
            "/webhook",
            content=json.dumps({"key": trader.webhook_key, "ticker": "TSLA", "side": "sell",
                                "qty": 1, "order_type": "stop", "stop_price": "150"}),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )  # fmt: skip
        assert stop.status_code == 200, stop.text
        assert stop.json()["signal"]["order_type"] == "stop_loss"
        orders = http.get(
            "/api/v1/orders", params={"portfolio_id": trader.portfolio_id}, headers=trader.auth
        ).json()
        assert [(o["order_type"], o["status"], o["price"], o["trigger_price"]) for o in orders] == [
            ("stop_loss", "open", None, "150"),
            ("limit", "open", "200.5", None),
        ]


def test_hedging_opens_beside_and_closes_one_side(live: LiveServer) -> None:
    trader = make_trader(live)
    with live.client() as http:
        account = http.post(
            "/api/v1/accounts", json={"account_name": "hedge acct"}, headers=trader.auth
        )
        assert account.status_code == 201, account.text
        book = http.post(
            "/api/v1/portfolios",
            json={"account_id": account.json()["id"], "name": "hedged", "position_mode": "hedging"},
            headers=trader.auth,
        )
        assert book.status_code == 201, book.text
        pid = book.json()["id"]
        funded = http.post(
            f"/api/v1/portfolios/{pid}/deposits", json={"amount": "10000"}, headers=trader.auth
        )
        assert funded.status_code == 201
        hedged = {"ticker": "GLD", "hedging_enabled": True, "price": "100", "account": "hedge acct"}
        steps = [
            ({"side": "buy", "qty": "2"}, ("buy", "2")),
            ({"side": "sell", "qty": "1"}, ("sell", "1")),  # a short beside the long
            ({"side": "sell", "trade_action": "close"}, ("sell", "2")),  # closes the long
        ]
        for n, (extra, expected) in enumerate(steps):
            sent = http.post(
                f"/webhook/{trader.webhook_key}", json={**hedged, **extra, "order_id": f"h{n}"}
            )
            assert sent.status_code == 200, sent.text
            [order] = sent.json()["signal"]["outcome"]["orders"]
            assert order["portfolio_id"] == pid
            assert (order["side"], order["quantity"]) == expected
        rows = http.get(f"/api/v1/portfolios/{pid}/positions", headers=trader.auth).json()
        assert [(p["direction"], p["quantity"]) for p in rows] == [("short", "1")]


def test_portfolio_names_where_the_order_goes(live: LiveServer) -> None:
    trader = make_trader(live)
    with live.client() as http:
        made = http.post(
            "/api/v1/portfolios",
            json={"account_id": trader.account_id, "name": "swing"},
            headers=trader.auth,
        )
        assert made.status_code == 201, made.text
        swing = made.json()["id"]
        funded = http.post(
            f"/api/v1/portfolios/{swing}/deposits", json={"amount": "1000"}, headers=trader.auth
        )
        assert funded.status_code == 201
        signal = {"ticker": "PFX", "side": "buy", "qty": "1", "price": "10"}
        for n, name in enumerate(("swing", str(swing))):
            sent = http.post(
                f"/webhook/{trader.webhook_key}",
                json={**signal, "portfolio": name, "order_id": f"p{n}"},
            )
            assert sent.status_code == 200, sent.text
            [order] = sent.json()["signal"]["outcome"]["orders"]
            assert order["portfolio_id"] == swing
        default = http.post(f"/webhook/{trader.webhook_key}", json={**signal, "order_id": "p9"})
        assert default.json()["signal"]["outcome"]["orders"][0]["portfolio_id"] == (
            trader.portfolio_id
        )
        refusals = [
            ({"portfolio": "nope"}, "portfolio: account 'paper acct' has no active portfolio"),
            ({"portfolio": "swing", "strategy": "x"}, "send strategy or portfolio, not both"),
        ]
        for n, (extra, message) in enumerate(refusals):
            sent = http.post(
                f"/webhook/{trader.webhook_key}", json={**signal, **extra, "order_id": f"q{n}"}
            )
            assert sent.status_code == 422, sent.text
            assert message in sent.json()["error"]["message"]
        rows = http.get(f"/api/v1/portfolios/{swing}/positions", headers=trader.auth).json()
    assert [(p["symbol"], p["quantity"]) for p in rows] == [("PFX", "2")]


def test_a_webhook_waiting_for_a_connection_does_not_hold_the_server_up(live: LiveServer) -> None:
    # Every connection of the server's pool is taken: a webhook waits for one (in the
    # thread pool, not in the event loop), the server answers other requests meanwhile,
    # and the webhook is executed once a connection is free.
    trader = make_trader(live)
    engine = live.app.state.engines.engine(Database.main)
    held = [engine.connect() for _ in range(live.settings.pool_size + live.settings.max_overflow)]
    try:
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(
                _post,
                live,
                f"/webhook/{trader.webhook_key}",
                {"ticker": "WAIT", "side": "buy", "qty": "1", "price": "10", "order_id": "w1"},
            )
            time.sleep(0.5)
            started = time.monotonic()
            with live.client() as http:
                assert http.get("/openapi.json").status_code == 200
            assert time.monotonic() - started < 2.0
            assert not sent.done()  # still waiting for a connection
            for connection in held:
                connection.close()
            answer = sent.result(timeout=30)
    finally:
        for connection in held:
            connection.close()
    assert answer.status_code == 200, answer.text
    assert answer.json()["signal"]["status"] == "processed"
    assert ("WAIT", "long", "1") in positions(live, trader)


def _post(live: LiveServer, path: str, body: dict[str, str]) -> Any:
    with live.client() as http:
        return http.post(path, json=body)


def test_the_sender_is_kept_a_moment_and_changes_through_the_server_apply_at_once(
    live: LiveServer,
) -> None:
    from sqlalchemy import text

    trader = make_trader(live)
    body = {"ticker": "KEPT", "action": "buy", "qty": "1", "price": "10"}
    with live.client() as http:
        assert http.post(f"/webhook/{trader.webhook_key}", json=body).status_code == 200
        # Through the server: the kept sender is forgotten with the change.
        http.put(
            "/api/v1/signals/settings", json={"ip_allowlist": ["tradingview"]}, headers=trader.auth
        )
        assert http.post(f"/webhook/{trader.webhook_key}", json=body).status_code == 403
        http.put(
            "/api/v1/signals/settings", json={"ip_allowlist": ["127.0.0.1"]}, headers=trader.auth
        )
        assert http.post(f"/webhook/{trader.webhook_key}", json=body).status_code == 200
        made = http.post("/api/v1/signals/webhook-key", headers=trader.auth)
        new_key = made.json()["webhook_key"]
        assert http.post(f"/webhook/{trader.webhook_key}", json=body).status_code == 401
        assert http.post(f"/webhook/{new_key}", json=body).status_code == 200
        # Another process's change (a statement no session of this server saw): seen once
        # the kept sender expires.
        with live.engines.engine(Database.main).begin() as conn:
            conn.execute(
                text("UPDATE users SET is_active = :no WHERE id = :u"),
                {"no": False, "u": trader.user_id},
            )
        time.sleep(live.settings.signal_sender_cache_seconds + 0.2)
        gone = http.post(f"/webhook/{new_key}", json=body)
        assert gone.status_code == 401, gone.text


def test_a_sender_read_between_a_change_and_its_commit_is_not_kept(live: LiveServer) -> None:
    """A user deactivated in a unit of work: a webhook read after the flush but before the
    commit sees the committed (old) row; once committed, the key is refused at once."""
    from tradebase.accounts.models import User
    from tradebase.core.db import unit_of_work
    from tradebase.signals.service import signal as signal_service

    trader = make_trader(live)
    engine = live.engines.engine(Database.main)
    assert signal_service.cached_sender(engine, trader.webhook_key, 60) is not None
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
        user = session.get(User, trader.user_id)
        assert user is not None
        user.is_active = False
        session.flush()
        # Another request in the meantime (its own connection): the last commit's row.
        assert signal_service.cached_sender(engine, trader.webhook_key, 60) is not None
    assert signal_service.cached_sender(engine, trader.webhook_key, 60) is None
