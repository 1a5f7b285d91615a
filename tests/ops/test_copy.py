"""``tradebase db copy``, ``db export`` and ``db import`` on an install with every table.

The acceptance of issue 7's engine moves: a SQLite install holding rows in every table of
both databases is copied to PostgreSQL and to MariaDB, and exported and imported into a
fresh SQLite and into PostgreSQL. Each time the target must hold the same rows, table by
table, read back through SQLAlchemy on both sides; the audit chain must verify there; and
new rows on the target must get fresh ids.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Text, cast, func, select
from typer.testing import CliRunner, Result

from tests.conftest import Scratch, ScratchFactory
from tests.ops.fill import SECRET, empty_tables, fill_every_table
from tradebase.accounts.service import user as user_service
from tradebase.audit.service import audit
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.crypto import KeyStore
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.credentials.service import CredentialService
from tradebase.ops.transfer import Kind, column_kind, copy_database
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Portfolio
from tradebase.schema import metadata_for

SQL_NULL = "<SQL NULL>"


@dataclass
class Install:
    scratch: Scratch
    contents: dict[Database, dict[str, list[tuple[Any, ...]]]]
    keys: KeyStore


@pytest.fixture(scope="module")
def install(scratch_factory: ScratchFactory, tmp_path_factory: pytest.TempPathFactory) -> Install:
    scratch = scratch_factory.new("sqlite", "install")
    keys = fill_every_table(scratch, tmp_path_factory.mktemp("install-data"))
    engines = Engines(scratch.settings())
    try:
        assert empty_tables(engines) == [], "the fill must put a row in every table"
    finally:
        engines.dispose()
    assert verify(scratch).ok
    return Install(scratch, {db: contents(scratch, db) for db in Database}, keys)


def run(scratch: Scratch, *args: str) -> Result:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["db", *args], env=scratch.env())
    finally:
        get_settings.cache_clear()


def url(scratch: Scratch, database: Database) -> str:
    return scratch.url(database).render_as_string(hide_password=False)


def contents(scratch: Scratch, database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in id order, normalized for comparison across engines:
    decimals and timestamps as SQLAlchemy's types give them (exact Decimal, aware UTC),
    JSON parsed from its text with SQL NULL told apart from JSON's null."""
    engines = Engines(scratch.settings())
    try:
        tables: dict[str, list[tuple[Any, ...]]] = {}
        with engines.engine(database).connect() as conn:
            for table in metadata_for(database).sorted_tables:
                columns = []
                kinds = []
                for column in table.columns:
                    kind = column_kind(column.type)
                    kinds.append(kind)
                    columns.append(cast(column, Text) if kind is Kind.json else column)
                rows = conn.execute(select(*columns).order_by(*table.primary_key.columns))
                tables[table.name] = [
                    tuple(_normal(v, k) for v, k in zip(row, kinds, strict=True)) for row in rows
                ]
        return tables
    finally:
        engines.dispose()


def _normal(value: Any, kind: Kind) -> Any:
    if kind is Kind.json:
        return SQL_NULL if value is None else json.loads(value)
    if isinstance(value, Decimal):
        return (str(value), value)  # the same value, and the same canonical text
    if kind is Kind.timestamp and value is not None:
        assert value.utcoffset().total_seconds() == 0
        return value.isoformat(timespec="microseconds")
    return value


def assert_same(
    source: Install,
    target: Scratch,
    databases: tuple[Database, ...] = tuple(Database),
    *,
    via_mariadb: bool = False,
) -> None:
    """Equal row counts and equal contents, table by table.

    *via_mariadb*: the rows went through MariaDB, whose TIME columns (the calendars') hold
    whole seconds, as the schema declares them (no fractional seconds): a native MariaDB
    install seeds the 24-hour session's close as 23:59:59 too. Times are compared to the
    second then, and that is the only allowance.
    """
    for database in databases:
        copied = contents(target, database)
        expected = source.contents[database]
        assert list(copied) == list(expected)
        for name, rows in expected.items():
            assert len(copied[name]) == len(rows), f"{database.value}.{name}: row count"
            if via_mariadb:
                rows = [_whole_second_times(row) for row in rows]
            assert copied[name] == rows, f"{database.value}.{name}: contents differ"


