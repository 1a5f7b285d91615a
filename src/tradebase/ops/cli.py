"""``tradebase db …``: migrate, inspect and check both databases; back up, restore,
rotate; export, import, copy; prune."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from tradebase.config import get_settings, normalize_database_url
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, database_url
from tradebase.ops import backup as backup_ops
from tradebase.ops import maintain as maintain_ops
from tradebase.ops import transfer

app = typer.Typer(
    help="Create, migrate and check the main and the credentials database.",
    no_args_is_help=True,
)


class Target(StrEnum):
    main = "main"
    credentials = "credentials"
    all = "all"


DatabaseOption = Annotated[
    Target,
    typer.Option(
        "--database",
        "-d",
        help="Which database: main (trading data), credentials (encrypted secrets) or all.",
        case_sensitive=False,
    ),
]


def _targets(target: Target) -> list[Database]:
    if target is Target.all:
        return [Database.main, Database.credentials]
    return [Database(target.value)]


_SYMBOLIC = re.compile(r"^(heads?|base|[+-]\d+)$")


def _targets_for(target: Target, revision: str) -> list[Database]:
    """The databases a revision applies to: an explicit id belongs to one of them."""
    targets = _targets(target)
    if _SYMBOLIC.match(revision):
        return targets
    owners = [db for db in targets if migrate.owns(db, revision)]
    if not owners:
        where = "either database" if target is Target.all else f"the {target.value} database"
        typer.echo(
            f"error: {revision!r} is not a migration of {where}; "
            "see the ids in: tradebase db history",
            err=True,
        )
        raise typer.Exit(2)
    return owners


def _where(database: Database) -> str:
    url = database_url(database)
    if url.get_backend_name() == "sqlite" and url.database:
        return f"SQLite file {url.database}"
    return url.render_as_string(hide_password=True)


@app.command(context_settings={"ignore_unknown_options": True})  # so that +1 is a revision
def upgrade(
    revision: Annotated[
        str, typer.Argument(help="Target revision: head (default), +N, or a revision id.")
    ] = "head",
    database: DatabaseOption = Target.all,
) -> None:
    """Create or migrate the databases up to REVISION (default: the latest)."""
    for db in _targets_for(database, revision):
        migrate.upgrade(db, revision)
        rev = migrate.current_revision(db)
        latest = " (latest)" if rev == migrate.head_revision(db) else ""
        typer.echo(f"{db.value} database: {_where(db)}, at revision {rev}{latest}")


@app.command(context_settings={"ignore_unknown_options": True})  # so that -1 is a revision
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision: base, -N, or a revision id.")],
    database: DatabaseOption = Target.all,
) -> None:
    """Migrate the databases down to REVISION (base drops every table)."""
    for db in _targets_for(database, revision):
        migrate.downgrade(db, revision)
        rev = migrate.current_revision(db) or "base (no tables)"
        typer.echo(f"{db.value} database: {_where(db)}, at revision {rev}")


@app.command()
def current(database: DatabaseOption = Target.all) -> None:
    """Show the revision each database is at."""
    for db in _targets(database):
        rev = migrate.current_revision(db)
        head = migrate.head_revision(db)
        state = "up to date" if rev == head else f"behind: head is {head}"
        typer.echo(f"{db.value} database: {_where(db)}, at {rev or 'base'} ({state})")


@app.command()
def history(database: DatabaseOption = Target.all) -> None:
    """List the migrations of each database, newest first."""
    for db in _targets(database):
        typer.echo(f"{db.value}:")
        for rev, down, created, message in migrate.history(db):
            typer.echo(f"  {rev}  {created}  {message}  (after {down or 'base'})")


@app.command()
def revision(
    message: Annotated[str, typer.Option("--message", "-m", help="What the migration does.")],
    database: DatabaseOption = Target.all,
    empty: Annotated[
        bool, typer.Option("--empty", help="Write an empty revision instead of autogenerating.")
    ] = False,
) -> None:
    """Autogenerate a migration from the difference between the models and the databases.

    The databases are first migrated to the latest revision. Autogenerate sees tables,
    columns, types, indexes and keys; write CHECK constraint changes by hand
    (tradebase db check lists them).
    """
    for db in _targets(database):
        if empty:
            path = migrate.revision(db, message, autogenerate=False)
        else:
            migrate.upgrade(db, "head")
            path = migrate.revision(db, message)
        if path:
            typer.echo(f"{db.value}: wrote {path} - review it before you commit it")
        else:
            typer.echo(f"{db.value}: no changes, nothing written")


@app.command()
def check(database: DatabaseOption = Target.all) -> None:
    """Exit 1 when the models and the migrated database disagree, listing the differences.

    The database must be at the latest migration; check changes nothing.
    """
    failed = False
    for db in _targets(database):
        result = migrate.check(db)
        if result.ok:
            typer.echo(f"{db.value}: models and migrations agree (revision {result.head})")
            continue
        failed = True
        typer.echo(f"{db.value}: models and migrations differ:", err=True)
        for line in result.differences:
            typer.echo(f"  {line}", err=True)
        for table in result.missing_triggers:
            typer.echo(f"  missing updated_at trigger on {table}", err=True)
        if result.current != result.head:
            typer.echo(
                f"  the database is at {result.current or 'base (empty)'}, the latest migration"
                f" is {result.head}: run tradebase db upgrade --database {db.value} first",
                err=True,
            )
        if result.differences:
            typer.echo(
                f"  fix: tradebase db revision -m 'describe the change' --database {db.value}",
                err=True,
            )
    if failed:
        raise typer.Exit(1)


@app.command()
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go and change nothing.")
    ] = False,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="Only this table (repeat for more); default: all."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="The clock: prune as of this ISO 8601 time (no zone: UTC; default: now; not"
            " in the future), for tests and backfills."
        ),
    ] = None,
) -> None:
    """Delete or archive the rows past each table's retention (TRADEBASE_RETENTION_*).

    Prints, per table, the policy, how many rows are past the limit and what was done (or,
    with --dry-run, what would be). Rows go in batches, one transaction each: an
    interrupted run leaves whole batches, and running again carries on. Rows that others
    still point at stay (see README, Configuration).
    """
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from tradebase.config import get_settings
    from tradebase.core.db import Engines
    from tradebase.ops.retention import TABLES, TableReport
    from tradebase.ops.retention import retention as retention_service

    unknown = sorted(set(table or []) - set(TABLES))
    if unknown:
        raise typer.BadParameter(
            f"no retention for {', '.join(unknown)}; tables: {', '.join(TABLES)}",
            param_hint="--table",
        )
    moment = None
    if at is not None:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            raise typer.BadParameter(
                f"{at!r} is not an ISO 8601 time, e.g. 2026-01-31T09:30:00Z", param_hint="--at"
            ) from None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if moment > datetime.now(UTC):  # a typo would remove rows before their time
            raise typer.BadParameter(f"{at!r} is in the future", param_hint="--at")
    moment = moment or datetime.now(UTC)
    settings = get_settings()
    engines = Engines(settings)
    console = Console(stderr=True)
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def advance(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done)

            reports: list[TableReport] = retention_service.prune(
                engines.session_factory(Database.main),
                settings,
                at=moment,
                dry_run=dry_run,
                tables=table,
                progress=advance,
            )
    finally:
        engines.dispose()

    def result(report: TableReport) -> str:
        action = report.policy.action.value
        if report.cutoff is None:
            return "kept"
        if dry_run:
            text = f"would {action} {report.eligible}"
        else:
            text = f"{action}d {report.done}"
            for name, count in report.along.items():
                text += f" (and {count} {name})"
        if report.kept_in_use:
            text += f"; {report.kept_in_use} kept: still in use"
        return text

    rows = [("table", "policy", "past limit", "result")]
    for report in reports:
        past = "-" if report.cutoff is None else str(report.past_limit)
        rows.append((report.policy.table, report.policy.describe(), past, result(report)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    when = moment.isoformat(timespec="seconds")
    typer.echo(f"retention as of {when}" + (" (dry run: nothing changed)" if dry_run else ""))
    for name, policy, past, what in rows:
        typer.echo(
            f"{name:<{widths[0]}}  {policy:<{widths[1]}}  {past:>{widths[2]}}  {what}".rstrip()
        )


# --- backup, restore, rotate ------------------------------------------------------------


@contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int | None], None]]:
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # nothing in logs and cron mail
    )
    tasks: dict[str, TaskID] = {}

    def report(label: str, done: int, total: int | None) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    with bar:
        yield report


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _fail_backup(exc: backup_ops.BackupError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def _print_rotation(result: backup_ops.RotationResult, dry_run: bool) -> None:
    for name, rules in result.keep.items():
        typer.echo(f"  keep    {name}  ({', '.join(rules)})")
    for name in result.deleted:
        typer.echo(f"  {'would delete' if dry_run else 'deleted'} {name}")
    for path in result.ignored:
        typer.echo(f"  ignored {path.name} (not a backup)")


@app.command()
def backup(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder to put the backup in. Default: TRADEBASE_BACKUP_DIR, else"
            " DATA_DIR/backups.",
            show_default=False,
        ),
    ] = None,
    rotate_after: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="Afterwards delete the backups in that folder that rotation does not keep"
            " (see tradebase db rotate).",
        ),
    ] = False,
    database: DatabaseOption = Target.all,
) -> None:
    """Back up the databases while the server keeps running.

    Each database is one consistent snapshot: SQLite through its online backup
    API (compressed with zstd when installed, else gzip), PostgreSQL with
    pg_dump --format=custom, MariaDB/MySQL with mariadb-dump --single-transaction
    (compressed). The backup is a folder tradebase-YYYYMMDDTHHMMSSZ with one
    file per database and a manifest.json: schema revisions, row counts per
    table, size and SHA-256 of every file.

    A missing pg_dump or mariadb-dump exits 2 saying what to install. The
    master key (TRADEBASE_SECRET_KEY or the key file) is not in the backup:
    keep it safe apart, without it the credentials cannot be decrypted.
    """
    settings = get_settings()
    folder = output if output is not None else settings.backups_path
    try:
        with _progress_bar() as report:
            result = backup_ops.create_backup(
                folder, databases=_targets(database), settings=settings, progress=report
            )
    except backup_ops.BackupError as exc:
        raise _fail_backup(exc) from None
    manifest = result.manifest
    seconds = (manifest.completed_at - manifest.created_at).total_seconds()
    typer.echo(f"backup {result.path} ({_size(result.size)}, {seconds:.1f} s)")
    for db, entry in manifest.databases.items():
        file = manifest.files[entry.file]
        typer.echo(
            f"  {db.value}: {entry.engine} at revision {entry.revision or 'base'},"
            f" {entry.rows:,} rows in {len(entry.tables)} tables -> {entry.file}"
            f" ({_size(file.size)})"
        )
    if rotate_after:
        rotation = backup_ops.rotate(folder, settings=settings)
        typer.echo(f"rotation in {folder}:")
        _print_rotation(rotation, dry_run=False)


@app.command()
def restore(
    path: Annotated[
        Path,
        typer.Argument(help="The backup: its folder, or the manifest.json in it.", exists=True),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace databases that are not empty (their contents are lost)."
        ),
    ] = False,
    verify_only: Annotated[
        bool,
        typer.Option("--verify-only", help="Only check the backup against its manifest."),
    ] = False,
    database: DatabaseOption = Target.all,
) -> None:
    """Restore a backup into the configured databases.

    First every file is checked against the manifest's SHA-256 (a damaged one
    exits 1, named), and a backup whose schema revision this Tradebase does not
    know (a newer one) is refused. Each database must be empty, or --force
    replaces it. Afterwards the row count of every table is checked.

    SQLite: the file is unpacked beside the database, checked, then swapped in
    with one rename. Stop every tradebase serve and worker using it first (the
    restore refuses while another connection has it open). PostgreSQL: one
    pg_restore --clean --if-exists transaction into the configured database.
    MariaDB/MySQL: the dump is replayed through the mariadb client (not one
    transaction: a failure part-way leaves a partial restore; run it again).

    An older backup restores at its own revision: run tradebase db upgrade then.
    """
    settings = get_settings()
    try:
        with _progress_bar() as report:
            if verify_only:
                folder, manifest = backup_ops.verify_backup(path, progress=report)
            else:
                restored = backup_ops.restore_backup(
                    path,
                    databases=None if database is Target.all else _targets(database),
                    force=force,
                    settings=settings,
                    progress=report,
                )
    except backup_ops.BackupError as exc:
        raise _fail_backup(exc) from None
    if verify_only:
        typer.echo(
            f"{folder}: {len(manifest.files)} file(s) match the manifest (taken"
            f" {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC by Tradebase"
            f" {manifest.tradebase_version})"
        )
        return
    for item in restored:
        typer.echo(
            f"{item.database.value} database: {item.target}, restored at revision"
            f" {item.revision or 'base'}: {item.rows:,} rows in {item.tables} tables, as the"
            " manifest says"
        )
        if item.revision != item.head:
            typer.echo(
                f"  the latest {item.database.value} revision is {item.head}: run tradebase"
                f" db upgrade --database {item.database.value}"
            )


@app.command()
def rotate(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Folder of backups. Default: TRADEBASE_BACKUP_DIR, else DATA_DIR/backups.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete the backups that daily/weekly/monthly rotation does not keep.

    Kept: the newest backup of each of the last TRADEBASE_BACKUP_KEEP_DAILY days
    (7), TRADEBASE_BACKUP_KEEP_WEEKLY ISO weeks (4) and
    TRADEBASE_BACKUP_KEEP_MONTHLY months (12), in UTC, and always the newest
    backup. Only folders with a Tradebase manifest are touched.
    """
    settings = get_settings()
    folder = directory if directory is not None else settings.backups_path
    result = backup_ops.rotate(folder, settings=settings, dry_run=dry_run)
    typer.echo(
        f"{folder}: {len(result.keep)} kept, {len(result.deleted)}"
        f" {'to delete' if dry_run else 'deleted'}"
    )
    _print_rotation(result, dry_run)


