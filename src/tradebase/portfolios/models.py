"""Trading accounts, portfolios, positions, holdings and snapshots.

Seeds: 003 trading_accounts/positions/holdings, 000 user_api_keys (broker side) and
positions, 004 portfolios/positions, 002 portfolio_snapshots.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, validates

from tradebase.core.ddl import BigID, ck, ck_in
from tradebase.core.models import Base, Timestamps, created_at_column
from tradebase.core.money import divide
from tradebase.core.time import utc_now


class ConnectionStatus(StrEnum):
    connected = "connected"
    connecting = "connecting"
    disconnected = "disconnected"
    error = "error"


class Product(StrEnum):
    """AlgoMirror's products: intraday, delivery (settles into holdings), carry-forward."""

    MIS = "MIS"
    CNC = "CNC"
    NRML = "NRML"


class PositionMode(StrEnum):
    netting = "netting"
    hedging = "hedging"


class PositionDirection(StrEnum):
    long = "long"
    short = "short"


class PositionStatus(StrEnum):
    open = "open"
    closed = "closed"


class TradingAccount(Timestamps, Base):
    __tablename__ = "trading_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    account_name: Mapped[str] = mapped_column(String(100))
    broker: Mapped[str] = mapped_column(String(50), default="paper", server_default="paper")
    host_url: Mapped[str | None] = mapped_column(
        String(200), default="http://127.0.0.1:5000", server_default="http://127.0.0.1:5000"
    )
    websocket_url: Mapped[str | None] = mapped_column(
        String(200), default="ws://127.0.0.1:8765", server_default="ws://127.0.0.1:8765"
    )
    is_primary: Mapped[bool] = mapped_column(default=False, server_default="0")
    is_active: Mapped[bool] = mapped_column(default=True, server_default="1")
    is_paper: Mapped[bool] = mapped_column(default=True, server_default="1")  # 000 capital_demo
    priority: Mapped[int] = mapped_column(default=100, server_default="100")  # failover order
    # Mirroring: a mirrored order's quantity on this account (the "multiplier" rule).
    mirror_multiplier: Mapped[Decimal] = mapped_column(default=Decimal(1), server_default="1")
    # The paper broker's costs: fee = fee_rate x value; slippage moves the price against
    # the taker by slippage_bps basis points.
    fee_rate: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    slippage_bps: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    last_connected: Mapped[datetime | None]
    connection_status: Mapped[str] = mapped_column(
        String(20), default=ConnectionStatus.disconnected, server_default="disconnected"
    )

    __table_args__ = (
        UniqueConstraint("user_id", "account_name", name="unique_user_account"),
        Index("idx_trading_accounts_user_id", "user_id"),
        Index("idx_trading_accounts_is_primary", "is_primary"),
        Index("idx_trading_accounts_is_active", "is_active"),
        Index(
            "idx_accounts_user_primary",
            "user_id",
            "is_primary",
            postgresql_include=["account_name", "broker"],
        ),
        ck("check_account_name_length", "{len:account_name} >= 3"),
        ck("check_broker_name", "{len:broker} >= 1"),
        ck_in("connection_status", "connection_status", list(ConnectionStatus)),
        ck("fee_rate_range", "{num:fee_rate} >= 0 AND {num:fee_rate} < 1"),
        ck("slippage_nonnegative", "{num:slippage_bps} >= 0"),
    )


