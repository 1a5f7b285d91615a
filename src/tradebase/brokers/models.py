"""Streaming connections to brokers (seed 003 websocket_connections)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import ck_in
from tradebase.core.models import Base, Timestamps, created_at_column
from tradebase.portfolios.models import ConnectionStatus


class WebsocketConnection(Timestamps, Base):
    __tablename__ = "websocket_connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("trading_accounts.id", ondelete="CASCADE"))
    connection_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(
        String(20), default=ConnectionStatus.disconnected, server_default="disconnected"
    )
    connected_at: Mapped[datetime | None]
    disconnected_at: Mapped[datetime | None]
    messages_received: Mapped[int] = mapped_column(default=0, server_default="0")
    last_heartbeat: Mapped[datetime | None]

    __table_args__ = (
        Index("idx_websocket_connections_connection_id", "connection_id", unique=True),
        Index("idx_websocket_connections_account_id", "account_id"),
        Index("idx_websocket_connections_status", "status"),
        ck_in("status", "status", list(ConnectionStatus)),
    )


class BrokerPostback(Base):
    """A broker's order-update postback that was applied: its id is the replay guard."""

    __tablename__ = "broker_postbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("trading_accounts.id", ondelete="CASCADE"))
    postback_id: Mapped[str] = mapped_column(String(100))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    sent_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("account_id", "postback_id", name="uq_broker_postbacks_account_id"),
        Index("idx_broker_postbacks_order", "order_id"),
        Index("idx_broker_postbacks_received", "received_at"),
    )
