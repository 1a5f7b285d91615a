"""Strategies, their deployments to accounts, and failover events (seeds 003, 004)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import ck, ck_in, json_default
from tradebase.core.models import Base, Timestamps, created_at_column


class StrategyType(StrEnum):
    """Seed 004's StrategyType, seed 003's arbitrage, and custom (e.g. a TradingView script)."""

    grid_trading = "grid_trading"
    dca = "dca"
    momentum = "momentum"
    mean_reversion = "mean_reversion"
    statistical_arbitrage = "statistical_arbitrage"
    market_making = "market_making"
    whale_following = "whale_following"
    liquidation_hunting = "liquidation_hunting"
    yield_optimization = "yield_optimization"
    arbitrage = "arbitrage"
    custom = "custom"


class DeploymentStatus(StrEnum):
    active = "active"
    paused = "paused"
    inactive = "inactive"


class Strategy(Timestamps, Base):
    __tablename__ = "strategies"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    strategy_type: Mapped[str] = mapped_column(
        String(30), default=StrategyType.custom, server_default="custom"
    )
    config: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=json_default("{}"))
    is_active: Mapped[bool] = mapped_column(default=True, server_default="1")
    is_backtest: Mapped[bool] = mapped_column(default=False, server_default="0")
    total_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    win_rate: Mapped[Decimal | None]
    sharpe_ratio: Mapped[Decimal | None]
    num_trades: Mapped[int] = mapped_column(default=0, server_default="0")
    last_signal_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        Index("idx_strategy_user", "user_id"),
        Index("idx_strategy_type", "strategy_type"),
        Index("idx_strategies_active", "is_active"),
        Index("idx_strategies_num_trades", "num_trades"),
        ck_in("strategy_type", "strategy_type", list(StrategyType)),
        ck("win_rate_percent", "{num:win_rate} >= 0 AND {num:win_rate} <= 100"),
        ck("num_trades_nonnegative", "num_trades >= 0"),
    )


class StrategyDeployment(Timestamps, Base):
    """A strategy running on one account; ``multiplier`` scales mirrored quantities."""

    __tablename__ = "strategy_deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("trading_accounts.id", ondelete="CASCADE"))
    portfolio_id: Mapped[int | None] = mapped_column(
        ForeignKey("portfolios.id", ondelete="CASCADE")
    )
    capital_allocated: Mapped[Decimal | None]
    max_positions: Mapped[int] = mapped_column(default=5, server_default="5")
    multiplier: Mapped[Decimal] = mapped_column(default=Decimal(1), server_default="1")
    status: Mapped[str] = mapped_column(
        String(10), default=DeploymentStatus.inactive, server_default="inactive"
    )
    started_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    total_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")

    __table_args__ = (
        UniqueConstraint("strategy_id", "account_id"),
        Index("idx_strategy_deployments_strategy_id", "strategy_id"),
        Index("idx_strategy_deployments_account_id", "account_id"),
        Index("idx_strategy_deployments_status", "status"),
        Index("idx_strategy_deployments_portfolio", "portfolio_id"),
        ck_in("status", "status", list(DeploymentStatus)),
        ck("capital_allocated_nonnegative", "{num:capital_allocated} >= 0"),
        ck("max_positions_positive", "max_positions > 0"),
        ck("multiplier_positive", "{num:multiplier} > 0"),
    )


class FailoverEvent(Base):
    __tablename__ = "failover_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    from_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="SET NULL")
    )
    to_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="SET NULL")
    )
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(String(500))
    timestamp: Mapped[datetime] = created_at_column()
    success: Mapped[bool] = mapped_column(default=True, server_default="1")
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("idx_failover_events_timestamp", "timestamp"),
        Index("idx_failover_events_user", "user_id", "timestamp"),
        Index("idx_failover_events_from", "from_account_id"),
        Index("idx_failover_events_to", "to_account_id"),
        Index("idx_failover_events_order", "order_id"),
    )
