"""A signal stored but not executed (the process died in between) is executed once when
the server starts again, and a second recovery places nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.conftest import LiveServer
from tests.signals.helpers import make_trader, positions
from tradebase.app import create_app
from tradebase.core.db import Database, unit_of_work
from tradebase.orders.models import Order
from tradebase.signals.models import Signal
from tradebase.signals.service import recover
from tradebase.signals.service import signal as signal_service


def test_a_stored_signal_is_executed_once_on_recovery(live: LiveServer) -> None:
    trader = make_trader(live)
    factory = live.engines.session_factory(Database.main)
    with unit_of_work(factory=factory) as session:  # stored, then the process "died"
        stored = signal_service.receive(
            session,
            user_id=trader.user_id,
            raw=b'{"ticker": "SOL", "side": "sell", "contracts": "2", "price": "150"}',
            content_type="application/json",
            source_ip="52.89.214.238",
            source="webhook",
            settings=live.settings,
        )
        signal_id = stored.id
    assert stored.status == "received"
    with live.client() as http:  # the inbox shows it as received meanwhile
        shown = http.get(f"/api/v1/signals/{signal_id}", headers=trader.auth).json()
        assert (shown["status"], shown["outcome"]) == ("received", None)

    from fastapi.testclient import TestClient

    with TestClient(create_app(live.settings)):  # startup: the lifespan recovers it
        pass
    assert recover(factory, live.settings) == 0  # nothing left: no second execution
    with unit_of_work(factory=factory, write=False) as session:
        row = session.get(Signal, signal_id)
        assert row is not None and row.status == "processed"
        assert row.outcome is not None
        [order] = row.outcome["orders"]
        assert order["client_order_id"] == f"signal-{signal_id}-{trader.account_id}-0"
        placed = session.scalar(select(func.count(Order.id)).where(Order.signal_id == signal_id))
        assert placed == 1
    assert positions(live, trader) == [("SOL", "short", "2")]


def test_tradebase_signals_recover(live: LiveServer) -> None:
    from typer.testing import CliRunner

    from tradebase.cli import app
    from tradebase.config import get_settings

    trader = make_trader(live)
    factory = live.engines.session_factory(Database.main)
    recover(factory, live.settings)  # what earlier tests on this shared database left
    with unit_of_work(factory=factory) as session:
        stored = signal_service.receive(
            session,
            user_id=trader.user_id,
            raw=b'{"ticker": "ADA", "side": "buy", "qty": "10", "price": "0.5"}',
            content_type="text/plain",
            source_ip=None,
            source="api",
            settings=live.settings,
        )
    from tradebase.core.db import engines

    env = live.env()
    get_settings.cache_clear()
    engines.dispose()  # the process's engines may be another test's database's still
    try:
        first = CliRunner().invoke(app, ["signals", "recover"], env=env)
        assert first.exit_code == 0, first.output
        assert first.output.strip() == "1 pending signal(s) executed"
        again = CliRunner().invoke(app, ["signals", "recover"], env=env)
        assert again.output.strip() == "0 pending signal(s) executed"
    finally:
        get_settings.cache_clear()
        engines.dispose()
    with unit_of_work(factory=factory, write=False) as session:
        row = session.get(Signal, stored.id)
        assert row is not None and row.status == "processed"
    assert positions(live, trader) == [("ADA", "long", "10")]


def test_a_crash_while_executing_is_kept_as_failed(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tradebase.portfolios import pnl

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the broker adapter fell over")

    trader = make_trader(live)
    recover(live.engines.session_factory(Database.main), live.settings)  # earlier tests' rows
    # A fault injected, not a stand-in: the P&L step, which the services and the fast lane
    # (signals/fast.py) both take.
    monkeypatch.setattr(pnl, "apply_netting", broken)
    with live.client() as http:
        sent = http.post(
            f"/webhook/{trader.webhook_key}",
            json={"ticker": "DOT", "side": "buy", "qty": 1, "price": 5, "order_id": "f"},
        )
        assert sent.status_code == 500
        error = sent.json()["error"]
        assert error["code"] == "signal_failed"
        assert error["message"] == "executing the signal failed; the server log has the details"
        stored = http.get(
            f"/api/v1/signals/{error['details']['signal_id']}", headers=trader.auth
        ).json()
    assert stored["status"] == "failed"
    assert stored["error"] == "RuntimeError: the broker adapter fell over"
    assert recover(live.engines.session_factory(Database.main), live.settings) == 0
