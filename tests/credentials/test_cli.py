"""``tradebase credentials …`` against SQLite in a data folder of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from tests.credentials import env_keys
from tradebase.config import get_settings
from tradebase.core import migrate
from tradebase.core.crypto import MasterKey, read_key_file
from tradebase.core.db import Database, engines, unit_of_work
from tradebase.credentials.cli import app
from tradebase.credentials.models import Credential
from tradebase.credentials.service import CredentialService

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TRADEBASE_DATA_DIR in tmp_path, the credentials database migrated there."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name.startswith("TRADEBASE_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("TRADEBASE_DATA_DIR", str(data))
    get_settings.cache_clear()
    engines.dispose()
    migrate.upgrade(Database.credentials, "head", settings=get_settings())
    yield data
    engines.dispose()
    get_settings.cache_clear()


def _seed(values: dict[int, str]) -> None:
    with unit_of_work(Database.credentials) as session:
        for owner_id, value in values.items():
            CredentialService().set_secret(
                session,
                user_id=1,
                owner_type="account",
                owner_id=owner_id,
                kind="broker_api_key",
                value=value,
            )


def _read(service: CredentialService, owner_id: int) -> str:
    with unit_of_work(Database.credentials) as session:
        return service.read_secret(
            session,
            owner_type="account",
            owner_id=owner_id,
            kind="broker_api_key",
            actor="test",
            actor_user_id=None,
            purpose="check",
        )


def test_rotate_key_with_the_key_file(data_dir: Path, tmp_path: Path) -> None:
    values = {n: f"api-key-number-{n}-abcdef" for n in range(1, 6)}
    _seed(values)
    old = read_key_file(data_dir / "secret.key")[0]

    result = runner.invoke(app, ["rotate-key", "--batch-size", "2"])

    assert result.exit_code == 0, result.output
    new = read_key_file(data_dir / "secret.key")
    assert len(new) == 1 and new[0] != old
    assert f"re-encrypted 5 secret(s) under key {new[0].key_id}" in result.stdout
    assert f"retired key(s) {old.key_id}: removed from the key file" in result.stdout
    assert "5/5" in result.stderr  # the progress bar
    assert all(_read(CredentialService(), n) == v for n, v in values.items())
    with pytest.raises(Exception, match="not configured"):
        _read(CredentialService(env_keys(tmp_path, old)), 1)

    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0
    assert f"active key: {new[0].key_id} (from key file {data_dir / 'secret.key'})" in status.stdout
    assert f"5 secret(s) under key {new[0].key_id} (active)" in status.stdout


def test_rotate_key_takes_a_new_key_from_standard_input(data_dir: Path) -> None:
    _seed({1: "api-key-number-1-abcdef"})
    chosen = MasterKey.generate()
    result = runner.invoke(app, ["rotate-key", "--new-key", "-"], input=chosen.encode() + "\n")
    assert result.exit_code == 0, result.output
    assert read_key_file(data_dir / "secret.key") == [chosen]


def test_an_unusable_new_key_is_one_line(data_dir: Path) -> None:
    result = runner.invoke(app, ["rotate-key", "--new-key", "short"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: --new-key: not a usable key: expected 32 random bytes as URL-safe base64"
        " (43 characters) or hex (64 characters), got 5 characters;"
        " generate one with: tradebase credentials generate-key"
    ]


def test_an_unusable_secret_key_setting_is_one_line(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEBASE_SECRET_KEY", "changeme")
    get_settings.cache_clear()
    for command in (["status"], ["rotate-key"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith("error: TRADEBASE_SECRET_KEY: not a usable key")
        assert "changeme" not in result.stderr


def test_a_key_file_others_can_read_is_refused(data_dir: Path) -> None:
    _seed({1: "api-key-number-1-abcdef"})
    path = data_dir / "secret.key"
    path.chmod(0o644)
    result = runner.invoke(app, ["rotate-key"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: key file {path} is accessible by group or others (mode 0644);"
        f" make it private with: chmod 600 {path}"
    )


def test_rotate_key_with_environment_keys(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    monkeypatch.setenv("TRADEBASE_SECRET_KEY", old.encode())
    get_settings.cache_clear()
    _seed({1: "api-key-number-1-abcdef", 2: "api-key-number-2-abcdef"})

    refused = runner.invoke(app, ["rotate-key"])
    assert refused.exit_code == 1
    assert "set TRADEBASE_SECRET_KEY to the new key" in refused.stderr
    refused = runner.invoke(app, ["rotate-key", "--new-key", new.encode()])
    assert refused.exit_code == 1 and "TRADEBASE_SECRET_KEY is set" in refused.stderr

    monkeypatch.setenv("TRADEBASE_SECRET_KEY", new.encode())
    monkeypatch.setenv("TRADEBASE_PREVIOUS_SECRET_KEYS", old.encode())
    get_settings.cache_clear()
    status = runner.invoke(app, ["status"])
    assert "2 secret(s) are not under the active key: run rotate-key" in status.stdout
    result = runner.invoke(app, ["rotate-key"])
    assert result.exit_code == 0, result.output
    assert f"re-encrypted 2 secret(s) under key {new.key_id}" in result.stdout
    assert (
        f"no secret needs key(s) {old.key_id} any more: remove TRADEBASE_PREVIOUS_SECRET_KEYS"
        in result.stdout
    )
    assert not (data_dir / "secret.key").exists()


def test_generate_key_prints_a_usable_key(data_dir: Path) -> None:
    first = runner.invoke(app, ["generate-key"]).stdout.strip()
    second = runner.invoke(app, ["generate-key"]).stdout.strip()
    assert first != second
    assert MasterKey.parse(first, source="test").encode() == first


def test_rotate_key_names_the_secrets_it_could_not_re_encrypt(data_dir: Path) -> None:
    _seed({1: "api-key-number-1-abcdef", 2: "api-key-number-2-abcdef"})
    with unit_of_work(Database.credentials) as session:
        session.execute(update(Credential).where(Credential.owner_id == 2).values(key_id="f" * 16))
        broken = session.scalars(select(Credential.id).where(Credential.owner_id == 2)).one()
    old = read_key_file(data_dir / "secret.key")[0]

    result = runner.invoke(app, ["rotate-key"])

    assert result.exit_code == 1
    assert f"credential {broken}: credential {broken} is encrypted under key ffffffffffffffff" in (
        result.stderr
    )
    assert result.stderr.splitlines()[-1] == (
        "error: 1 secret(s) could not be re-encrypted, so the old key(s) stay configured;"
        " set those secrets again (or delete them), then run rotate-key again"
    )
    assert read_key_file(data_dir / "secret.key")[1:] == [old]
    status = runner.invoke(app, ["status"])
    assert "1 secret(s) under key ffffffffffffffff (NOT CONFIGURED" in status.stdout