# --- export, import, copy -------------------------------------------------------------------


class _Bar:
    """`transfer.Progress` drawn as one rich bar per database."""

    def __init__(self, progress: Progress, verb: str) -> None:
        self.progress = progress
        self.verb = verb
        self.task: TaskID | None = None

    def database(self, database: Database, rows: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(f"{self.verb} {database.value}", total=rows)

    def table(self, database: Database, name: str, rows: int) -> None:
        assert self.task is not None
        self.progress.update(self.task, description=f"{self.verb} {database.value}.{name}")

    def advance(self, rows: int) -> None:
        assert self.task is not None
        self.progress.advance(self.task, rows)


@contextmanager
def _transfer_bar(verb: str) -> Iterator[_Bar]:
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        yield _Bar(progress, verb)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _report(result: transfer.Transferred, verb: str) -> None:
    tables = sum(1 for rows in result.tables.values() if rows)
    typer.echo(
        f"{result.database.value}: {verb} {result.rows} rows of {tables} tables into"
        f" {result.target}, at revision {result.revision}"
    )


@app.command("export")
def export_command(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="New (or empty) folder to write the export to.")
    ],
    database: DatabaseOption = Target.all,
    compress: Annotated[
        bool, typer.Option("--gzip", help="Compress each table's file with gzip.")
    ] = False,
) -> None:
    """Write every table as JSON lines, one file per table, with a manifest.

    Engine-independent: decimals exact as strings, timestamps ISO 8601 in UTC with
    microseconds, JSON as JSON. The manifest records each database's schema revision
    and each file's row count and SHA-256. Read back with: tradebase db import DIR.
    """
    try:
        with _transfer_bar("exporting") as bar:
            manifest = transfer.export(
                directory, _targets(database), compress=compress, progress=bar
            )
    except transfer.TransferError as exc:
        raise _fail(exc.message) from None
    for db, entry in manifest.databases.items():
        typer.echo(
            f"{db.value}: exported {entry.rows} rows of {len(entry.tables)} tables"
            f" at revision {entry.revision}"
        )
    typer.echo(f"wrote {directory / transfer.MANIFEST}")