class Portfolio(Timestamps, Base):
    __tablename__ = "portfolios"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("trading_accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    base_currency: Mapped[str] = mapped_column(String(10), default="USD", server_default="USD")
    total_value_usd: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    cash_balance_usd: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    total_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    total_pnl_percent: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    daily_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    sharpe_ratio: Mapped[Decimal | None]
    max_drawdown: Mapped[Decimal | None]
    win_rate: Mapped[Decimal | None]
    is_paper: Mapped[bool] = mapped_column(default=True, server_default="1")
    is_active: Mapped[bool] = mapped_column(default=True, server_default="1")
    allow_margin: Mapped[bool] = mapped_column(default=False, server_default="0")
    position_mode: Mapped[str] = mapped_column(
        String(10), default=PositionMode.netting, server_default="netting"
    )
    periods_per_year: Mapped[int] = mapped_column(default=365, server_default="365")

    __table_args__ = (
        UniqueConstraint("account_id", "name"),
        Index("idx_portfolio_user", "user_id"),
        Index("idx_portfolios_account", "account_id"),
        ck_in("position_mode", "position_mode", list(PositionMode)),
        ck("max_drawdown_nonpositive", "{num:max_drawdown} <= 0"),
        ck("win_rate_percent", "{num:win_rate} >= 0 AND {num:win_rate} <= 100"),
        ck("periods_per_year_positive", "periods_per_year > 0"),
        ck("cash_nonnegative_without_margin", "allow_margin OR {num:cash_balance_usd} >= 0"),
    )


def _open_slot(context: DefaultExecutionContext) -> int | None:
    status = context.get_current_parameters().get("status", PositionStatus.open)  # type: ignore[no-untyped-call]
    return 1 if status == PositionStatus.open else None


class Position(Timestamps, Base):
    """An open or closed position. ``open_slot`` is 1 while open and NULL once closed, so
    the unique key allows one open position per side and any number of closed ones (a
    partial unique index, written portably: MariaDB has none).
    """

    __tablename__ = "positions"

    id: Mapped[int] = mapped_column(primary_key=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    signal_id: Mapped[int | None] = mapped_column(ForeignKey("signals.id", ondelete="SET NULL"))
    deal_id: Mapped[str | None] = mapped_column(String(100))
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str] = mapped_column(String(50), default="", server_default="")
    product: Mapped[str] = mapped_column(String(10), default=Product.NRML, server_default="NRML")
    direction: Mapped[str] = mapped_column(String(10))
    quantity: Mapped[Decimal]
    entry_price: Mapped[Decimal]
    current_price: Mapped[Decimal | None]
    unrealized_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    unrealized_pnl_percent: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    realized_pnl: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    # Exact cost of the open quantity and the opening fees not yet charged to a close
    # (entry_price is cost_basis / quantity, rounded): see portfolios/pnl.py.
    cost_basis: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    fees_paid: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    day_change: Mapped[Decimal | None]
    day_change_percent: Mapped[Decimal | None]
    status: Mapped[str] = mapped_column(
        String(10), default=PositionStatus.open, server_default="open"
    )
    open_slot: Mapped[int | None] = mapped_column(default=_open_slot, server_default="1")
    exit_price: Mapped[Decimal | None]
    opened_at: Mapped[datetime] = mapped_column(default=utc_now)
    closed_at: Mapped[datetime | None]

    @validates("status")
    def _status_sets_open_slot(self, _key: str, status: str) -> str:
        self.open_slot = 1 if status == PositionStatus.open else None
        return status

    @property
    def settled(self) -> bool:
        """Closed by settling into holdings (portfolios/settlement.py). A fill that closes a
        position leaves quantity 0; a settled row keeps the quantity and cost it moved."""
        return self.status == PositionStatus.closed and self.quantity > 0

    __table_args__ = (
        UniqueConstraint(
            "portfolio_id",
            "symbol",
            "exchange",
            "product",
            "direction",
            "open_slot",
            name="unique_position",
        ),
        # A deal label is unique among a portfolio's open positions (open_slot is NULL once
        # closed): senders reuse labels, closed deals keep theirs (migration main_0011).
        Index("idx_positions_deal_id", "deal_id", "portfolio_id", "open_slot", unique=True),
        Index("idx_positions_signal_id", "signal_id"),
        Index("idx_positions_symbol", "symbol", "status"),
        Index("idx_position_symbol", "symbol"),
        Index("idx_positions_status", "status"),
        Index("idx_positions_timestamp", "opened_at"),
        Index("idx_position_portfolio", "portfolio_id"),
        Index("idx_positions_account_symbol", "portfolio_id", "symbol"),
        ck_in("direction", "direction", list(PositionDirection)),
        ck_in("status", "status", list(PositionStatus)),
        ck_in("product", "product", list(Product)),
        ck(
            "open_slot_matches_status",
            "(status = 'open' AND open_slot = 1) OR (status <> 'open' AND open_slot IS NULL)",
        ),
        ck("quantity_nonnegative", "{num:quantity} >= 0"),
        ck("entry_price_positive", "{num:entry_price} > 0"),
        ck("exit_price_positive", "{num:exit_price} > 0"),
        ck("fees_nonnegative", "{num:fees_paid} >= 0"),
    )


class Holding(Timestamps, Base):
    """Delivery (CNC) holdings that settled from positions at the end of the trading day.

    ``invested_value`` is the exact cost of the quantity held (sum of quantity x price, buy
    fees excluded, like a position's ``cost_basis``); ``average_price`` is that cost per
    unit, rounded to 18 places. A CNC sell draws on it at that average, and a holding
    sold out is deleted. See portfolios/settlement.py.
    """

    __tablename__ = "holdings"

    id: Mapped[int] = mapped_column(primary_key=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str] = mapped_column(String(50), default="", server_default="")
    quantity: Mapped[Decimal]
    average_price: Mapped[Decimal]
    current_price: Mapped[Decimal | None]
    pnl: Mapped[Decimal | None]
    pnl_percent: Mapped[Decimal | None]
    invested_value: Mapped[Decimal | None]
    current_value: Mapped[Decimal | None]

    __table_args__ = (
        UniqueConstraint("portfolio_id", "symbol", "exchange", name="unique_holding"),
        Index("idx_holdings_account_id", "portfolio_id"),
        Index("idx_holdings_symbol", "symbol"),
        ck("quantity_nonnegative", "{num:quantity} >= 0"),
        ck("average_price_positive", "{num:average_price} > 0"),
    )

    def add(self, quantity: Decimal, cost: Decimal) -> None:
        """Take in *quantity* that cost *cost*: the average is the weighted average cost."""
        held = self.quantity or Decimal(0)
        invested = self.invested_value
        if invested is None:  # a row from elsewhere (an import) may carry only the average
            invested = held * (self.average_price or Decimal(0))
        self.quantity = held + quantity
        self.invested_value = invested + cost
        self.average_price = divide(self.invested_value, self.quantity)

    def mark(self, price: Decimal | None) -> None:
        """Value the holding at *price*: current value, P&L and P&L percent (None: unknown)."""
        self.current_price = price
        invested = self.invested_value or self.quantity * self.average_price
        self.current_value, self.pnl, self.pnl_percent = holding_marks(
            self.quantity, invested, price
        )


def holding_marks(
    quantity: Decimal, invested: Decimal, price: Decimal | None
) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """A holding's current value, P&L and P&L percent at *price* (all None without one)."""
    if price is None:
        return None, None, None
    current_value = quantity * price
    pnl = current_value - invested
    return current_value, pnl, divide(pnl * 100, invested) if invested else Decimal(0)


class PortfolioSnapshot(Base):
    __tablename__ = "portfolio_snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    timestamp: Mapped[datetime]
    snapshot_date: Mapped[date]  # UTC date of timestamp, for the daily index of seed 002
    total_value_usd: Mapped[Decimal]
    cash_balance_usd: Mapped[Decimal]
    holdings: Mapped[dict[str, Any]]
    pnl_24h: Mapped[Decimal | None]
    pnl_7d: Mapped[Decimal | None]
    pnl_30d: Mapped[Decimal | None]
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("portfolio_id", "timestamp"),
        Index("idx_portfolio_user_time", "user_id", "timestamp"),
        Index("idx_portfolio_user_daily", "user_id", "snapshot_date"),
        Index("idx_portfolio_snapshots_portfolio_time", "portfolio_id", "timestamp"),
    )


class CashMovementKind(StrEnum):
    deposit = "deposit"
    withdrawal = "withdrawal"
    trade = "trade"


class CashMovement(Base):
    """The cash ledger of a portfolio: every deposit, withdrawal and fill, signed."""

    __tablename__ = "cash_movements"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(12))
    amount: Mapped[Decimal]
    balance_after: Mapped[Decimal]
    trade_id: Mapped[int | None] = mapped_column(ForeignKey("trades.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("idx_cash_movements_portfolio", "portfolio_id", "created_at"),
        Index("idx_cash_movements_user", "user_id"),
        Index("idx_cash_movements_trade", "trade_id"),
        ck_in("kind", "kind", list(CashMovementKind)),
        ck("amount_nonzero", "{num:amount} <> 0"),
    )
