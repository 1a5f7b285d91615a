"""Response and request bodies of signals (the webhook's body itself is free-form JSON:
see tradebase.signals.payload)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradebase.accounts.schemas import Strict
from tradebase.portfolios.schemas import Money


class SignalRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: str
    error: str | None
    source: str
    sender_order_id: str | None = Field(description="The order_id the sender gave, if any.")
    symbol: str | None
    exchange: str | None
    direction: str | None
    quantity: Money | None
    price: Money | None
    order_type: str | None
    product: str | None
    limit_price: Money | None
    stop_price: Money | None
    position_size: Money | None
    trade_action: str | None
    position_status: str | None = Field(description="open or closed once the orders filled.")
    trade_direction: str | None = Field(description="long or short once the orders filled.")
    hedging_enabled: bool
    deal_id: str | None
    comment: str | None
    strategy_id: int | None
    account_id: int | None
    outcome: dict[str, Any] | None = Field(description="The orders placed, or why none was.")
    source_ip: str | None
    content_type: str | None
    raw_payload: str | None = Field(description="The body as received (a key in it blanked).")
    timestamp: datetime | None
    received_at: datetime
    processed_at: datetime | None

    @field_validator("outcome")
    @classmethod
    def _keys_sorted(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """The outcome's keys in sorted order, as the answer that executed the signal
        gives it and as any read gives it back (PostgreSQL's JSONB keeps an order of its
        own): every answer about one signal is the same JSON."""
        return _sorted(value) if value is not None else None


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


class SignalAnswer(BaseModel):
    signal: SignalRead
    duplicate: bool = Field(description="True when this was a repeat of an earlier signal.")


class WebhookKey(BaseModel):
    webhook_key: str = Field(description="Shown once: only its hash is kept.")
    url_path: str = Field(description="POST signals here, e.g. https://your-host/webhook/<key>.")


class SignalSettings(BaseModel):
    paused: bool
    ip_allowlist: list[str]
    max_order_value: Money | None
    max_position_size: Money | None
    webhook_key_set: bool
    signed: bool = Field(description="Webhooks must be signed (POST …/signing-secret).")


class SignalSettingsUpdate(Strict):
    paused: bool | None = Field(default=None, description="The kill switch: true pauses trading.")
    ip_allowlist: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Addresses webhooks may come from ('tradingview': TradingView's four);"
        " empty: any.",
    )
    max_order_value: Money | None = Field(default=None, gt=0)
    max_position_size: Money | None = Field(default=None, gt=0)


class SigningSecret(BaseModel):
    signing_secret: str = Field(description="Shown once; kept encrypted.")
    timestamp_header: str = Field(description="Send the Unix time (seconds) in this header.")
    signature_header: str = Field(
        description="And in this one sha256=<hex HMAC-SHA256 of '<timestamp>.<raw body>'>."
    )
