"""`tradebase settle`: CNC positions into holdings from the shell, on every engine."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817

import pytest
from typer.testing import CliRunner

import tradebase.orders.service as orders_module
from tests.conftest import Scratch
from tests.factories import create_user
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, engines, unit_of_work
from tradebase.orders.service import order as order_service
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

runner = CliRunner()


def tb(env: dict[str, str], *args: str) -> tuple[int, str]:
    get_settings.cache_clear()
    engines.dispose()
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_settle_moves_cnc_positions_once(scratch: Scratch, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = scratch.settings()
    for database in Database:
        migrate.upgrade(database, settings=settings)
    local = Engines(settings)
    with unit_of_work(factory=local.session_factory(Database.main)) as session:
        user = create_user(session)
        who = Principal(user_id=user.id, username=user.username, role="trader")
        account = account_service.create(session, who, account_name="cli delivery")
        pid = portfolio_service.create(session, who, account_id=account.id, name="main").id
        portfolio_service.deposit(session, who, pid, D(10000))
        for hour, quantity, price in ((4, "10", "100"), (5, "5", "106")):  # Monday, NSE open
            moment = datetime(2026, 11, 23, hour, tzinfo=UTC)
            monkeypatch.setattr(orders_module, "utc_now", lambda moment=moment: moment)
            order_service.place(
                session,
                who,
                portfolio_id=pid,
                symbol="INFY",
                exchange="NSE",
                side="buy",
                quantity=D(quantity),
                price=D(price),
                product="CNC",
            )
    local.dispose()
    env = {**scratch.env(), "COLUMNS": "200"}

    code, out = tb(env, "settle", "--help")
    assert code == 0 and "trading day" in out and "--portfolio" in out and "--at" in out
    code, out = tb(env, "settle", "--at", "2026-11-23T09:59:00Z")  # before NSE's 15:30 close
    assert code == 0, out
    assert "0 position(s) settled into holdings as of 2026-11-23T09:59:00+00:00" in out
    assert "1 wait for their trading day to end" in out
    code, out = tb(env, "settle", "--portfolio", str(pid), "--at", "2026-11-23T15:30:00+05:30")
    assert code == 0, out
    assert f"portfolio {pid}: settled 15 INFY (NSE) from position" in out
    assert "holding 15 at 102" in out and "1 position(s) settled into holdings" in out
    code, out = tb(env, "settle", "--at", "2026-11-24T00:00:00Z")
    assert code == 0 and "0 position(s) settled" in out, out
    code, out = tb(env, "reconcile")
    assert code == 0 and "1 settlement(s): holdings agree" in out, out
    code, out = tb(env, "settle", "--at", "2026-11-23T10:00:00")
    assert code == 2 and "no time zone" in out, out
    code, out = tb(env, "settle", "--at", "2999-01-01T00:00:00Z")
    assert code == 1 and "in the future" in out, out
    engines.dispose()
