"""Request and response bodies of accounts, portfolios, positions and cash."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tradebase.accounts.schemas import Strict
from tradebase.portfolios.models import PositionMode

Money = Annotated[Decimal, Field(max_digits=38, decimal_places=18)]


class AccountCreate(Strict):
    account_name: str = Field(min_length=3, max_length=100)
    broker: str = Field(
        default="paper",
        pattern=r"^(paper|openalgo)$",
        description="paper (built in), or openalgo: an OpenAlgo REST host at host_url.",
    )
    host_url: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^https?://[^\s]+$",
        description="openalgo: the host (http://127.0.0.1:5000; another Tradebase:"
        " http://host:port/openalgo).",
    )
    api_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="openalgo: its apikey, kept encrypted in the credentials database; write-only.",
    )
    fee_rate: Money = Field(default=Decimal(0), ge=0, lt=1, description="Fee = rate x value.")
    slippage_bps: Money = Field(default=Decimal(0), ge=0, le=10_000)
    is_primary: bool = False
    priority: int = Field(default=100, ge=0, le=1_000_000)


class AccountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    account_name: str
    broker: str
    is_primary: bool
    is_active: bool
    is_paper: bool
    priority: int
    host_url: str | None
    fee_rate: Decimal
    slippage_bps: Decimal
    connection_status: str
    last_connected: datetime | None
    created_at: datetime


class PortfolioCreate(Strict):
    account_id: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=100)
    base_currency: str = Field(default="USD", pattern=r"^[A-Za-z]{3,10}$")
    position_mode: PositionMode = PositionMode.netting
    allow_margin: bool = False
    periods_per_year: int = Field(default=365, ge=1, le=100_000)


class PortfolioRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    account_id: int
    name: str
    base_currency: str
    cash_balance_usd: Decimal
    total_value_usd: Decimal
    total_pnl: Decimal
    total_pnl_percent: Decimal
    daily_pnl: Decimal
    sharpe_ratio: Decimal | None
    max_drawdown: Decimal | None
    win_rate: Decimal | None
    position_mode: str
    allow_margin: bool
    is_paper: bool
    created_at: datetime


class CashChange(Strict):
    amount: Money = Field(gt=0)
    note: str | None = Field(default=None, max_length=200)


class CashMovementRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    portfolio_id: int
    kind: str
    amount: Decimal
    balance_after: Decimal
    trade_id: int | None
    note: str | None
    created_at: datetime


class PositionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    portfolio_id: int
    symbol: str
    exchange: str
    product: str
    direction: str
    status: str
    deal_id: str | None = Field(
        None, description="The label a signal's deal_id gave the position it opened."
    )
    signal_id: int | None = Field(None, description="The signal whose fill opened it.")
    quantity: Decimal
    entry_price: Decimal
    cost_basis: Decimal
    current_price: Decimal | None
    unrealized_pnl: Decimal
    unrealized_pnl_percent: Decimal
    realized_pnl: Decimal
    exit_price: Decimal | None
    opened_at: datetime
    closed_at: datetime | None
    settled: bool = Field(
        description="Closed by settling into holdings (CNC); the row keeps what it moved."
    )


class SnapshotRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    portfolio_id: int
    timestamp: datetime
    total_value_usd: Decimal
    cash_balance_usd: Decimal
    holdings: dict[str, Any]
    pnl_24h: Decimal | None
    pnl_7d: Decimal | None
    pnl_30d: Decimal | None


class HoldingRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    portfolio_id: int
    symbol: str
    exchange: str
    quantity: Decimal
    average_price: Decimal = Field(description="Weighted average cost per unit, fees excluded.")
    invested_value: Decimal | None = Field(description="Exact cost of the quantity held.")
    current_price: Decimal | None
    current_value: Decimal | None
    pnl: Decimal | None
    pnl_percent: Decimal | None
    updated_at: datetime


class MetricsRead(BaseModel):
    """A portfolio's figures now, as a snapshot taken now would record them."""

    model_config = ConfigDict(from_attributes=True)

    portfolio_id: int
    at: datetime
    base_currency: str
    cash: Decimal
    positions_value: Decimal
    holdings_value: Decimal
    total_value: Decimal
    net_deposits: Decimal
    total_pnl: Decimal
    total_pnl_percent: Decimal
    daily_pnl: Decimal | None = Field(description="None until a snapshot is a day old.")
    sharpe_ratio: Decimal | None
    max_drawdown: Decimal | None
    win_rate: Decimal | None
    closing_trades: int


class SettledRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    portfolio_id: int
    position_id: int
    holding_id: int
    symbol: str
    exchange: str
    quantity: Decimal
    cost: Decimal
    holding_quantity: Decimal
    average_price: Decimal


class SettlementRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    settled: list[SettledRead]
    waiting: int = Field(description="Open CNC positions whose trading day has not ended.")
    held: int = Field(description="Open CNC positions that a working CNC sell order is selling.")
