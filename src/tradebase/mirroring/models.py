"""A mirrored order (the parent) and its legs, one per account: the fan-out is stored
before any leg is placed, so a restart resumes it and a partial success stays visible."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import ck, ck_in
from tradebase.core.models import Base, Timestamps
from tradebase.orders.models import OrderSide, OrderType
from tradebase.portfolios.models import Product


class AllocationRule(StrEnum):
    multiplier = "multiplier"  # each account: quantity x its mirror_multiplier
    equal = "equal"  # the quantity split evenly
    capital = "capital"  # split in proportion to each portfolio's value
    custom = "custom"  # split by the user's weights per account


class MirrorStatus(StrEnum):
    pending = "pending"  # stored, legs not all placed yet
    completed = "completed"  # every leg placed
    partial = "partial"  # some legs placed, some refused
    failed = "failed"  # no leg placed


class LegStatus(StrEnum):
    pending = "pending"
    placed = "placed"
    rejected = "rejected"


class MirrorOrder(Timestamps, Base):
    __tablename__ = "mirror_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_order_id: Mapped[str | None] = mapped_column(String(100))
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str] = mapped_column(String(50))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal]
    order_type: Mapped[str] = mapped_column(String(20))
    price: Mapped[Decimal | None]
    trigger_price: Mapped[Decimal | None]
    product: Mapped[str] = mapped_column(String(10))
    rule: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(10), default=MirrorStatus.pending)
    legs_placed: Mapped[int] = mapped_column(default=0, server_default="0")
    legs_rejected: Mapped[int] = mapped_column(default=0, server_default="0")
    completed_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("user_id", "client_order_id", name="uq_mirror_orders_user_client"),
        Index("idx_mirror_orders_user", "user_id", "id"),
        Index("idx_mirror_orders_status", "status"),
        ck_in("side", "side", list(OrderSide)),
        ck_in("order_type", "order_type", list(OrderType)),
        ck_in("product", "product", list(Product)),
        ck_in("rule", "rule", list(AllocationRule)),
        ck_in("status", "status", list(MirrorStatus)),
        ck("quantity_positive", "{num:quantity} > 0"),
    )


class MirrorLeg(Timestamps, Base):
    __tablename__ = "mirror_legs"

    id: Mapped[int] = mapped_column(primary_key=True)
    mirror_id: Mapped[int] = mapped_column(ForeignKey("mirror_orders.id", ondelete="CASCADE"))
    leg: Mapped[int]  # 0, 1, … in the accounts' priority order (primary first)
    account_id: Mapped[int] = mapped_column(ForeignKey("trading_accounts.id", ondelete="CASCADE"))
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    quantity: Mapped[Decimal]
    status: Mapped[str] = mapped_column(String(10), default=LegStatus.pending)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("mirror_id", "leg", name="uq_mirror_legs_mirror_leg"),
        Index("idx_mirror_legs_status", "status"),
        Index("idx_mirror_legs_order", "order_id"),
        Index("idx_mirror_legs_account", "account_id"),
        Index("idx_mirror_legs_portfolio", "portfolio_id"),
        ck_in("status", "status", list(LegStatus)),
        ck("quantity_positive", "{num:quantity} > 0"),
    )
