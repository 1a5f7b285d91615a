"""initial schema of the credentials database

Revision ID: credentials_0001
Revises:
Create Date: 2026-11-22 11:34:26.953682+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import tradebase.core.ddl as tb

revision: str = "credentials_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("credentials",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("owner_type", sa.String(length=20), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), server_default="default", nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=True),
        sa.Column("rotated_at", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        tb.ck_in(
            op.f("ck_credentials_kind"),
            "kind",
            [
                "broker_api_key",
                "broker_api_secret",
                "broker_password",
                "webhook_signing_secret",
                "totp_secret",
                "other",
            ],
        ),
        tb.ck_in(op.f("ck_credentials_owner_type"), "owner_type", ["user", "account", "webhook"]),
    )
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.create_index("idx_credentials_key_id", ["key_id"], unique=False)
        batch_op.create_index("idx_user_api_keys_user_id", ["user_id"], unique=False)
        batch_op.create_index(
            "uq_credentials_owner", ["owner_type", "owner_id", "kind", "name"], unique=True
        )

    op.create_table(
        "credential_access_log",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("credential_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("success", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("accessed_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["credentials.id"],
            name=op.f("fk_credential_access_log_credential_id_credentials"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credential_access_log")),
        tb.ck_in(
            op.f("ck_credential_access_log_action"),
            "action",
            ["read", "create", "update", "delete", "rotate"],
        ),
    )
    with op.batch_alter_table("credential_access_log", schema=None) as batch_op:
        batch_op.create_index(
            "idx_credential_access_log_credential", ["credential_id", "accessed_at"], unique=False
        )
        batch_op.create_index("idx_credential_access_log_time", ["accessed_at"], unique=False)
        batch_op.create_index(
            "idx_credential_access_log_user", ["user_id", "accessed_at"], unique=False
        )


def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key uses.
    op.drop_table("credential_access_log")
    op.drop_table("credentials")
