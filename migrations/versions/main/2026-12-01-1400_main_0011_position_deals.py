"""position deals: a deal id is unique among a portfolio's open positions

A signal's ``deal_id`` labels the position it opens and names the one a close ends.
Senders reuse labels (TradingView's entry names repeat with every trade), so the unique
index on ``positions.deal_id`` becomes unique on (deal_id, portfolio_id, open_slot):
``open_slot`` is 1 while a position is open and NULL once closed, and NULLs are distinct in
a unique index on every engine, so closed deals keep their label for the history while
the same label opens the next deal. deal_id stays the leading column: lookups by deal id
use the index as before.

The downgrade restores the unique index on deal_id alone, which fails when a label has
been reused meanwhile (clear ``deal_id`` of the closed positions first).

Revision ID: main_0011
Revises: main_0010
Create Date: 2026-12-01 14:00:00.000000+00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "main_0011"
down_revision: str | Sequence[str] | None = "main_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("idx_positions_deal_id", table_name="positions")
    op.create_index(
        "idx_positions_deal_id",
        "positions",
        ["deal_id", "portfolio_id", "open_slot"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("idx_positions_deal_id", table_name="positions")
    op.create_index("idx_positions_deal_id", "positions", ["deal_id"], unique=True)
