"""The durable signal inbox (seed 000 signals): stored first, executed after."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import ck, ck_in
from tradebase.core.models import Base, Timestamps
from tradebase.core.time import utc_now
from tradebase.orders.models import OrderSide, OrderType
from tradebase.portfolios.models import Product


class SignalStatus(StrEnum):
    received = "received"
    processing = "processing"
    processed = "processed"
    rejected = "rejected"
    failed = "failed"


class SignalSource(StrEnum):
    webhook = "webhook"
    api = "api"
    cli = "cli"
    python = "python"


class TradeAction(StrEnum):
    open = "open"
    close = "close"
    modify = "modify"


class Signal(Timestamps, Base):
    __tablename__ = "signals"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    strategy_id: Mapped[int | None] = mapped_column(
        ForeignKey("strategies.id", ondelete="SET NULL")
    )
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="SET NULL")
    )
    # The idempotency key, scoped to the user and a time window (tradebase.signals.keys):
    # on one grid of windows here, on the grid offset by half a period in order_id_shifted.
    order_id: Mapped[str] = mapped_column(String(200))
    order_id_shifted: Mapped[str | None] = mapped_column(String(200))
    sender_order_id: Mapped[str | None] = mapped_column(String(200))  # as the sender sent it
    source: Mapped[str] = mapped_column(String(10), default=SignalSource.webhook)
    symbol: Mapped[str | None] = mapped_column(String(50))
    exchange: Mapped[str | None] = mapped_column(String(50))
    direction: Mapped[str | None] = mapped_column(String(4))
    quantity: Mapped[Decimal | None]
    price: Mapped[Decimal | None]
    order_type: Mapped[str | None] = mapped_column(String(20))
    limit_price: Mapped[Decimal | None]
    stop_price: Mapped[Decimal | None]
    product: Mapped[str | None] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(
        String(12), default=SignalStatus.received, server_default="received"
    )
    error: Mapped[str | None] = mapped_column(Text)
    position_status: Mapped[str | None] = mapped_column(String(20))
    trade_action: Mapped[str | None] = mapped_column(String(10))
    trade_direction: Mapped[str | None] = mapped_column(String(10))
    position_size: Mapped[Decimal | None]  # a target position; 0 closes
    hedging_enabled: Mapped[bool] = mapped_column(default=False, server_default="0")
    deal_id: Mapped[str | None] = mapped_column(String(100))
    comment: Mapped[str | None] = mapped_column(String(500))
    signal_data: Mapped[dict[str, Any] | None]  # the parsed payload
    raw_payload: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(100))
    source_ip: Mapped[str | None] = mapped_column(String(45))
    outcome: Mapped[dict[str, Any] | None]  # what execution produced: orders, refusals
    timestamp: Mapped[datetime | None]  # the sender's own time, when it gives one
    received_at: Mapped[datetime] = mapped_column(default=utc_now)
    processed_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("user_id", "order_id", name="uq_signals_user_order_id"),
        Index("uq_signals_user_order_id_shifted", "user_id", "order_id_shifted", unique=True),
        Index("idx_signals_user_sender_order", "user_id", "sender_order_id"),
        Index("idx_signals_order_id", "order_id"),
        Index("idx_signals_timestamp", "received_at"),
        Index("idx_signals_symbol", "symbol"),
        Index("idx_signals_status", "status"),
        Index("idx_signals_status_received", "status", "received_at"),
        Index("idx_signals_user_received", "user_id", "received_at"),
        Index("idx_signals_strategy", "strategy_id"),
        Index("idx_signals_account", "account_id"),
        ck_in("status", "status", list(SignalStatus)),
        ck_in("source", "source", list(SignalSource)),
        ck_in("direction", "direction", list(OrderSide), nullable=True),
        ck_in("order_type", "order_type", list(OrderType), nullable=True),
        ck_in("product", "product", list(Product), nullable=True),
        ck_in("trade_action", "trade_action", list(TradeAction), nullable=True),
        ck("quantity_positive", "{num:quantity} > 0"),
        ck("price_positive", "{num:price} > 0"),
        ck("limit_price_positive", "{num:limit_price} > 0"),
        ck("stop_price_positive", "{num:stop_price} > 0"),
    )
