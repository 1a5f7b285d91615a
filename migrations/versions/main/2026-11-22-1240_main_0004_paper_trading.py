"""paper trading: account fee rate and slippage, exact position cost basis, cash ledger

Revision ID: main_0004
Revises: main_0003
Create Date: 2026-11-22 12:40:49.132780+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import tradebase.core.ddl as tb

revision: str = "main_0004"
down_revision: str | Sequence[str] | None = "main_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cash_movements",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("amount", tb.ExactDecimal(), nullable=False),
        sa.Column("balance_after", tb.ExactDecimal(), nullable=False),
        sa.Column("trade_id", tb.BigID(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_cash_movements_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trade_id"],
            ["trades.id"],
            name=op.f("fk_cash_movements_trade_id_trades"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_cash_movements_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cash_movements")),
        tb.ck(op.f("ck_cash_movements_amount_nonzero"), "{num:amount} <> 0"),
        tb.ck_in(op.f("ck_cash_movements_kind"), "kind", ["deposit", "withdrawal", "trade"]),
    )
    with op.batch_alter_table("cash_movements", schema=None) as batch_op:
        batch_op.create_index(
            "idx_cash_movements_portfolio", ["portfolio_id", "created_at"], unique=False
        )
        batch_op.create_index("idx_cash_movements_trade", ["trade_id"], unique=False)
        batch_op.create_index("idx_cash_movements_user", ["user_id"], unique=False)

    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cost_basis", tb.ExactDecimal(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("trading_accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fee_rate", tb.ExactDecimal(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("slippage_bps", tb.ExactDecimal(), server_default="0", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_trading_accounts_fee_rate_range"),
            tb.ck("fee_rate_range", "{num:fee_rate} >= 0 AND {num:fee_rate} < 1").sqltext,
        )
        batch_op.create_check_constraint(
            op.f("ck_trading_accounts_slippage_nonnegative"),
            tb.ck("slippage_nonnegative", "{num:slippage_bps} >= 0").sqltext,
        )


def downgrade() -> None:
    with op.batch_alter_table("trading_accounts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_trading_accounts_slippage_nonnegative"), type_="check")
        batch_op.drop_constraint(op.f("ck_trading_accounts_fee_rate_range"), type_="check")
        batch_op.drop_column("slippage_bps")
        batch_op.drop_column("fee_rate")

    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_column("cost_basis")

    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key uses.
    op.drop_table("cash_movements")