def _whole_second_times(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.replace(microsecond=0) if isinstance(v, time) else v for v in row)


def verify(scratch: Scratch) -> Any:
    engines = Engines(scratch.settings())
    try:
        factory = engines.session_factory(Database.main)
        with unit_of_work(write=False, factory=factory) as session:
            return audit.verify(session)
    finally:
        engines.dispose()


def max_ids(scratch: Scratch) -> dict[str, int]:
    engines = Engines(scratch.settings())
    try:
        with engines.engine(Database.main).connect() as conn:
            return {
                name: conn.execute(select(func.max(table.c.id))).scalar_one()
                for name, table in metadata_for(Database.main).tables.items()
                if name in ("users", "orders", "audit_log", "trades", "order_events")
            }
    finally:
        engines.dispose()


def assert_secret_reads(install: Install, scratch: Scratch) -> None:
    """The copied ciphertext decrypts on the target, under the same master key."""
    engines = Engines(scratch.settings())
    try:
        with unit_of_work(factory=engines.session_factory(Database.credentials)) as session:
            value = CredentialService(install.keys).read_secret(
                session,
                owner_type="account",
                owner_id=1,
                kind="broker_api_key",
                actor="test",
                actor_user_id=None,
                purpose="after the move",
            )
        assert value == SECRET
    finally:
        engines.dispose()


def assert_fresh_ids(scratch: Scratch, copied: dict[str, int]) -> None:
    """A new user and an order on the target get ids past the copied ones; the chain still
    verifies with the entries they add."""
    engines = Engines(scratch.settings())
    try:
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            user, _ = user_service.create(session, username="newcomer", email="new@example.com")
            dana_portfolio = session.scalars(select(Portfolio).order_by(Portfolio.id)).first()
            assert dana_portfolio is not None
            who = Principal(user_id=dana_portfolio.user_id, username="dana", role="trader")
            order = order_service.place(
                session,
                who,
                portfolio_id=dana_portfolio.id,
                symbol="ACME",
                side="buy",
                quantity=Decimal("1"),
                price=Decimal("100"),
            )
            assert user.id > copied["users"]
            assert order.id > copied["orders"]
            assert order.status == "filled"
        after = max_ids(scratch)
        assert after["trades"] > copied["trades"]
        assert after["order_events"] > copied["order_events"]
        assert after["audit_log"] > copied["audit_log"]
    finally:
        engines.dispose()
    result = verify(scratch)
    assert result.ok, result.message


# --- copy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_db_copy_moves_every_table_to_a_server_exactly(
    install: Install, scratch_factory: ScratchFactory, engine: str, tmp_path: Path
) -> None:
    target = scratch_factory.new(engine, "copy")
    copied = run(
        install.scratch,
        "copy",
        "--to",
        url(target, Database.main),
        "--credentials-to",
        url(target, Database.credentials),
    )
    assert copied.exit_code == 0, copied.output
    assert "main: copied" in copied.stdout and "credentials: copied" in copied.stdout
    for database in Database:
        assert migrate.current_revision(database, settings=target.settings()) == (
            migrate.head_revision(database)
        )
    assert_same(install, target, via_mariadb=engine == "mysql")
    result = verify(target)
    assert result.ok, result.message
    contents = install.contents[Database.main]
    assert result.checked == len(contents["audit_log"]) + len(contents["audit_log_archive"])
    assert_fresh_ids(target, max_ids(install.scratch))

    # Copying onto a database that holds data needs --force.
    again = run(install.scratch, "copy", "--to", url(target, Database.main), "--database", "main")
    assert again.exit_code == 1
    assert "holds data" in again.stderr and "--force" in again.stderr
    forced = run(
        install.scratch,
        "copy",
        "--to",
        url(target, Database.main),
        "--database",
        "main",
        "--force",
    )
    assert forced.exit_code == 0, forced.output
    assert_same(install, target, (Database.main,), via_mariadb=engine == "mysql")

    # And back out of the server, through the models' types: into a fresh SQLite.
    back = scratch_factory.new("sqlite", "back")
    exported = run(target, "export", str(tmp_path / "export"))
    assert exported.exit_code == 0, exported.output
    imported = run(back, "import", str(tmp_path / "export"))
    assert imported.exit_code == 0, imported.output
    assert_same(install, back, via_mariadb=engine == "mysql")
    assert verify(back).ok
    assert_secret_reads(install, target)
    assert_secret_reads(install, back)


