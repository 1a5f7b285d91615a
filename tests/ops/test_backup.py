"""``tradebase db backup|restore|rotate``: online snapshots, verified restores, GFS rotation."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D  # noqa: N817
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from tests.conftest import IN_CI, Scratch, ScratchFactory
from tests.credentials import env_keys
from tests.factories import create_user
from tradebase.cli import app
from tradebase.config import Settings, get_settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.crypto import MasterKey
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.credentials.service import CredentialService
from tradebase.ops import backup as backup_ops
from tradebase.ops.backup import (
    MANIFEST,
    BackupCorrupt,
    BackupRefused,
    ToolMissing,
    create_backup,
    plan_rotation,
    restore_backup,
    verify_backup,
)
from tradebase.orders.models import Order, OrderEvent, Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Portfolio, Position
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

runner = CliRunner()

TOOLS = {
    "postgresql": (("pg_dump",), ("pg_restore",)),
    "mysql": (("mariadb-dump", "mysqldump"), ("mariadb", "mysql")),
}


def _need_tools(backend: str) -> None:
    for names in TOOLS.get(backend, ()):
        if not any(shutil.which(name) for name in names):
            (pytest.fail if IN_CI else pytest.skip)(  # CI has every client tool
                f"{' or '.join(names)} is not installed: {backend} backups untested"
            )


def _migrated(scratch: Scratch, **overrides: object) -> Settings:
    settings = scratch.settings().model_copy(update=overrides)
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    return settings


# --- (1) a backup while four threads place orders --------------------------------------


WRITERS = 4
DEPOSIT = D(1_000_000)


def test_a_backup_taken_while_4_threads_place_orders_restores_every_committed_order(
    scratch_factory: ScratchFactory, backend: str, tmp_path: Path
) -> None:
    _need_tools(backend)
    source = scratch_factory.new(backend, "bk_src")
    settings = _migrated(source, pool_size=WRITERS + 2)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    with unit_of_work(factory=factory) as session:
        user = create_user(session)
        who = Principal(user_id=user.id, username=user.username, role="trader")
        account = account_service.create(session, who, account_name="paper", fee_rate=D("0.001"))
        portfolio_ids = []
        for n in range(WRITERS):
            portfolio = portfolio_service.create(
                session, who, account_id=account.id, name=f"writer {n}"
            )
            portfolio_service.deposit(session, who, portfolio.id, DEPOSIT)
            portfolio_ids.append(portfolio.id)
    keys = env_keys(tmp_path, MasterKey.generate())
    with unit_of_work(factory=engines.session_factory(Database.credentials)) as session:
        CredentialService(keys).set_secret(
            session,
            user_id=user.id,
            owner_type="account",
            owner_id=account.id,
            kind="broker_api_key",
            value="s3cret-key",
        )

    lock = threading.Lock()
    committed: list[int] = []  # appended once the order's unit of work has committed
    begun_after_snapshot: list[int] = []  # orders whose transaction began inside the backup
    snapshot_taken = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def place_orders(portfolio_id: int) -> None:
        try:
            while not stop.is_set():
                late = snapshot_taken.is_set()  # read before the transaction begins
                with unit_of_work(factory=factory) as session:
                    order = order_service.place(
                        session,
                        who,
                        portfolio_id=portfolio_id,
                        symbol="ACME",
                        side="buy",
                        quantity=D(1),
                        price=D(100),
                    )
                with lock:
                    committed.append(order.id)
                    if late:
                        begun_after_snapshot.append(order.id)
        except BaseException as exc:
            errors.append(exc)

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert not errors, errors
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def on_progress(label: str, done: int, _total: int | None) -> None:
        # The first step with work done is past the snapshot: keep the backup open until the
        # writers have committed more orders, which it must not contain.
        if done >= 1 and not snapshot_taken.is_set():
            snapshot_taken.set()
            wait_for(lambda: len(begun_after_snapshot) >= 2 * WRITERS, "writes during the backup")

    threads = [threading.Thread(target=place_orders, args=(p,)) for p in portfolio_ids]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(committed) >= 5 * WRITERS, "the writers to start")
        with lock:
            before = set(committed)
        result = create_backup(tmp_path / "backups", settings=settings, progress=on_progress)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        engines.dispose()
    assert errors == []
    assert snapshot_taken.is_set()
    after = set(begun_after_snapshot)

    verify_backup(result.path)  # the manifest verifies
    target = scratch_factory.new(backend, "bk_dst")
    target_settings = target.settings()
    restored = restore_backup(result.path, settings=target_settings)
    assert [r.database for r in restored] == [Database.main, Database.credentials]

    restored_engines = Engines(target_settings)
    try:
        with unit_of_work(factory=restored_engines.session_factory(), write=False) as session:
            ids = set(session.scalars(select(Order.id)))
            trades = {t.order_id: t for t in session.scalars(select(Trade))}
            events: dict[int, list[str]] = {}
            for event in session.scalars(select(OrderEvent).order_by(OrderEvent.id)):
                events.setdefault(event.order_id, []).append(event.to_status)
            statuses = set(session.scalars(select(Order.status)))
            portfolios = {p.id: p for p in session.scalars(select(Portfolio))}
            positions = {
                p.portfolio_id: p.quantity
                for p in session.scalars(select(Position).where(Position.status == "open"))
            }
            per_portfolio = dict(
                session.execute(
                    select(Order.portfolio_id, func.count()).group_by(Order.portfolio_id)
                ).all()
            )
        with unit_of_work(
            Database.credentials, factory=restored_engines.session_factory(Database.credentials)
        ) as session:
            secret = CredentialService(keys).read_secret(
                session,
                owner_type="account",
                owner_id=account.id,
                kind="broker_api_key",
                actor="test",
                actor_user_id=None,
                purpose="restore check",
            )
    finally:
        restored_engines.dispose()

    assert before <= ids, f"committed before the backup, missing: {sorted(before - ids)[:10]}"
    assert not ids & after, f"begun after the snapshot, yet restored: {sorted(ids & after)}"
    assert ids <= set(committed)
    assert len(ids) == result.manifest.databases[Database.main].tables["orders"]
    # Nothing half-written: each order with its fill and its whole lifecycle, and each
    # portfolio's cash and position agree with the fills that made it into the snapshot.
    assert statuses == {"filled"}
    assert set(trades) == ids
    assert all(events[i] == ["pending", "open", "filled"] for i in ids)
    for portfolio_id in portfolio_ids:
        spent = sum(
            (t.value + t.fee for t in trades.values() if t.portfolio_id == portfolio_id), D(0)
        )
        assert portfolios[portfolio_id].cash_balance_usd + spent == DEPOSIT
        assert positions.get(portfolio_id, D(0)) == per_portfolio.get(portfolio_id, 0)
    assert secret == "s3cret-key"


# --- (2) a damaged backup ---------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bare_env: Path) -> Iterator[Path]:
    """TRADEBASE_DATA_DIR in tmp_path (SQLite), both databases migrated there."""
    data = tmp_path / "data"
    monkeypatch.setenv("TRADEBASE_DATA_DIR", str(data))
    get_settings.cache_clear()
    for database in Database:
        migrate.upgrade(database, "head", settings=get_settings())
    yield data
    get_settings.cache_clear()


def _use_data_dir(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    monkeypatch.setenv("TRADEBASE_DATA_DIR", str(data))
    get_settings.cache_clear()


def _backup_cli(output: Path | None = None) -> Path:
    args = ["db", "backup"] + (["--output", str(output)] if output else [])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("backup ")
    return Path(first.split()[1])


def test_a_flipped_byte_makes_restore_refuse_naming_the_file(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _backup_cli()
    assert path.parent == data_dir / "backups"
    damaged = next(path.glob("main.sqlite.*"))
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    damaged.write_bytes(bytes(raw))

    with pytest.raises(BackupCorrupt) as info:
        verify_backup(path)
    assert info.value.file == damaged.name

    _use_data_dir(monkeypatch, tmp_path / "fresh")  # an empty target
    for args in (["db", "restore", str(path)], ["db", "restore", "--verify-only", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert f"error: {damaged.name} does not match the manifest" in result.output
    assert not (tmp_path / "fresh" / "tradebase.db").exists()
    assert not (tmp_path / "fresh" / "credentials.db").exists()


def test_a_missing_file_or_manifest_is_named(data_dir: Path) -> None:
    path = _backup_cli()
    (path / "credentials.sqlite.zst").unlink(missing_ok=True)
    (path / "credentials.sqlite.gz").unlink(missing_ok=True)
    with pytest.raises(BackupCorrupt, match=r"credentials\.sqlite\.\w+ is missing"):
        verify_backup(path)
    (path / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(BackupCorrupt) as info:
        verify_backup(path)
    assert info.value.file == MANIFEST


def test_restore_round_trip_and_force_on_sqlite(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engines = Engines(get_settings())
    with unit_of_work(factory=engines.session_factory()) as session:
        create_user(session, username="before")
    path = _backup_cli(tmp_path / "elsewhere")
    with unit_of_work(factory=engines.session_factory()) as session:
        create_user(session, username="after")

    result = runner.invoke(app, ["db", "restore", str(path / MANIFEST)])
    assert result.exit_code == 1
    assert "is not empty" in result.output and "--force" in result.output

    with engines.engine().connect() as busy:  # a server still holding the file
        busy.execute(text("SELECT 1"))
        result = runner.invoke(app, ["db", "restore", "--force", str(path)])
        assert result.exit_code == 1
        assert "is in use" in result.output
    engines.dispose()

    result = runner.invoke(app, ["db", "restore", "--force", str(path)])
    assert result.exit_code == 0, result.output
    assert "main database: SQLite file" in result.output
    with unit_of_work(factory=engines.session_factory(), write=False) as session:
        names = set(session.scalars(text("SELECT username FROM users")))
    engines.dispose()
    assert names == {"before"}
    assert runner.invoke(app, ["db", "check"]).exit_code == 0


def test_a_missing_dump_program_exits_2_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bare_env: Path
) -> None:
    monkeypatch.setenv("TRADEBASE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("TRADEBASE_CREDENTIALS_DATABASE_URL", "mysql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("TRADEBASE_BACKUP_FORMAT", "native")  # auto would go portable
    get_settings.cache_clear()
    try:
        with pytest.raises(ToolMissing) as info:
            create_backup(tmp_path / "out", settings=get_settings())
        assert info.value.exit_code == 2
        result = runner.invoke(app, ["db", "backup", "--output", str(tmp_path / "out")])
        assert result.exit_code == 2
        assert "pg_dump is not installed" in result.output
        assert "apt install postgresql-client" in result.output
        result = runner.invoke(app, ["db", "backup", "-d", "credentials", "-o", str(tmp_path)])
        assert result.exit_code == 2
        assert "mariadb-dump or mysqldump is not installed" in result.output
        assert "apt install mariadb-client" in result.output
        assert not (tmp_path / "out").exists()  # checked before anything is written
    finally:
        get_settings.cache_clear()


def test_without_zstd_backups_are_gzip_and_a_zstd_backup_needs_it_to_restore(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zstd_backup = _backup_cli(tmp_path / "zstd")
    monkeypatch.setattr(backup_ops, "compression_method", lambda: "gzip")
    gzip_backup = _backup_cli(tmp_path / "gzip")
    assert {p.name for p in gzip_backup.iterdir()} == {
        "main.sqlite.gz",
        "credentials.sqlite.gz",
        MANIFEST,
    }
    _use_data_dir(monkeypatch, tmp_path / "fresh")
    result = runner.invoke(app, ["db", "restore", str(gzip_backup)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["db", "check"]).exit_code == 0

    if zstd_backup.joinpath("main.sqlite.zst").exists():
        _use_data_dir(monkeypatch, tmp_path / "fresh2")
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        result = runner.invoke(app, ["db", "restore", str(zstd_backup)])
        assert result.exit_code == 2
        assert "zstd is not installed" in result.output
        assert "apt install zstd" in result.output
        assert not (tmp_path / "fresh2").exists()  # nothing restored


def test_an_unreachable_server_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not shutil.which("pg_dump"):
        (pytest.fail if IN_CI else pytest.skip)("pg_dump is not installed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADEBASE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["db", "backup", "-d", "main", "-o", str(tmp_path / "b")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot connect to postgresql+psycopg://nobody@")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


# --- (4) a newer schema revision ----------------------------------------------------------


def test_a_backup_of_a_newer_schema_revision_is_refused(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database as a later Tradebase would have left it: a revision this one lacks.
    with sqlite3.connect(data_dir / "tradebase.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'main_9999'")
    connection.close()
    path = _backup_cli()
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["databases"]["main"]["revision"] == "main_9999"

    _use_data_dir(monkeypatch, tmp_path / "fresh")
    with pytest.raises(BackupRefused, match="revision main_9999"):
        restore_backup(path, settings=get_settings())
    result = runner.invoke(app, ["db", "restore", str(path)])
    assert result.exit_code == 1
    assert "revision main_9999, which this Tradebase" in result.output
    assert "newer version" in result.output
    assert not (tmp_path / "fresh" / "tradebase.db").exists()
    assert not (tmp_path / "fresh" / "credentials.db").exists()  # refused before any write

    # An older revision than the code's head restores, and says to upgrade.
    manifest["databases"]["main"]["revision"] = "main_0001"
    (path / MANIFEST).write_text(json.dumps(manifest))
    backup_ops._check_revisions(backup_ops.read_manifest(path), [Database.main])


def test_the_manifest_lists_every_file_with_its_digest(data_dir: Path) -> None:
    path = _backup_cli()
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["format"] == "tradebase-backup"
    assert manifest["tradebase_version"]
    assert manifest["created_at"].endswith("Z")
    files = sorted(p.name for p in path.iterdir() if p.name != MANIFEST)
    assert sorted(manifest["files"]) == files
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size
        assert entry["sha256"] == backup_ops.sha256_file(path / name)
    main = manifest["databases"]["main"]
    assert main["engine"] == "sqlite"
    assert main["revision"] == migrate.head_revision(Database.main)
    assert main["tables"]["alembic_version"] == 1
    assert main["tables"]["market_holidays"] > 0  # the seeded calendars
    assert manifest["databases"]["credentials"]["revision"] == migrate.head_revision(
        Database.credentials
    )
    assert oct(path.stat().st_mode & 0o777) == "0o700"


# --- dump row counting ---------------------------------------------------------------------


def test_rows_are_counted_in_both_dump_layouts() -> None:
    counter = backup_ops._DumpCounter(["alembic_version"])
    lines = [
        b"CREATE TABLE `empty` (\n",
        b"CREATE TABLE `t``q` (\n",
        b"INSERT INTO `alembic_version` VALUES\n",
        b"('main_0005');\n",
        # mariadb-dump 10.11: one row a line; strings with ( ) , ; and escaped quotes
        b"INSERT INTO `t``q` VALUES\n",
        b"(1,'a),(b',NULL),\n",
        b"(2,'it\\'s (x);',0x28292C),\n",
        b"(3,'',NULL);\n",
        # mysqldump: the whole statement on one line
        b"INSERT INTO `t``q` VALUES (4,'x'),(5,'(;)'),(6,'\\\\');\n",
        b"UNLOCK TABLES;\n",
    ]
    created = [counter.feed(line) for line in lines]
    assert [c for c in created if c] == ["empty", "t`q"]
    assert counter.rows == {"empty": 0, "t`q": 6, "alembic_version": 1}
    assert counter.versions == {"alembic_version": "main_0005"}


# --- (3) rotation -------------------------------------------------------------------------


def _daily(first: date, days: int) -> list[tuple[str, datetime]]:
    return [
        (
            f"b-{first + timedelta(days=i):%Y-%m-%d}",
            datetime.combine(first + timedelta(days=i), datetime.min.time(), UTC)
            + timedelta(hours=2),
        )
        for i in range(days)
    ]


def _names(*days: str) -> set[str]:
    return {f"b-{day}" for day in days}


# Written out by hand for daily 02:00 backups from 2026-01-14 to Wednesday 2027-02-17
# (400 days) and now = 2027-02-17 12:00 UTC:
HAND_DAILY = _names(*(f"2027-02-{d:02d}" for d in range(11, 18)))  # 11th … 17th
HAND_WEEKLY = _names(
    "2027-02-17",  # this ISO week (Mon 15 … Sun 21): its newest so far
    "2027-02-14",  # Sun of 8 … 14
    "2027-02-07",  # Sun of 1 … 7
    "2027-01-31",  # Sun of Jan 25 … 31
)
HAND_MONTHLY = _names(
    "2027-02-17",
    "2027-01-31",
    "2026-12-31",
    "2026-11-30",
    "2026-10-31",
    "2026-09-30",
    "2026-08-31",
    "2026-07-31",
    "2026-06-30",
    "2026-05-31",
    "2026-04-30",
    "2026-03-31",
)
NOW = datetime(2027, 2, 17, 12, 0, tzinfo=UTC)


def test_rotation_keeps_7_daily_4_weekly_12_monthly_of_400_days_of_backups() -> None:
    backups = _daily(date(2026, 1, 14), 400)
    assert backups[-1][0] == "b-2027-02-17"
    keep, delete = plan_rotation(backups, NOW, 7, 4, 12)

    by_rule = {
        rule: {name for name, rules in keep.items() if rule in rules}
        for rule in ("daily", "weekly", "monthly")
    }
    assert (len(by_rule["daily"]), len(by_rule["weekly"]), len(by_rule["monthly"])) == (7, 4, 12)
    assert by_rule["daily"] == HAND_DAILY
    assert by_rule["weekly"] == HAND_WEEKLY
    assert by_rule["monthly"] == HAND_MONTHLY
    assert set(keep) == HAND_DAILY | HAND_WEEKLY | HAND_MONTHLY
    assert len(keep) == 19  # 7 daily + 2 more Sundays + 10 more month ends
    assert set(delete) == {name for name, _ in backups} - set(keep)
    assert len(delete) == 381
    assert next(iter(keep)) == "b-2027-02-17" and delete[0] == "b-2027-02-10"  # newest first


def test_rotating_every_day_for_400_days_ends_with_the_same_backups() -> None:
    """As ``db backup --rotate`` run daily would: each day's backup, then a rotation."""
    present: dict[str, datetime] = {}
    for name, moment in _daily(date(2026, 1, 14), 400):
        present[name] = moment
        keep, delete = plan_rotation(list(present.items()), moment + timedelta(minutes=5))
        assert name in keep  # today's backup always stays
        assert len(keep) <= 7 + 4 + 12
        for gone in delete:
            del present[gone]
    assert set(present) == HAND_DAILY | HAND_WEEKLY | HAND_MONTHLY


