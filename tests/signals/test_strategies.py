"""Signals addressed to a strategy: every active deployment's account, its multiplier,
its max_positions and capital; an inactive strategy and a closed market are refused."""

from __future__ import annotations

from decimal import Decimal

from tests.conftest import LiveServer
from tests.signals.helpers import Trader, add_account, make_trader
from tradebase.calendars.models import TradingHoursTemplate
from tradebase.core.db import Database, unit_of_work
from tradebase.strategies.models import Strategy, StrategyDeployment


def _strategy(
    live: LiveServer,
    trader: Trader,
    name: str,
    deployments: list[dict[str, object]],
    *,
    active: bool = True,
) -> int:
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
        strategy = Strategy(user_id=trader.user_id, name=name, is_active=active)
        session.add(strategy)
        session.flush()
        for values in deployments:
            session.add(StrategyDeployment(strategy_id=strategy.id, **values))
        session.flush()
        return strategy.id


def _send(live: LiveServer, trader: Trader, body: dict[str, object]) -> tuple[int, dict]:
    with live.client() as http:
        sent = http.post(f"/webhook/{trader.webhook_key}", json=body)
    return sent.status_code, sent.json()


def test_a_strategy_signal_goes_to_each_active_deployment(live: LiveServer) -> None:
    trader = make_trader(live)
    second, second_portfolio = add_account(live, trader, "second acct")
    third, _ = add_account(live, trader, "third acct")
    strategy_id = _strategy(
        live,
        trader,
        "trend",
        [
            {"account_id": trader.account_id, "status": "active"},
            {"account_id": second, "status": "active", "multiplier": Decimal("2.5")},
            {"account_id": third, "status": "paused"},
        ],
    )
    status, body = _send(
        live, trader, {"strategy": "trend", "ticker": "ETH", "action": "buy", "qty": "1.5",
                       "price": "10"},
    )  # fmt: skip
    assert status == 200, body
    signal = body["signal"]
    assert signal["strategy_id"] == strategy_id and signal["account_id"] is None
    orders = signal["outcome"]["orders"]
    assert [(o["account_id"], o["portfolio_id"], o["quantity"]) for o in orders] == [
        (trader.account_id, trader.portfolio_id, "1.5"),
        (second, second_portfolio, "3.75"),  # 1.5 x 2.5
    ]
    assert [o["client_order_id"] for o in orders] == [
        f"signal-{signal['id']}-{trader.account_id}-0",
        f"signal-{signal['id']}-{second}-1",
    ]
    # By id as well as by name; a target position is scaled too: 2 x 2.5 = 5, less 3.75.
    status, body = _send(
        live, trader, {"strategy": str(strategy_id), "ticker": "ETH", "position_size": "2",
                       "price": "10"},
    )  # fmt: skip
    assert status == 200, body
    orders = body["signal"]["outcome"]["orders"]
    assert [(o["side"], o["quantity"]) for o in orders] == [("buy", "0.5"), ("buy", "1.25")]


def test_deployment_limits_and_inactive_strategies_are_refused(live: LiveServer) -> None:
    trader = make_trader(live)
    _strategy(
        live,
        trader,
        "tight",
        [
            {
                "account_id": trader.account_id,
                "status": "active",
                "max_positions": 1,
                "capital_allocated": Decimal(500),
            }
        ],
    )
    _strategy(live, trader, "retired", [], active=False)
    status, body = _send(live, trader, {"strategy": "retired", "ticker": "A", "side": "buy",
                                        "qty": 1})  # fmt: skip
    assert (status, body["error"]["code"]) == (422, "strategy_inactive")
    assert body["error"]["message"] == "strategy: 'retired' is inactive"
    status, body = _send(live, trader, {"strategy": "tight", "ticker": "A", "side": "buy",
                                        "qty": 60, "price": 10})  # fmt: skip
    assert (status, body["error"]["code"]) == (422, "risk_limit_breached")
    assert body["error"]["message"] == (
        "capital allocated: positions of 600 would exceed the deployment's 500"
    )
    status, body = _send(live, trader, {"strategy": "tight", "ticker": "A", "side": "buy",
                                        "qty": 40, "price": 10})  # fmt: skip
    assert status == 200, body
    status, body = _send(live, trader, {"strategy": "tight", "ticker": "B", "side": "buy",
                                        "qty": 1, "price": 10})  # fmt: skip
    assert (status, body["error"]["code"]) == (422, "risk_limit_breached")
    assert body["error"]["message"] == "max open positions: the deployment holds 1 of at most 1"
    status, body = _send(live, trader, {"strategy": "tight", "ticker": "A", "side": "sell",
                                        "qty": 40, "price": 11})  # fmt: skip
    assert status == 200, body  # closing is always allowed


def test_a_closed_market_is_refused_and_stored(live: LiveServer) -> None:
    trader = make_trader(live)
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
        session.add(
            TradingHoursTemplate(name="Never open", exchange="NEVERX", timezone="UTC")
        )  # no sessions: closed every day
    status, body = _send(
        live, trader, {"ticker": "Z", "exchange": "NEVERX", "side": "buy", "qty": 1,
                       "price": 1},
    )  # fmt: skip
    assert status == 422 and body["error"]["code"] == "market_closed"
    assert body["error"]["message"].startswith("Never open does not trade on ")
    with live.client() as http:
        stored = http.get(
            f"/api/v1/signals/{body['error']['details']['signal_id']}", headers=trader.auth
        ).json()
    assert stored["status"] == "rejected" and stored["error"] == body["error"]["message"]


def test_one_signal_three_deployments_multipliers_1_2_and_half(live: LiveServer) -> None:
    from sqlalchemy import select

    from tradebase.orders.models import Order, Trade

    trader = make_trader(live)
    second, _ = add_account(live, trader, "x2 acct")
    third, _ = add_account(live, trader, "x0.5 acct")
    accounts = [trader.account_id, second, third]
    strategy_id = _strategy(
        live,
        trader,
        "three-ways",
        [
            {"account_id": account, "status": "active", "multiplier": Decimal(m)}
            for account, m in zip(accounts, ("1", "2", "0.5"), strict=True)
        ],
    )
    status, body = _send(
        live, trader, {"strategy": "three-ways", "ticker": "SOL", "action": "buy",
                       "quantity": "2", "price": "20"},
    )  # fmt: skip
    assert status == 200, body
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
        fills = session.execute(
            select(Order.account_id, Trade.quantity, Trade.price, Order.deployment_id)
            .join(Trade, Trade.order_id == Order.id)
            .where(Order.signal_id == body["signal"]["id"])
            .order_by(Order.account_id)
        ).all()
        deployments = {
            d.account_id: d.id
            for d in session.scalars(
                select(StrategyDeployment).where(StrategyDeployment.strategy_id == strategy_id)
            )
        }
        strategy = session.get(Strategy, strategy_id)
        assert strategy is not None
        assert (strategy.num_trades, strategy.last_signal_at is not None) == (3, True)
    assert [(a, q, p) for a, q, p, _ in fills] == [
        (trader.account_id, Decimal(2), Decimal(20)),
        (second, Decimal(4), Decimal(20)),
        (third, Decimal(1), Decimal(20)),
    ]
    assert [d for *_, d in fills] == [deployments[a] for a in sorted(accounts)]
