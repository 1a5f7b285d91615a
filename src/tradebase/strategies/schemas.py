"""Request and response bodies of strategies and deployments."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tradebase.accounts.schemas import Strict
from tradebase.strategies.models import DeploymentStatus, StrategyType

Money = Annotated[Decimal, Field(max_digits=38, decimal_places=18)]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")]


class StrategyCreate(Strict):
    name: Name
    strategy_type: StrategyType = StrategyType.custom
    description: str | None = Field(default=None, max_length=10_000)
    config: dict[str, Any] = Field(default_factory=dict)
    is_active: bool = True
    is_backtest: bool = False


class StrategyUpdate(Strict):
    name: Name | None = None
    strategy_type: StrategyType | None = None
    description: str | None = Field(default=None, max_length=10_000)
    config: dict[str, Any] | None = None
    is_active: bool | None = None
    is_backtest: bool | None = None


class StrategyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    strategy_type: str
    description: str | None
    config: dict[str, Any]
    is_active: bool
    is_backtest: bool
    total_pnl: Decimal
    win_rate: Decimal | None
    sharpe_ratio: Decimal | None
    num_trades: int
    last_signal_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DeploymentCreate(Strict):
    account_id: int = Field(ge=1)
    portfolio_id: int | None = Field(
        default=None, ge=1, description="Default: the account's portfolio, when it has one."
    )
    capital_allocated: Money | None = Field(default=None, ge=0)
    max_positions: int = Field(default=5, ge=1, le=100_000)
    multiplier: Money = Field(default=Decimal(1), gt=0, description="Scales signal quantities.")
    status: DeploymentStatus = DeploymentStatus.active


class DeploymentUpdate(Strict):
    portfolio_id: int | None = Field(default=None, ge=1)
    capital_allocated: Money | None = Field(default=None, ge=0)
    max_positions: int | None = Field(default=None, ge=1, le=100_000)
    multiplier: Money | None = Field(default=None, gt=0)
    status: DeploymentStatus | None = None


class DeploymentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    strategy_id: int
    account_id: int
    portfolio_id: int | None
    capital_allocated: Decimal | None
    max_positions: int
    multiplier: Decimal
    status: str
    started_at: datetime | None
    stopped_at: datetime | None
    total_pnl: Decimal
    created_at: datetime
