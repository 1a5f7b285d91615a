"""``tradebase db maintain`` on every engine: row counts equal the rows the test put in,
sizes add up, VACUUM gives SQLite's space back, a damaged SQLite index fails the
integrity check (and the CLI exits 1 naming it), PostgreSQL records the VACUUM and the
ANALYZE, MariaDB's persistent statistics are refreshed, and the reason for no slowest
statements names the fix."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, text
from typer.testing import CliRunner, Result

from tests.conftest import IN_CI, Scratch, ScratchFactory
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, create_db_engine
from tradebase.ops import maintain as maintain_module
from tradebase.ops.maintain import DatabaseReport, MaintainError, maintain
from tradebase.schema import credentials_metadata, main_metadata

BOT_METRICS = 7
SYSTEM_METRICS = 12
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
MAIN_TABLES = set(main_metadata.tables) | {"alembic_version"}
STATEMENT_SOURCES = ("pg_stat_statements:", "performance_schema.")
CREDENTIALS_TABLES = set(credentials_metadata.tables) | {"alembic_version_credentials"}


def _migrate(scratch: Scratch) -> None:
    for database in Database:
        migrate.upgrade(database, "head", settings=scratch.settings())


def _fill(scratch: Scratch, bots: int = BOT_METRICS, systems: int = SYSTEM_METRICS) -> None:
    engine = create_db_engine(scratch.main_url, scratch.settings(), pooled=False)
    try:
        with engine.begin() as conn:
            if bots:
                conn.execute(
                    insert(main_metadata.tables["bot_metrics"]),
                    [
                        {"bot_type": f"bot{i}", "timestamp": T0 + timedelta(seconds=i)}
                        for i in range(bots)
                    ],
                )
            if systems:
                conn.execute(
                    insert(main_metadata.tables["system_metrics"]),
                    [
                        {"component": "x" * 50, "timestamp": T0 + timedelta(seconds=i)}
                        for i in range(systems)
                    ],
                )
    finally:
        engine.dispose()


def _run(scratch: Scratch, **options: object) -> list[DatabaseReport]:
    engines = Engines(scratch.settings())
    try:
        return maintain(engines, list(Database), **options)  # type: ignore[arg-type]
    finally:
        engines.dispose()


def _cli(scratch: Scratch, *args: str) -> Result:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["db", "maintain", *args], env=scratch.env())
    finally:
        get_settings.cache_clear()


@dataclass
class Filled:
    scratch: Scratch
    reports: list[DatabaseReport]
    progress: list[tuple[str, int, int | None]]
    started: datetime


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mysql"])
def filled(request: pytest.FixtureRequest, scratch_factory: ScratchFactory) -> Filled:
    """Migrated databases with known rows in two tables, maintained once."""
    scratch = scratch_factory.new(str(request.param), "maintain")
    _migrate(scratch)
    _fill(scratch)
    calls: list[tuple[str, int, int | None]] = []
    started = datetime.now(UTC).replace(microsecond=0)  # MariaDB's timestamps are in seconds
    reports = _run(scratch, progress=lambda *call: calls.append(call))
    return Filled(scratch, reports, calls, started)


def test_each_table_is_reported_with_the_rows_it_holds(filled: Filled) -> None:
    main, credentials = filled.reports
    assert (main.database, credentials.database) == (Database.main, Database.credentials)
    assert {t.name for t in main.tables} == MAIN_TABLES
    assert {t.name for t in credentials.tables} == CREDENTIALS_TABLES
    rows = {t.name: t.rows for t in main.tables}
    assert rows["bot_metrics"] == BOT_METRICS
    assert rows["system_metrics"] == SYSTEM_METRICS
    assert rows["alembic_version"] == 1
    assert rows["orders"] == 0
    assert {t.name: t.rows for t in credentials.tables} == {
        "alembic_version_credentials": 1,
        "credentials": 0,
        "credential_access_log": 0,
    }
    assert not any(t.rows_estimated for t in main.tables)
    assert main.problems == [] and credentials.problems == []
    expected_engine = {"sqlite": ("sqlite",), "postgresql": ("postgresql",)}
    assert main.engine in expected_engine.get(filled.scratch.backend, ("mariadb", "mysql"))


def test_sizes_are_positive_and_add_up_to_the_total(filled: Filled) -> None:
    for report in filled.reports:
        sizes = [t.size for t in report.tables]
        assert all(size is not None and size > 0 for size in sizes), report.tables
        assert report.total_size == sum(size or 0 for size in sizes)
        assert report.size_after is not None and report.size_after >= report.total_size
        assert report.sizes_note is None
        # largest first
        assert sizes == sorted(sizes, key=lambda s: -(s or 0))


def test_progress_reaches_its_total_per_database(filled: Filled) -> None:
    for database in Database:
        calls = [c for c in filled.progress if c[0] == f"maintaining {database.value}"]
        assert calls, filled.progress
        done = [c[1] for c in calls]
        assert done == sorted(done)
        assert calls[-1][1] == calls[-1][2]


def test_what_ran_is_each_engines_maintenance(filled: Filled) -> None:
    main = filled.reports[0]
    count = len(MAIN_TABLES)
    # where the server records statements, reading them is listed last
    ran = [step for step in main.ran if not step.startswith(STATEMENT_SOURCES)]
    assert ran == main.ran[: len(ran)]
    if filled.scratch.backend == "sqlite":
        assert ran == [
            "PRAGMA integrity_check",
            "ANALYZE",
            "PRAGMA optimize",
            "VACUUM",
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ]
        assert main.integrity == ["ok"] and main.integrity_ok
        assert main.statements_note == "SQLite does not record statement times"
    elif filled.scratch.backend == "postgresql":
        assert ran == [f'VACUUM (ANALYZE) "{name}"' for name in sorted(MAIN_TABLES)]
        assert main.integrity is None
    else:
        assert ran == [f"OPTIMIZE TABLE `{name}`" for name in sorted(MAIN_TABLES)] + [
            f"ANALYZE TABLE `{name}`" for name in sorted(MAIN_TABLES)
        ]
        assert len(ran) == 2 * count
        assert main.integrity is None
        assert main.notes == []  # InnoDB's "doing recreate + analyze instead" is expected


@pytest.mark.parametrize("filled", ["postgresql"], indirect=True)
def test_postgresql_records_the_vacuum_and_the_analyze(filled: Filled) -> None:
    engine = create_db_engine(filled.scratch.main_url, filled.scratch.settings(), pooled=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT relname, last_vacuum, last_analyze FROM pg_stat_user_tables"
                    " WHERE schemaname = current_schema()"
                )
            ).fetchall()
    finally:
        engine.dispose()
    by_table = {name: (vacuumed, analyzed) for name, vacuumed, analyzed in rows}
    assert set(by_table) >= MAIN_TABLES
    for name in MAIN_TABLES:
        vacuumed, analyzed = by_table[name]
        assert vacuumed is not None and vacuumed >= filled.started, name
        assert analyzed is not None and analyzed >= filled.started, name


@pytest.mark.parametrize("filled", ["mysql"], indirect=True)
def test_mariadb_analyze_refreshes_the_persistent_statistics(filled: Filled) -> None:
    engine = create_db_engine(filled.scratch.main_url, filled.scratch.settings(), pooled=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT table_name, n_rows, last_update FROM mysql.innodb_table_stats"
                    " WHERE database_name = DATABASE()"
                )
            ).fetchall()
    finally:
        engine.dispose()
    stats = {name: (n, updated) for name, n, updated in rows}
    assert stats["bot_metrics"][0] == BOT_METRICS  # a table this small is read whole
    assert stats["system_metrics"][0] == SYSTEM_METRICS
    # A TIMESTAMP, in the connection's time zone: UTC (core/db.py). orders was created by
    # the migrations before the run and never written: only ANALYZE/OPTIMIZE touched it.
    since = filled.started.replace(tzinfo=None)
    for name in MAIN_TABLES:
        assert stats[name][1] >= since, (name, stats[name][1], since)


def test_the_reason_for_no_slowest_statements_names_the_fix(filled: Filled) -> None:
    main = filled.reports[0]
    backend = filled.scratch.backend
    if backend == "sqlite":
        assert main.statements == []
        return
    engine = create_db_engine(filled.scratch.main_url, filled.scratch.settings(), pooled=False)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                available = conn.execute(
                    text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
                ).first()
                enabled = available is not None
            else:
                enabled = bool(conn.execute(text("SELECT @@performance_schema")).scalar_one())
    finally:
        engine.dispose()
    if enabled:  # a server set up with them: the statements are there, slowest first
        assert main.statements, main.statements_note
        assert len(main.statements) <= 10
        means = [st.mean_ms for st in main.statements]
        assert means == sorted(means, reverse=True)
        assert all(st.calls >= 1 and st.total_ms >= st.mean_ms * 0.99 for st in main.statements)
        return
    assert main.statements == []
    if backend == "postgresql":
        assert main.statements_note == (
            "pg_stat_statements is not installed: CREATE EXTENSION pg_stat_statements in"
            " this database and add pg_stat_statements to shared_preload_libraries in"
            " postgresql.conf (restart the server)"
        )
    else:
        assert main.statements_note == (
            "performance_schema is OFF: set performance_schema=ON under [mysqld] in the"
            " server's configuration and restart it"
        )


def test_the_cli_prints_a_table_per_database_and_json(filled: Filled) -> None:
    result = _cli(filled.scratch, "--no-vacuum", "--top", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"main database: {filled.reports[0].engine}, ")
    cells = [line.split() for line in lines if line.startswith("  ")]
    rows = {cell[0]: cell[1] for cell in cells if len(cell) >= 3}
    assert rows["bot_metrics"] == str(BOT_METRICS)
    assert rows["system_metrics"] == str(SYSTEM_METRICS)
    assert rows["alembic_version_credentials"] == "1"
    assert any(line.startswith(f"  total ({len(MAIN_TABLES)} tables)") for line in lines)
    assert any(line.startswith("credentials database: ") for line in lines)
    ran = [line for line in lines if line.startswith("  ran: ")]
    assert len(ran) == 2
    assert all("VACUUM" not in line and "OPTIMIZE" not in line for line in ran), ran
    if filled.scratch.backend != "sqlite":
        assert all("ANALYZE" in line for line in ran), ran

    as_json = _cli(filled.scratch, "--json", "--no-vacuum", "--no-analyze")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert [d["database"] for d in data] == ["main", "credentials"]
    tables = {t["name"]: t for t in data[0]["tables"]}
    assert tables["bot_metrics"]["rows"] == BOT_METRICS
    assert data[0]["total_size"] == sum(t["size"] for t in data[0]["tables"])
    assert data[0]["total_rows"] == sum(t["rows"] for t in data[0]["tables"])
    if filled.scratch.backend == "sqlite":
        assert data[0]["ran"] == ["PRAGMA integrity_check"]
        assert data[0]["integrity"] == ["ok"]
    else:
        assert [r for r in data[0]["ran"] if not r.startswith(STATEMENT_SOURCES)] == []


@pytest.mark.parametrize("filled", ["postgresql"], indirect=True)
def test_postgresql_estimates_the_rows_when_asked(filled: Filled) -> None:
    main = _run(filled.scratch, vacuum=False, analyze=False, estimate_rows=True)[0]
    rows = {t.name: (t.rows, t.rows_estimated) for t in main.tables}
    assert rows["bot_metrics"] == (BOT_METRICS, True)  # analyzed by the fixture's run
    assert rows["system_metrics"] == (SYSTEM_METRICS, True)
    assert main.ran == []


@pytest.mark.parametrize("filled", ["postgresql"], indirect=True)
def test_postgresql_full_is_vacuum_full(filled: Filled) -> None:
    main = _run(filled.scratch, full=True, analyze=False, top=0)[0]
    assert main.ran == [f'VACUUM (FULL) "{name}"' for name in sorted(MAIN_TABLES)]
    assert {t.name: t.rows for t in main.tables}["bot_metrics"] == BOT_METRICS
    assert main.statements_note == "not asked for (top 0)"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_vacuum_while_a_reader_holds_the_file_names_the_fix(scratch: Scratch) -> None:
    _migrate(scratch)
    path = Path(str(scratch.main_url.database))
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN EXCLUSIVE")  # holds every lock: VACUUM must wait, then give up
        settings = scratch.settings().model_copy(update={"sqlite_busy_timeout_ms": 50})
        engines = Engines(settings)
        try:
            with pytest.raises(MaintainError, match="TRADEBASE_SQLITE_BUSY_TIMEOUT_MS"):
                maintain(engines, [Database.main])
        finally:
            engines.dispose()
    finally:
        reader.close()


# --- SQLite: space and damage -------------------------------------------------------------


def _file_size(path: Path) -> int:
    """The file's bytes once the write-ahead log is copied back into it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_vacuum_gives_the_space_of_deleted_rows_back(scratch: Scratch) -> None:
    _migrate(scratch)
    _fill(scratch, bots=0, systems=5000)
    engine = create_db_engine(scratch.main_url, scratch.settings(), pooled=False)
    try:
        with engine.begin() as conn:
            conn.execute(delete(main_metadata.tables["system_metrics"]))
    finally:
        engine.dispose()
    path = Path(str(scratch.main_url.database))
    before = _file_size(path)

    main = _run(scratch)[0]

    after = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed and truncated
    assert after < before / 2, (before, after)  # 5000 rows of ~100 bytes were most of it
    assert main.integrity == ["ok"]
    assert main.size_before == before
    assert main.size_after == after
    assert main.reclaimed == before - after
    assert {t.name: t.rows for t in main.tables}["system_metrics"] == 0

    result = _cli(scratch, "--database", "main")
    assert result.exit_code == 0, result.output
    assert "nothing reclaimed" in result.stdout  # vacuumed already


