"""Mirroring: allocation by hand, one order fanned out over three accounts in priority
order, a partial success, idempotency, and a fan-out resumed after a crash."""

from __future__ import annotations

from decimal import Decimal as D  # noqa: N817

from sqlalchemy import func, select

from tests.conftest import LiveServer
from tests.signals.helpers import Trader, add_account, make_trader
from tradebase.core.auth import Principal
from tradebase.core.db import Database, unit_of_work
from tradebase.mirroring.models import MirrorLeg
from tradebase.mirroring.service import allocate, resume
from tradebase.mirroring.service import mirror as mirror_service
from tradebase.orders.models import Order, Trade


def test_allocation_rounds_down_and_gives_the_rest_to_the_first() -> None:
    assert allocate(D(10), [D(1)] * 3, D(1)) == [D(4), D(3), D(3)]
    assert allocate(D(1), [D(1)] * 3) == [D("0.33333334"), D("0.33333333"), D("0.33333333")]
    # 7 by capital 600 : 300 : 100 in whole units: 4.2, 2.1, 0.7 -> 4, 2, 0, and 1 left over
    assert allocate(D(7), [D(600), D(300), D(100)], D(1)) == [D(5), D(2), D(0)]
    assert sum(allocate(D("12.5"), [D(3), D(5), D(11)], D("0.1"))) == D("12.5")


def _three(live: LiveServer) -> tuple[Trader, list[int]]:
    trader = make_trader(live)
    second, _ = add_account(live, trader, "second")
    third, _ = add_account(live, trader, "third")
    return trader, [trader.account_id, second, third]


def test_one_order_three_accounts_by_multiplier_primary_first(live: LiveServer) -> None:
    trader, (first, second, third) = _three(live)
    with live.client() as http:
        put = http.put(
            "/api/v1/mirroring",
            json={
                "accounts": [
                    {"id": first, "mirror_multiplier": "1", "priority": 20},
                    {"id": second, "mirror_multiplier": "2", "priority": 10},
                    {"id": third, "mirror_multiplier": "0.5", "is_primary": True},
                ]
            },
            headers=trader.auth,
        )
        assert put.status_code == 200, put.text
        assert [a["id"] for a in put.json()["accounts"]] == [third, second, first]
        assert put.json()["rule"] == "multiplier"
        body = {"symbol": "ETH", "side": "buy", "quantity": "2", "price": "10",
                "client_order_id": "mirror-me"}  # fmt: skip
        made = http.post("/api/v1/mirror-orders", json=body, headers=trader.auth)
        assert made.status_code == 201, made.text
        parent = made.json()
        assert (parent["status"], parent["legs_placed"], parent["legs_rejected"]) == (
            "completed",
            3,
            0,
        )
        assert [(leg["account_id"], leg["quantity"], leg["status"]) for leg in parent["legs"]] == [
            (third, "1", "placed"),  # the primary first: 2 x 0.5
            (second, "4", "placed"),  # priority 10: 2 x 2
            (first, "2", "placed"),  # priority 20: 2 x 1
        ]
        again = http.post("/api/v1/mirror-orders", json=body, headers=trader.auth)
        assert again.status_code == 200 and again.json()["id"] == parent["id"]
        read = http.get(f"/api/v1/mirror-orders/{parent['id']}", headers=trader.auth)
        assert read.json()["legs"] == parent["legs"]
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
        fills = session.execute(
            select(Order.account_id, Order.client_order_id, Trade.quantity)
            .join(Trade, Trade.order_id == Order.id)
            .where(Order.tag == f"mirror {parent['id']}")
            .order_by(Order.id)
        ).all()
    assert fills == [
        (third, f"mirror-{parent['id']}-{third}", D(1)),
        (second, f"mirror-{parent['id']}-{second}", D(4)),
        (first, f"mirror-{parent['id']}-{first}", D(2)),
    ]