def test_db_copy_from_postgresql_back_to_sqlite(
    install: Install, scratch_factory: ScratchFactory
) -> None:
    server = scratch_factory.new("postgresql", "hop")
    there = run(
        install.scratch,
        "copy",
        "--to",
        url(server, Database.main),
        "--credentials-to",
        url(server, Database.credentials),
    )
    assert there.exit_code == 0, there.output
    back = scratch_factory.new("sqlite", "hop-back")
    # The copy's source is whatever the settings name: here the PostgreSQL one.
    home = run(
        server,
        "copy",
        "--to",
        url(back, Database.main),
        "--credentials-to",
        url(back, Database.credentials),
    )
    assert home.exit_code == 0, home.output
    assert_same(install, back)
    assert verify(back).ok
    assert_fresh_ids(back, max_ids(install.scratch))


def test_db_copy_refuses_its_own_database_and_an_unmigrated_source(
    install: Install, scratch_factory: ScratchFactory
) -> None:
    itself = run(install.scratch, "copy", "--to", url(install.scratch, Database.main))
    assert itself.exit_code == 1
    assert "is the main database itself" in itself.stderr
    empty = scratch_factory.new("sqlite", "unmigrated")
    target = scratch_factory.new("sqlite", "unmigrated-target")
    refused = run(empty, "copy", "--to", url(target, Database.main))
    assert refused.exit_code == 1
    assert "run tradebase db upgrade first" in refused.stderr


# --- export and import ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_dir(install: Install, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exports") / "plain"
    exported = run(install.scratch, "export", str(folder))
    assert exported.exit_code == 0, exported.output
    return folder


def test_export_writes_one_json_lines_file_per_table_with_a_manifest(
    install: Install, export_dir: Path
) -> None:
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["format"] == "tradebase-export"
    assert manifest["tradebase_version"]
    for database in Database:
        entry = manifest["databases"][database.value]
        assert entry["revision"] == migrate.head_revision(database)
        names = [t["name"] for t in entry["tables"]]
        assert names == [t.name for t in metadata_for(database).sorted_tables]
        for table in entry["tables"]:
            lines = (export_dir / table["file"]).read_text(encoding="utf-8").splitlines()
            assert len(lines) == table["rows"] == len(install.contents[database][table["name"]])
    price = (export_dir / "main/price_data.jsonl").read_text(encoding="utf-8").splitlines()
    bar = json.loads(price[0])
    assert bar["high"] == "12345678901234567891.123456789012345678"
    assert bar["timestamp"].endswith("+00:00") and "." in bar["timestamp"]
    users = [json.loads(line) for line in (export_dir / "main/users.jsonl").open(encoding="utf-8")]
    dana = next(u for u in users if u["username"] == "dana")
    assert dana["settings"]["grid"]["levels"][3]["note"] == "naïve — ✓ 日本語 🚀"
    assert dana["is_active"] is True
    assert dana["last_login"] == "2026-11-22T12:04:10.777896+00:00"
    signals = {
        s["order_id"]: s for s in map(json.loads, (export_dir / "main/signals.jsonl").open())
    }
    assert signals["json-null"]["outcome"] is None  # JSON's null is written
    assert "outcome" not in signals["sql-null"]  # SQL NULL of a JSON column is left out
    secret = json.loads((export_dir / "credentials/credentials.jsonl").read_text())
    assert isinstance(secret["ciphertext"], str)  # base64


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_export_then_import_round_trips(
    install: Install,
    scratch_factory: ScratchFactory,
    export_dir: Path,
    engine: str,
    tmp_path: Path,
) -> None:
    target = scratch_factory.new(engine, "import")
    if engine == "postgresql":
        # A target migrated beforehand holds only what the migrations seed: that is empty.
        for database in Database:
            migrate.upgrade(database, "head", settings=target.settings())
        folder = tmp_path / "gz"
        exported = run(install.scratch, "export", str(folder), "--gzip")
        assert exported.exit_code == 0, exported.output
        assert (folder / "main/orders.jsonl.gz").exists()
    else:
        folder = export_dir
    imported = run(target, "import", str(folder))
    assert imported.exit_code == 0, imported.output
    assert "main: imported" in imported.stdout
    assert_same(install, target)
    assert verify(target).ok
    assert_fresh_ids(target, max_ids(install.scratch))

    refused = run(target, "import", str(folder))
    assert refused.exit_code == 1
    assert "holds data" in refused.stderr and "--force" in refused.stderr
    forced = run(target, "import", str(folder), "--force")
    assert forced.exit_code == 0, forced.output
    assert_same(install, target)


