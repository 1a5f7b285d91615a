"""retention: audit_checkpoint (where the chain resumes after archiving) and order_events_archive

Revision ID: main_0006
Revises: main_0005
Create Date: 2026-12-01 08:15:00.000000+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tradebase.core.ddl as tb


revision: str = "main_0006"
down_revision: str | Sequence[str] | None = "main_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_id", tb.BigID(), nullable=True),
        sa.Column("last_hash", sa.String(length=64), nullable=True),
        sa.Column("entries", tb.BigID(), server_default="0", nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoint")),
        tb.ck(op.f("ck_audit_checkpoint_single_row"), "id = 1"),
    )
    op.execute("INSERT INTO audit_checkpoint (id, entries) VALUES (1, 0)")

    op.create_table(
        "order_events_archive",
        sa.Column("id", tb.BigID(), autoincrement=False, nullable=False),
        sa.Column("order_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("event_type", sa.String(length=20), autoincrement=False, nullable=False),
        sa.Column("from_status", sa.String(length=20), autoincrement=False, nullable=True),
        sa.Column("to_status", sa.String(length=20), autoincrement=False, nullable=False),
        sa.Column("quantity", tb.ExactDecimal(), autoincrement=False, nullable=True),
        sa.Column("price", tb.ExactDecimal(), autoincrement=False, nullable=True),
        sa.Column("details", tb.JSONDoc(), autoincrement=False, nullable=True),
        sa.Column("occurred_at", tb.UTCDateTime(), autoincrement=False, nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), autoincrement=False, nullable=False),
        sa.Column("archived_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events_archive")),
    )
    with op.batch_alter_table("order_events_archive", schema=None) as batch_op:
        batch_op.create_index("ix_order_events_archive_archived_at", ["archived_at"], unique=False)


def downgrade() -> None:
    op.drop_table("order_events_archive")
    op.drop_table("audit_checkpoint")
