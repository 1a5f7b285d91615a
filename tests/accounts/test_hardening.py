"""Rights cannot grow through keys, the last admin stays, emails are one per person,
two-factor codes are spent once, logins are throttled per address, limits slide."""

from __future__ import annotations

from datetime import UTC, datetime

import pyotp
import pytest
from sqlalchemy.orm import Session

from tests.accounts.helpers import bearer, make_key, make_user
from tests.conftest import LiveServer, ScratchFactory
from tests.factories import create_user
from tradebase.accounts.ratelimit import hit_database


def test_a_narrow_key_cannot_mint_a_wider_one(live: LiveServer) -> None:
    admin = make_user(live, role="admin")
    _, admin_key = make_key(live, admin)
    with live.client() as http:
        narrow = http.post(
            "/api/v1/keys", json={"name": "n", "scopes": ["write:keys"]}, headers=bearer(admin_key)
        ).json()["key"]
        wider = http.post(
            "/api/v1/keys", json={"name": "w", "scopes": ["admin"]}, headers=bearer(narrow)
        )
        assert wider.status_code == 403
        default = http.post("/api/v1/keys", json={"name": "d"}, headers=bearer(narrow))
        assert default.status_code == 201
        assert default.json()["api_key"]["scopes"] == ["write:keys"]
        assert http.get("/api/v1/users", headers=bearer(default.json()["key"])).status_code == 403


def test_only_admins_raise_a_keys_limit(live: LiveServer) -> None:
    trader = make_user(live)
    _, key = make_key(live, trader)
    with live.client() as http:
        too_fast = http.post(
            "/api/v1/keys", json={"name": "x", "rate_limit_per_minute": 1000}, headers=bearer(key)
        )
        assert too_fast.status_code == 403
        slower = http.post(
            "/api/v1/keys", json={"name": "x", "rate_limit_per_minute": 10}, headers=bearer(key)
        )
        assert slower.status_code == 201


def test_the_last_admin_cannot_be_demoted_or_disabled(live: LiveServer) -> None:
    admin = make_user(live, role="admin")
    _, key = make_key(live, admin)
    with live.client() as http:
        admins = [
            u
            for u in http.get("/api/v1/users", headers=bearer(key)).json()
            if u["role"] == "admin" and u["is_active"]
        ]
        others = [u for u in admins if u["id"] != admin.id]
        for other in others:  # leave this admin the only one
            assert (
                http.patch(
                    f"/api/v1/users/{other['id']}", json={"role": "trader"}, headers=bearer(key)
                ).status_code
                == 200
            )
        refused = http.patch(
            f"/api/v1/users/{admin.id}", json={"role": "trader"}, headers=bearer(key)
        )
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "last_admin"
        assert (
            http.patch(
                f"/api/v1/users/{admin.id}", json={"is_active": False}, headers=bearer(key)
            ).status_code
            == 409
        )
        for other in others:
            http.patch(f"/api/v1/users/{other['id']}", json={"role": "admin"}, headers=bearer(key))


def test_an_email_in_another_case_is_the_same_email(live: LiveServer) -> None:
    alice, bob = make_user(live), make_user(live)
    _, alice_key = make_key(live, alice)
    with live.client() as http:
        taken = http.patch(
            "/api/v1/me",
            json={"email": f"{bob.username.upper()}@EXAMPLE.COM"},
            headers=bearer(alice_key),
        )
        assert taken.status_code == 409
        assert bob.username not in taken.text.lower()  # says nothing about who has it


def test_a_two_factor_code_is_spent_once_and_cannot_be_replaced(live: LiveServer) -> None:
    person = make_user(live)
    with live.client() as http:
        csrf = {
            "X-CSRF-Token": http.post(
                "/api/v1/auth/login", json={"login": person.username, "password": person.password}
            ).json()["csrf_token"]
        }
        secret = http.post("/api/v1/me/totp", headers=csrf).json()["secret"]
        code = pyotp.TOTP(secret).now()
        assert (
            http.post("/api/v1/me/totp/confirm", json={"code": code}, headers=csrf).status_code
            == 200
        )
        assert (
            http.post("/api/v1/me/totp", headers=csrf).status_code == 409
        )  # no silent replacement
    with live.client() as http:
        login = {"login": person.username, "password": person.password, "totp_code": code}
        reused = http.post("/api/v1/auth/login", json=login)
        assert reused.status_code == 401 and reused.json()["error"]["code"] == "invalid_totp"


def test_logins_are_throttled_per_address(
    scratch_factory: ScratchFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.conftest import LiveServer as Server
    from tradebase.core import migrate
    from tradebase.core.db import Database

    scratch = scratch_factory.new("sqlite", "throttle")
    settings = scratch.settings().model_copy(
        update={"data_dir": tmp_path_factory.mktemp("throttle"), "login_attempts_per_minute": 3}
    )
    for database in Database:
        migrate.upgrade(database, settings=settings)
    server = Server(scratch, settings)
    try:
        with server.client() as http:
            codes = [
                http.post("/api/v1/auth/login", json={"login": "x", "password": "y"}).status_code
                for _ in range(4)
            ]
            assert codes == [401, 401, 401, 429]
    finally:
        server.stop()


def test_the_limit_slides_across_the_turn_of_a_minute(session: Session) -> None:
    create_user(session)  # (any committed row; the counters need no parent)
    end_of_minute = datetime(2026, 11, 22, 12, 0, 59, 500000, tzinfo=UTC)
    verdicts = [hit_database(session, "bucket-x", 60, end_of_minute) for _ in range(60)]
    assert all(v.allowed for v in verdicts)
    just_after = datetime(2026, 11, 22, 12, 1, 0, 500000, tzinfo=UTC)
    # 1 in this minute + 60 in the previous one, weighted by the 59.5 s still covered.
    assert not hit_database(session, "bucket-x", 60, just_after).allowed
    much_later = datetime(2026, 11, 22, 12, 1, 59, 0, tzinfo=UTC)
    # 2 + 60 * (1 / 60) = 3 requests in the sliding minute.
    assert hit_database(session, "bucket-x", 60, much_later).allowed


def test_odd_ids_dates_and_settings_are_4xx(live: LiveServer) -> None:
    person = make_user(live)
    _, key = make_key(live, person)
    with live.client() as http:
        for path in (
            "/api/v1/keys/99999999999999999999",
            "/api/v1/keys/9223372036854775808",
            "/api/v1/keys/0",
            "/api/v1/users/99999999999999999999",
        ):
            assert http.get(path, headers=bearer(key)).status_code in (403, 422), path
        naive = http.post(
            "/api/v1/keys",
            json={"name": "k", "expires_at": "2030-01-01T00:00:00"},
            headers=bearer(key),
        )
        assert naive.status_code == 422
        far = http.post(
            "/api/v1/keys",
            json={"name": "k", "expires_at": "9999-12-31T23:59:59-14:00"},
            headers=bearer(key),
        )
        assert far.status_code == 422
        deep: dict[str, object] = {}
        node = deep
        for _ in range(600):
            node["a"] = {}
            node = node["a"]  # type: ignore[assignment]
        nested = http.patch("/api/v1/me", json={"settings": deep}, headers=bearer(key))
        assert 400 <= nested.status_code < 500
