"""Authorization across every route of the app: enumerated from the app, not a hand list."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from tests.accounts.helpers import assert_error_shape, bearer, make_key, make_user
from tests.conftest import LiveServer
from tests.factories import create_account, create_order, create_portfolio
from tradebase.core.db import Database, unit_of_work

PUBLIC = {("POST", "/api/v1/auth/login"), ("GET", "/health"), ("GET", "/ready")}
# Routes a broker calls, authenticated by an HMAC signature instead of a key or a login:
# unsigned they answer 401 to anyone (tests/brokers/test_postbacks.py checks the rest).
SIGNED = {("POST", "/api/v1/brokers/postbacks/{account_id}")}
# Routes every signed-in user may call whatever the role, from a dashboard login only:
# ending one's own session, changing one's own password and two-factor codes.
SELF_SERVICE = {
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/me/password"),
    ("POST", "/api/v1/me/totp"),
    ("POST", "/api/v1/me/totp/confirm"),
    ("POST", "/api/v1/me/totp/disable"),
}

# Reference data that belongs to no user (trading calendars): every signed-in user reads
# the same rows, so these routes have no other user's row to hide.
SHARED = {("GET", "/api/v1/calendars"), ("GET", "/api/v1/calendars/{exchange}/status")}


def routes(live: LiveServer) -> list[tuple[str, str]]:
    """Every (method, path) of the API, from the app's own OpenAPI description."""
    found = [
        (method.upper(), path)
        for path, operations in live.app.openapi()["paths"].items()
        if path.startswith("/api/")
        for method in operations
    ]
    assert len(found) >= 15, found
    return sorted(found)


def _owned_rows(live: LiveServer, person_id: int) -> dict[str, int]:
    """An account, a portfolio and an order (plus its key) owned by a user: their ids."""
    from tradebase.accounts.models import User
    from tradebase.alerts.models import Webhook
    from tradebase.mirroring.models import MirrorOrder
    from tradebase.signals.models import Signal
    from tradebase.strategies.models import Strategy, StrategyDeployment

    with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
        user = session.get(User, person_id)
        assert user is not None
        account = create_account(session, user=user)
        portfolio = create_portfolio(session, account=account)
        order = create_order(session, portfolio=portfolio, quantity=Decimal("2"))
        strategy = Strategy(user_id=person_id, name="theirs")
        session.add(strategy)
        session.flush()
        deployment = StrategyDeployment(
            strategy_id=strategy.id, account_id=account.id, portfolio_id=portfolio.id
        )
        signal = Signal(user_id=person_id, order_id=f"k-{person_id}", order_id_shifted="s")
        mirrored = MirrorOrder(
            user_id=person_id,
            symbol="ACME",
            exchange="paper",
            side="buy",
            quantity=Decimal(1),
            order_type="market",
            product="NRML",
            rule="equal",
        )
        webhook = Webhook(user_id=person_id, url="http://127.0.0.1:9/hook", events=["*"])
        session.add_all([deployment, signal, mirrored, webhook])
        session.flush()
        return {
            "account_id": account.id,
            "portfolio_id": portfolio.id,
            "order_id": order.id,
            "user_id": person_id,
            "strategy_id": strategy.id,
            "deployment_id": deployment.id,
            "signal_id": signal.id,
            "mirror_id": mirrored.id,
            "webhook_id": webhook.id,
        }


# A valid body for each route that takes one and has ids in its path, so that the route
# gets as far as looking the row up (an invalid body would be refused first, with 422).
BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("POST", "/api/v1/portfolios/{portfolio_id}/deposits"): {"amount": "1"},
    ("POST", "/api/v1/portfolios/{portfolio_id}/withdrawals"): {"amount": "1"},
    ("PATCH", "/api/v1/users/{user_id}"): {"role": "viewer"},
    ("PATCH", "/api/v1/orders/{order_id}"): {"price": "1"},
    ("PATCH", "/api/v1/strategies/{strategy_id}"): {"is_active": True},
    ("POST", "/api/v1/strategies/{strategy_id}/deployments"): {"account_id": 1},
    ("PATCH", "/api/v1/strategies/{strategy_id}/deployments/{deployment_id}"): {"status": "paused"},
    ("PUT", "/api/v1/accounts/{account_id}/broker-key"): {"api_key": "tb_theirs"},
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): {"description": "mine now"},
}


# The id in _owned_rows of the rows a list route gives, by the route's last segment.
LISTED = {
    "keys": "key_id",
    "accounts": "account_id",
    "portfolios": "portfolio_id",
    "orders": "order_id",
    "users": "user_id",
    "strategies": "strategy_id",
    "signals": "signal_id",
    "mirror-orders": "mirror_id",
    "webhooks": "webhook_id",
}


