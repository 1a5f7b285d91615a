"""Test databases on every engine.

* SQLite: a file per test session, always.
* PostgreSQL and MariaDB/MySQL: a database of their own per test session (and per xdist
  worker), created on the servers named by ``TRADEBASE_TEST_POSTGRES_URL`` and
  ``TRADEBASE_TEST_MYSQL_URL``. When a server cannot be reached its tests are skipped with
  the reason, except under ``CI=true``, where they fail.

Schemas are built by the migrations (``alembic upgrade head``), never by ``create_all``.
Each test runs in an outer transaction that is rolled back; the session joins it with
``join_transaction_mode="create_savepoint"``, so code that commits commits a savepoint.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from tradebase.config import Settings, normalize_database_url
from tradebase.core import migrate
from tradebase.core.db import Database, create_db_engine

BACKENDS = ("sqlite", "postgresql", "mysql")
SERVER_URLS = {
    "postgresql": os.environ.get(
        "TRADEBASE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("TRADEBASE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
IN_CI = os.environ.get("CI", "").lower() == "true"
# The test process starts many apps; freezing its heap at each start would only cost time.
os.environ.setdefault("TRADEBASE_GC_FREEZE", "false")
# Each app a test starts would start a signal writer process (a second each): the tests
# of the writer process run real servers (tests/signals/test_writer.py).
os.environ.setdefault("TRADEBASE_SIGNAL_WRITER_PROCESS", "false")


def _unreachable(backend: str, exc: Exception) -> None:
    message = f"{backend} server at {SERVER_URLS[backend]} is unreachable: {exc}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: every engine must be tested)", pytrace=False)
    pytest.skip(message)


class ServerDatabases:
    """Creates and drops scratch databases on one PostgreSQL or MariaDB server."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.admin_url = normalize_database_url(SERVER_URLS[backend])
        self.admin = create_db_engine(
            self.admin_url,
            Settings(),
            pooled=False,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5},
        )
        self.created: list[str] = []

    def ping(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text("SELECT 1"))

    def create(self, label: str) -> URL:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "w")
        name = f"tbt_{worker}_{label}_{uuid.uuid4().hex[:8]}"
        quoted = f'"{name}"' if self.backend == "postgresql" else f"`{name}`"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        self.created.append(name)
        return self.admin_url.set(database=name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                if self.backend == "postgresql":
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        self.created.clear()
        self.admin.dispose()


@dataclass
class Scratch:
    """A pair of empty databases (main and credentials) on one engine."""

    backend: str
    main_url: URL
    credentials_url: URL

    def settings(self) -> Settings:
        return Settings(
            database_url=self.main_url.render_as_string(hide_password=False),
            credentials_database_url=self.credentials_url.render_as_string(hide_password=False),
        )

    def env(self) -> dict[str, str]:
        settings = self.settings()
        assert settings.database_url and settings.credentials_database_url
        return {
            "TRADEBASE_DATABASE_URL": settings.database_url,
            "TRADEBASE_CREDENTIALS_DATABASE_URL": settings.credentials_database_url,
        }

    def url(self, database: Database) -> URL:
        return self.main_url if database is Database.main else self.credentials_url


class ScratchFactory:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.servers: dict[str, ServerDatabases] = {}
        self.failures: dict[str, Exception] = {}

    def server(self, backend: str) -> ServerDatabases:
        if backend in self.failures:  # tried once already: do not wait on it again
            _unreachable(backend, self.failures[backend])
        if backend not in self.servers:
            server = ServerDatabases(backend)
            try:
                server.ping()
            except Exception as exc:
                self.failures[backend] = exc
                _unreachable(backend, exc)
            self.servers[backend] = server
        return self.servers[backend]

    def new(self, backend: str, label: str = "db") -> Scratch:
        if backend == "sqlite":
            folder: Path = self.tmp.mktemp(label)
            return Scratch(
                backend,
                make_url(f"sqlite:///{folder / 'tradebase.db'}"),
                make_url(f"sqlite:///{folder / 'credentials.db'}"),
            )
        server = self.server(backend)
        return Scratch(backend, server.create(label), server.create(f"{label}_cred"))

    def close(self) -> None:
        for server in self.servers.values():
            server.drop_all()


@pytest.fixture(scope="session")
def scratch_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScratchFactory]:
    factory = ScratchFactory(tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scratch(scratch_factory: ScratchFactory, backend: str) -> Scratch:
    """Fresh, empty databases for a test that migrates them itself."""
    return scratch_factory.new(backend, "scratch")


@dataclass
class Migrated:
    scratch: Scratch
    main: Engine
    credentials: Engine

    @property
    def backend(self) -> str:
        return self.scratch.backend


_migrated_cache: dict[str, Migrated] = {}


@pytest.fixture(scope="session")
def _migrated_registry(scratch_factory: ScratchFactory) -> Iterator[dict[str, Migrated]]:
    yield _migrated_cache
    for item in _migrated_cache.values():
        item.main.dispose()
        item.credentials.dispose()
    _migrated_cache.clear()


@pytest.fixture
def migrated(
    backend: str, scratch_factory: ScratchFactory, _migrated_registry: dict[str, Migrated]
) -> Migrated:
    """Both databases of *backend*, migrated to head once per test session."""
    if backend not in _migrated_registry:
        scratch = scratch_factory.new(backend, "shared")
        settings = scratch.settings()
        for database in Database:
            migrate.upgrade(database, "head", settings=settings)
        _migrated_registry[backend] = Migrated(
            scratch,
            create_db_engine(scratch.main_url, settings),
            create_db_engine(scratch.credentials_url, settings),
        )
    return _migrated_registry[backend]


def _rollback_session(engine: Engine) -> Iterator[Session]:
    connection = engine.connect()
    outer = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        session.close()
        if outer.is_active:
            outer.rollback()
        connection.close()


@pytest.fixture
def session(migrated: Migrated) -> Iterator[Session]:
    """A session on the main database whose work is rolled back after the test."""
    yield from _rollback_session(migrated.main)


@pytest.fixture
def credentials_session(migrated: Migrated) -> Iterator[Session]:
    yield from _rollback_session(migrated.credentials)


@pytest.fixture
def bare_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory *tmp_path*, no TRADEBASE_ variable set: what a newcomer's
    shell there gives the settings (the test sets what it wants on top)."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("TRADEBASE_"):
            monkeypatch.delenv(name)
    return tmp_path


# --- live HTTP servers ------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str, process: subprocess.Popen[bytes], seconds: float = 60, log: Path | None = None
) -> None:
    """Wait until the `tradebase serve` *process* answers ``/ready`` 200 at *url* (*log*:
    its output, shown if it exits first)."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text() if log else "the server exited"
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


class LiveServer:
    """Tradebase's app served by uvicorn on a loopback port, in a background thread."""

    def __init__(self, scratch: Scratch, settings: Settings) -> None:
        import threading

        import uvicorn

        from tradebase.app import create_app
        from tradebase.core.db import Engines

        self.scratch = scratch
        self.settings = settings
        self.engines = Engines(settings)
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        import time

        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def env(self) -> dict[str, str]:
        """The environment a command needs to work on this server's data: its databases
        and its data directory (where the credentials' key file is)."""
        return {**self.scratch.env(), "TRADEBASE_DATA_DIR": str(self.settings.data_dir)}

    def client(self, **kwargs: object):  # type: ignore[no-untyped-def]
        import httpx

        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engines.dispose()


_servers: dict[str, LiveServer] = {}


@pytest.fixture(scope="session")
def _server_registry(scratch_factory: ScratchFactory) -> Iterator[dict[str, LiveServer]]:
    yield _servers
    for server in _servers.values():
        server.stop()
    _servers.clear()


@pytest.fixture
def live(
    backend: str,
    scratch_factory: ScratchFactory,
    _server_registry: dict[str, LiveServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> LiveServer:
    """A running server on *backend*'s own migrated databases, one per test session."""
    if backend not in _server_registry:
        scratch = scratch_factory.new(backend, "live")
        settings = scratch.settings().model_copy(
            # Every test logs in from 127.0.0.1: the per-address login limit has its own test.
            update={
                "data_dir": tmp_path_factory.mktemp("live-data"),
                "login_attempts_per_minute": 100_000,
                # A copy of a signal waits this long for the first copy's outcome before
                # it answers 202; the suite's machine is shared, and the tests want the 200.
                "signal_wait_seconds": 15,
            }
        )
        for database in Database:
            migrate.upgrade(database, "head", settings=settings)
        _server_registry[backend] = LiveServer(scratch, settings)
    return _server_registry[backend]
