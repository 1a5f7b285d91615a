"""Orders, their lifecycle events and fills (seeds 003 orders, 004 orders/trades, 002 trades)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck, ck_in, json_default, num_key
from tradebase.core.models import Base, Timestamps, archive_table, created_at_column
from tradebase.core.time import utc_now
from tradebase.portfolios.models import Product


class OrderSide(StrEnum):
    buy = "buy"
    sell = "sell"


class OrderType(StrEnum):
    """Seed 004's types; AlgoMirror's SL is stop_limit and SL-M/SLM is stop_loss."""

    market = "market"
    limit = "limit"
    stop_loss = "stop_loss"
    stop_limit = "stop_limit"
    twap = "twap"
    vwap = "vwap"


class OrderStatus(StrEnum):
    pending = "pending"
    open = "open"
    partially_filled = "partially_filled"
    filled = "filled"
    cancelled = "cancelled"
    rejected = "rejected"
    expired = "expired"


class TimeInForce(StrEnum):
    GTC = "GTC"
    DAY = "DAY"
    IOC = "IOC"


class OrderEventType(StrEnum):
    created = "created"
    submitted = "submitted"
    accepted = "accepted"
    triggered = "triggered"
    partially_filled = "partially_filled"
    filled = "filled"
    amended = "amended"
    cancelled = "cancelled"
    rejected = "rejected"
    expired = "expired"


class TradeStatus(StrEnum):
    """Seed 002's trade status; a fill recorded by Tradebase is ``filled``."""

    pending = "pending"
    filled = "filled"
    failed = "failed"
    cancelled = "cancelled"


class Order(Timestamps, Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("trading_accounts.id", ondelete="CASCADE"))
    portfolio_id: Mapped[int | None] = mapped_column(
        ForeignKey("portfolios.id", ondelete="CASCADE")
    )
    strategy_id: Mapped[int | None] = mapped_column(
        ForeignKey("strategies.id", ondelete="SET NULL")
    )
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("strategy_deployments.id", ondelete="SET NULL")
    )
    signal_id: Mapped[int | None] = mapped_column(ForeignKey("signals.id", ondelete="SET NULL"))
    parent_order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    exchange_order_id: Mapped[str | None] = mapped_column(String(100))  # 003 order_id
    client_order_id: Mapped[str | None] = mapped_column(String(100))
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str] = mapped_column(String(50))
    side: Mapped[str] = mapped_column(String(4))  # 003 action BUY/SELL
    order_type: Mapped[str] = mapped_column(String(20))
    product: Mapped[str] = mapped_column(String(10), default=Product.NRML, server_default="NRML")
    time_in_force: Mapped[str] = mapped_column(
        String(3), default=TimeInForce.GTC, server_default="GTC"
    )
    status: Mapped[str] = mapped_column(
        String(20), default=OrderStatus.pending, server_default="pending"
    )
    quantity: Mapped[Decimal]
    filled_quantity: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    price: Mapped[Decimal | None]  # limit price, or the market order's price hint
    trigger_price: Mapped[Decimal | None]  # stop price of stop_loss/stop_limit
    average_fill_price: Mapped[Decimal | None]  # 003 average_price
    disclosed_quantity: Mapped[Decimal | None]
    fee: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    fee_currency: Mapped[str | None] = mapped_column(String(10))
    algo_params: Mapped[dict[str, Any] | None]  # twap/vwap: slices, duration, lookback days
    reject_reason: Mapped[str | None] = mapped_column(Text)
    tag: Mapped[str | None] = mapped_column(String(100))
    placed_at: Mapped[datetime | None]  # sent to the broker (003)
    filled_at: Mapped[datetime | None]  # 003 executed_at
    cancelled_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]  # DAY: the close of its trading day
    triggered_at: Mapped[datetime | None]  # stop_limit: its stop was reached; now a limit

    __table_args__ = (
        Index("idx_orders_client_id", "client_order_id", unique=True),
        Index("idx_orders_exchange_id", "exchange_order_id", unique=True),
        Index("idx_order_user", "user_id"),
        Index("idx_order_portfolio", "portfolio_id"),
        Index("idx_order_symbol", "symbol"),
        Index("idx_order_status", "status"),
        Index("idx_order_created", "created_at"),
        Index("idx_orders_account_id", "account_id"),
        Index("idx_orders_placed_at", "placed_at"),
        Index("idx_orders_account_status", "account_id", "status"),
        Index("idx_orders_user_status", "user_id", "status"),
        Index("idx_orders_strategy", "strategy_id"),
        Index("idx_orders_deployment", "deployment_id"),
        Index("idx_orders_signal", "signal_id"),
        Index("idx_orders_parent", "parent_order_id"),
        ck_in("side", "side", list(OrderSide)),
        ck_in("order_type", "order_type", list(OrderType)),
        ck_in("status", "status", list(OrderStatus)),
        ck_in("product", "product", list(Product)),
        ck_in("time_in_force", "time_in_force", list(TimeInForce)),
        ck("quantity_positive", "{num:quantity} > 0"),
        ck(
            "filled_quantity_range",
            "{num:filled_quantity} >= 0 AND {num:filled_quantity} <= {num:quantity}",
        ),
        ck("price_positive", "{num:price} > 0"),
        ck("trigger_price_positive", "{num:trigger_price} > 0"),
        ck("average_fill_price_positive", "{num:average_fill_price} > 0"),
        ck("disclosed_quantity_range", "{num:disclosed_quantity} > 0"),
        ck("fee_nonnegative", "{num:fee} >= 0"),
        ck(
            "limit_orders_have_price",
            "order_type NOT IN ('limit', 'stop_limit') OR price IS NOT NULL",
        ),
        ck(
            "stop_orders_have_trigger",
            "order_type NOT IN ('stop_loss', 'stop_limit') OR trigger_price IS NOT NULL",
        ),
    )