def test_a_refused_leg_leaves_the_others_placed(live: LiveServer) -> None:
    trader = make_trader(live)
    poor, _ = add_account(live, trader, "poor", cash="5")
    with live.client() as http:
        put = http.put(
            "/api/v1/mirroring", json={"rule": "equal", "step": "1"}, headers=trader.auth
        )
        assert put.status_code == 200, put.text
        made = http.post(
            "/api/v1/mirror-orders",
            json={"symbol": "ACME", "side": "buy", "quantity": "5", "price": "100"},
            headers=trader.auth,
        )
        assert made.status_code == 201, made.text
        parent = made.json()
    assert (parent["status"], parent["legs_placed"], parent["legs_rejected"]) == ("partial", 1, 1)
    legs = {leg["account_id"]: leg for leg in parent["legs"]}
    # 5 split evenly in whole units: 3 (the first, by id as neither is primary) and 2
    assert (legs[trader.account_id]["quantity"], legs[trader.account_id]["status"]) == (
        "3",
        "placed",
    )
    assert (legs[poor]["quantity"], legs[poor]["status"]) == ("2", "rejected")
    assert "cash" in (legs[poor]["error"] or "") and legs[poor]["order_id"] is not None


def test_custom_weights_and_refusals(live: LiveServer) -> None:
    trader, (first, second, third) = _three(live)
    other = make_trader(live)
    with live.client() as http:
        theirs = http.put(
            "/api/v1/mirroring", json={"accounts": [{"id": other.account_id}]}, headers=trader.auth
        )
        assert theirs.status_code == 400
        assert f"account {other.account_id} is not one of your accounts" in theirs.text
        unknown = http.put(
            "/api/v1/mirroring", json={"weights": {str(other.account_id): "1"}}, headers=trader.auth
        )
        assert unknown.status_code == 400 and "not yours" in unknown.text
        nothing = http.put("/api/v1/mirroring", json={"rule": "custom"}, headers=trader.auth)
        assert nothing.status_code == 200
        zero = http.post(
            "/api/v1/mirror-orders",
            json={"symbol": "ACME", "side": "buy", "quantity": "1", "price": "10"},
            headers=trader.auth,
        )
        assert zero.status_code == 400 and "weights add up to zero" in zero.text
        weights = http.put(
            "/api/v1/mirroring",
            json={"weights": {str(first): "1", str(second): "3", str(third): "0"}, "step": "0.5"},
            headers=trader.auth,
        )
        assert weights.status_code == 200, weights.text
        made = http.post(
            "/api/v1/mirror-orders",
            json={"symbol": "ACME", "side": "buy", "quantity": "10", "price": "10"},
            headers=trader.auth,
        )
        assert made.status_code == 201, made.text
    # 10 by 1 : 3 : 0 in halves: 2.5 and 7.5; the account of weight 0 gets no leg
    assert [(leg["account_id"], leg["quantity"]) for leg in made.json()["legs"]] == [
        (first, "2.5"),
        (second, "7.5"),
    ]
    assert made.json()["status"] == "completed"


def test_a_fan_out_stored_before_a_crash_is_resumed_once(live: LiveServer) -> None:
    trader, accounts = _three(live)
    factory = live.engines.session_factory(Database.main)
    who = Principal(user_id=trader.user_id, username="t", role="trader")
    with unit_of_work(factory=factory) as session:  # stored; the process dies here
        parent, new = mirror_service.plan(
            session, who, symbol="SOL", side="buy", quantity=D(3), price=D(20)
        )
        assert new and parent.status == "pending"
        mirror_id = parent.id
    assert resume(factory) >= 1
    assert resume(factory) == 0  # nothing left
    with unit_of_work(factory=factory, write=False) as session:
        legs = list(session.scalars(select(MirrorLeg).where(MirrorLeg.mirror_id == mirror_id)))
        orders = session.scalar(
            select(func.count()).select_from(Order).where(Order.tag == f"mirror {mirror_id}")
        )
        final = mirror_service.get(session, who, mirror_id)
    assert sorted(leg.account_id for leg in legs) == sorted(accounts)
    assert {leg.status for leg in legs} == {"placed"} and orders == 3
    assert final.status == "completed" and final.completed_at is not None