@app.command("import")
def import_command(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="Folder written by tradebase db export.", file_okay=False
        ),
    ],
    database: DatabaseOption = Target.all,
    force: Annotated[
        bool,
        typer.Option("--force", help="Empty a target database that holds data before loading."),
    ] = False,
) -> None:
    """Load an export into the configured databases.

    Verifies the manifest and every file's SHA-256 first, migrates each database to the
    export's revision (refusing one newer than this version knows), and loads each
    database in one transaction: a failed import leaves it as it was. A database that
    holds data is refused unless --force.
    """
    chosen = None if database is Target.all else _targets(database)
    try:
        with _transfer_bar("importing") as bar:
            results = transfer.import_export(directory, chosen, force=force, progress=bar)
    except (transfer.TransferError, transfer.TargetNotEmpty) as exc:
        raise _fail(exc.message) from None
    for result in results:
        _report(result, "imported")
        if result.revision != migrate.head_revision(result.database):
            typer.echo(
                f"  the export is of an older revision: run tradebase db upgrade"
                f" --database {result.database.value} to bring it up to date"
            )


@app.command("copy")
def copy_command(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="URL of the target database, e.g. postgresql://user@host/tradebase or"
            " mysql://user@host/tradebase.",
        ),
    ],
    credentials_to: Annotated[
        str | None,
        typer.Option(
            "--credentials-to",
            help="URL for the credentials database (default: the --to database; each"
            " database keeps its own tables and version table).",
        ),
    ] = None,
    database: DatabaseOption = Target.all,
    force: Annotated[
        bool,
        typer.Option("--force", help="Empty a target database that holds data before copying."),
    ] = False,
) -> None:
    """Copy the configured databases to another engine, e.g. SQLite to PostgreSQL.

    Migrates the target to the same revision, then copies every table in one
    transaction per database (COPY on PostgreSQL), from one consistent snapshot of the
    source. Afterwards identity counters continue after the copied ids and the audit
    chain verifies on the target. Point TRADEBASE_DATABASE_URL (and
    TRADEBASE_CREDENTIALS_DATABASE_URL) at the target to switch over.
    """
    try:
        urls = {
            Database.main: normalize_database_url(to),
            Database.credentials: normalize_database_url(credentials_to or to),
        }
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    try:
        with _transfer_bar("copying") as bar:
            results = [
                transfer.copy_database(db, urls[db], force=force, progress=bar)
                for db in _targets(database)
            ]
    except (transfer.TransferError, transfer.TargetNotEmpty) as exc:
        raise _fail(exc.message) from None
    for result in results:
        _report(result, "copied")


