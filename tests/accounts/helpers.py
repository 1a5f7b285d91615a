"""Users and keys made directly through the services, for API tests."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

from tests.conftest import LiveServer
from tradebase.accounts.cli import CLI
from tradebase.accounts.models import UserRole
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.core.db import Database, unit_of_work

_n = itertools.count(1)


@dataclass
class Person:
    id: int
    username: str
    password: str
    role: str


def make_user(live: LiveServer, role: str = UserRole.trader) -> Person:
    name = f"u{next(_n)}_{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
        user, _ = user_service.create(
            session, username=name, email=f"{name}@example.com", role=role, password=password
        )
        return Person(user.id, name, password, role)


def make_key(
    live: LiveServer, person: Person, *, scopes: list[str] | None = None, rate_limit: int = 1000
) -> tuple[int, str]:
    with unit_of_work(factory=live.engines.session_factory(Database.main)) as session:
        owner = user_service.get_by_login(session, person.username)
        key, plaintext = api_key_service.create(
            session, CLI, name="test", scopes=scopes, owner=owner, rate_limit_per_minute=rate_limit
        )
        return key.id, plaintext


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error_shape(body: object, status: int) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert 400 <= status < 500, (status, body)
