"""``tradebase schema …``: the DDL of the models for any engine, and SQL dialect conversion."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from tradebase.core.db import Database
from tradebase.ops.cli import DatabaseOption, Target
from tradebase.ops.schema import DDLDialect, SQLDialect, StatementError, convert, render_ddl

app = typer.Typer(
    help="Print the schema's DDL for any engine; convert SQL scripts between dialects.",
    no_args_is_help=True,
)

PROGRESS_FROM = 100  # statements: smaller scripts convert in a blink


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def ddl(
    dialect: Annotated[
        DDLDialect,
        typer.Option(
            "--dialect",
            help=(
                "Engine to write for: sqlite, postgresql, mysql (MariaDB too) or mssql"
                " (SQL Server: NVARCHAR, DATETIME2 in UTC, BIT, IDENTITY; GO before and after"
                " each trigger)."
            ),
            case_sensitive=False,
        ),
    ],
    database: DatabaseOption = Target.all,
) -> None:
    """Print the CREATE statements of the databases, from the models.

    Tables (keys, CHECK constraints), indexes and the updated_at triggers, in
    dependency order, each statement ending with ';'.

    For reading and for other tools: tradebase db upgrade is what builds and
    migrates a Tradebase database.
    """
    databases = (
        [Database.main, Database.credentials]
        if database is Target.all
        else [Database(database.value)]
    )
    typer.echo(render_ddl(databases, dialect), nl=False)


def _dialects(
    to_sqlite: bool, source: SQLDialect | None, target: SQLDialect | None
) -> tuple[SQLDialect, SQLDialect]:
    if to_sqlite and target not in (None, SQLDialect.sqlite):
        raise _fail(f"--to-sqlite and --to {target} disagree: give one of them")
    if to_sqlite:
        return source or SQLDialect.tsql, SQLDialect.sqlite
    return source or SQLDialect.sqlite, target or SQLDialect.tsql


@app.command("convert")
def convert_command(
    input_file: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="SQL script to convert (a schema, or any statements sqlglot reads).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write; '-' writes to standard output. Default: INPUT.converted.",
            show_default=False,
        ),
    ] = None,
    to_sqlite: Annotated[
        bool,
        typer.Option(
            "--to-sqlite",
            help="Convert from SQL Server (T-SQL) to SQLite. Without it, and without --from"
            " and --to, convert from SQLite to SQL Server.",
        ),
    ] = False,
    source: Annotated[
        SQLDialect | None,
        typer.Option(
            "--from",
            help="Dialect of INPUT: sqlite, postgres, mysql or tsql (default: sqlite, or tsql"
            " with --to-sqlite).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        SQLDialect | None,
        typer.Option(
            "--to",
            help="Dialect to write: sqlite, postgres, mysql or tsql (default: tsql, or sqlite"
            " with --to-sqlite).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Convert a SQL script from one dialect to another, statement by statement.

    sqlglot translates each statement; Tradebase adds what it leaves out. From
    SQLite to SQL Server: INTEGER PRIMARY KEY becomes IDENTITY(1,1), strings
    NVARCHAR, BOOLEAN BIT, DATETIME and TIMESTAMP DATETIME2.

    Inline INDEX name (cols) in CREATE TABLE (MySQL's syntax) becomes CREATE
    INDEX on engines that lack it. Tradebase's own updated_at triggers are
    rewritten for the target; other triggers and procedures are copied when
    the dialects match, else left as comments with a note on standard error.

    A statement that cannot be parsed stops the conversion with its line
    (exit 2), and nothing is written.
    """
    read, write = _dialects(to_sqlite, source, target)
    destination = (
        output if output is not None else input_file.with_name(input_file.name + ".converted")
    )
    if str(destination) != "-" and destination.resolve() == input_file.resolve():
        raise _fail("the output would overwrite INPUT: give another --output")
    try:
        text = input_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(f"{input_file} is not UTF-8 text: {exc}") from None
    console = Console(stderr=True)
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(f"converting {read} to {write}", total=None)

    def on_progress(done: int, total: int) -> None:
        if total >= PROGRESS_FROM and not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        result = convert(text, read, write, progress=on_progress)
    except StatementError as exc:
        raise _fail(f"{input_file}: {exc}") from None
    finally:
        bar.stop()
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if str(destination) == "-":
        sys.stdout.write(result.sql)
        return
    destination.write_text(result.sql, encoding="utf-8")
    typer.echo(
        f"converted {result.statements} statement(s) from {read} to {write}: {destination}",
        err=True,
    )
