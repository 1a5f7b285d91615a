"""``tradebase db …``: migrate, inspect and check both databases; export, import, copy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn

from tradebase.config import normalize_database_url
from tradebase.core import migrate
from tradebase.core.db import Database, database_url
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
def _progress_bar(verb: str) -> Iterator[_Bar]:
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
        with _progress_bar("exporting") as bar:
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
        with _progress_bar("importing") as bar:
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
        with _progress_bar("copying") as bar:
            results = [
                transfer.copy_database(db, urls[db], force=force, progress=bar)
                for db in _targets(database)
            ]
    except (transfer.TransferError, transfer.TargetNotEmpty) as exc:
        raise _fail(exc.message) from None
    for result in results:
        _report(result, "copied")