def test_no_user_can_reach_another_users_rows(live: LiveServer) -> None:
    alice, bob = make_user(live), make_user(live)
    alice_key_id, alice_key = make_key(live, alice)
    _, bob_key = make_key(live, bob)
    ids = {**_owned_rows(live, alice.id), "key_id": alice_key_id}
    _owned_rows(live, bob.id)
    checked = 0
    with live.client() as http:
        for method, path in routes(live):
            params = re.findall(r"{(\w+)}", path)
            if (method, path) in SIGNED:
                continue
            if (method, path) in SHARED:
                shared = http.request(
                    method, path.replace("{exchange}", "NSE"), headers=bearer(bob_key)
                )
                assert shared.status_code == 200, (method, path, shared.text)
                continue
            if not params:
                continue
            unknown = [p for p in params if p not in ids]
            assert not unknown, f"teach this test the ids of {unknown} for {method} {path}"
            url = path.format(**{p: ids[p] for p in params})
            takes_body = "requestBody" in live.app.openapi()["paths"][path][method.lower()]
            assert not takes_body or (method, path) in BODIES, (
                f"add a valid body for {method} {path}"
            )
            body = BODIES.get((method, path), {})
            response = http.request(method, url, headers=bearer(bob_key), json=body)
            # Another user's row is "not found" (404); routes for admins only refuse a trader
            # outright (403) whatever the id, so no id can be probed either way.
            assert response.status_code in (403, 404), (
                method,
                path,
                response.status_code,
                response.text,
            )
            assert_error_shape(response.json(), response.status_code)
            checked += 1
        # Lists show only the caller's rows.
        for method, path in routes(live):
            if method == "GET" and "{" not in path and (method, path) not in SHARED:
                response = http.get(path, headers=bearer(bob_key))
                if response.status_code == 200 and isinstance(response.json(), list):
                    rows = response.json()
                    owners = {row["user_id"] for row in rows if "user_id" in row}
                    assert alice.id not in owners, path
                    # A row without its owner's id (a signal, a user): Alice's own row of
                    # that kind is not among them (an id of another kind may be equal).
                    hers = ids.get(LISTED.get(path.rsplit("/", 1)[-1], ""))
                    if hers is not None:
                        listed = {row.get("id") for row in rows if "user_id" not in row}
                        assert hers not in listed, path
        # Nothing of Alice's moved: her cash, order and key are as they were.
        from tradebase.orders.models import Order
        from tradebase.portfolios.models import Portfolio

        with unit_of_work(factory=live.engines.session_factory(Database.main), write=False) as s:
            assert s.get(Portfolio, ids["portfolio_id"]).cash_balance_usd == Decimal(10000)  # type: ignore[union-attr]
            assert s.get(Order, ids["order_id"]).status == "pending"  # type: ignore[union-attr]
        # And Alice still reaches her own rows where a route exists.
        assert (
            http.get(f"/api/v1/keys/{alice_key_id}", headers=bearer(alice_key)).status_code == 200
        )
    assert checked >= 3


@pytest.mark.parametrize("via", ["key", "session"])
def test_a_viewer_cannot_change_anything(live: LiveServer, via: str) -> None:
    viewer = make_user(live, role="viewer")
    with live.client() as http:
        if via == "key":
            _, key = make_key(live, viewer)
            headers = bearer(key)
        else:
            login = http.post(
                "/api/v1/auth/login", json={"login": viewer.username, "password": viewer.password}
            )
            headers = {"X-CSRF-Token": login.json()["csrf_token"]}
        assert http.get("/api/v1/me", headers=headers).status_code == 200
        writes = [
            (m, p)
            for m, p in routes(live)
            if m not in ("GET", "HEAD") and (m, p) not in PUBLIC | SELF_SERVICE | SIGNED
        ]
        assert writes
        for method, path in writes:
            url = re.sub(r"{\w+}", "1", path)
            response = http.request(method, url, headers=headers, json={})
            assert response.status_code == 403, (method, path, response.status_code, response.text)
            assert_error_shape(response.json(), 403)


def test_routes_without_credentials_answer_401(live: LiveServer) -> None:
    with live.client() as http:
        for method, path in routes(live):
            if (method, path) in PUBLIC:
                continue
            response = http.request(method, re.sub(r"{\w+}", "1", path), json={})
            assert response.status_code == 401, (method, path, response.text)
            assert_error_shape(response.json(), 401)


def test_a_viewer_changes_only_their_own_password_and_codes(live: LiveServer) -> None:
    viewer = make_user(live, role="viewer")
    _, key = make_key(live, viewer)
    with live.client() as http:
        body = {"current_password": viewer.password, "new_password": "a new viewer password"}
        by_key = http.post("/api/v1/me/password", json=body, headers=bearer(key))
        assert by_key.status_code == 403  # a key never changes its owner's password
        login = http.post(
            "/api/v1/auth/login", json={"login": viewer.username, "password": viewer.password}
        )
        csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
        assert http.post("/api/v1/me/password", json=body, headers=csrf).status_code == 204
        assert http.patch("/api/v1/me", json={"settings": {}}, headers=csrf).status_code == 403
