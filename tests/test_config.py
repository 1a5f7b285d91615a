"""Settings: defaults that work with nothing set, and one clear line per wrong setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tradebase.config import (
    Settings,
    SettingsError,
    get_settings,
    load_settings,
    normalize_database_url,
)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_sqlite_files_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bare_env: Path
) -> None:
    settings = load_settings()
    assert (
        settings.main_url.render_as_string() == f"sqlite:///{tmp_path}/tradebase-data/tradebase.db"
    )
    assert settings.credentials_url.database == f"{tmp_path}/tradebase-data/credentials.db"
    assert settings.pool_size == 10 and settings.pool_pre_ping is True


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://root@127.0.0.1/test", "mysql+pymysql://root@127.0.0.1/test?charset=utf8mb4"),
        ("mariadb://root@h/test", "mariadb+pymysql://root@h/test?charset=utf8mb4"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_bare_engine_urls_get_tradebase_drivers(raw: str, expected: str) -> None:
    assert normalize_database_url(raw).render_as_string() == expected


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"TRADEBASE_POOL_SIZE": "lots"}, ["TRADEBASE_POOL_SIZE"]),
        ({"TRADEBASE_POOL_SIZE": "0"}, ["TRADEBASE_POOL_SIZE"]),
        ({"TRADEBASE_DATABASE_URL": "oracle://x"}, ["TRADEBASE_DATABASE_URL"]),
        (
            {"TRADEBASE_CREDENTIALS_DATABASE_URL": "not a url"},
            ["TRADEBASE_CREDENTIALS_DATABASE_URL"],
        ),
        (
            {"TRADEBASE_POOL_PRE_PING": "maybe", "TRADEBASE_POOL_TIMEOUT": "-1"},
            ["TRADEBASE_POOL_PRE_PING", "TRADEBASE_POOL_TIMEOUT"],
        ),
    ],
)
def test_a_wrong_setting_is_one_line_naming_it(
    env: dict[str, str], names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    lines = str(info.value).splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(names)


def test_the_cli_reports_a_wrong_setting_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "TRADEBASE_POOL_SIZE": "lots", "TRADEBASE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "tradebase", "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: wrong setting: TRADEBASE_POOL_SIZE: Input should be a valid integer, unable to"
        " parse string as an integer (got 'lots')"
    ]
    assert not (tmp_path / "tradebase.db").exists()


def test_the_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(TRADEBASE_[A-Z_]+)`", readme))
    for name, field in Settings.model_fields.items():
        assert f"TRADEBASE_{name.upper()}" in documented, name
        assert field.description, name


def test_settings_read_under_another_environment_are_not_handed_to_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bare_env: Path
) -> None:
    # The race behind a CLI test once running on an empty database: a background thread
    # read the process's settings just after the test cleared them, and the command, run
    # under the test's environment, got those. Settings are read once per environment.
    get_settings.cache_clear()
    try:
        plain = get_settings()  # the other thread, under the process's environment
        assert plain.data_dir == Path("tradebase-data")  # relative: the working directory
        monkeypatch.setenv("TRADEBASE_DATA_DIR", str(tmp_path / "mine"))
        mine = get_settings()  # the command, under its own
        assert mine.data_dir == tmp_path / "mine"
        assert get_settings() is mine  # read once
        monkeypatch.delenv("TRADEBASE_DATA_DIR")
        assert get_settings() is plain
    finally:
        get_settings.cache_clear()
