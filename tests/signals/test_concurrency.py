"""The same TradingView alert sent 100 times at once: one signal, one order, one fill."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.signals.helpers import make_trader, positions


def test_one_alert_sent_100_times_concurrently(live: LiveServer) -> None:
    trader = make_trader(live)
    body = (
        '{"symbol": "NVDA", "action": "buy", "quantity": "5", "order_id": "Long",'
        ' "position_size": "5", "price": "120"}'
    )
    start = threading.Barrier(100)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            start.wait()
            return http.post(
                f"/webhook/{trader.webhook_key}",
                content=body,
                headers={"Content-Type": "text/plain"},
            )

    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(send, range(100)))
    # How long the slowest of them waits (TradingView gives up after 3 seconds) is measured
    # by bench/bench_burst.py, with the server in a process of its own: here 100 client
    # threads and the server share one interpreter, and the machine the suite.
    assert [a.status_code for a in answers] == [200] * 100, {a.text for a in answers}
    signals = {a.json()["signal"]["id"] for a in answers}
    assert len(signals) == 1
    firsts = [a for a in answers if not a.json()["duplicate"]]
    assert len(firsts) == 1
    outcomes = {str(a.json()["signal"]["outcome"]) for a in answers}
    assert len(outcomes) == 1  # the 99 repeats answer with the first one's outcome
    [order] = firsts[0].json()["signal"]["outcome"]["orders"]
    assert (order["side"], order["quantity"], order["status"]) == ("buy", "5", "filled")
    with live.client() as http:
        listed = http.get("/api/v1/signals", headers=trader.auth).json()
        assert [s["id"] for s in listed] == list(signals)
        orders = http.get(
            "/api/v1/orders", params={"portfolio_id": trader.portfolio_id}, headers=trader.auth
        ).json()
        assert [o["id"] for o in orders] == [order["id"]]
        trades = http.get(
            f"/api/v1/portfolios/{trader.portfolio_id}/trades", headers=trader.auth
        ).json()
        assert [(t["order_id"], t["quantity"], t["price"]) for t in trades] == [
            (order["id"], "5", "120")
        ]
    assert positions(live, trader) == [("NVDA", "long", "5")]


def test_concurrent_targets_move_the_position_once(live: LiveServer) -> None:
    """Ten different signals at once, each asking for a position of 5: the first buys 5,
    the others find the target reached (the portfolio lock orders them)."""
    trader = make_trader(live)
    start = threading.Barrier(10)

    def send(n: int) -> httpx.Response:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            start.wait()
            return http.post(
                f"/webhook/{trader.webhook_key}",
                json={"ticker": "AVAX", "position_size": "5", "price": "30", "order_id": f"t{n}"},
            )

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(send, range(10)))
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    orders = [o for a in answers for o in a.json()["signal"]["outcome"]["orders"]]
    assert [(o["side"], o["quantity"]) for o in orders] == [("buy", "5")]
    assert positions(live, trader) == [("AVAX", "long", "5")]


def test_copies_reaching_one_process_follow_the_first_in_memory(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 copies of one alert at once, then one more: the first is stored, the others are
    told from the keys this process holds (no INSERT that fails, no deadlock among them on
    MariaDB), and all answer with the first one's outcome."""
    from tradebase.signals import fast
    from tradebase.signals.service import SignalRow, SignalService

    trader = make_trader(live)
    stored: list[str] = []
    store = SignalService.store

    def counted(self: SignalService, session: Any, row: SignalRow) -> Any:
        if row.values["user_id"] == trader.user_id:
            stored.append(str(row.values["sender_order_id"]))
        return store(self, session, row)

    store_all = fast.store_all

    def counted_all(session: Any, rows: list[SignalRow]) -> Any:  # a group's at once
        stored.extend(
            str(row.values["sender_order_id"])
            for row in rows
            if row.values["user_id"] == trader.user_id
        )
        return store_all(session, rows)

    monkeypatch.setattr(SignalService, "store", counted)
    monkeypatch.setattr(fast, "store_all", counted_all)
    body = {"ticker": "SOL", "action": "buy", "qty": "2", "price": "150", "order_id": "burst"}
    start = threading.Barrier(30)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            start.wait()
            return http.post(f"/webhook/{trader.webhook_key}", json=body)

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(send, range(30)))
    with live.client() as http:
        answers.append(http.post(f"/webhook/{trader.webhook_key}", json=body))
    assert [a.status_code for a in answers] == [200] * 31, {a.text for a in answers}
    assert len({a.json()["signal"]["id"] for a in answers}) == 1
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 30
    assert {str(a.json()["signal"]["outcome"]) for a in answers} == {
        str(answers[0].json()["signal"]["outcome"])
    }
    assert stored == ["burst"]  # one INSERT of the signal
    assert positions(live, trader) == [("SOL", "long", "2")]
