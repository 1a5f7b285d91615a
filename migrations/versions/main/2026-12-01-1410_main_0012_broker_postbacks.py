"""brokers: broker_postbacks (applied order-update postbacks, unique per account and id:
the replay guard)

Revision ID: main_0012
Revises: main_0011
Create Date: 2026-12-01 13:30:00.000000+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import tradebase.core.ddl as tb

revision: str = "main_0012"
down_revision: str | Sequence[str] | None = "main_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broker_postbacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("postback_id", sa.String(length=100), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("sent_at", tb.UTCDateTime(), nullable=False),
        sa.Column("payload", tb.JSONDoc(), nullable=False),
        sa.Column("received_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_broker_postbacks_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_broker_postbacks_order_id_orders"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broker_postbacks")),
        sa.UniqueConstraint("account_id", "postback_id", name="uq_broker_postbacks_account_id"),
    )
    with op.batch_alter_table("broker_postbacks", schema=None) as batch_op:
        batch_op.create_index("idx_broker_postbacks_order", ["order_id"], unique=False)
        batch_op.create_index("idx_broker_postbacks_received", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_table("broker_postbacks")  # with its indexes (MariaDB keeps those a key needs)
