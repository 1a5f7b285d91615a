"""audit: actor_user_id, the user an entry was recorded for, kept when the user is deleted

Revision ID: main_0003
Revises: main_0002
Create Date: 2026-11-22 12:17:42.856862+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


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


def downgrade() -> None:
    with op.batch_alter_table("audit_log_archive", schema=None) as batch_op:
        batch_op.drop_column("actor_user_id")

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("actor_user_id")
