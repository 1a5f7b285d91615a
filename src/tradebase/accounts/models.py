"""Users and API keys.

Seeds: 000 users/api_tokens, 002 users/api_keys, 003 users, 004 users/api_keys.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck, ck_in, json_default
from tradebase.core.models import Base, Timestamps, created_at_column


class UserRole(StrEnum):
    admin = "admin"
    trader = "trader"
    viewer = "viewer"


class User(Timestamps, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80))
    email: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default=UserRole.trader, server_default="trader")
    is_active: Mapped[bool] = mapped_column(default=True, server_default="1")
    email_verified: Mapped[bool] = mapped_column(default=False, server_default="0")
    two_factor_enabled: Mapped[bool] = mapped_column(default=False, server_default="0")
    settings: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default=json_default("{}")
    )
    # The per-user webhook key of seed 000 (user_api_keys.webhook_key): only its SHA-256.
    webhook_key_hash: Mapped[str | None] = mapped_column(String(64))
    last_login: Mapped[datetime | None]
    # Lockout: failures counted in a window that starts at the first failure (core of
    # "5 failures in 15 minutes"), kept in the row so every server process sees them.
    failed_login_count: Mapped[int] = mapped_column(default=0, server_default="0")
    failed_login_window_start: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None] = mapped_column(BigID)  # a spent code is not reused

    __table_args__ = (
        Index("idx_users_username", "username", unique=True),
        Index("idx_users_email", "email", unique=True),
        Index("idx_users_webhook_key_hash", "webhook_key_hash", unique=True),
        ck_in("role", "role", list(UserRole)),
        ck("username_length", "{len:username} >= 3"),
        ck("failed_login_count_nonnegative", "failed_login_count >= 0"),
    )


class ApiKey(Timestamps, Base):
    """An API key: shown once, stored as a hash with a visible prefix."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(default=list, server_default=json_default("[]"))
    rate_limit_per_minute: Mapped[int] = mapped_column(default=60, server_default="60")
    is_active: Mapped[bool] = mapped_column(default=True, server_default="1")
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    total_requests: Mapped[int] = mapped_column(default=0, server_default="0")

    __table_args__ = (
        Index("idx_api_keys_hash", "key_hash", unique=True),
        Index("idx_api_keys_user", "user_id"),
        Index("idx_api_keys_prefix", "key_prefix"),
        ck("rate_limit_positive", "rate_limit_per_minute > 0"),
        ck("total_requests_nonnegative", "total_requests >= 0"),
    )


class RateLimitCounter(Base):
    """Requests counted per bucket (e.g. an API key) and fixed one-minute window, shared by
    every server process through the database (or Redis, when configured)."""

    __tablename__ = "rate_limit_counters"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    bucket: Mapped[str] = mapped_column(String(100))
    window_start: Mapped[datetime]
    count: Mapped[int] = mapped_column(default=0, server_default="0")

    __table_args__ = (
        UniqueConstraint("bucket", "window_start"),
        Index("idx_rate_limit_counters_window", "window_start"),
        ck("count_nonnegative", "count >= 0"),
    )


class WebSession(Base):
    """A dashboard login: the cookie holds a random token, the database only its hash, so
    logout and password changes end sessions everywhere."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()
    last_seen_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("idx_web_sessions_token_hash", "token_hash", unique=True),
        Index("idx_web_sessions_user", "user_id"),
        Index("idx_web_sessions_expires", "expires_at"),
    )