def _damage_an_index(path: Path, index: str) -> None:
    """Change one key inside a leaf page of *index*: the table's row no longer matches."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [
            row[0]
            for row in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf'", (index,)
            )
        ]
    finally:
        conn.close()
    assert pages, f"{index} has no leaf page"
    with path.open("r+b") as file:
        file.seek((pages[0] - 1) * page_size)
        page = file.read(page_size)
        at = page.rfind(b"2026-01-05")
        assert at > 0, "no key in the page"
        file.seek((pages[0] - 1) * page_size + at)
        file.write(b"1999-01-05")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_damage_fails_the_integrity_check_and_the_cli_exits_1(scratch: Scratch) -> None:
    _migrate(scratch)
    _fill(scratch, bots=200, systems=0)
    path = Path(str(scratch.main_url.database))
    _damage_an_index(path, "idx_bot_metrics_timestamp")

    main, credentials = _run(scratch)

    assert not main.integrity_ok
    assert main.integrity
    assert all("idx_bot_metrics_timestamp" in problem for problem in main.integrity)
    assert any("missing from index" in problem for problem in main.integrity)
    assert main.ran == ["PRAGMA integrity_check"]  # nothing rewrites a damaged file
    assert "integrity check failed" in main.notes[0]
    assert credentials.integrity == ["ok"]  # a file of its own

    result = _cli(scratch)
    assert result.exit_code == 1, result.output
    assert "integrity: FAILED" in result.stdout
    assert "error: the main database failed its integrity check" in result.stderr
    assert "missing from index idx_bot_metrics_timestamp" in result.stderr
    assert "tradebase db restore" in result.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_one_file_for_both_databases_is_maintained_once(scratch: Scratch) -> None:
    one = Scratch("sqlite", scratch.main_url, scratch.main_url)
    _migrate(one)
    _fill(one)
    main, credentials = _run(one)
    assert main.ran[0] == "PRAGMA integrity_check" and "VACUUM" in main.ran
    assert credentials.ran == []
    assert credentials.integrity == ["ok"]
    assert "holds the main database too" in credentials.notes[0]
    assert {t.name for t in main.tables} == MAIN_TABLES
    assert {t.name: t.rows for t in credentials.tables} == {
        "alembic_version_credentials": 1,
        "credentials": 0,
        "credential_access_log": 0,
    }
    assert all(t.size for t in credentials.tables)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_without_dbstat_reports_the_file_size_only(
    scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    _migrate(scratch)
    _fill(scratch)
    # A SQLite built without SQLITE_ENABLE_DBSTAT_VTAB answers "no such table: dbstat".
    monkeypatch.setattr(maintain_module, "DBSTAT_QUERY", "SELECT name, pgsize FROM dbstat_x")
    main = _run(scratch)[0]
    assert main.sizes_note is not None
    assert main.sizes_note.startswith("sizes per table are unavailable: this SQLite was built")
    assert all(t.size is None for t in main.tables)
    assert main.total_size is None
    assert main.size_after == Path(str(scratch.main_url.database)).stat().st_size
    assert {t.name: t.rows for t in main.tables}["bot_metrics"] == BOT_METRICS

    result = _cli(scratch, "--database", "main")
    assert result.exit_code == 0, result.output
    assert "sizes per table are unavailable" in result.stdout
    bot = next(line.split() for line in result.stdout.splitlines() if "bot_metrics" in line)
    assert bot == ["bot_metrics", str(BOT_METRICS), "-"]


# --- PostgreSQL: pg_stat_statements -------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_pg_stat_statements_installed_but_not_loaded_names_the_fix(scratch: Scratch) -> None:
    _migrate(scratch)
    engine = create_db_engine(
        scratch.main_url, scratch.settings(), pooled=False, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            available = conn.execute(
                text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
            ).first()
            if available is None:
                (pytest.fail if IN_CI else pytest.skip)(
                    "this PostgreSQL does not ship pg_stat_statements (postgresql-contrib)"
                )
            conn.execute(text("CREATE EXTENSION pg_stat_statements"))
            preload = str(conn.execute(text("SHOW shared_preload_libraries")).scalar_one())
    finally:
        engine.dispose()

    main = _run(scratch, vacuum=False, top=5)[0]

    if "pg_stat_statements" in preload:  # a server set up for it: real statements
        assert main.statements, main.statements_note
        assert len(main.statements) <= 5
        means = [s.mean_ms for s in main.statements]
        assert means == sorted(means, reverse=True)
        assert all(s.calls >= 1 for s in main.statements)
    else:
        assert main.statements == []
        assert main.statements_note is not None
        assert main.statements_note.startswith("pg_stat_statements is installed but not loaded")
        assert "add pg_stat_statements to shared_preload_libraries" in main.statements_note


# --- errors and help ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_unmigrated_database_says_to_upgrade(scratch: Scratch) -> None:
    with pytest.raises(MaintainError, match="no Tradebase tables: run tradebase db upgrade"):
        _run(scratch)


def test_an_unreachable_server_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBASE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["db", "maintain", "--database", "main"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "error: cannot connect to the main database at postgresql" in result.stderr
    assert "check TRADEBASE_DATABASE_URL and that the server is running" in result.stderr


def test_help_explains_the_options() -> None:
    result = CliRunner().invoke(app, ["db", "maintain", "--help"])
    assert result.exit_code == 0
    for option in ("--no-vacuum", "--no-analyze", "--full", "--top", "--estimate-rows", "--json"):
        assert option in result.stdout
    assert "integrity_check" in result.stdout
