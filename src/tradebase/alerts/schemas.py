"""Request and response bodies of outgoing webhooks and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tradebase.accounts.schemas import Strict

EVENTS_HELP = (
    "Event types to send: e.g. order.filled, position.closed, signal.rejected, failover;"
    " order.* for every order event, * for all."
)
SIGNING_HELP = (
    "The signing secret (16-200 characters). Default: one is generated and shown once in the"
    " answer; it is stored encrypted and never shown again."
)


class WebhookCreate(Strict):
    url: str = Field(min_length=1, max_length=2000, description="http:// or https:// URL.")
    events: list[str] = Field(min_length=1, max_length=50, description=EVENTS_HELP)
    description: str | None = Field(default=None, max_length=200)
    secret: str | None = Field(
        default=None, min_length=16, max_length=200, description=SIGNING_HELP
    )


class WebhookUpdate(Strict):
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: list[str] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=200)
    is_active: bool | None = Field(
        default=None, description="false pauses the webhook; true enables it (as /enable)."
    )
    secret: str | None = Field(
        default=None, min_length=16, max_length=200, description="Replace the signing secret."
    )


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    url: str
    description: str | None
    events: list[str]
    secret_last4: str | None = Field(description="The signing secret's last 4 characters.")
    is_active: bool
    failure_count: int = Field(description="Consecutive failed attempts (0 after a success).")
    last_called_at: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    secret: str | None = Field(
        description="The signing secret, shown this once (None when you gave your own)."
    )
    signature_header: str
    timestamp_header: str


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    webhook_id: int
    event_id: str
    event_type: str
    attempt: int
    status: str = Field(description="pending (due at next_attempt_at), succeeded or failed.")
    response_status: int | None
    response_body: str | None = Field(description="The first 2000 characters of the answer.")
    error: str | None
    duration_ms: int | None
    next_attempt_at: datetime | None
    created_at: datetime
    attempted_at: datetime | None
    delivered_at: datetime | None
    payload: dict[str, Any]
