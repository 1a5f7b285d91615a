"""Strategies and deployments: CRUD over HTTP with its refusals, deployment status
times, where a signal goes, and performance worked out by hand from the fills."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D  # noqa: N817

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from tests.accounts.helpers import assert_error_shape, bearer, make_key, make_user
from tests.conftest import LiveServer, Migrated
from tests.factories import create_account, create_portfolio, create_user
from tradebase.core.auth import Principal
from tradebase.orders.models import Order, Trade
from tradebase.orders.service import order as order_service
from tradebase.strategies.service import DeploymentInvalid, StrategyNameTaken
from tradebase.strategies.service import strategy as strategy_service


def _account(http: object, key: str, name: str, portfolios: int = 1) -> tuple[int, list[int]]:
    created = http.post("/api/v1/accounts", json={"account_name": name}, headers=bearer(key))  # type: ignore[attr-defined]
    assert created.status_code == 201, created.text
    account_id = created.json()["id"]
    ids = []
    for i in range(portfolios):
        made = http.post(  # type: ignore[attr-defined]
            "/api/v1/portfolios",
            json={"account_id": account_id, "name": f"p{i}"},
            headers=bearer(key),
        )
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    return account_id, ids


def test_strategy_crud_and_refusals(live: LiveServer) -> None:
    _, key = make_key(live, make_user(live))
    _, other = make_key(live, make_user(live))
    _, viewer = make_key(live, make_user(live, role="viewer"))
    with live.client() as http:
        body = {"name": "ema-cross", "strategy_type": "momentum", "config": {"fast": 9, "slow": 21}}
        created = http.post("/api/v1/strategies", json=body, headers=bearer(key))
        assert created.status_code == 201, created.text
        strategy = created.json()
        assert (strategy["name"], strategy["strategy_type"], strategy["config"]) == (
            "ema-cross",
            "momentum",
            {"fast": 9, "slow": 21},
        )
        assert strategy["is_active"] is True and strategy["num_trades"] == 0
        assert strategy["total_pnl"] == "0"
        sid = strategy["id"]

        again = http.post("/api/v1/strategies", json=body, headers=bearer(key))
        assert again.status_code == 409
        assert_error_shape(again.json(), 409)
        assert again.json()["error"]["code"] == "strategy_name_taken"
        # the same name is fine for someone else
        assert http.post("/api/v1/strategies", json=body, headers=bearer(other)).status_code == 201

        wrong = http.post(
            "/api/v1/strategies",
            json={"name": "x", "strategy_type": "astrology"},
            headers=bearer(key),
        )
        assert wrong.status_code == 422 and "strategy_type" in wrong.text
        assert_error_shape(wrong.json(), 422)
        blank = http.post("/api/v1/strategies", json={"name": " "}, headers=bearer(key))
        assert blank.status_code == 422

        patched = http.patch(
            f"/api/v1/strategies/{sid}",
            json={"name": "ema-cross-2", "is_active": False},
            headers=bearer(key),
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["name"] == "ema-cross-2" and patched.json()["is_active"] is False
        listed = http.get("/api/v1/strategies?is_active=false", headers=bearer(key)).json()
        assert [s["id"] for s in listed] == [sid]
        assert http.get("/api/v1/strategies?is_active=true", headers=bearer(key)).json() == []
        by_type = http.get("/api/v1/strategies?strategy_type=momentum", headers=bearer(key))
        assert [s["id"] for s in by_type.json()] == [sid]

        # another user's strategy does not exist for them; a viewer changes nothing
        assert http.get(f"/api/v1/strategies/{sid}", headers=bearer(other)).status_code == 404
        assert (
            http.patch(
                f"/api/v1/strategies/{sid}", json={"is_active": True}, headers=bearer(other)
            ).status_code
            == 404
        )
        refused = http.post("/api/v1/strategies", json={"name": "v"}, headers=bearer(viewer))
        assert refused.status_code == 403
        assert_error_shape(refused.json(), 403)

        assert http.delete(f"/api/v1/strategies/{sid}", headers=bearer(key)).status_code == 204
        assert http.get(f"/api/v1/strategies/{sid}", headers=bearer(key)).status_code == 404


def test_deployments_over_http(live: LiveServer) -> None:
    _, key = make_key(live, make_user(live))
    _, other = make_key(live, make_user(live))
    with live.client() as http:
        sid = http.post("/api/v1/strategies", json={"name": "s"}, headers=bearer(key)).json()["id"]
        single, (portfolio,) = _account(http, key, "single")
        double, (p1, p2) = _account(http, key, "double", portfolios=2)
        foreign, _ = _account(http, other, "theirs")
        url = f"/api/v1/strategies/{sid}/deployments"

        made = http.post(
            url,
            json={"account_id": single, "capital_allocated": "1000", "multiplier": "0.5"},
            headers=bearer(key),
        )
        assert made.status_code == 201, made.text
        deployment = made.json()
        assert deployment["portfolio_id"] == portfolio  # the account's only portfolio
        assert (deployment["status"], deployment["multiplier"]) == ("active", "0.5")
        assert deployment["capital_allocated"] == "1000" and deployment["max_positions"] == 5
        assert deployment["started_at"] is not None and deployment["stopped_at"] is None

        two = http.post(url, json={"account_id": double}, headers=bearer(key))
        assert two.status_code == 400
        assert two.json()["error"]["message"] == (
            f"account {double} has 2 portfolios: name one with portfolio_id"
        )
        on_p2 = http.post(url, json={"account_id": double, "portfolio_id": p2}, headers=bearer(key))
        assert on_p2.status_code == 201 and on_p2.json()["portfolio_id"] == p2
        wrong_portfolio = http.patch(
            f"{url}/{on_p2.json()['id']}", json={"portfolio_id": portfolio}, headers=bearer(key)
        )
        assert wrong_portfolio.status_code == 400
        assert f"portfolio {portfolio} is not on account {double}" in wrong_portfolio.text
        theirs = http.post(url, json={"account_id": foreign}, headers=bearer(key))
        assert theirs.status_code == 400 and "not an account of the strategy's owner" in theirs.text
        twice = http.post(url, json={"account_id": single}, headers=bearer(key))
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "deployment_exists"
        bad = http.post(url, json={"account_id": single, "multiplier": "0"}, headers=bearer(key))
        assert bad.status_code == 422

        did = deployment["id"]
        paused = http.patch(f"{url}/{did}", json={"status": "paused"}, headers=bearer(key)).json()
        assert paused["status"] == "paused" and paused["stopped_at"] is not None
        resumed = http.patch(f"{url}/{did}", json={"status": "active"}, headers=bearer(key)).json()
        assert resumed["status"] == "active" and resumed["stopped_at"] is None
        assert resumed["started_at"] > deployment["started_at"]
        listed = http.get(url, headers=bearer(key)).json()
        assert [d["account_id"] for d in listed] == [single, double]
        assert http.get(url, headers=bearer(other)).status_code == 404
        assert http.delete(f"{url}/{did}", headers=bearer(key)).status_code == 204
        assert http.get(f"{url}/{did}", headers=bearer(key)).status_code == 404
        _ = p1


def _trader(session: Session) -> tuple[Principal, list[int], list[int]]:
    user = create_user(session)
    who = Principal(user_id=user.id, username=user.username, role="trader")
    accounts, portfolios = [], []
    for priority, primary in ((50, False), (10, False), (90, True)):
        account = create_account(session, user=user)
        account.priority, account.is_primary = priority, primary
        accounts.append(account.id)
        portfolios.append(create_portfolio(session, account=account, cash="100000").id)
    session.flush()
    return who, accounts, portfolios


def test_where_a_signal_goes_active_deployments_primary_first(session: Session) -> None:
    who, accounts, _ = _trader(session)
    made = strategy_service.create(session, who, name="fan-out")
    for account in accounts:
        strategy_service.deploy(session, who, made.id, account_id=account)
    paused = strategy_service.deployments(session, who, made.id)[1]
    strategy_service.update_deployment(session, who, made.id, paused.id, status="paused")
    going = strategy_service.active_deployments(session, made)
    # primary first, then by priority; the paused one (priority 10) is left out
    assert [d.account_id for d in going] == [accounts[2], accounts[0]]
    with pytest.raises(StrategyNameTaken):
        strategy_service.create(session, who, name="fan-out")
    with pytest.raises(DeploymentInvalid):
        _, other_accounts, _ = _trader(session)
        strategy_service.deploy(session, who, made.id, account_id=other_accounts[0])
    assert strategy_service.find(session, who.user_id, "fan-out") is made
    assert strategy_service.find(session, who.user_id, str(made.id)) is made
    assert strategy_service.find(session, who.user_id, "nope") is None


def test_performance_follows_the_fills(session: Session) -> None:
    who, accounts, portfolios = _trader(session)
    made = strategy_service.create(session, who, name="swing")
    one = strategy_service.deploy(
        session, who, made.id, account_id=accounts[0], capital_allocated=D(600)
    )
    two = strategy_service.deploy(
        session, who, made.id, account_id=accounts[1], capital_allocated=D(400)
    )

    def fill(portfolio: int, deployment: int, side: str, qty: str, price: str) -> Order:
        order = order_service.place(
            session,
            who,
            portfolio_id=portfolio,
            symbol="ACME",
            side=side,
            quantity=D(qty),
            price=D(price),
            strategy_id=made.id,
        )
        assert order.status == "filled", order.reject_reason
        session.execute(update(Order).where(Order.id == order.id).values(deployment_id=deployment))
        return order

    # day 1 on deployment one: buy 10 at 100, sell 10 at 110: +100
    day1 = [
        fill(portfolios[0], one.id, "buy", "10", "100"),
        fill(portfolios[0], one.id, "sell", "10", "110"),
    ]
    # day 2 on deployment two: buy 5 at 100, sell 5 at 90: -50
    day2 = [
        fill(portfolios[1], two.id, "buy", "5", "100"),
        fill(portfolios[1], two.id, "sell", "5", "90"),
    ]
    # an order of no strategy does not count
    order_service.place(
        session,
        who,
        portfolio_id=portfolios[2],
        symbol="ACME",
        side="buy",
        quantity=D(1),
        price=D(100),
    )
    first = datetime(2026, 11, 30, 10, tzinfo=UTC)
    for day, orders in ((first, day1), (first + timedelta(days=1), day2)):
        session.execute(
            update(Trade).where(Trade.order_id.in_([o.id for o in orders])).values(executed_at=day)
        )
    # the running totals a signal adds (no history read): day 1's two fills
    strategy_service.add_fills(session, made.id, [o.id for o in day1])
    session.refresh(one)
    assert (made.num_trades, made.total_pnl, one.total_pnl) == (2, D(100), D(100))
    assert made.win_rate is None  # left to the full recomputation
    made.num_trades, made.total_pnl, one.total_pnl = 0, D(0), D(0)
    refreshed = strategy_service.refresh_performance(session, made.id)
    assert refreshed.num_trades == 4
    assert refreshed.total_pnl == D(50)
    assert refreshed.win_rate == D(50)
    # Sharpe of the equity 1000 -> 1100 -> 1050 (capital 600 + 400), daily, annualized
    returns = np.diff([1000.0, 1100.0, 1050.0]) / np.array([1000.0, 1100.0])
    expected = returns.mean() / returns.std(ddof=1) * math.sqrt(365)
    assert refreshed.sharpe_ratio is not None
    assert abs(float(refreshed.sharpe_ratio) - expected) < 1e-9
    session.refresh(one)
    session.refresh(two)
    assert (one.total_pnl, two.total_pnl) == (D(100), D(-50))


def test_the_strategies_cli(migrated: Migrated, monkeypatch: pytest.MonkeyPatch) -> None:
    from tradebase.cli import app
    from tradebase.core.db import Database, Engines, unit_of_work

    for name, value in migrated.scratch.env().items():
        monkeypatch.setenv(name, value)
    engines = Engines(migrated.scratch.settings())
    try:
        with unit_of_work(factory=engines.session_factory(Database.main)) as s:
            user = create_user(s)
            account = create_account(s, user=user)
            create_portfolio(s, account=account)
            username, account_id = user.username, account.id
    finally:
        engines.dispose()
    from tradebase.config import get_settings
    from tradebase.core.db import engines as shared_engines

    get_settings.cache_clear()
    shared_engines.dispose()  # the CLI's engines: on this test's databases
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "strategies",
            "create",
            "-u",
            username,
            "trend",
            "--type",
            "momentum",
            "--config",
            '{"n": 3}',
        ],
    )
    assert made.exit_code == 0, made.output
    sid = int(made.output.split()[1])
    bad = runner.invoke(app, ["strategies", "create", "-u", username, "x", "--config", "[1]"])
    assert bad.exit_code == 2 and "must be a JSON object" in bad.output
    deployed = runner.invoke(
        app,
        ["strategies", "deploy", "-u", username, str(sid), "--account", str(account_id),
         "--capital", "1000", "--multiplier", "2"],
    )  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    assert deployed.output.endswith(", active\n")
    did = int(deployed.output.split()[1].rstrip(":"))
    paused = runner.invoke(
        app, ["strategies", "set-status", "-u", username, str(sid), str(did), "paused"]
    )
    assert paused.exit_code == 0 and paused.output == f"deployment {did}: paused\n"
    listed = runner.invoke(app, ["strategies", "list", "-u", username])
    assert listed.exit_code == 0 and "trend" in listed.output and "momentum" in listed.output
    shown = runner.invoke(app, ["strategies", "deployments", "-u", username, str(sid)])
    assert shown.exit_code == 0 and "paused" in shown.output and "1000" in shown.output
    twice = runner.invoke(
        app, ["strategies", "deploy", "-u", username, str(sid), "--account", str(account_id)]
    )
    assert twice.exit_code == 1 and "already deployed" in twice.output
    get_settings.cache_clear()
    shared_engines.dispose()
