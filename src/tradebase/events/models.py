"""The ``events`` table: one row per user-facing event (the transactional outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID
from tradebase.core.models import Base, created_at_column


class Event(Base):
    """Something that happened to a user's orders, positions, signals or accounts.

    Written by `tradebase.events.service.emit` in the transaction of the change itself, so
    an event exists if and only if its change committed. Append-only but for
    ``dispatched_at``, which the webhook dispatcher sets once it has turned the event into
    deliveries. Ids only grow (AUTOINCREMENT on SQLite too): readers resume by id.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = created_at_column()
    dispatched_at: Mapped[datetime | None]

    __table_args__ = (
        Index("idx_events_user", "user_id", "id"),
        Index("idx_events_created", "created_at"),
        Index("idx_events_dispatch", "dispatched_at", "id"),
        {"sqlite_autoincrement": True},
    )
