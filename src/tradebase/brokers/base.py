"""The broker interface: what the paper broker and every live adapter provide."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class Execution:
    """A fill as a broker reports it."""

    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str | None = None
    exchange_trade_id: str | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


class Broker(Protocol):
    """Place, cancel and ask about orders on one trading account."""

    name: str

    def execute_market(
        self,
        *,
        symbol: str,
        exchange: str,
        side: str,
        quantity: Decimal,
        price_hint: Decimal | None,
    ) -> Execution:
        """Fill a market order now, or raise a domain error saying why not."""
        ...

    def health(self) -> Health: ...


# --- live brokers: the extended interface ---------------------------------------------


@dataclass(frozen=True)
class OrderRequest:
    """An order as Tradebase sends it to a live broker (Tradebase's own vocabulary)."""

    symbol: str
    exchange: str
    side: str  # buy | sell
    quantity: Decimal
    order_type: str = "market"  # market | limit | stop_limit | stop_loss
    product: str = "MIS"
    price: Decimal | None = None  # limit price, or a market order's price hint
    trigger_price: Decimal | None = None
    disclosed_quantity: Decimal | None = None
    client_order_id: str | None = None
    strategy: str = "Tradebase"


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker reports it, in Tradebase's vocabulary: ``status`` is an
    OrderStatus value (pending, open, filled, cancelled, rejected)."""

    order_id: str
    symbol: str
    exchange: str
    side: str
    quantity: Decimal
    order_type: str
    product: str
    status: str
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    average_price: Decimal | None = None
    client_order_id: str | None = None
    timestamp: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class BrokerTrade:
    order_id: str
    symbol: str
    exchange: str
    side: str
    product: str
    quantity: Decimal
    average_price: Decimal
    trade_value: Decimal
    timestamp: str | None = None


@dataclass(frozen=True)
class BrokerPosition:
    symbol: str
    exchange: str
    product: str
    quantity: Decimal  # signed: short is negative
    average_price: Decimal
    ltp: Decimal
    pnl: Decimal


@dataclass(frozen=True)
class BrokerHolding:
    symbol: str
    exchange: str
    product: str
    quantity: Decimal
    pnl: Decimal
    pnl_percent: Decimal


@dataclass(frozen=True)
class BrokerFunds:
    available_cash: Decimal
    collateral: Decimal
    realized: Decimal
    unrealized: Decimal
    utilised: Decimal


class LiveBroker(Protocol):
    """A broker reached over the network (brokers/openalgo.py). Every call raises
    `BrokerUnreachable` when the broker does not answer and `BrokerRefused` when it says
    no; nothing here touches the database."""

    name: str

    def place_order(self, order: OrderRequest) -> str:
        """Send *order*; return the broker's order id."""
        ...

    def place_smart_order(self, order: OrderRequest, position_size: Decimal) -> str | None:
        """Trade the difference between *position_size* and the current position; the
        broker's order id, or None when the position already matched."""
        ...

    def cancel_order(self, order_id: str) -> str: ...

    def order_status(self, order_id: str) -> BrokerOrder: ...

    def orderbook(self) -> list[BrokerOrder]: ...

    def tradebook(self) -> list[BrokerTrade]: ...

    def positions(self) -> list[BrokerPosition]: ...

    def holdings(self) -> list[BrokerHolding]: ...

    def funds(self) -> BrokerFunds: ...

    def find_by_client_order_id(self, client_order_id: str) -> BrokerOrder | None:
        """The order the broker holds under *client_order_id*, else None."""
        ...

    def health(self) -> Health: ...