def test_import_refuses_a_flipped_byte_naming_the_file(
    scratch_factory: ScratchFactory, export_dir: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(export_dir, damaged)
    path = damaged / "main" / "orders.jsonl"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    target = scratch_factory.new("sqlite", "damaged")
    refused = run(target, "import", str(damaged))
    assert refused.exit_code == 1
    assert str(path) in refused.stderr and "SHA-256" in refused.stderr
    # Nothing was touched: the target was not even created.
    assert migrate.current_revision(Database.main, settings=target.settings()) is None


def test_import_refuses_a_newer_schema_revision(
    scratch_factory: ScratchFactory, export_dir: Path, tmp_path: Path
) -> None:
    newer = tmp_path / "newer"
    shutil.copytree(export_dir, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["databases"]["main"]["revision"] = "main_9999"
    (newer / "manifest.json").write_text(json.dumps(manifest))
    target = scratch_factory.new("sqlite", "newer")
    refused = run(target, "import", str(newer))
    assert refused.exit_code == 1
    assert "main_9999" in refused.stderr and "newer" in refused.stderr
    assert migrate.current_revision(Database.main, settings=target.settings()) is None


def test_import_of_one_database_and_a_folder_that_is_no_export(
    install: Install, scratch_factory: ScratchFactory, export_dir: Path, tmp_path: Path
) -> None:
    target = scratch_factory.new("sqlite", "one")
    imported = run(target, "import", str(export_dir), "--database", "credentials")
    assert imported.exit_code == 0, imported.output
    assert "main:" not in imported.stdout
    assert_same(install, target, (Database.credentials,))
    assert migrate.current_revision(Database.main, settings=target.settings()) is None
    (tmp_path / "nothing").mkdir()
    refused = run(target, "import", str(tmp_path / "nothing"))
    assert refused.exit_code == 1
    assert "no manifest" in refused.stderr
    into_existing = run(install.scratch, "export", str(export_dir))
    assert into_existing.exit_code == 1
    assert "not an empty folder" in into_existing.stderr


def test_db_copy_between_sqlite_files(install: Install, scratch_factory: ScratchFactory) -> None:
    target = scratch_factory.new("sqlite", "sqlite-copy")
    copied = run(
        install.scratch,
        "copy",
        "--to",
        url(target, Database.main),
        "--credentials-to",
        url(target, Database.credentials),
    )
    assert copied.exit_code == 0, copied.output
    assert_same(install, target)
    assert_fresh_ids(target, max_ids(install.scratch))


def _pg_schema(scratch: Scratch) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    engines = Engines(scratch.settings())
    try:
        with engines.engine(Database.main).connect() as conn:
            indexes = conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            ).all()
            constraints = conn.exec_driver_sql(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE connamespace = current_schema()::regnamespace"
            ).all()
        return {tuple(r) for r in indexes}, {tuple(r) for r in constraints}  # type: ignore[misc]
    finally:
        engines.dispose()


def test_large_postgresql_tables_are_loaded_then_indexed_as_the_migrations_built_them(
    install: Install, scratch_factory: ScratchFactory
) -> None:
    target = scratch_factory.new("postgresql", "rebuild")
    migrate.upgrade(Database.main, "head", settings=target.settings())
    migrated = _pg_schema(target)
    result = copy_database(
        Database.main,
        target.main_url,
        source=install.scratch.main_url,
        settings=install.scratch.settings(),
        rebuild_indexes_from=1,  # every table with a row: drop, COPY, build again
    )
    assert result.rows == sum(len(rows) for rows in install.contents[Database.main].values())
    assert _pg_schema(target) == migrated
    assert migrate.check(Database.main, settings=target.settings()).ok
    assert_same(install, target, (Database.main,))
    assert verify(target).ok


# --- backups in the portable format ------------------------------------------------------


def _backup(scratch: Scratch, out: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Result:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["db", "backup", "-o", str(out)], env=scratch.env())
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_without_the_dump_program_a_server_backup_is_portable_and_restores_exactly(
    install: Install,
    scratch_factory: ScratchFactory,
    engine: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = scratch_factory.new(engine, "portable_src")
    for database in Database:
        copy_database(database, source.url(database), settings=install.scratch.settings())
    # no pg_dump, mariadb-dump or zstd on PATH: auto falls back to the portable format
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    made = _backup(source, tmp_path / "out", monkeypatch)
    assert made.exit_code == 0, made.output
    folders = list((tmp_path / "out").iterdir())
    assert len(folders) == 1, folders
    folder = folders[0]
    manifest = json.loads((folder / "manifest.json").read_text())
    files = manifest["files"]
    assert {f["format"] for f in files.values()} == {"portable"}
    assert {f["compression"] for f in files.values()} == {"gzip"}
    rows = {db: sum(entry["tables"].values()) for db, entry in manifest["databases"].items()}
    assert rows == {db.value: sum(map(len, install.contents[db].values())) for db in Database}

    # into a fresh database of the same engine, and (portable) into SQLite too
    for target in (scratch_factory.new(engine, "portable_dst"), scratch_factory.new("sqlite")):
        get_settings.cache_clear()
        restored = CliRunner().invoke(app, ["db", "restore", str(folder)], env=target.env())
        get_settings.cache_clear()
        assert restored.exit_code == 0, restored.output
        assert_same(install, target, via_mariadb=engine == "mysql")
        result = verify(target)
        assert result.ok, result.message
        assert_fresh_ids(target, max_ids(install.scratch))

    # a flipped byte in the tar is found before anything is written
    tar = folder / manifest["databases"]["main"]["file"]
    assert tar.name.endswith(".portable.tar.gz")
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0x01
    tar.write_bytes(bytes(data))
    fresh = scratch_factory.new(engine, "portable_bad")
    get_settings.cache_clear()
    refused = CliRunner().invoke(app, ["db", "restore", str(folder)], env=fresh.env())
    get_settings.cache_clear()
    assert refused.exit_code == 1 and tar.name in refused.output


def test_the_native_format_without_its_program_exits_2_naming_the_setting(
    install: Install,
    scratch_factory: ScratchFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = scratch_factory.new("postgresql", "native_src")
    for database in Database:
        copy_database(database, source.url(database), settings=install.scratch.settings())
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    made = _backup(source, tmp_path / "out", monkeypatch, TRADEBASE_BACKUP_FORMAT="native")
    assert made.exit_code == 2
    assert "pg_dump is not installed" in made.output
    assert "TRADEBASE_BACKUP_FORMAT=native (portable needs no programs)" in made.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
