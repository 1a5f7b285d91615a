"""Response bodies of the outbox: the same shape webhooks and stream clients receive."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from tradebase.events.models import Event


class EventRead(BaseModel):
    id: int = Field(description="Grows with every event: resume with after_id.")
    type: str = Field(description="e.g. order.filled, position.closed, signal.rejected.")
    created_at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> EventRead:
        return cls(
            id=event.id, type=event.event_type, created_at=event.created_at, data=event.payload
        )
