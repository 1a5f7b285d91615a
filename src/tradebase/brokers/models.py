"""Streaming connections to brokers (seed 003 websocket_connections)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import ck_in
from tradebase.core.models import Base, Timestamps
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
