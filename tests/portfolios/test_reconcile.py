"""`tradebase reconcile`: a replay of the fills equals the stored positions and cash, and
a row altered by hand is named."""

from __future__ import annotations

import random
from decimal import Decimal as D  # noqa: N817

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from tests.conftest import ScratchFactory
from tests.factories import create_user
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, engines, unit_of_work
from tradebase.orders.errors import OrderRejected
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Position
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service


@pytest.mark.parametrize(("backend", "orders"), [("sqlite", 10_000), ("postgresql", 1_000)])
def test_reconcile_after_random_orders_and_after_a_hand_edit(
    scratch_factory: ScratchFactory, backend: str, orders: int
) -> None:
    scratch = scratch_factory.new(backend, "reconcile")
    settings = scratch.settings()
    for database in Database:
        migrate.upgrade(database, settings=settings)
    local = Engines(settings)
    factory = local.session_factory(Database.main)
    with unit_of_work(factory=factory) as session:
        user = create_user(session)
        who = Principal(user_id=user.id, username=user.username, role="trader")
        account = account_service.create(
            session, who, account_name="reconciled", fee_rate=D("0.0005"), slippage_bps=D(3)
        )
        pid = portfolio_service.create(session, who, account_id=account.id, name="main").id
        portfolio_service.deposit(session, who, pid, D(10_000_000))
    rng = random.Random(20261122)
    symbols = [f"SYM{i:02d}" for i in range(20)]
    for _ in range(orders):
        try:
            with unit_of_work(factory=factory) as session:
                order_service.place(
                    session,
                    who,
                    portfolio_id=pid,
                    symbol=rng.choice(symbols),
                    side=rng.choice(["buy", "sell"]),
                    quantity=D(rng.randint(1, 5000)) / 100,
                    price=D(rng.randint(100, 100_000)) / 100,
                )
        except OrderRejected:
            pass
    local.dispose()
    env = {**scratch.env(), "COLUMNS": "200"}
    runner = CliRunner()
    get_settings.cache_clear()
    engines.dispose()
    result = runner.invoke(app, ["reconcile"], env=env)
    assert result.exit_code == 0, result.output
    assert "fills: positions and cash agree" in result.output

    local = Engines(settings)
    with unit_of_work(factory=local.session_factory(Database.main)) as session:
        victim = session.scalars(
            select(Position).where(Position.status == "open").order_by(Position.id)
        ).first()
        assert victim is not None
        session.execute(
            text("UPDATE positions SET quantity = quantity + 1 WHERE id = :id"), {"id": victim.id}
        )
    local.dispose()
    get_settings.cache_clear()
    engines.dispose()
    result = runner.invoke(app, ["reconcile"], env=env)
    assert result.exit_code == 1
    assert (
        f"positions row {victim.id} ({victim.symbol} {victim.direction}): quantity" in result.output
    )
    engines.dispose()
