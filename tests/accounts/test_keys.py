"""API keys over HTTP: shown once, hashed, scoped, revocable, expiring and rate limited."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from sqlalchemy import select, update

from tests.accounts.helpers import assert_error_shape, bearer, make_key, make_user
from tests.conftest import LiveServer
from tradebase.accounts.models import ApiKey
from tradebase.core.db import Database, unit_of_work
from tradebase.core.time import utc_now


def _wait_for_a_fresh_minute(seconds_needed: float = 10) -> None:
    # Limits count per calendar minute: start where the window cannot roll over mid-test.
    left = 60 - (time.time() % 60)
    if left < seconds_needed:
        time.sleep(left + 0.05)


def test_a_key_works_at_once_and_is_never_shown_again(live: LiveServer) -> None:
    person = make_user(live)
    _, bootstrap = make_key(live, person)
    with live.client() as http:
        created = http.post(
            "/api/v1/keys",
            json={"name": "bot", "scopes": ["read:account"]},
            headers=bearer(bootstrap),
        )
        assert created.status_code == 201, created.text
        body = created.json()
        key = body["key"]
        assert key.startswith("tb_") and len(key) == 3 + 43  # 32 random bytes, URL-safe base64
        assert body["api_key"]["key_prefix"] == key[:11]
        me = http.get("/api/v1/me", headers=bearer(key))
        assert me.status_code == 200 and me.json()["username"] == person.username
        listed = http.get("/api/v1/keys", headers=bearer(bootstrap)).text
        single = http.get(f"/api/v1/keys/{body['api_key']['id']}", headers=bearer(bootstrap)).text
        assert key not in listed and key not in single
        assert key[11:] not in listed and key[11:] not in single
    with unit_of_work(factory=live.engines.session_factory(Database.main), write=False) as s:
        stored = s.get(ApiKey, body["api_key"]["id"])
        assert stored is not None
        assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert stored.total_requests == 1 and stored.last_used_at is not None


def test_revoked_and_expired_keys_are_refused(live: LiveServer) -> None:
    person = make_user(live)
    key_id, key = make_key(live, person)
    other_id, other = make_key(live, person)
    with live.client() as http:
        assert http.get("/api/v1/me", headers=bearer(key)).status_code == 200
        revoked = http.delete(f"/api/v1/keys/{key_id}", headers=bearer(other))
        assert revoked.status_code == 200 and revoked.json()["is_active"] is False
        refused = http.get("/api/v1/me", headers=bearer(key))
        assert refused.status_code == 401
        assert_error_shape(refused.json(), 401)
        assert "revoked" in refused.json()["error"]["message"]
        with unit_of_work(factory=live.engines.session_factory(Database.main)) as s:
            s.execute(
                update(ApiKey)
                .where(ApiKey.id == other_id)
                .values(expires_at=utc_now() - timedelta(seconds=1))
            )
        expired = http.get("/api/v1/me", headers=bearer(other))
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
        unknown = http.get("/api/v1/me", headers=bearer("tb_" + "x" * 43))
        assert unknown.status_code == 401


def test_a_key_outside_its_scopes_gets_403(live: LiveServer) -> None:
    person = make_user(live)
    _, key = make_key(live, person, scopes=["read:account"])
    with live.client() as http:
        assert http.get("/api/v1/me", headers=bearer(key)).status_code == 200
        denied = http.get("/api/v1/keys", headers=bearer(key))
        assert denied.status_code == 403
        assert denied.json()["error"]["details"] == {"scope": "read:keys"}
        assert http.post("/api/v1/keys", json={"name": "x"}, headers=bearer(key)).status_code == 403


def test_a_key_cannot_carry_scopes_beyond_its_role(live: LiveServer) -> None:
    viewer = make_user(live, role="viewer")
    trader = make_user(live)
    _, trader_key = make_key(live, trader)
    with live.client() as http:
        response = http.post(
            "/api/v1/keys", json={"name": "x", "scopes": ["admin"]}, headers=bearer(trader_key)
        )
        assert response.status_code == 403
        assert (
            http.post(
                "/api/v1/keys",
                json={"name": "x", "scopes": ["fly:moon"]},
                headers=bearer(trader_key),
            ).status_code
            == 400
        )
    with unit_of_work(factory=live.engines.session_factory(Database.main), write=False) as s:
        assert not s.scalars(select(ApiKey).where(ApiKey.user_id == viewer.id)).all()


def test_the_61st_request_in_a_minute_gets_429(live: LiveServer) -> None:
    person = make_user(live)
    _, key = make_key(live, person, rate_limit=60)
    with live.client() as http:
        codes = [http.get("/api/v1/me", headers=bearer(key)).status_code for _ in range(60)]
        assert codes == [200] * 60
        limited = http.get("/api/v1/me", headers=bearer(key))
    assert limited.status_code == 429
    assert_error_shape(limited.json(), 429)
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60
