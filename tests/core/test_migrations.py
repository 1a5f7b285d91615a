"""One migration history, both databases, every engine: up, down, up again, and check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import Column, DefaultClause, Integer, MetaData, String, inspect
from typer.testing import CliRunner

from tests.conftest import Scratch
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core import migrate
from tradebase.core.db import Database, create_db_engine
from tradebase.core.ddl import ck, missing_updated_at_triggers
from tradebase.core.money import ExactDecimal
from tradebase.schema import credentials_metadata, main_metadata

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fresh_settings() -> None:
    get_settings.cache_clear()


def tb(scratch: Scratch, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=scratch.env())
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def tables(scratch: Scratch, database: Database) -> set[str]:
    engine = create_db_engine(scratch.url(database), scratch.settings(), pooled=False)
    try:
        return {t for t in inspect(engine).get_table_names() if not t.startswith("alembic_")}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(scratch: Scratch) -> None:
    code, out = tb(scratch, "db", "upgrade")
    assert code == 0, out
    assert "main database" in out and "credentials_0001" in out
    assert "orders" in tables(scratch, Database.main)
    assert tables(scratch, Database.credentials) == {"credentials", "credential_access_log"}

    code, out = tb(scratch, "db", "downgrade", "base")
    assert code == 0, out
    assert tables(scratch, Database.main) == set()
    assert tables(scratch, Database.credentials) == set()

    code, out = tb(scratch, "db", "upgrade", "--database", "main")
    assert code == 0, out
    assert "orders" in tables(scratch, Database.main)
    assert tables(scratch, Database.credentials) == set()
    code, out = tb(scratch, "db", "upgrade")
    assert code == 0, out
    code, out = tb(scratch, "db", "current")
    assert code == 0 and out.count("up to date") == 2, out


def test_relative_downgrade_stays_in_its_branch(scratch: Scratch) -> None:
    tb(scratch, "db", "upgrade")
    code, out = tb(scratch, "db", "downgrade", "-1", "--database", "credentials")
    assert code == 0, out
    assert migrate.current_revision(Database.credentials, settings=scratch.settings()) is None
    assert migrate.current_revision(Database.main, settings=scratch.settings()) == (
        migrate.head_revision(Database.main)
    )


def test_check_passes_on_a_clean_tree(scratch: Scratch) -> None:
    code, out = tb(scratch, "db", "upgrade")
    assert code == 0, out
    code, out = tb(scratch, "db", "check")
    assert code == 0, out
    assert out.count("models and migrations agree") == 2


def test_check_changes_nothing_and_asks_for_an_upgrade(scratch: Scratch) -> None:
    code, out = tb(scratch, "db", "check", "--database", "credentials")
    assert code == 1
    assert "run tradebase db upgrade --database credentials first" in out
    assert tables(scratch, Database.credentials) == set()


def test_check_fails_when_a_model_gains_a_column(
    scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = MetaData(naming_convention=main_metadata.naming_convention)
    for table in main_metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["orders"].append_column(Column("venue_fee_tier", String(10)))
    changed.tables["users"].append_column(Column("login_count", Integer))
    changed.tables["orders"].append_constraint(ck("tag_not_empty", "{len:tag} > 0"))
    DefaultClause("manual")._set_parent(changed.tables["orders"].c.tag)  # a new server default
    code, out = tb(scratch, "db", "upgrade")
    assert code == 0, out
    monkeypatch.setattr(
        "tradebase.schema.metadata_for",
        lambda database: changed if database is Database.main else credentials_metadata,
    )
    code, out = tb(scratch, "db", "check", "--database", "main")
    assert code == 1
    assert "add column: orders.venue_fee_tier" in out
    assert "add column: users.login_count" in out
    assert "add check: ck_orders_tag_not_empty on orders" in out
    assert "modify default: orders.tag" in out
    assert "tradebase db revision" in out


def test_revision_writes_nothing_when_models_and_migrations_agree(scratch: Scratch) -> None:
    versions = migrate.script_location() / "versions"
    before = set(versions.rglob("*.py"))
    code, out = tb(scratch, "db", "revision", "-m", "nothing to do")
    assert code == 0, out
    assert out.count("no changes, nothing written") == 2
    assert set(versions.rglob("*.py")) == before


def test_an_explicit_revision_goes_to_its_own_database(scratch: Scratch) -> None:
    code, out = tb(scratch, "db", "upgrade", "main_0001")
    assert code == 0, out
    assert "main database" in out and "credentials database" not in out
    assert tables(scratch, Database.credentials) == set()
    code, out = tb(scratch, "db", "upgrade", "nonesuch")
    assert code == 2
    assert "'nonesuch' is not a migration of either database" in out


def test_current_on_a_fresh_machine_creates_nothing(scratch: Scratch) -> None:
    code, out = tb(scratch, "db", "current")
    assert code == 0, out
    assert out.count("at base (behind") == 2
    if scratch.backend == "sqlite":
        assert not Path(str(scratch.main_url.database)).exists()


def test_history_lists_each_branch(scratch: Scratch) -> None:
    code, out = tb(scratch, "db", "history")
    assert code == 0
    assert "main_0001" in out and "credentials_0001" in out


def test_migration_files_are_dated() -> None:
    files = list((migrate.script_location() / "versions").rglob("*.py"))
    assert files
    for path in files:
        assert Path(path).name[:10].count("-") == 2, path.name  # YYYY-MM-DD-HHMM_rev_slug


def test_revision_autogenerates_a_migration_that_upgrades_and_downgrades(
    scratch: Scratch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A copy of the history, so that the new revision is written outside the repository.
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.script_location(), copy)
    monkeypatch.setattr(migrate, "script_location", lambda: copy)
    changed = MetaData(naming_convention=main_metadata.naming_convention)
    for table in main_metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["orders"].append_column(Column("venue_fee", ExactDecimal(), nullable=True))
    monkeypatch.setattr(
        "tradebase.schema.metadata_for",
        lambda database: changed if database is Database.main else credentials_metadata,
    )
    code, out = tb(scratch, "db", "revision", "-m", "add venue fee", "--database", "main")
    assert code == 0, out
    written = list((copy / "versions" / "main").glob("*add_venue_fee.py"))
    assert len(written) == 1
    source = written[0].read_text()
    assert "batch_op.add_column(sa.Column('venue_fee', tb.ExactDecimal(), nullable=True))" in source
    assert "import tradebase.core.ddl as tb" in source

    code, out = tb(scratch, "db", "upgrade")
    assert code == 0, out
    code, out = tb(scratch, "db", "check")
    assert code == 0, out
    # Batch mode may rebuild the table on SQLite: its checks and trigger must survive.
    engine = create_db_engine(scratch.main_url, scratch.settings())
    with engine.connect() as conn:
        cols = {c["name"] for c in inspect(conn).get_columns("orders")}
        assert "venue_fee" in cols
        checks = {c["name"] for c in inspect(conn).get_check_constraints("orders")}
        assert "ck_orders_quantity_positive" in checks
        assert missing_updated_at_triggers(conn, main_metadata.tables) == []
    engine.dispose()
    code, out = tb(scratch, "db", "downgrade", "-1", "--database", "main")
    assert code == 0, out
    engine = create_db_engine(scratch.main_url, scratch.settings())
    with engine.connect() as conn:
        assert "venue_fee" not in {c["name"] for c in inspect(conn).get_columns("orders")}
        checks = {c["name"] for c in inspect(conn).get_check_constraints("orders")}
        assert "ck_orders_quantity_positive" in checks
        assert missing_updated_at_triggers(conn, main_metadata.tables) == []
    engine.dispose()
