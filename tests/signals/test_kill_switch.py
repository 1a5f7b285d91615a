"""The kill switch pauses all of a user's trading: signals, direct orders and mirrored
orders are refused (409) and nothing is written; resuming lets them through again."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.accounts.helpers import assert_error_shape
from tests.conftest import LiveServer
from tests.signals.helpers import make_trader
from tradebase.core.db import Database, unit_of_work
from tradebase.orders.models import Order


def test_paused_means_no_trading_at_all(live: LiveServer) -> None:
    trader = make_trader(live)
    order = {"portfolio_id": trader.portfolio_id, "symbol": "ACME", "side": "buy",
             "quantity": "1", "price": "10"}  # fmt: skip
    mirrored = {"symbol": "ACME", "side": "buy", "quantity": "1", "price": "10"}

    def orders() -> int:
        with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Order).where(Order.user_id == trader.user_id)
                )
                or 0
            )

    with live.client() as http:
        paused = http.put("/api/v1/signals/settings", json={"paused": True}, headers=trader.auth)
        assert paused.status_code == 200, paused.text
        for path, body in (("/api/v1/orders", order), ("/api/v1/mirror-orders", mirrored)):
            refused = http.post(path, json=body, headers=trader.auth)
            assert refused.status_code == 409, (path, refused.text)
            assert_error_shape(refused.json(), 409)
            assert refused.json()["error"]["code"] == "trading_paused"
            assert "trading is paused for" in refused.json()["error"]["message"]
        signal = http.post(
            f"/webhook/{trader.webhook_key}",
            json={"ticker": "ACME", "action": "buy", "qty": "1", "price": "10"},
        )
        assert signal.status_code == 409, signal.text
        assert orders() == 0
        resumed = http.put("/api/v1/signals/settings", json={"paused": False}, headers=trader.auth)
        assert resumed.status_code == 200
        placed = http.post("/api/v1/orders", json=order, headers=trader.auth)
        assert placed.status_code == 201, placed.text
        assert (
            http.post("/api/v1/mirror-orders", json=mirrored, headers=trader.auth).status_code
            == 201
        )
        assert orders() == 2
