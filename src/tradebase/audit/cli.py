"""``tradebase audit …``: verify the hash chain, export the log as JSON lines."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from sqlalchemy.orm import Session

from tradebase.audit.service import audit as audit_service
from tradebase.config import get_settings
from tradebase.core.db import Database, Engines, unit_of_work

app = typer.Typer(
    help="Verify the tamper-evident audit log and export it as JSON lines.",
    no_args_is_help=True,
)

PROGRESS_FROM = 50_000  # entries; shorter walks take well under a second


@contextmanager
def _reading() -> Iterator[Session]:
    # Engines of their own: the command's settings, and nothing left open afterwards.
    engines = Engines(get_settings())
    try:
        with unit_of_work(write=False, factory=engines.session_factory(Database.main)) as session:
            yield session
    finally:
        engines.dispose()


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time, e.g. 2026-01-31 or"
            " 2026-01-31T09:30:00+01:00",
            param_hint=option,
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _anchor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    entry_id, _, digest = value.partition(":")
    if not entry_id.isdigit() or len(digest) != 64:
        raise typer.BadParameter(
            f"{value!r} is not ID:HASH (the 'anchor:' line of an earlier verify)",
            param_hint="--anchor",
        )
    return int(entry_id), digest


@app.command()
def verify(
    anchor: Annotated[
        str | None,
        typer.Option(
            help="ID:HASH printed by an earlier verify and kept outside the database: also"
            " check that this entry still has this hash (a rewritten chain fails).",
        ),
    ] = None,
) -> None:
    """Walk the hash chain; name the first entry that was altered, deleted or inserted.

    Exits 0 when the whole chain verifies, printing an anchor (ID:HASH of its last entry)
    to keep elsewhere; exits 1 when it does not.
    """
    expected = _anchor(anchor)
    console = Console(stderr=True)
    with _reading() as session:
        head = audit_service.chain_head(session)
        total = head.entries if head is not None else 0
        if total >= PROGRESS_FROM:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            ) as bar:
                task = bar.add_task("verifying", total=total)
                result = audit_service.verify(
                    session,
                    progress=lambda done: bar.update(task, completed=done),
                    anchor=expected,
                )
        else:
            result = audit_service.verify(session, anchor=expected)
    if result.ok:
        typer.echo(result.message)
        if result.last_id is not None:
            typer.echo(f"anchor: {result.last_id}:{result.last_hash}")
        return
    typer.echo(f"audit chain broken: {result.message}")
    raise typer.Exit(1)


@app.command()
def export(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: standard output)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only entries at or after this ISO time (no zone: UTC)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only entries before this ISO time (no zone: UTC)."),
    ] = None,
    user: Annotated[int | None, typer.Option(help="Only entries of this user id.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only entries of this action, e.g. login.failed.")
    ] = None,
) -> None:
    """Write audit entries as JSON lines, one entry per line, in chain order."""
    start, end = _moment(since, "--since"), _moment(until, "--until")
    with _reading() as session:
        if output is None:
            count = audit_service.export(
                session, sys.stdout, since=start, until=end, user_id=user, action=action
            )
            sys.stdout.flush()
        else:
            with output.open("w", encoding="utf-8", newline="\n") as out:
                count = audit_service.export(
                    session, out, since=start, until=end, user_id=user, action=action
                )
    where = "" if output is None else f" to {output}"
    typer.echo(f"exported {count} entries{where}", err=True)