def test_rotation_edge_cases() -> None:
    day = datetime(2027, 2, 17, 2, 0, tzinfo=UTC)
    # Several a day: only the newest of the day counts; one dated after now is kept apart.
    keep, delete = plan_rotation(
        [("early", day), ("late", day + timedelta(hours=11)), ("noon", day + timedelta(hours=4))],
        NOW,
        keep_daily=1,
        keep_weekly=0,
        keep_monthly=0,
    )
    assert (keep, delete) == ({"late": ("future",), "noon": ("daily",)}, ["early"])
    # A gap is not filled from older periods; the newest backup always stays.
    old = [("a", day - timedelta(days=500)), ("b", day - timedelta(days=400))]
    keep, delete = plan_rotation(old, NOW, 7, 4, 12)
    assert (keep, delete) == ({"b": ("newest",)}, ["a"])
    assert plan_rotation([], NOW) == ({}, [])
    with pytest.raises(ValueError, match="timezone"):
        plan_rotation(old, datetime(2027, 2, 17))


def test_db_rotate_deletes_only_the_backups_it_does_not_keep(
    data_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "rotating"
    template = json.loads((_backup_cli(folder) / MANIFEST).read_text())
    shutil.rmtree(next(folder.iterdir()))
    now = backup_ops.utc_now()
    backups = [
        (f"tradebase-{now - timedelta(days=o):%Y%m%dT%H%M%SZ}", now - timedelta(days=o))
        for o in range(1, 41)
    ]
    for name, moment in backups:
        (folder / name).mkdir()
        (folder / name / MANIFEST).write_text(
            json.dumps({**template, "created_at": moment.isoformat()})
        )
    # A backup of the main database alone, older than that day's full backup: rotated
    # among its own kind, it is not replaced by the full one.
    main_only = folder / "tradebase-main-only"
    main_only.mkdir()
    (main_only / MANIFEST).write_text(
        json.dumps(
            {
                **template,
                "created_at": (now - timedelta(days=2, hours=1)).isoformat(),
                "databases": {"main": template["databases"]["main"]},
            }
        )
    )
    (folder / "notes").mkdir()  # not a backup: never touched
    (folder / ".tradebase-20270217T120000Z.partial").mkdir()

    result = runner.invoke(app, ["db", "rotate", "--dir", str(folder), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert len(list(folder.iterdir())) == 43

    keep, delete = plan_rotation(backups, backup_ops.utc_now())
    assert delete  # 40 daily backups: some go
    result = runner.invoke(app, ["db", "rotate", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"{len(keep) + 1} kept, {len(delete)} deleted" in result.output
    left = {p.name for p in folder.iterdir()}
    assert left == set(keep) | {main_only.name, "notes", ".tradebase-20270217T120000Z.partial"}
