"""audit_log.actor_user_id (kept when a user is deleted); users.totp_last_step (no code reuse)

Revision ID: main_0003
Revises: main_0002
Create Date: 2026-11-22 12:17:42.856862+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tradebase.core.ddl as tb


revision: str = "main_0003"
down_revision: str | Sequence[str] | None = "main_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor_user_id", sa.Integer(), nullable=True))
    op.execute("UPDATE audit_log SET actor_user_id = user_id")

    with op.batch_alter_table("audit_log_archive", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("actor_user_id", sa.Integer(), autoincrement=False, nullable=True)
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_last_step", tb.BigID(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")

    with op.batch_alter_table("audit_log_archive", schema=None) as batch_op:
        batch_op.drop_column("actor_user_id")

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("actor_user_id")
