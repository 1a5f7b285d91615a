"""The hash-chained audit trail, which is also the activity log.

Seeds: 002 audit_log, 003 activity_logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck
from tradebase.core.models import Base, archive_table, created_at_column, updated_at_column


class AuditLog(Base):
    """Append-only. ``row_hash`` covers the entry and ``prev_hash``, the previous row's hash."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    timestamp: Mapped[datetime] = created_at_column()
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The user's id at the time, kept (and hashed) when deleting the user sets user_id NULL.
    actor_user_id: Mapped[int | None]
    actor: Mapped[str | None] = mapped_column(String(100))  # username kept after deletion
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str | None] = mapped_column(String(50))
    resource_id: Mapped[str | None] = mapped_column(String(100))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    details: Mapped[dict[str, Any] | None]
    message: Mapped[str | None] = mapped_column(Text)  # seed 003 activity_logs.details (text)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("idx_audit_timestamp", "timestamp"),
        Index("idx_audit_user", "user_id"),
        Index("idx_audit_action", "action"),
        Index("idx_user_timestamp", "user_id", "timestamp"),
        Index("idx_action_timestamp", "action", "timestamp"),
        Index("idx_activity_user_action", "user_id", "action"),
        Index("idx_audit_row_hash", "row_hash"),
    )


class AuditChainHead(Base):
    """The one row that serialises appends: a writer locks it, links its entry to
    ``last_hash`` and moves it forward, so the chain stays linear across processes."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_id: Mapped[int | None] = mapped_column(BigID)
    last_hash: Mapped[str | None] = mapped_column(String(64))
    entries: Mapped[int] = mapped_column(BigID, default=0, server_default="0")
    updated_at: Mapped[datetime] = updated_at_column()

    __table_args__ = (ck("single_row", "id = 1"),)


class AuditCheckpoint(Base):
    """Where the chain continues after its oldest entries were archived: the last archived
    entry's id and ``row_hash`` (the ``prev_hash`` of the first entry left in
    ``audit_log``) and how many entries were archived. One row, moved by each archive batch
    in the transaction that moves the entries (see docs/audit.md)."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_id: Mapped[int | None] = mapped_column(BigID)
    last_hash: Mapped[str | None] = mapped_column(String(64))
    entries: Mapped[int] = mapped_column(BigID, default=0, server_default="0")
    updated_at: Mapped[datetime] = updated_at_column()

    __table_args__ = (ck("single_row", "id = 1"),)


audit_log_archive = archive_table(AuditLog.__table__)  # type: ignore[arg-type]
