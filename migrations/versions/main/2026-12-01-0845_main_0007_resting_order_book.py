"""resting order book: orders.triggered_at and the indexes a bar selects its orders by

A stop_limit whose stop was reached used to say so only in ``algo_params`` (JSON, which no
index can serve portably); ``triggered_at`` is the column now. The resting stop_limits
already triggered are carried over here, both ways, so that no resting order changes its
meaning across the upgrade (a handful of rows: only open ones).

Revision ID: main_0007
Revises: main_0006
Create Date: 2026-12-01 07:45:00.000000+00:00

"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
import tradebase.core.ddl as tb

revision: str = "main_0007"
down_revision: str | Sequence[str] | None = "main_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_orders = sa.table(
    "orders",
    sa.column("id", sa.Integer),
    sa.column("order_type", sa.String),
    sa.column("status", sa.String),
    sa.column("algo_params", tb.JSONDoc()),
    sa.column("triggered_at", tb.UTCDateTime()),
    sa.column("updated_at", tb.UTCDateTime()),
)
_RESTING_STOP_LIMITS = sa.and_(
    _orders.c.order_type == "stop_limit",
    _orders.c.status.in_(["open", "partially_filled"]),
)


def upgrade() -> None:
    # Plain ALTER TABLE, also on SQLite: a batch operation there would copy the table and
    # lose the tb_decimal collation of its decimal columns (SQLAlchemy does not reflect it).
    op.add_column("orders", sa.Column("triggered_at", tb.UTCDateTime(), nullable=True))
    op.add_column(
        "orders_archive",
        sa.Column("triggered_at", tb.UTCDateTime(), autoincrement=False, nullable=True),
    )
    # Price and stop through tb.num_key: `(price + 0)` on SQLite (see tradebase.core.money).
    op.create_index(
        "idx_orders_book_price",
        "orders",
        ["symbol", "exchange", "status", "order_type", "side", tb.num_key("price")],
    )
    op.create_index(
        "idx_orders_book_trigger",
        "orders",
        ["symbol", "exchange", "status", "order_type", "side", tb.num_key("trigger_price")],
    )
    op.create_index(
        "idx_orders_book_expiry", "orders", ["symbol", "exchange", "status", "expires_at"]
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_orders.c.id, _orders.c.algo_params, _orders.c.updated_at).where(
            _RESTING_STOP_LIMITS
        )
    ).all()
    for order_id, params, updated_at in rows:
        if (params or {}).get("triggered"):
            bind.execute(
                _orders.update().where(_orders.c.id == order_id).values(triggered_at=updated_at)
            )


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_orders.c.id, _orders.c.algo_params).where(
            _RESTING_STOP_LIMITS, _orders.c.triggered_at.is_not(None)
        )
    ).all()
    for order_id, params in rows:
        restored: dict[str, Any] = {**(params or {}), "triggered": True}
        bind.execute(_orders.update().where(_orders.c.id == order_id).values(algo_params=restored))
    op.drop_index("idx_orders_book_expiry", table_name="orders")
    op.drop_index("idx_orders_book_trigger", table_name="orders")
    op.drop_index("idx_orders_book_price", table_name="orders")
    op.drop_column("orders_archive", "triggered_at")  # SQLite 3.35+ drops a column in place
    op.drop_column("orders", "triggered_at")
