"""Request and response bodies of mirroring."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tradebase.accounts.schemas import Strict
from tradebase.mirroring.models import AllocationRule
from tradebase.orders.models import OrderSide, OrderType
from tradebase.portfolios.models import Product

Money = Annotated[Decimal, Field(max_digits=38, decimal_places=18)]


class AccountMirroring(Strict):
    id: int = Field(ge=1)
    mirror_multiplier: Money | None = Field(default=None, gt=0)
    priority: int | None = Field(default=None, ge=0, le=1_000_000)
    is_primary: bool | None = None
    is_active: bool | None = None


class MirroringUpdate(Strict):
    rule: AllocationRule | None = None
    weights: dict[int, Money] | None = Field(
        default=None, description="custom rule: a weight per account id (>= 0)."
    )
    step: Money | None = Field(default=None, gt=0, description="Quantities are multiples of it.")
    accounts: list[AccountMirroring] = Field(default_factory=list, max_length=1000)


class AccountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    account_name: str
    is_primary: bool
    is_active: bool
    priority: int
    mirror_multiplier: Decimal


class MirroringRead(BaseModel):
    rule: str
    weights: dict[int, Decimal]
    step: Decimal
    accounts: list[AccountRead]


class MirrorCreate(Strict):
    symbol: str = Field(min_length=1, max_length=50)
    exchange: str = Field(default="paper", min_length=1, max_length=50)
    side: OrderSide
    quantity: Money = Field(gt=0)
    order_type: OrderType = OrderType.market
    price: Money | None = Field(default=None, gt=0)
    trigger_price: Money | None = Field(default=None, gt=0)
    product: Product = Product.NRML
    client_order_id: str | None = Field(default=None, min_length=1, max_length=100)


class LegRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    leg: int
    account_id: int
    portfolio_id: int
    quantity: Decimal
    status: str
    order_id: int | None
    error: str | None


class MirrorRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    client_order_id: str | None
    symbol: str
    exchange: str
    side: str
    quantity: Decimal
    order_type: str
    price: Decimal | None
    product: str
    rule: str
    status: str
    legs_placed: int
    legs_rejected: int
    created_at: datetime
    completed_at: datetime | None
    legs: list[LegRead] = Field(default_factory=list)
