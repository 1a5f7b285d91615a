"""Logins: Argon2id, one answer for every failure, lockout, sessions with CSRF, 2FA."""

from __future__ import annotations

import time
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select, update

from tests.accounts.helpers import assert_error_shape, make_user
from tests.conftest import LiveServer
from tradebase.accounts import security
from tradebase.accounts.models import User
from tradebase.core.db import Database, unit_of_work
from tradebase.core.time import utc_now


def _login(http, login: str, password: str, **extra: str):  # type: ignore[no-untyped-def]
    return http.post("/api/v1/auth/login", json={"login": login, "password": password, **extra})


def test_password_hashes_are_argon2id(live: LiveServer) -> None:
    person = make_user(live)
    with unit_of_work(factory=live.engines.session_factory(Database.main), write=False) as s:
        stored = s.scalar(select(User.password_hash).where(User.id == person.id))
    assert stored is not None and stored.startswith("$argon2id$")
    assert person.password not in stored


def test_failures_answer_alike_and_cost_one_hash_check_each(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = make_user(live)
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as s:
        s.execute(
            update(User)
            .where(User.id == locked.id)
            .values(locked_until=utc_now() + timedelta(minutes=5))
        )
    known = make_user(live)
    calls: list[str] = []
    real = security._hasher

    class Counting:
        def verify(self, hash_: str, password: str) -> bool:
            calls.append(hash_)
            return real.verify(hash_, password)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(security, "_hasher", Counting())
    answers = []
    with live.client() as http:
        for login, password in [
            (known.username, "wrong password"),
            ("nobody-" + known.username, "whatever"),
            (locked.username, locked.password),  # right password, locked account
        ]:
            calls.clear()
            response = _login(http, login, password)
            answers.append((response.status_code, response.json()))
            assert len(calls) == 1  # the same Argon2 work on every path: one timing class
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 401 and answers[0][1]["error"]["code"] == "invalid_credentials"


def test_five_failures_lock_the_account(live: LiveServer) -> None:
    person = make_user(live)
    with live.client() as http:
        for _ in range(5):
            assert _login(http, person.username, "nope").status_code == 401
        assert _login(http, person.username, person.password).status_code == 401  # locked
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as s:
        user = s.get(User, person.id)
        assert user is not None and user.locked_until is not None
        assert timedelta(minutes=14) < user.locked_until - utc_now() <= timedelta(minutes=15)
        user.locked_until = utc_now() - timedelta(seconds=1)  # the lock has run out
    with live.client() as http:
        assert _login(http, person.username, person.password).status_code == 200


def test_login_by_email_sets_a_session_that_needs_csrf_for_changes(live: LiveServer) -> None:
    person = make_user(live)
    with live.client() as http:
        response = _login(http, f"{person.username}@EXAMPLE.com", person.password)  # any case
        assert response.status_code == 200, response.text
        csrf = response.json()["csrf_token"]
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert http.get("/api/v1/me").json()["username"] == person.username
        refused = http.patch("/api/v1/me", json={"settings": {"theme": "dark"}})
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
        wrong = http.patch("/api/v1/me", json={"settings": {}}, headers={"X-CSRF-Token": "0" * 64})
        assert wrong.status_code == 403
        ok = http.patch(
            "/api/v1/me", json={"settings": {"theme": "dark"}}, headers={"X-CSRF-Token": csrf}
        )
        assert ok.status_code == 200 and ok.json()["settings"] == {"theme": "dark"}
        assert http.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert http.get("/api/v1/me").status_code == 401


def test_two_factor_enrolment_and_login(live: LiveServer) -> None:
    person = make_user(live)
    with live.client() as http:
        csrf = _login(http, person.username, person.password).json()["csrf_token"]
        headers = {"X-CSRF-Token": csrf}
        enrol = http.post("/api/v1/me/totp", headers=headers)
        assert enrol.status_code == 200, enrol.text
        secret = enrol.json()["secret"]
        assert enrol.json()["otpauth_uri"].startswith("otpauth://totp/")
        bad = http.post("/api/v1/me/totp/confirm", json={"code": "000000"}, headers=headers)
        assert bad.status_code == 401
        # Each code is spent once: confirm with the previous step's code, log in with this
        # step's, disable with the next step's (all inside the accepted +-1 step window).
        totp = pyotp.TOTP(secret)
        if 30 - time.time() % 30 < 3:  # keep the three steps clear of a step boundary
            time.sleep(3.1)
        now = time.time()
        code = totp.at(now - 30)
        confirmed = http.post("/api/v1/me/totp/confirm", json={"code": code}, headers=headers)
        assert confirmed.status_code == 200 and confirmed.json()["two_factor_enabled"] is True
    with live.client() as http:
        needs = _login(http, person.username, person.password)
        assert needs.status_code == 401 and needs.json()["error"]["code"] == "totp_required"
        wrong = _login(
            http,
            person.username,
            person.password,
            totp_code="123456" if totp.at(now) != "123456" else "654321",
        )
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_totp"
        ok = _login(http, person.username, person.password, totp_code=totp.at(now))
        assert ok.status_code == 200
        headers = {"X-CSRF-Token": ok.json()["csrf_token"]}
        off = http.post(
            "/api/v1/me/totp/disable", json={"code": totp.at(now + 30)}, headers=headers
        )
        assert off.status_code == 200 and off.json()["two_factor_enabled"] is False
    if live.scratch.backend == "sqlite":
        for path in (live.scratch.main_url.database, live.scratch.credentials_url.database):
            for suffix in ("", "-wal"):
                try:
                    data = open(f"{path}{suffix}", "rb").read()  # noqa: SIM115
                except FileNotFoundError:
                    continue
                assert secret.encode() not in data


def test_password_change_ends_other_sessions(live: LiveServer) -> None:
    person = make_user(live)
    with live.client() as first, live.client() as second:
        _login(second, person.username, person.password)
        csrf = _login(first, person.username, person.password).json()["csrf_token"]
        changed = first.post(
            "/api/v1/me/password",
            json={"current_password": person.password, "new_password": "a much better password"},
            headers={"X-CSRF-Token": csrf},
        )
        assert changed.status_code == 204, changed.text
        assert first.get("/api/v1/me").status_code == 200
        assert second.get("/api/v1/me").status_code == 401
        weak = first.post(
            "/api/v1/me/password",
            json={"current_password": "a much better password", "new_password": "short"},
            headers={"X-CSRF-Token": csrf},
        )
        assert weak.status_code == 422
        assert_error_shape(weak.json(), 422)


def test_a_form_post_carries_the_csrf_token_as_a_field(live: LiveServer) -> None:
    person = make_user(live)
    with live.client() as http:
        csrf = _login(http, person.username, person.password).json()["csrf_token"]
        forged = http.post("/api/v1/auth/logout", data={"csrf_token": "0" * 64})
        assert forged.status_code == 403
        assert_error_shape(forged.json(), 403)
        assert http.get("/api/v1/me").status_code == 200  # still logged in
        assert http.post("/api/v1/auth/logout", data={"csrf_token": csrf}).status_code == 204
        assert http.get("/api/v1/me").status_code == 401
