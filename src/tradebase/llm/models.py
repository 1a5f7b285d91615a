"""Conversations, messages and LLM usage with its cost (seed 002)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck, ck_in, json_default
from tradebase.core.models import Base, Timestamps, archive_table, created_at_column


class MessageRole(StrEnum):
    user = "user"
    assistant = "assistant"
    system = "system"
    tool = "tool"


class Conversation(Timestamps, Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(200))
    is_archived: Mapped[bool] = mapped_column(default=False, server_default="0")
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", default=dict, server_default=json_default("{}")
    )

    __table_args__ = (
        Index("idx_conversations_user_id", "user_id"),
        Index("idx_conversations_updated", "updated_at"),
        # Seed 002's partial index (WHERE NOT is_archived), written portably.
        Index("idx_conversations_user_recent", "user_id", "is_archived", "updated_at"),
    )


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(10))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    tokens_used: Mapped[int | None]
    model: Mapped[str | None] = mapped_column(String(100))
    latency_ms: Mapped[int | None]
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", default=dict, server_default=json_default("{}")
    )

    __table_args__ = (
        Index("idx_messages_conversation", "conversation_id"),
        Index("idx_messages_created", "created_at"),
        Index("idx_messages_conversation_order", "conversation_id", "created_at"),
        ck_in("role", "role", list(MessageRole)),
        ck("tokens_nonnegative", "tokens_used >= 0"),
        ck("latency_nonnegative", "latency_ms >= 0"),
    )


class LlmUsage(Base):
    __tablename__ = "llm_usage"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    timestamp: Mapped[datetime] = created_at_column()
    provider: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(100))
    input_tokens: Mapped[int]
    output_tokens: Mapped[int]
    cost_usd: Mapped[Decimal]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    request_type: Mapped[str | None] = mapped_column(String(50))
    latency_ms: Mapped[int | None]

    __table_args__ = (
        Index("idx_llm_usage_timestamp", "timestamp"),
        Index("idx_llm_usage_provider_model", "provider", "model"),
        Index("idx_llm_usage_user", "user_id"),
        # Seed 002 indexes (DATE(timestamp), provider); an expression index is not portable
        # (MariaDB has none), and a range scan on timestamp serves the daily roll-up.
        Index("idx_llm_daily_provider", "timestamp", "provider"),
        Index("idx_llm_usage_conversation", "conversation_id"),
        ck("input_tokens_nonnegative", "input_tokens >= 0"),
        ck("output_tokens_nonnegative", "output_tokens >= 0"),
        ck("cost_nonnegative", "{num:cost_usd} >= 0"),
        ck("latency_nonnegative", "latency_ms >= 0"),
    )


messages_archive = archive_table(Message.__table__)  # type: ignore[arg-type]
