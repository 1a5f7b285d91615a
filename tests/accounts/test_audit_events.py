"""Security events land in the hash-chained audit trail, and the chain still verifies."""

from __future__ import annotations

from sqlalchemy import select

from tests.accounts.helpers import bearer, make_key, make_user
from tests.conftest import LiveServer
from tradebase.audit.models import AuditLog
from tradebase.audit.service import audit as audit_service
from tradebase.core.db import Database, unit_of_work


def test_security_events_are_audited(live: LiveServer) -> None:
    person = make_user(live)
    admin = make_user(live, role="admin")
    _, admin_key = make_key(live, admin)
    with live.client() as http:
        http.post("/api/v1/auth/login", json={"login": person.username, "password": "nope"})
        ok = http.post(
            "/api/v1/auth/login", json={"login": person.username, "password": person.password}
        )
        csrf = {"X-CSRF-Token": ok.json()["csrf_token"]}
        created = http.post("/api/v1/keys", json={"name": "bot"}, headers=csrf).json()
        http.delete(f"/api/v1/keys/{created['api_key']['id']}", headers=csrf)
        http.patch("/api/v1/me", json={"settings": {"lang": "en"}}, headers=csrf)
        http.post("/api/v1/me/totp", headers=csrf)
        http.post("/api/v1/auth/logout", headers=csrf)
        http.patch(f"/api/v1/users/{person.id}", json={"role": "viewer"}, headers=bearer(admin_key))
    with unit_of_work(factory=live.engines.session_factory(Database.main), write=False) as s:
        rows = s.execute(
            select(AuditLog.action, AuditLog.user_id, AuditLog.ip_address, AuditLog.resource_id)
            .where(
                (AuditLog.resource_id == str(person.id))
                | (AuditLog.user_id == person.id)
                | (AuditLog.actor == person.username)
            )
            .order_by(AuditLog.id)
        ).all()
        actions = [r.action for r in rows]
        for expected in (
            "login.failed",
            "login.ok",
            "api_key.created",
            "api_key.revoked",
            "settings.changed",
            "totp.enrolment_started",
            "credential.written",
            "logout",
            "user.role_changed",
        ):
            assert expected in actions, (expected, actions)
        assert all(r.ip_address == "127.0.0.1" for r in rows if r.action.startswith("login"))
        result = audit_service.verify(s)
        assert result.ok, result.message
