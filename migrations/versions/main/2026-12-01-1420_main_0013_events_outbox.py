"""events: the outbox of user-facing events (webhooks out, the live stream),
webhook_deliveries.attempted_at

The column is added with plain ALTER TABLE, also on SQLite (no batch rebuild). events uses
AUTOINCREMENT on SQLite so that its ids never go back (readers resume by id).

Revision ID: main_0013
Revises: main_0012
Create Date: 2026-12-01 13:30:00.000000+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import tradebase.core.ddl as tb

revision: str = "main_0013"
down_revision: str | Sequence[str] | None = "main_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("payload", tb.JSONDoc(), nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("dispatched_at", tb.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_events_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("idx_events_created", "events", ["created_at"], unique=False)
    op.create_index("idx_events_dispatch", "events", ["dispatched_at", "id"], unique=False)
    op.create_index("idx_events_user", "events", ["user_id", "id"], unique=False)

    op.add_column("webhook_deliveries", sa.Column("attempted_at", tb.UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("webhook_deliveries", "attempted_at")  # SQLite 3.35+: in place
    op.drop_table("events")  # with its indexes (MariaDB keeps those a key needs)
