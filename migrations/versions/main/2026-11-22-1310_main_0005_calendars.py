"""calendars: NSE, NYSE (with its 2026 holidays) and 24/7 crypto templates

Revision ID: main_0005
Revises: main_0004
Create Date: 2026-11-22 13:08:13.104503+00:00

"""

import datetime
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "main_0005"
down_revision: str | Sequence[str] | None = "main_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    templates = sa.table(
        "trading_hours_templates",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("exchange", sa.String),
        sa.column("timezone", sa.String),
        sa.column("description", sa.String),
    )
    sessions = sa.table(
        "trading_sessions",
        sa.column("template_id", sa.Integer),
        sa.column("day_of_week", sa.Integer),
        sa.column("pre_market_start", sa.Time),
        sa.column("pre_market_end", sa.Time),
        sa.column("market_open", sa.Time),
        sa.column("market_close", sa.Time),
        sa.column("post_market_start", sa.Time),
        sa.column("post_market_end", sa.Time),
        sa.column("is_trading_day", sa.Boolean),
    )
    holidays = sa.table(
        "market_holidays",
        sa.column("template_id", sa.Integer),
        sa.column("date", sa.Date),
        sa.column("description", sa.String),
        sa.column("holiday_type", sa.String),
    )
    op.bulk_insert(
        templates,
        [
            {
                "id": 1,
                "name": "NSE",
                "exchange": "NSE",
                "timezone": "Asia/Kolkata",
                "description": "National Stock Exchange of India: equities and F&O",
            },
            {
                "id": 2,
                "name": "NYSE",
                "exchange": "NYSE",
                "timezone": "America/New_York",
                "description": "New York Stock Exchange (NASDAQ keeps the same hours)",
            },
            {
                "id": 3,
                "name": "CRYPTO",
                "exchange": "CRYPTO",
                "timezone": "UTC",
                "description": "Crypto venues: open around the clock, every day",
            },
        ],
    )
    t = datetime.time
    rows = []
    for day in range(7):
        weekday = day < 5
        rows.append(
            {
                "template_id": 1,
                "day_of_week": day,
                "pre_market_start": t(9, 0),
                "pre_market_end": t(9, 8),
                "market_open": t(9, 15),
                "market_close": t(15, 30),
                "post_market_start": t(15, 40),
                "post_market_end": t(16, 0),
                "is_trading_day": weekday,
            }
        )
        rows.append(
            {
                "template_id": 2,
                "day_of_week": day,
                "pre_market_start": t(4, 0),
                "pre_market_end": t(9, 30),
                "market_open": t(9, 30),
                "market_close": t(16, 0),
                "post_market_start": t(16, 0),
                "post_market_end": t(20, 0),
                "is_trading_day": weekday,
            }
        )
        rows.append(
            {
                "template_id": 3,
                "day_of_week": day,
                "pre_market_start": None,
                "pre_market_end": None,
                "market_open": t(0, 0),
                "market_close": t(23, 59, 59, 999999),
                "post_market_start": None,
                "post_market_end": None,
                "is_trading_day": True,
            }
        )
    op.bulk_insert(sessions, rows)
    nyse_2026 = [
        ("2026-01-01", "New Year's Day"),
        ("2026-01-19", "Martin Luther King Jr. Day"),
        ("2026-02-16", "Washington's Birthday"),
        ("2026-04-03", "Good Friday"),
        ("2026-05-25", "Memorial Day"),
        ("2026-06-19", "Juneteenth"),
        ("2026-07-03", "Independence Day (observed)"),
        ("2026-09-07", "Labor Day"),
        ("2026-11-26", "Thanksgiving Day"),
        ("2026-12-25", "Christmas Day"),
    ]
    if op.get_bind().dialect.name == "postgresql":  # explicit ids do not move the sequence
        op.execute(
            "SELECT setval(pg_get_serial_sequence('trading_hours_templates', 'id'),"
            " (SELECT MAX(id) FROM trading_hours_templates))"
        )
    op.bulk_insert(
        holidays,
        [
            {
                "template_id": 2,
                "date": datetime.date.fromisoformat(day),
                "description": name,
                "holiday_type": "full_day",
            }
            for day, name in nyse_2026
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM market_holidays WHERE template_id IN (1, 2, 3)")
    op.execute("DELETE FROM trading_sessions WHERE template_id IN (1, 2, 3)")
    op.execute("DELETE FROM trading_hours_templates WHERE id IN (1, 2, 3)")