# The resting book: a bar selects only the orders it can reach, by range conditions on the
# limit price or the stop (OrderService.match_bar), and the DAY orders whose day is over.
# Prices go in through `num_key`, so that SQLite writers need no collation (core.money).
Index(
    "idx_orders_book_price",
    Order.symbol,
    Order.exchange,
    Order.status,
    Order.order_type,
    Order.side,
    num_key(Order.price),
)
Index(
    "idx_orders_book_trigger",
    Order.symbol,
    Order.exchange,
    Order.status,
    Order.order_type,
    Order.side,
    num_key(Order.trigger_price),
)
Index("idx_orders_book_expiry", Order.symbol, Order.exchange, Order.status, Order.expires_at)


class OrderEvent(Base):
    """One row per lifecycle move of an order, in order."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    quantity: Mapped[Decimal | None]
    price: Mapped[Decimal | None]
    details: Mapped[dict[str, Any] | None]
    occurred_at: Mapped[datetime] = mapped_column(default=utc_now)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("idx_order_events_order", "order_id", "occurred_at"),
        ck_in("event_type", "event_type", list(OrderEventType)),
        ck_in("from_status", "from_status", list(OrderStatus), nullable=True),
        ck_in("to_status", "to_status", list(OrderStatus)),
    )


class Trade(Timestamps, Base):
    """One fill."""

    __tablename__ = "trades"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    position_id: Mapped[int | None] = mapped_column(ForeignKey("positions.id", ondelete="SET NULL"))
    exchange_trade_id: Mapped[str | None] = mapped_column(String(100))
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str] = mapped_column(String(50))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal]  # 002 amount
    price: Mapped[Decimal]
    value: Mapped[Decimal]  # price * quantity; 002 total_usd
    fee: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default="0")
    fee_currency: Mapped[str | None] = mapped_column(String(10))
    pnl: Mapped[Decimal | None]  # realized P&L of the closing part, net of fees
    pnl_percent: Mapped[Decimal | None]
    status: Mapped[str] = mapped_column(
        String(10), default=TradeStatus.filled, server_default="filled"
    )
    tx_hash: Mapped[str | None] = mapped_column(String(100))
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", default=dict, server_default=json_default("{}")
    )
    executed_at: Mapped[datetime] = mapped_column(default=utc_now)

    __table_args__ = (
        Index("idx_trades_exchange_id", "exchange_trade_id", unique=True),
        Index("idx_trade_portfolio", "portfolio_id"),
        Index("idx_trade_symbol", "symbol"),
        Index("idx_trade_executed", "executed_at"),
        Index("idx_trades_user_id", "user_id"),
        Index("idx_trades_symbol", "symbol", "executed_at"),
        Index("idx_trades_created", "created_at"),
        Index("idx_trades_status", "status"),
        Index("idx_trades_user_recent", "user_id", "created_at"),
        Index("idx_trades_portfolio_executed", "portfolio_id", "executed_at"),
        Index("idx_trades_order", "order_id"),
        Index("idx_trades_position", "position_id"),
        ck_in("side", "side", list(OrderSide)),
        ck_in("status", "status", list(TradeStatus)),
        ck("quantity_positive", "{num:quantity} > 0"),
        ck("price_positive", "{num:price} > 0"),
        ck("value_positive", "{num:value} > 0"),
        ck("fee_nonnegative", "{num:fee} >= 0"),
    )


orders_archive = archive_table(Order.__table__)  # type: ignore[arg-type]
order_events_archive = archive_table(OrderEvent.__table__)  # type: ignore[arg-type]
