"""The credentials database: encrypted secrets and every read of them (seeds 000/001, 003, 004).

It lives in its own database with its own URL, so it holds no foreign keys to the main
database: ``user_id`` and ``owner_id`` are plain integers checked by the service.
Each ciphertext is bound to its row (``owner_type``, ``owner_id``, ``kind``, ``name``) as
associated data, so a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck_in
from tradebase.core.models import CredentialsBase, Timestamps, created_at_column


class CredentialOwner(StrEnum):
    user = "user"  # a user's own secret (TOTP)
    account = "account"  # a trading account's broker key and secret
    webhook = "webhook"  # an outgoing webhook's signing secret


class CredentialKind(StrEnum):
    broker_api_key = "broker_api_key"  # seed 000 capital_key, 003 api_key_encrypted, 004 api_key
    broker_api_secret = "broker_api_secret"  # seed 000 capital_secret, 004 api_secret
    broker_password = "broker_password"
    webhook_signing_secret = "webhook_signing_secret"  # seed 002 webhooks.secret_hash
    totp_secret = "totp_secret"
    other = "other"


class CredentialAction(StrEnum):
    read = "read"
    create = "create"
    update = "update"
    delete = "delete"
    rotate = "rotate"


class Credential(Timestamps, CredentialsBase):
    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int]
    owner_type: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[int]
    kind: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(100), default="default", server_default="default")
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(64))
    last4: Mapped[str | None] = mapped_column(String(4))
    rotated_at: Mapped[datetime | None]

    __table_args__ = (
        Index("uq_credentials_owner", "owner_type", "owner_id", "kind", "name", unique=True),
        Index("idx_user_api_keys_user_id", "user_id"),
        Index("idx_credentials_key_id", "key_id"),
        ck_in("owner_type", "owner_type", list(CredentialOwner)),
        ck_in("kind", "kind", list(CredentialKind)),
    )


class CredentialAccessLog(CredentialsBase):
    """Who read or changed which secret, when and why."""

    __tablename__ = "credential_access_log"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    credential_id: Mapped[int | None] = mapped_column(
        ForeignKey("credentials.id", ondelete="SET NULL")
    )
    user_id: Mapped[int | None]  # the actor; None for the system (jobs, rotation)
    actor: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(200))
    success: Mapped[bool] = mapped_column(default=True, server_default="1")
    error: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    accessed_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("idx_credential_access_log_credential", "credential_id", "accessed_at"),
        Index("idx_credential_access_log_user", "user_id", "accessed_at"),
        Index("idx_credential_access_log_time", "accessed_at"),
        ck_in("action", "action", list(CredentialAction)),
    )
