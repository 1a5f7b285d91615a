"""The OpenAlgo REST API: the adapter that speaks it, and the vocabulary both sides share.

OpenAlgo (https://docs.openalgo.in/api-documentation/v1/) takes every call as a POST of a
JSON body carrying ``apikey`` to ``<host>/api/v1/<endpoint>``; it answers
``{"status": "success", ...}`` or ``{"status": "error", "message": ...}``. Tradebase's
facade (brokers/facade.py) serves the same API under ``/openalgo``, so an account whose
``host_url`` is ``http://other-tradebase:8000/openalgo`` trades on that server.

Amounts are read with `Decimal(str(x))`, so a broker that sends JSON numbers (OpenAlgo's
orderstatus) and one that sends strings (its funds, Tradebase's facade) read the same.

The extra request field ``client_order_id`` carries Tradebase's deterministic id; a
broker that echoes it in its orderbook (Tradebase's facade does) lets
`find_by_client_order_id` find an order whose answer was lost. A broker that does not
echo it never matches, so for such a broker a timed-out order is not failed over
automatically unless it is certain the request never left (see brokers/service.py).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from tradebase.brokers.base import (
    BrokerFunds,
    BrokerHolding,
    BrokerOrder,
    BrokerPosition,
    BrokerTrade,
    Health,
    OrderRequest,
)
from tradebase.brokers.errors import BrokerRefused, BrokerTimeout, BrokerUnreachable

# Tradebase order type <-> OpenAlgo pricetype (DESIGN §4: SL is stop_limit, SL-M stop_loss).
PRICETYPE_OF = {"market": "MARKET", "limit": "LIMIT", "stop_limit": "SL", "stop_loss": "SL-M"}
ORDER_TYPE_OF = {v: k for k, v in PRICETYPE_OF.items()} | {"SLM": "stop_loss"}
ACTION_OF = {"buy": "BUY", "sell": "SELL"}
SIDE_OF = {v: k for k, v in ACTION_OF.items()}
# Tradebase order status -> OpenAlgo order_status, and back.
ORDER_STATUS_OF = {
    "pending": "pending",
    "open": "open",
    "partially_filled": "open",
    "filled": "complete",
    "cancelled": "cancelled",
    "expired": "cancelled",
    "rejected": "rejected",
}
STATUS_OF = {
    "complete": "filled",
    "open": "open",
    "pending": "pending",
    "trigger pending": "open",
    "cancelled": "cancelled",
    "rejected": "rejected",
}

ZERO = Decimal(0)


def number(value: Any, *, field: str = "value") -> Decimal:
    """A broker's amount as a Decimal: JSON numbers and strings alike; None and "" are 0."""
    if value is None or value == "":
        return ZERO
    if isinstance(value, bool):
        raise ValueError(f"{field}: not a number: {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{field}: not a number: {value!r}") from None


def _optional(value: Any) -> Decimal | None:
    amount = number(value)
    return amount if amount else None


