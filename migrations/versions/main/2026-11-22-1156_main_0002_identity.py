"""identity: lockout, rate limits, web sessions, audit chain head

Revision ID: main_0002
Revises: main_0001
Create Date: 2026-11-22 11:56:50.778604+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import tradebase.core.ddl as tb

revision: str = "main_0002"
down_revision: str | Sequence[str] | None = "main_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_id", tb.BigID(), nullable=True),
        sa.Column("last_hash", sa.String(length=64), nullable=True),
        sa.Column("entries", tb.BigID(), server_default="0", nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
        tb.ck(op.f("ck_audit_chain_head_single_row"), "id = 1"),
    )
    op.create_table(
        "rate_limit_counters",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("bucket", sa.String(length=100), nullable=False),
        sa.Column("window_start", tb.UTCDateTime(), nullable=False),
        sa.Column("count", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_limit_counters")),
        sa.UniqueConstraint(
            "bucket", "window_start", name=op.f("uq_rate_limit_counters_bucket_window_start")
        ),
        tb.ck(op.f("ck_rate_limit_counters_count_nonnegative"), "count >= 0"),
    )
    with op.batch_alter_table("rate_limit_counters", schema=None) as batch_op:
        batch_op.create_index("idx_rate_limit_counters_window", ["window_start"], unique=False)

    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("last_seen_at", tb.UTCDateTime(), nullable=True),
        sa.Column("expires_at", tb.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", tb.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_web_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index("idx_web_sessions_expires", ["expires_at"], unique=False)
        batch_op.create_index("idx_web_sessions_token_hash", ["token_hash"], unique=True)
        batch_op.create_index("idx_web_sessions_user", ["user_id"], unique=False)

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failed_login_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("failed_login_window_start", tb.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("locked_until", tb.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("password_changed_at", tb.UTCDateTime(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_users_failed_login_count_nonnegative"), "failed_login_count >= 0"
        )

    # The chain's single head row: appends lock it (see tradebase.audit.service).
    op.execute("INSERT INTO audit_chain_head (id, entries) VALUES (1, 0)")


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_users_failed_login_count_nonnegative"), type_="check")
        batch_op.drop_column("password_changed_at")
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_login_window_start")
        batch_op.drop_column("failed_login_count")

    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key uses.
    op.drop_table("web_sessions")
    op.drop_table("rate_limit_counters")
    op.drop_table("audit_chain_head")
