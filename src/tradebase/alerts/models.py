"""Alert rules (seed 002 alerts), alerts with severity (seed 004), outgoing webhooks (002)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck, ck_in
from tradebase.core.models import Base, Timestamps, created_at_column


class AlertSeverity(StrEnum):
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


class AlertCategory(StrEnum):
    price = "price"
    trade = "trade"
    system = "system"
    ml = "ml"
    signal = "signal"
    risk = "risk"


class DeliveryStatus(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class AlertRule(Timestamps, Base):
    """A user-defined condition (seed 002 ``alerts``) that raises alerts when it holds."""

    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(50))
    symbol: Mapped[str | None] = mapped_column(String(50))
    condition: Mapped[dict[str, Any]]
    severity: Mapped[str] = mapped_column(
        String(10), default=AlertSeverity.info, server_default="info"
    )
    is_active: Mapped[bool] = mapped_column(default=True, server_default="1")
    triggered_at: Mapped[datetime | None]
    trigger_count: Mapped[int] = mapped_column(default=0, server_default="0")

    __table_args__ = (
        Index("idx_alerts_user_active", "user_id", "is_active"),
        ck_in("severity", "severity", list(AlertSeverity)),
        ck("trigger_count_nonnegative", "trigger_count >= 0"),
    )


class Alert(Base):
    """A notification shown to a user (seed 004 ``alerts``)."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("alert_rules.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(
        String(10), default=AlertSeverity.info, server_default="info"
    )
    category: Mapped[str | None] = mapped_column(String(50))
    symbol: Mapped[str | None] = mapped_column(String(50))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    strategy_id: Mapped[int | None] = mapped_column(
        ForeignKey("strategies.id", ondelete="SET NULL")
    )
    is_read: Mapped[bool] = mapped_column(default=False, server_default="0")
    is_sent: Mapped[bool] = mapped_column(default=False, server_default="0")
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("idx_alert_user_created", "user_id", "created_at"),
        Index("idx_alert_severity", "severity"),
        Index("idx_alerts_created", "created_at"),
        Index("idx_alerts_user_unread", "user_id", "is_read"),
        Index("idx_alerts_rule", "rule_id"),
        Index("idx_alerts_order", "order_id"),
        Index("idx_alerts_strategy", "strategy_id"),
        ck_in("severity", "severity", list(AlertSeverity)),
        ck_in("category", "category", list(AlertCategory), nullable=True),
    )


class Webhook(Timestamps, Base):
    """An outgoing webhook subscription; its signing secret is in the credentials database."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(200))
    events: Mapped[list[str]]
    # Seed 002 keeps secret_hash here; the secret itself must be recoverable to sign, so it
    # is encrypted in the credentials database and only its last 4 characters show here.
    secret_last4: Mapped[str | None] = mapped_column(String(4))
    is_active: Mapped[bool] = mapped_column(default=True, server_default="1")
    last_called_at: Mapped[datetime | None]
    failure_count: Mapped[int] = mapped_column(default=0, server_default="0")
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("idx_webhooks_user", "user_id"),
        Index("idx_webhooks_active", "is_active"),
        ck("failure_count_nonnegative", "failure_count >= 0"),
    )


class WebhookDelivery(Base):
    """One delivery attempt of one event to one webhook."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]]
    attempt: Mapped[int] = mapped_column(default=1, server_default="1")
    status: Mapped[str] = mapped_column(
        String(10), default=DeliveryStatus.pending, server_default="pending"
    )
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None]
    # When a pending attempt is due; while a dispatcher sends it, the end of its claim.
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at_column()
    attempted_at: Mapped[datetime | None]  # when the request went out
    delivered_at: Mapped[datetime | None]  # when the receiver acknowledged it (2xx)

    __table_args__ = (
        Index("idx_webhook_deliveries_webhook", "webhook_id", "created_at"),
        Index("idx_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("idx_webhook_deliveries_event", "event_id"),
        ck_in("status", "status", list(DeliveryStatus)),
        ck("attempt_positive", "attempt > 0"),
    )
