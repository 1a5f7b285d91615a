"""Two real `tradebase serve` processes on one PostgreSQL database share lockouts and
rate limits (through the database, and through Redis when configured)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.accounts.helpers import Person, bearer
from tests.accounts.test_keys import _wait_for_a_fresh_minute
from tests.conftest import IN_CI, ScratchFactory, free_port
from tradebase.accounts.cli import CLI
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work

REDIS_URL = os.environ.get("TRADEBASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Cluster:
    def __init__(self, env: dict[str, str], settings: object, count: int = 2) -> None:
        self.env = env
        self.engines = Engines(settings)  # type: ignore[arg-type]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        for _ in range(count):
            port = free_port()
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tradebase",
                    "serve",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            self.processes.append(process)
            self.urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(self.urls, self.processes, strict=True):
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    raise RuntimeError(f"server did not start: {output}")
                time.sleep(0.1)

    def person(self, role: str = "trader", rate_limit: int = 60) -> tuple[Person, str]:
        import uuid

        name = f"p_{uuid.uuid4().hex[:8]}"
        with unit_of_work(factory=self.engines.session_factory(Database.main)) as session:
            user, _ = user_service.create(
                session,
                username=name,
                email=f"{name}@example.com",
                role=role,
                password="correct horse battery",
            )
            _, key = api_key_service.create(
                session, CLI, name="k", owner=user, rate_limit_per_minute=rate_limit
            )
            return Person(user.id, name, "correct horse battery", role), key

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=15)
        self.engines.dispose()


def _cluster(scratch_factory: ScratchFactory, tmp_path: Path, **extra: str) -> Cluster:
    scratch = scratch_factory.new("postgresql", "cluster")
    settings = scratch.settings()
    for database in Database:
        migrate.upgrade(database, settings=settings)
    env = {**os.environ, **scratch.env(), "TRADEBASE_DATA_DIR": str(tmp_path), **extra}
    return Cluster(env, settings)


@pytest.fixture
def cluster(scratch_factory: ScratchFactory, tmp_path: Path) -> Iterator[Cluster]:
    running = _cluster(scratch_factory, tmp_path)
    yield running
    running.stop()


def test_lockout_holds_across_two_server_processes(cluster: Cluster) -> None:
    person, _ = cluster.person()
    first, second = cluster.urls
    for attempt in range(5):
        url = (first, second)[attempt % 2]
        response = httpx.post(
            f"{url}/api/v1/auth/login", json={"login": person.username, "password": "wrong"}
        )
        assert response.status_code == 401
    for url in (first, second):
        response = httpx.post(
            f"{url}/api/v1/auth/login", json={"login": person.username, "password": person.password}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_credentials"


def test_rate_limit_holds_across_two_server_processes(cluster: Cluster) -> None:
    _, key = cluster.person(rate_limit=60)
    _wait_for_a_fresh_minute()
    clients = [httpx.Client(base_url=url) for url in cluster.urls]
    codes = [clients[i % 2].get("/api/v1/me", headers=bearer(key)).status_code for i in range(60)]
    limited = clients[1].get("/api/v1/me", headers=bearer(key))
    for client in clients:
        client.close()
    assert codes == [200] * 60
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_rate_limit_through_redis(scratch_factory: ScratchFactory, tmp_path: Path) -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    running = _cluster(scratch_factory, tmp_path, TRADEBASE_REDIS_URL=REDIS_URL)
    try:
        _, key = running.person(rate_limit=60)
        _wait_for_a_fresh_minute()
        clients = [httpx.Client(base_url=url) for url in running.urls]
        codes = [
            clients[i % 2].get("/api/v1/me", headers=bearer(key)).status_code for i in range(61)
        ]
        for client in clients:
            client.close()
        assert codes == [200] * 60 + [429]
        with unit_of_work(factory=running.engines.session_factory(Database.main), write=False) as s:
            from sqlalchemy import func, select

            from tradebase.accounts.models import RateLimitCounter

            assert s.scalar(select(func.count()).select_from(RateLimitCounter)) == 0  # all in Redis
    finally:
        running.stop()
