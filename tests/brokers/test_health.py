"""Broker health: checks set connection_status and last_connected (REST, the job's
check_all, the CLI), and orders an outage left pending are settled once the broker
answers: found there, recorded; fresh, sent now; stale, rejected, never sent late."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from typer.testing import CliRunner

from tests.conftest import LiveServer
from tests.signals.helpers import Trader, make_trader
from tradebase.accounts.models import User
from tradebase.accounts.service import principal_for
from tradebase.brokers.service import broker as broker_service
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core.db import Database, unit_of_work
from tradebase.core.time import utc_now
from tradebase.orders.models import Order
from tradebase.orders.service import order as order_service


def _live_account(live: LiveServer, desk: Trader, trader: Trader, key: str) -> tuple[int, int]:
    with live.client() as http:
        account = http.post(
            "/api/v1/accounts",
            json={
                "account_name": f"live {key[-6:]}",
                "broker": "openalgo",
                "host_url": f"{live.url}/openalgo",
                "api_key": key,
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
    return account["id"], pid


def _health(live: LiveServer, trader: Trader, account_id: int) -> dict[str, Any]:
    with live.client() as http:
        return dict(http.get(f"/api/v1/accounts/{account_id}/health", headers=trader.auth).json())


def test_checks_set_connection_status(live: LiveServer) -> None:
    desk, trader = make_trader(live), make_trader(live)
    good, _ = _live_account(live, desk, trader, desk.key)
    bad, _ = _live_account(live, desk, trader, "tb_not_a_valid_key_000000")
    assert _health(live, trader, good)["connection_status"] == "disconnected"  # until checked
    before = utc_now()
    reports = {r.account_id: r for r in broker_service.check_all(live.engines)}
    assert reports[good].connection_status == "connected"
    assert reports[bad].connection_status == "disconnected" and "refused" in reports[bad].detail
    seen = _health(live, trader, good)
    assert seen["connection_status"] == "connected" and seen["last_connected"] >= before.isoformat()
    assert _health(live, trader, bad)["last_connected"] is None
    with live.client() as http:
        checked = http.post(f"/api/v1/accounts/{bad}/health/check", headers=trader.auth).json()
    assert checked["connection_status"] == "disconnected" and checked["detail"]
    # the CLI: one account, exit 0 when connected, 1 when not
    env = live.env()
    get_settings.cache_clear()
    try:
        ok = CliRunner().invoke(app, ["brokers", "check", "--account", str(good)], env=env)
        failed = CliRunner().invoke(app, ["brokers", "check", "--account", str(bad)], env=env)
    finally:
        get_settings.cache_clear()
    assert ok.exit_code == 0, ok.output
    assert "connected" in ok.output
    assert failed.exit_code == 1, failed.output


def test_pending_orders_are_settled_when_the_broker_answers(live: LiveServer) -> None:
    desk, trader = make_trader(live), make_trader(live)
    account_id, pid = _live_account(live, desk, trader, desk.key)
    factory = live.engines.session_factory(Database.main)
    # Three orders stored but never sent (as an outage or a dead process leaves them).
    with unit_of_work(factory=factory) as session:
        user = session.get(User, trader.user_id)
        assert user is not None
        ids = {}
        for coid in ("p-found", "p-fresh", "p-stale"):
            order = order_service.place(
                session, principal_for(user), portfolio_id=pid, symbol="BTC", exchange="CRYPTO",
                side="buy", quantity=Decimal(1), price=Decimal(100), client_order_id=coid,
            )  # fmt: skip
            assert order.status == "pending"
            ids[coid] = order.id
        now = utc_now()
        for coid, age in (("p-found", 20), ("p-fresh", 20), ("p-stale", 600)):
            session.execute(
                update(Order)
                .where(Order.id == ids[coid])
                .values(created_at=now - timedelta(seconds=age))
            )
    # "p-found" did reach the broker before the outage.
    with live.client() as http:
        at_desk = http.post(
            "/openalgo/api/v1/placeorder",
            json={
                "apikey": desk.key,
                "exchange": "CRYPTO",
                "symbol": "BTC",
                "action": "BUY",
                "quantity": "1",
                "price": "100",
                "client_order_id": "p-found",
            },
        ).json()["orderid"]
        checked = http.post(f"/api/v1/accounts/{account_id}/health/check", headers=trader.auth)
        assert checked.json()["connection_status"] == "connected"
        orders = {
            coid: http.get(f"/api/v1/orders/{oid}", headers=trader.auth).json()
            for coid, oid in ids.items()
        }
        book = http.post("/openalgo/api/v1/orderbook", json={"apikey": desk.key}).json()
    assert (orders["p-found"]["status"], orders["p-found"]["exchange_order_id"]) == (
        "filled", at_desk
    )  # fmt: skip
    assert orders["p-fresh"]["status"] == "filled"
    assert orders["p-stale"]["status"] == "rejected"
    assert "never received" in orders["p-stale"]["reject_reason"]
    at_broker = [row["client_order_id"] for row in book["data"]["orders"]]
    assert sorted(at_broker) == ["p-found", "p-fresh"]  # each once; the stale one never sent


def test_the_job_syncs_an_open_order_that_filled_at_the_broker(live: LiveServer) -> None:
    from tests.accounts.helpers import bearer, make_key, make_user

    desk, trader = make_trader(live), make_trader(live)
    account_id, pid = _live_account(live, desk, trader, desk.key)
    _, admin_key = make_key(live, make_user(live, role="admin"))
    with live.client() as http:
        http.post(f"/api/v1/accounts/{account_id}/health/check", headers=trader.auth)
        order = http.post(
            "/api/v1/orders",
            json={"portfolio_id": pid, "symbol": "SYNC", "exchange": "CRYPTO", "side": "buy",
                  "quantity": "2", "order_type": "limit", "price": "9.5"},
            headers=trader.auth,
        ).json()  # fmt: skip
        assert order["status"] == "open", order
        # A bar at the broker reaches the limit: the desk's order fills there at 9.5.
        bars = {"symbol": "SYNC", "exchange": "CRYPTO", "bars": [
            {"timestamp": "2026-11-23T15:00:00Z", "open": "10", "high": "11", "low": "9",
             "close": "10.5", "volume": "50"}]}  # fmt: skip
        posted = http.post("/api/v1/prices", json=bars, headers=bearer(admin_key))
        assert posted.status_code == 201 and posted.json()["fills"] == 1, posted.text
        still = http.get(f"/api/v1/orders/{order['id']}", headers=trader.auth).json()
        assert still["status"] == "open"  # this side learns it from the broker
    broker_service.check_all(live.engines)
    with live.client() as http:
        synced = http.get(f"/api/v1/orders/{order['id']}", headers=trader.auth).json()
        trades = http.get(f"/api/v1/portfolios/{pid}/trades", headers=trader.auth).json()
    assert (synced["status"], synced["average_fill_price"]) == ("filled", "9.5")
    assert [(t["quantity"], t["price"]) for t in trades] == [("2", "9.5")]
    broker_service.check_all(live.engines)  # again: nothing moves twice
    with live.client() as http:
        assert len(http.get(f"/api/v1/portfolios/{pid}/trades", headers=trader.auth).json()) == 1
