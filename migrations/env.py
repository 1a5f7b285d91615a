"""Alembic environment: Tradebase configures everything from its settings (no alembic.ini).

Run migrations with ``tradebase db upgrade``; see ``tradebase.core.migrate``.
"""

from alembic import context

from tradebase.core.migrate import run_env

run_env(context)
