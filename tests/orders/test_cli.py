"""`tradebase orders`, `positions` and `portfolio`."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from tests.conftest import Scratch
from tradebase.accounts.service import user as user_service
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, engines, unit_of_work
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

runner = CliRunner()


@pytest.fixture
def env(scratch: Scratch) -> tuple[dict[str, str], int]:
    settings = scratch.settings()
    for database in Database:
        migrate.upgrade(database, settings=settings)
    local = Engines(settings)
    with unit_of_work(factory=local.session_factory(Database.main)) as session:
        user, _ = user_service.create(
            session, username="dana", email="dana@example.com", password="a long password"
        )
        who = Principal(user_id=user.id, username="dana", role="trader")
        account = account_service.create(session, who, account_name="cli paper")
        pid = portfolio_service.create(session, who, account_id=account.id, name="main").id
        portfolio_service.deposit(session, who, pid, Decimal(1000))
    local.dispose()
    return {**scratch.env(), "COLUMNS": "250"}, pid


def tb(env: dict[str, str], *args: str) -> tuple[int, str]:
    get_settings.cache_clear()
    engines.dispose()
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_orders_positions_and_portfolio(env: tuple[dict[str, str], int]) -> None:
    e, pid = env
    code, out = tb(
        e,
        "orders",
        "place",
        "--user",
        "dana",
        "--portfolio",
        str(pid),
        "buy",
        "2",
        "ACME",
        "--price",
        "10",
    )
    assert code == 0 and "-> filled at 10 (fee 0)" in out, out
    code, out = tb(
        e,
        "orders",
        "place",
        "--user",
        "dana",
        "--portfolio",
        str(pid),
        "buy",
        "1",
        "ACME",
        "--type",
        "limit",
        "--price",
        "9",
    )
    assert code == 0 and "-> open" in out
    resting = re.search(r"order (\d+):", out)
    assert resting
    code, out = tb(e, "orders", "list", "--user", "dana", "--portfolio", str(pid))
    assert code == 0 and "filled" in out and "open" in out
    code, out = tb(e, "orders", "cancel", "--user", "dana", resting.group(1))
    assert code == 0 and "cancelled" in out
    code, out = tb(e, "positions", "--user", "dana", "--portfolio", str(pid))
    assert code == 0 and "ACME" in out and "long" in out
    code, out = tb(e, "portfolio", "--user", "dana")
    assert code == 0 and "980 USD" in out  # 1000 - 2 x 10
    code, out = tb(
        e, "orders", "place", "--user", "dana", "--portfolio", str(pid), "buy", "1", "NOPE"
    )
    assert code == 1 and "no price for NOPE" in out
    engines.dispose()


def test_day_orders_expire_from_the_command_line(env: tuple[dict[str, str], int]) -> None:
    e, pid = env
    place = ("orders", "place", "--user", "dana", "--portfolio", str(pid), "buy", "1", "ACME")
    code, out = tb(e, *place, "--type", "limit", "--price", "9", "--tif", "DAY")
    assert code == 0 and "-> open" in out, out
    code, out = tb(e, "orders", "expire", "--at", "2000-01-01T00:00Z")  # before it was placed
    assert (code, out.strip()) == (0, "0 orders expired")
    code, out = tb(e, "orders", "expire", "--at", "2000-01-01T00:00")
    assert code == 1 and "has no time zone" in out
    # The paper exchange has no calendar: a DAY order lives until 00:00 UTC.
    code, out = tb(e, "orders", "expire", "--at", "2999-01-01T00:00+00:00")
    assert (code, out.strip()) == (0, "1 order expired")
    code, out = tb(e, "orders", "list", "--user", "dana", "--status", "expired")
    assert code == 0 and "ACME" in out, out
    engines.dispose()
