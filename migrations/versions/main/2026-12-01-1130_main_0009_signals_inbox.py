"""signals inbox: the sender's order_id apart from the window-scoped idempotency keys

``signals.order_id`` keeps the unique (user_id, order_id) constraint and now holds the
idempotency key on one grid of time windows; ``order_id_shifted`` holds the key on the grid
offset by half a period, under a unique index of its own (see tradebase.signals.keys), and
``sender_order_id`` what the sender called its order (TradingView's entry name repeats).
Plain ALTER TABLE and CREATE INDEX, also on SQLite: a batch rebuild there would lose the
tb_decimal collation of the decimal columns (see main_0007). Existing rows keep their
order_id, which was the sender's: it is copied into sender_order_id and, so that no row
has a NULL key (one NULL per unique index on SQL Server), into order_id_shifted.

Revision ID: main_0009
Revises: main_0008
Create Date: 2026-12-01 11:30:00.000000+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "main_0009"
down_revision: str | Sequence[str] | None = "main_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_signals = sa.table(
    "signals",
    sa.column("order_id", sa.String),
    sa.column("sender_order_id", sa.String),
    sa.column("order_id_shifted", sa.String),
)


def upgrade() -> None:
    op.add_column("signals", sa.Column("sender_order_id", sa.String(length=200), nullable=True))
    op.add_column("signals", sa.Column("order_id_shifted", sa.String(length=200), nullable=True))
    op.create_index(
        "uq_signals_user_order_id_shifted", "signals", ["user_id", "order_id_shifted"], unique=True
    )
    op.create_index("idx_signals_user_sender_order", "signals", ["user_id", "sender_order_id"])
    op.execute(
        _signals.update().values(
            sender_order_id=_signals.c.order_id, order_id_shifted=_signals.c.order_id
        )
    )


def downgrade() -> None:
    op.drop_index("idx_signals_user_sender_order", table_name="signals")
    op.drop_index("uq_signals_user_order_id_shifted", table_name="signals")
    op.drop_column("signals", "order_id_shifted")  # SQLite 3.35+ drops a column in place
    op.drop_column("signals", "sender_order_id")