# --- maintain -------------------------------------------------------------------------------


def _print_maintenance(report: maintain_ops.DatabaseReport) -> None:
    typer.echo(f"{report.database.value} database: {report.engine}, {report.target}")
    typer.echo(f"  ran: {_ran(report.ran) or 'nothing'}")
    if report.integrity is not None:
        state = "ok" if report.integrity_ok else f"FAILED ({len(report.integrity)} problems)"
        typer.echo(f"  integrity: {state}")
    rows = [("table", "rows", "size")]
    for table in report.tables:
        count = "?" if table.rows is None else f"{table.rows:,}"
        rows.append(
            (
                table.name,
                f"~{count}" if table.rows_estimated else count,
                "-" if table.size is None else _size(table.size),
            )
        )
    total = report.total_size
    rows.append(
        (
            f"total ({len(report.tables)} tables)",
            f"{report.total_rows:,}",
            "-" if total is None else _size(total),
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for i, (name, count, size) in enumerate(rows):
        if i == len(rows) - 1:
            typer.echo("  " + "-" * (sum(widths) + 4))
        typer.echo(f"  {name:<{widths[0]}}  {count:>{widths[1]}}  {size:>{widths[2]}}")
    if report.sizes_note:
        typer.echo(f"  {report.sizes_note}")
    if report.size_before is not None and report.size_after is not None:
        gained = report.size_before - report.size_after
        change = f"{_size(gained)} reclaimed" if gained > 0 else "nothing reclaimed"
        typer.echo(
            f"  database size: {_size(report.size_before)} before, {_size(report.size_after)}"
            f" after ({change})"
        )
    elif report.size_after is not None:
        typer.echo(f"  database size: {_size(report.size_after)}")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    if report.statements:
        typer.echo("  slowest statements (mean ms, calls, total ms):")
        for st in report.statements:
            query = " ".join(st.query.split())
            if len(query) > 100:
                query = query[:99] + "…"
            typer.echo(f"    {st.mean_ms:>10,.2f}  {st.calls:>8,}  {st.total_ms:>12,.1f}  {query}")
    elif report.statements_note:
        typer.echo(f"  slowest statements: none, {report.statements_note}")
    typer.echo(f"  took {report.seconds:.1f} s")


_ON_TABLE = re.compile(r'^(?P<command>.+?) (?P<table>"[^"]+"|`[^`]+`)$')


def _ran(steps: list[str]) -> str:
    """The steps, a command run per table once: 'VACUUM (ANALYZE) (40 tables)'."""
    counts: dict[str, int] = {}
    for step in steps:
        match = _ON_TABLE.match(step)
        key = match["command"] if match else step
        counts[key] = counts.get(key, 0) + (1 if match else 0)
    return ", ".join(
        f"{key} ({n} tables)" if n > 1 else f"{key} (1 table)" if n else key
        for key, n in counts.items()
    )


@app.command()
def maintain(
    database: DatabaseOption = Target.all,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum/--no-vacuum",
            help="Reclaim the space of deleted rows: VACUUM (SQLite, PostgreSQL), OPTIMIZE"
            " TABLE (MariaDB/MySQL).",
        ),
    ] = True,
    analyze: Annotated[
        bool,
        typer.Option(
            "--analyze/--no-analyze",
            help="Refresh the planner's statistics: ANALYZE (and PRAGMA optimize on SQLite),"
            " ANALYZE TABLE on MariaDB/MySQL.",
        ),
    ] = True,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="PostgreSQL: VACUUM FULL, which rewrites each table and gives the space back"
            " to the system, but locks the table meanwhile (stop the server first). SQLite"
            " and MariaDB always rewrite.",
        ),
    ] = False,
    top: Annotated[
        int,
        typer.Option(
            "--top",
            min=0,
            help="How many of the slowest statements to show (0: none), where the engine"
            " records them: pg_stat_statements, MariaDB/MySQL performance_schema.",
        ),
    ] = 10,
    estimate_rows: Annotated[
        bool,
        typer.Option(
            "--estimate-rows",
            help="PostgreSQL: estimated row counts from the statistics (shown with ~)"
            " instead of counting every table.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the reports as one JSON document.")
    ] = False,
) -> None:
    """Vacuum, analyze and check the databases; show each table's rows and size.

    SQLite: PRAGMA integrity_check first (a failed check exits 1 listing
    the problems, and nothing is rewritten), ANALYZE and PRAGMA optimize,
    VACUUM, then a WAL checkpoint so that the file shrinks; sizes per table
    from dbstat. PostgreSQL: VACUUM (ANALYZE) per table, outside a
    transaction; sizes from pg_total_relation_size (table and indexes).
    MariaDB/MySQL: OPTIMIZE TABLE and ANALYZE TABLE; sizes are data_length
    + index_length. Row counts are exact (COUNT(*)). Only Tradebase's own
    tables and its Alembic version table are listed (and, but on SQLite,
    where VACUUM is of the whole file, vacuumed and analyzed).

    The slowest statements come from pg_stat_statements (PostgreSQL) and
    performance_schema (MariaDB/MySQL) when the server has them on; else
    the reason and the fix are printed. SQLite's VACUUM needs the database
    to itself for a moment: while the server writes it waits up to
    TRADEBASE_SQLITE_BUSY_TIMEOUT_MS. --json prints the same reports for
    scripts (sizes in bytes).
    """
    engines = Engines(get_settings())
    try:
        with _progress_bar() as report:
            reports = maintain_ops.maintain(
                engines,
                _targets(database),
                vacuum=vacuum,
                analyze=analyze,
                full=full,
                top=top,
                estimate_rows=estimate_rows,
                progress=report,
            )
    except maintain_ops.MaintainError as exc:
        raise _fail(str(exc)) from None
    finally:
        engines.dispose()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        for item in reports:
            _print_maintenance(item)
    failed = False
    for item in reports:
        for problem in item.problems:
            typer.echo(f"warning: {item.database.value}: {problem}", err=True)
        if not item.integrity_ok:
            failed = True
            assert item.integrity is not None
            typer.echo(
                f"error: the {item.database.value} database failed its integrity check"
                f" ({item.target}):",
                err=True,
            )
            for problem in item.integrity:
                typer.echo(f"  {problem}", err=True)
            typer.echo(
                "  restore the latest backup (tradebase db restore), or save what can be"
                " read with: sqlite3 FILE .recover | sqlite3 NEW-FILE",
                err=True,
            )
    if failed:
        raise typer.Exit(1)
