"""`tradebase serve` on a fresh machine: databases created, an admin with a one-time password."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tradebase.config import Settings
from tradebase.core import migrate
from tradebase.core.db import Database


def _start(workdir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBASE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "tradebase", "serve", "--port", str(port), "--workers", "2"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        time.sleep(0.2)
    raise AssertionError("server not ready")


def test_first_run_creates_databases_and_an_admin_once(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _start(tmp_path, port)
    try:
        _wait(url, process)
        first = httpx.post(f"{url}/api/v1/auth/login", json={"login": "admin", "password": "guess"})
        assert first.status_code == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    password = re.search(r"one-time password \(shown once\): (\S+)", output)
    assert password, output
    assert (tmp_path / "tradebase-data" / "tradebase.db").exists()
    assert (tmp_path / "tradebase-data" / "credentials.db").exists()

    process = _start(tmp_path, port)
    try:
        _wait(url, process)
        login = httpx.post(
            f"{url}/api/v1/auth/login", json={"login": "admin", "password": password.group(1)}
        )
        assert login.status_code == 200, login.text
        assert login.json()["user"]["role"] == "admin"
        assert login.json()["password_change_required"] is True
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "one-time password" not in output


def test_a_started_server_freezes_its_heap_out_of_full_collections(tmp_path: Path) -> None:
    import gc

    from fastapi.testclient import TestClient

    from tradebase.app import create_app

    frozen = gc.get_freeze_count()
    settings = Settings(data_dir=tmp_path, gc_freeze=True)
    for database in Database:
        migrate.upgrade(database, settings=settings)
    try:
        with TestClient(create_app(settings)):
            assert gc.get_freeze_count() > frozen + 10_000  # the imported code, the app
    finally:
        gc.unfreeze()
    quiet = Settings(data_dir=tmp_path, gc_freeze=False)
    with TestClient(create_app(quiet)):
        assert gc.get_freeze_count() == 0
