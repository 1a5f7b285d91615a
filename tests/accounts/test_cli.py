"""`tradebase users` and `tradebase keys`."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tests.conftest import Scratch
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core import migrate
from tradebase.core.db import Database, engines

runner = CliRunner()


@pytest.fixture
def env(scratch: Scratch) -> dict[str, str]:
    for database in Database:
        migrate.upgrade(database, settings=scratch.settings())
    return scratch.env()


def tb(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str]:
    get_settings.cache_clear()
    engines.dispose()  # the CLI's engines follow the settings of this test
    result = runner.invoke(app, list(args), env={**env, "COLUMNS": "300"}, input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_users_commands(env: dict[str, str]) -> None:
    code, out = tb(
        env, "users", "create", "alice", "--email", "alice@example.com", "--role", "viewer"
    )
    assert code == 0, out
    password = re.search(r"one-time password \(shown once\): (\S+)", out)
    assert password
    code, out = tb(
        env,
        "users",
        "create",
        "bob",
        "--email",
        "bob@example.com",
        "--password",
        input="a long enough password\na long enough password\n",
    )
    assert code == 0 and "one-time" not in out
    code, out = tb(env, "users", "create", "alice", "--email", "other@example.com")
    assert code == 1 and "already in use" in out
    code, out = tb(env, "users", "set-role", "alice", "trader")
    assert code == 0 and "alice is now trader" in out
    code, out = tb(env, "users", "disable", "bob")
    assert code == 0
    code, out = tb(env, "users", "list")
    assert code == 0
    rows = {line.split("│")[2].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert "trader" in rows["alice"] and "no" in rows["bob"].split("│")[5]
    code, out = tb(env, "users", "reset-password", "alice")
    assert code == 0 and "one-time password for alice" in out
    code, out = tb(env, "users", "set-role", "nobody", "admin")
    assert code == 1 and "no user 'nobody'" in out


def test_keys_commands(env: dict[str, str]) -> None:
    tb(env, "users", "create", "carol", "--email", "carol@example.com")
    code, out = tb(
        env,
        "keys",
        "create",
        "--user",
        "carol",
        "--name",
        "bot",
        "--scope",
        "read:portfolio",
        "--expires-days",
        "30",
        "--rate-limit",
        "120",
    )
    assert code == 0, out
    key = out.strip().splitlines()[-1]
    assert key.startswith("tb_") and len(key) == 46
    code, out = tb(env, "keys", "list", "--user", "carol")
    assert code == 0 and key[:11] in out and key not in out and "read:portfolio" in out
    key_id = re.search(
        r"key (\d+) for carol", tb(env, "keys", "create", "--user", "carol", "--name", "x")[1]
    )
    assert key_id
    code, out = tb(env, "keys", "revoke", key_id.group(1))
    assert code == 0 and "revoked" in out
    code, out = tb(env, "keys", "create", "--user", "carol", "--name", "y", "--scope", "admin")
    assert code == 1 and "cannot hold scope 'admin'" in out
