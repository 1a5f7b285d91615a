"""The OpenAlgo adapter against Tradebase's own OpenAlgo facade, on a live server: a round
trip per endpoint, checked against hand-worked values and OpenAlgo's payload shapes
(docs.openalgo.in, api-documentation/v1), the error shape included."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.accounts.helpers import make_key, make_user
from tests.conftest import LiveServer
from tests.signals.helpers import make_trader
from tradebase.brokers.base import OrderRequest
from tradebase.brokers.errors import BrokerRefused, BrokerUnreachable
from tradebase.brokers.openalgo import OpenAlgoBroker
from tradebase.core.db import Database, unit_of_work
from tradebase.portfolios.models import Holding

D = Decimal
EX = "CRYPTO"  # 24/7 in the seeded calendars: the test runs at any hour

ORDER_FIELDS = {
    "action", "symbol", "exchange", "orderid", "product", "quantity", "price", "pricetype",
    "order_status", "trigger_price", "timestamp", "average_price",
}  # fmt: skip


def raw(live: LiveServer, endpoint: str, body: dict[str, Any]) -> httpx.Response:
    with live.client() as http:
        return http.post(f"/openalgo/api/v1/{endpoint}", json=body)


def buy(symbol: str, quantity: str, price: str, **extra: Any) -> OrderRequest:
    return OrderRequest(symbol, EX, "buy", D(quantity), price=D(price), **extra)


def assert_openalgo_error(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == "error" and isinstance(body["message"], str) and body["message"]


def test_a_round_trip_per_endpoint(live: LiveServer) -> None:
    trader = make_trader(live, cash="100000")
    key = trader.key
    broker = OpenAlgoBroker(f"{live.url}/openalgo", key, timeout=10)
    with broker:
        # funds before trading
        funds = broker.funds()
        assert (funds.available_cash, funds.realized, funds.unrealized, funds.utilised) == (
            D(100000),
            0,
            0,
            0,
        )
        # placeorder MARKET with a price hint: fills at 100 (no fee, no slippage)
        first = broker.place_order(buy("BTC", "10", "100", client_order_id="rt-1"))
        status = broker.order_status(first)
        assert (status.status, status.average_price, status.quantity) == ("filled", D(100), D(10))
        assert status.client_order_id == "rt-1" and status.order_type == "market"
        # the same client_order_id again: the same orderid, nothing placed
        assert broker.place_order(buy("BTC", "10", "100", client_order_id="rt-1")) == first
        assert len(broker.orderbook()) == 1
        found = broker.find_by_client_order_id("rt-1")
        assert found is not None and found.order_id == first
        assert broker.find_by_client_order_id("rt-none") is None
        # placesmartorder: from +10 to +20 buys 10 at 110; at +20 already, nothing
        smart = broker.place_smart_order(buy("BTC", "1", "110"), D(20))
        assert smart is not None and broker.order_status(smart).quantity == D(10)
        assert broker.place_smart_order(buy("BTC", "1", "110"), D(20)) is None
        # a LIMIT rests (open), cancelorder cancels it
        limit = broker.place_order(
            OrderRequest("BTC", EX, "buy", D(5), order_type="limit", price=D(90))
        )
        assert broker.order_status(limit).status == "open"
        assert broker.cancel_order(limit) == limit
        assert broker.order_status(limit).status == "cancelled"
        # SL (stop_limit) and SL-M (stop_loss) rest with their trigger
        sl = broker.place_order(
            OrderRequest(
                "BTC", EX, "sell", D(2), order_type="stop_limit", price=D(80), trigger_price=D(85)
            )
        )
        slm = broker.place_order(
            OrderRequest("BTC", EX, "sell", D(2), order_type="stop_loss", trigger_price=D(84))
        )
        sl_status, slm_status = broker.order_status(sl), broker.order_status(slm)
        assert (sl_status.order_type, sl_status.price, sl_status.trigger_price) == (
            "stop_limit",
            D(80),
            D(85),
        )
        assert (slm_status.order_type, slm_status.trigger_price) == ("stop_loss", D(84))
        broker.cancel_order(sl)
        broker.cancel_order(slm)
        # sell 5 at 120: realized 5 x (120 - 105) = 75
        sell = broker.place_order(OrderRequest("BTC", EX, "sell", D(5), price=D(120)))
        assert broker.order_status(sell).status == "filled"
        # tradebook: one row per fill
        trades = broker.tradebook()
        assert [
            (t.order_id, t.side, t.quantity, t.average_price, t.trade_value) for t in trades
        ] == [
            (first, "buy", D(10), D(100), D(1000)),
            (smart, "buy", D(10), D(110), D(1100)),
            (sell, "sell", D(5), D(120), D(600)),
        ]
        # positionbook: +15 at 105
        (position,) = broker.positions()
        assert (position.symbol, position.product, position.quantity, position.average_price) == (
            "BTC",
            "MIS",
            D(15),
            D(105),
        )
        # marked at the last fill, 120: unrealized 15 x (120 - 105) = 225, plus realized 75
        assert (position.ltp, position.pnl) == (D(120), D(300))
        # funds: 100000 - 1000 - 1100 + 600 = 98500; open cost 15 x 105 = 1575
        funds = broker.funds()
        assert (funds.available_cash, funds.realized, funds.unrealized, funds.utilised) == (
            D(98500),
            D(75),
            D(225),
            D(1575),
        )
        # orderbook: every order, oldest first
        book = broker.orderbook()
        assert [o.order_id for o in book] == [first, smart, limit, sl, slm, sell]
        assert [o.status for o in book] == [
            "filled",
            "filled",
            "cancelled",
            "cancelled",
            "cancelled",
            "filled",
        ]
        # holdings: a settled CNC holding (written directly: settlement needs a day's close)
        with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
            session.add(
                Holding(
                    portfolio_id=trader.portfolio_id,
                    symbol="ETH",
                    exchange=EX,
                    quantity=D(3),
                    average_price=D(50),
                    current_price=D(60),
                    pnl=D(30),
                    pnl_percent=D(20),
                    invested_value=D(150),
                    current_value=D(180),
                )
            )
        (holding,) = broker.holdings()
        assert (holding.symbol, holding.quantity, holding.pnl, holding.pnl_percent) == (
            "ETH",
            D(3),
            D(30),
            D(20),
        )
        assert broker.health().ok

    # The payloads have OpenAlgo's shapes.
    base = {"apikey": key}
    placed = raw(live, "placeorder", {**base, "strategy": "s", "exchange": EX, "symbol": "BTC",
                 "action": "BUY", "quantity": "1", "pricetype": "MARKET", "product": "MIS",
                 "price": "100", "trigger_price": "0", "disclosed_quantity": "0"})  # fmt: skip
    assert placed.status_code == 200 and set(placed.json()) == {"status", "orderid"}
    assert placed.json()["status"] == "success"
    status_body = raw(live, "orderstatus", {**base, "orderid": placed.json()["orderid"]}).json()
    assert status_body["status"] == "success" and set(status_body["data"]) >= ORDER_FIELDS
    assert status_body["data"]["order_status"] == "complete"
    book_body = raw(live, "orderbook", base).json()["data"]
    assert set(book_body["orders"][0]) >= ORDER_FIELDS
    assert set(book_body["statistics"]) == {
        "total_buy_orders", "total_sell_orders", "total_completed_orders",
        "total_open_orders", "total_rejected_orders",
    }  # fmt: skip
    assert book_body["statistics"]["total_completed_orders"] == 4
    assert set(raw(live, "tradebook", base).json()["data"][0]) == {
        "action", "symbol", "exchange", "orderid", "product", "quantity", "average_price",
        "timestamp", "trade_value",
    }  # fmt: skip
    assert set(raw(live, "positionbook", base).json()["data"][0]) == {
        "symbol", "exchange", "product", "quantity", "average_price", "ltp", "pnl",
    }  # fmt: skip
    holdings_body = raw(live, "holdings", base).json()["data"]
    assert set(holdings_body["holdings"][0]) >= {"symbol", "exchange", "product", "quantity",
                                                 "pnl", "pnlpercent"}  # fmt: skip
    assert holdings_body["statistics"] == {
        "totalholdingvalue": "180", "totalinvvalue": "150", "totalprofitandloss": "30",
        "totalpnlpercentage": "20",
    }  # fmt: skip
    assert set(raw(live, "funds", base).json()["data"]) == {
        "availablecash", "collateral", "m2mrealized", "m2munrealized", "utiliseddebits",
    }  # fmt: skip
    cancelled = raw(live, "cancelorder", {**base, "orderid": str(limit)}).json()
    assert cancelled == {"status": "success", "orderid": str(limit)}


def test_errors_have_openalgo_shape_on_both_sides(live: LiveServer) -> None:
    trader = make_trader(live)
    broker = OpenAlgoBroker(f"{live.url}/openalgo", trader.key, timeout=10)
    good = {"apikey": trader.key, "strategy": "s", "exchange": EX, "symbol": "BTC",
            "action": "BUY", "quantity": "1", "price": "100"}  # fmt: skip
    # bad input: 400, naming the field
    answer = raw(live, "placeorder", {**good, "action": "HOLD"})
    assert_openalgo_error(answer, 400)
    assert answer.json()["message"].startswith("action")
    assert_openalgo_error(raw(live, "placeorder", {**good, "quantity": "-1"}), 400)
    assert_openalgo_error(raw(live, "placeorder", {**good, "pricetype": "FOK"}), 400)
    with live.client() as http:
        assert_openalgo_error(
            http.post(
                "/openalgo/api/v1/funds",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
        )
    assert_openalgo_error(raw(live, "funds", {}), 400)
    # a wrong key: 403, as OpenAlgo answers
    assert_openalgo_error(raw(live, "funds", {"apikey": "tb_nope"}), 403)
    # no such order: 404; a filled order cannot be cancelled: 409
    assert_openalgo_error(
        raw(live, "orderstatus", {"apikey": trader.key, "orderid": "999999"}), 404
    )
    filled = raw(live, "placeorder", good).json()["orderid"]
    assert_openalgo_error(raw(live, "cancelorder", {"apikey": trader.key, "orderid": filled}), 409)
    # refused by the paper broker (no price, no bars): 422, the order kept as rejected
    answer = raw(live, "placeorder", {**good, "symbol": "NOPRICE", "price": "0"})
    assert_openalgo_error(answer, 422)
    assert "orderid" in answer.json()
    # the adapter maps each to BrokerRefused with the broker's message
    with broker:
        with pytest.raises(BrokerRefused, match="no price"):
            broker.place_order(OrderRequest("NOPRICE", EX, "buy", D(1)))
        with pytest.raises(BrokerRefused, match="no order"):
            broker.order_status("999999")
    with OpenAlgoBroker(f"{live.url}/openalgo", "tb_wrong", timeout=10) as wrong:
        with pytest.raises(BrokerRefused):
            wrong.funds()
        assert not wrong.health().ok
    # a key without write:orders may read but not place
    person = make_user(live)
    _, reader = make_key(live, person, scopes=["read:orders", "read:portfolio"])
    assert_openalgo_error(raw(live, "placeorder", {**good, "apikey": reader}), 403)


def test_an_unreachable_broker_is_told_apart_from_a_refusal() -> None:
    from tests.conftest import free_port

    with OpenAlgoBroker(f"http://127.0.0.1:{free_port()}", "tb_x", timeout=1) as broker:
        with pytest.raises(BrokerUnreachable) as caught:
            broker.place_order(OrderRequest("BTC", EX, "buy", D(1)))
        assert caught.value.maybe_sent is False
        assert not broker.health().ok
