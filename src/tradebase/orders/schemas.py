"""Request and response bodies of orders and trades."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tradebase.accounts.schemas import Strict
from tradebase.orders.models import OrderSide, OrderType, TimeInForce
from tradebase.portfolios.models import Product
from tradebase.portfolios.schemas import Money


class OrderCreate(Strict):
    portfolio_id: int = Field(ge=1)
    symbol: str = Field(min_length=1, max_length=50)
    exchange: str = Field(default="paper", min_length=1, max_length=50)
    side: OrderSide
    quantity: Money = Field(gt=0)
    order_type: OrderType = OrderType.market
    price: Money | None = Field(
        default=None, gt=0, description="Limit price, or a market order's price hint."
    )
    trigger_price: Money | None = Field(default=None, gt=0)
    product: Product = Product.NRML
    time_in_force: TimeInForce = Field(
        default=TimeInForce.GTC,
        description="Resting orders: GTC until filled or cancelled; DAY expires at the close"
        " of the exchange's trading day; IOC is matched at once against the latest bar's close"
        " and the rest is cancelled.",
    )
    client_order_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Idempotency key: the same one returns the first order.",
    )
    tag: str | None = Field(default=None, max_length=100)
    slices: int | None = Field(default=None, ge=1, le=1000, description="twap/vwap: children.")
    duration_seconds: int | None = Field(
        default=None, ge=1, le=30 * 86400, description="twap/vwap: over how long."
    )
    lookback_days: int | None = Field(
        default=None, ge=1, le=365, description="vwap: days of volume profile (default 5)."
    )
    participation: Money | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Resting orders: fill at most this fraction of each bar's volume.",
    )
    reduce_only: bool = Field(
        default=False,
        description="Only reduce the opposite position (a sell reduces the long, a buy the"
        " short), never open or reverse one; in hedging mode this is how a position closes.",
    )


class OrderAmend(Strict):
    price: Money | None = Field(default=None, gt=0)
    trigger_price: Money | None = Field(default=None, gt=0)
    quantity: Money | None = Field(default=None, gt=0)


class OrderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    account_id: int
    portfolio_id: int | None
    client_order_id: str | None
    exchange_order_id: str | None = None  # a live broker's order id
    symbol: str
    exchange: str
    side: str
    order_type: str
    product: str
    time_in_force: str
    status: str
    quantity: Decimal
    filled_quantity: Decimal
    price: Decimal | None
    trigger_price: Decimal | None
    average_fill_price: Decimal | None
    fee: Decimal
    fee_currency: str | None
    reject_reason: str | None
    tag: str | None
    created_at: datetime
    placed_at: datetime | None
    filled_at: datetime | None
    cancelled_at: datetime | None
    expires_at: datetime | None
    triggered_at: datetime | None


class OrderEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_type: str
    from_status: str | None
    to_status: str
    quantity: Decimal | None
    price: Decimal | None
    details: dict[str, Any] | None
    occurred_at: datetime


class TradeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    portfolio_id: int
    order_id: int | None
    position_id: int | None
    symbol: str
    exchange: str
    side: str
    quantity: Decimal
    price: Decimal
    value: Decimal
    fee: Decimal
    fee_currency: str | None
    pnl: Decimal | None
    pnl_percent: Decimal | None
    executed_at: datetime