class OpenAlgoBroker:
    """An account on an OpenAlgo (or Tradebase facade) host, reached over HTTP."""

    name = "openalgo"

    def __init__(
        self,
        host_url: str,
        apikey: str,
        *,
        timeout: float = 3.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base = host_url.rstrip("/") + "/api/v1/"
        self.apikey = apikey
        self.timeout = timeout
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAlgoBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the wire -------------------------------------------------------------------

    def call(self, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST *body* (plus the apikey) to *endpoint*; the answer of a success, else
        `BrokerRefused` with the broker's message or `BrokerUnreachable`."""
        url = self.base + endpoint
        payload = {"apikey": self.apikey, **(body or {})}
        try:
            answer = self._client.post(url, json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise BrokerUnreachable(
                f"broker at {self.base} refused the connection: {type(exc).__name__}",
                maybe_sent=False,
                details={"endpoint": endpoint},
            ) from None
        except httpx.TimeoutException as exc:  # read, write or pool: it may have arrived
            raise BrokerTimeout(
                f"broker at {self.base} did not answer {endpoint} within {self.timeout} s"
                f" ({type(exc).__name__})",
                maybe_sent=True,
                details={"endpoint": endpoint},
            ) from None
        except httpx.HTTPError as exc:  # a broken connection, a protocol error
            raise BrokerUnreachable(
                f"broker at {self.base} did not answer {endpoint}: {type(exc).__name__}",
                maybe_sent=True,
                details={"endpoint": endpoint},
            ) from None
        try:
            data = answer.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise BrokerUnreachable(
                f"broker at {self.base} answered {endpoint} with HTTP {answer.status_code}"
                " and no JSON",
                maybe_sent=True,
                details={"endpoint": endpoint, "http_status": answer.status_code},
            )
        if data.get("status") == "success" and answer.status_code < 400:
            return data
        message = str(data.get("message") or f"HTTP {answer.status_code}")
        if answer.status_code >= 500:
            raise BrokerUnreachable(
                f"broker failed on {endpoint}: {message}",
                maybe_sent=True,
                details={"endpoint": endpoint, "http_status": answer.status_code},
            )
        raise BrokerRefused(
            f"broker refused {endpoint}: {message}",
            details={"endpoint": endpoint, "http_status": answer.status_code, "broker": data},
        )

    # --- orders ---------------------------------------------------------------------

    def _order_body(self, order: OrderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "strategy": order.strategy,
            "exchange": order.exchange,
            "symbol": order.symbol,
            "action": ACTION_OF[order.side],
            "quantity": str(order.quantity),
            "pricetype": PRICETYPE_OF[order.order_type],
            "product": order.product,
            "price": str(order.price) if order.price is not None else "0",
            "trigger_price": str(order.trigger_price) if order.trigger_price is not None else "0",
            "disclosed_quantity": str(order.disclosed_quantity or 0),
        }
        if order.client_order_id is not None:
            body["client_order_id"] = order.client_order_id
        return body

    def place_order(self, order: OrderRequest) -> str:
        answer = self.call("placeorder", self._order_body(order))
        return str(answer["orderid"])

    def place_smart_order(self, order: OrderRequest, position_size: Decimal) -> str | None:
        body = self._order_body(order) | {"position_size": str(position_size)}
        answer = self.call("placesmartorder", body)
        orderid = answer.get("orderid")
        return None if orderid in (None, "") else str(orderid)

    def cancel_order(self, order_id: str) -> str:
        answer = self.call("cancelorder", {"orderid": order_id, "strategy": "Tradebase"})
        return str(answer.get("orderid", order_id))

    def order_status(self, order_id: str) -> BrokerOrder:
        answer = self.call("orderstatus", {"orderid": order_id, "strategy": "Tradebase"})
        return _order(answer["data"])

    def orderbook(self) -> list[BrokerOrder]:
        data = self.call("orderbook")["data"]
        rows = data.get("orders", []) if isinstance(data, dict) else data
        return [_order(row) for row in rows or []]

    def tradebook(self) -> list[BrokerTrade]:
        return [
            BrokerTrade(
                order_id=str(row["orderid"]),
                symbol=row["symbol"],
                exchange=row["exchange"],
                side=SIDE_OF[row["action"]],
                product=row["product"],
                quantity=number(row.get("quantity")),
                average_price=number(row.get("average_price")),
                trade_value=number(row.get("trade_value")),
                timestamp=row.get("timestamp"),
            )
            for row in self.call("tradebook")["data"] or []
        ]

    def positions(self) -> list[BrokerPosition]:
        return [
            BrokerPosition(
                symbol=row["symbol"],
                exchange=row["exchange"],
                product=row["product"],
                quantity=number(row.get("quantity")),
                average_price=number(row.get("average_price")),
                ltp=number(row.get("ltp")),
                pnl=number(row.get("pnl")),
            )
            for row in self.call("positionbook")["data"] or []
        ]

    def holdings(self) -> list[BrokerHolding]:
        data = self.call("holdings")["data"] or {}
        return [
            BrokerHolding(
                symbol=row["symbol"],
                exchange=row["exchange"],
                product=row.get("product", "CNC"),
                quantity=number(row.get("quantity")),
                pnl=number(row.get("pnl")),
                pnl_percent=number(row.get("pnlpercent")),
            )
            for row in data.get("holdings", [])
        ]

    def funds(self) -> BrokerFunds:
        data = self.call("funds")["data"]
        return BrokerFunds(
            available_cash=number(data.get("availablecash")),
            collateral=number(data.get("collateral")),
            realized=number(data.get("m2mrealized")),
            unrealized=number(data.get("m2munrealized")),
            utilised=number(data.get("utiliseddebits")),
        )

    def find_by_client_order_id(self, client_order_id: str) -> BrokerOrder | None:
        for row in self.orderbook():
            if row.client_order_id == client_order_id:
                return row
        return None

    def health(self) -> Health:
        """Ask for the funds: it needs a valid key and a working account, and reads only."""
        try:
            funds = self.funds()
        except BrokerUnreachable as exc:
            return Health(False, exc.message)
        except BrokerRefused as exc:
            return Health(False, exc.message)
        return Health(True, f"funds answered: available cash {funds.available_cash}")


def _order(row: dict[str, Any]) -> BrokerOrder:
    status = str(row.get("order_status", "")).lower()
    if status not in STATUS_OF:
        raise BrokerUnreachable(
            f"broker reported an order status Tradebase does not know: {status!r}",
            maybe_sent=True,
        )
    return BrokerOrder(
        order_id=str(row["orderid"]),
        symbol=row["symbol"],
        exchange=row["exchange"],
        side=SIDE_OF[row["action"]],
        quantity=number(row.get("quantity")),
        order_type=ORDER_TYPE_OF.get(row.get("pricetype", "MARKET"), "market"),
        product=row.get("product", "MIS"),
        status=STATUS_OF[status],
        price=_optional(row.get("price")),
        trigger_price=_optional(row.get("trigger_price")),
        average_price=_optional(row.get("average_price")),
        client_order_id=row.get("client_order_id"),
        timestamp=row.get("timestamp"),
        message=row.get("message") or row.get("reject_reason"),
    )
