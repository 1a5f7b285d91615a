"""The ``tradebase`` command."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from tradebase import __version__
from tradebase.accounts.cli import keys_app, users_app
from tradebase.audit.cli import app as audit_app
from tradebase.brokers.cli import brokers_app
from tradebase.config import SettingsError, get_settings
from tradebase.credentials.cli import app as credentials_app
from tradebase.ops.cli import app as db_app
from tradebase.ops.jobs_cli import jobs_app, worker_command
from tradebase.ops.schema_cli import app as schema_app
from tradebase.orders.cli import orders_app, portfolio_command, positions_command
from tradebase.portfolios.cli import reconcile_command, settle_command, snapshot_command
from tradebase.signals.cli import signals_app
from tradebase.strategies.cli import strategies_app

app = typer.Typer(
    help=(
        "Tradebase: a self-hosted trading server. Settings come from TRADEBASE_* environment"
        " variables and .env; with none set, data lives in ./tradebase-data (SQLite)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")
app.add_typer(schema_app, name="schema")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(credentials_app, name="credentials")
app.command("reconcile")(reconcile_command)
app.command("snapshot")(snapshot_command)
app.command("settle")(settle_command)
app.add_typer(orders_app, name="orders")
app.add_typer(signals_app, name="signals")
app.command("positions")(positions_command)
app.command("portfolio")(portfolio_command)
app.command("worker")(worker_command)
app.add_typer(jobs_app, name="jobs")
app.add_typer(strategies_app, name="strategies")
app.add_typer(brokers_app, name="brokers")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
    log_level: str = typer.Option("info", help="Log level of the server."),
    with_worker: bool = typer.Option(
        False,
        "--worker",
        help="Also run the scheduled jobs (tradebase worker) in this process: one process"
        " for a small SQLite install.",
    ),
) -> None:
    """Run the API server. On first run it creates the databases and an admin user."""
    import uvicorn

    from tradebase.accounts.service import user as user_service
    from tradebase.core import migrate
    from tradebase.core.crypto import KeyStore
    from tradebase.core.db import Database, unit_of_work

    KeyStore.from_settings(get_settings()).keyring()  # a bad master key stops us here, not later
    for database in Database:
        current, head = migrate.current_revision(database), migrate.head_revision(database)
        if current is None:
            migrate.upgrade(database)
            typer.echo(f"created the {database.value} database")
        elif current != head:
            typer.echo(
                f"error: the {database.value} database is at {current}, this version needs"
                f" {head}: run tradebase db upgrade (after a backup)",
                err=True,
            )
            raise typer.Exit(1)
    with unit_of_work() as session:
        password = user_service.ensure_first_admin(session)
    if password:
        typer.echo(f"first run: created user admin with one-time password (shown once): {password}")
    stop_worker = _start_worker() if with_worker else None
    if stop_worker is not None:
        _stop_on_signals(stop_worker)
    try:
        uvicorn.run(
            "tradebase.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            proxy_headers=False,
        )
    finally:
        if stop_worker is not None:
            stop_worker()


def _stop_on_signals(stop: Callable[[], None]) -> None:
    """Uvicorn shuts the server down on SIGTERM/SIGINT, then raises the signal again with
    the handlers it found: these let the worker's running jobs finish first, then the
    process ends by the signal as it would have."""
    import os
    import signal
    from types import FrameType

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def _start_worker() -> Callable[[], None]:
    """Run the scheduled jobs in a thread of this process; return what stops it (letting
    running jobs finish)."""
    import logging
    import threading

    from tradebase.core.db import Engines
    from tradebase.ops import jobs as jobs_ops

    settings = get_settings()
    logging.getLogger("tradebase.worker").setLevel(logging.INFO)
    try:
        known = jobs_ops.registered(settings)
        engines = Engines(settings)
        worker = jobs_ops.Worker(jobs_ops.Runner(engines, settings), known.values())
    except jobs_ops.JobError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
    thread.start()
    active = [name for name, schedule in worker.schedules.items() if not schedule.off]
    typer.echo(f"worker thread: {', '.join(active) or 'no jobs'} scheduled")

    def stop_it() -> None:
        stop.set()
        thread.join(timeout=settings.job_lease_seconds)
        engines.dispose()

    return stop_it


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tradebase {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Check the settings before any command runs, so a wrong one is named up front."""
    from tradebase.core.db import engines

    get_settings.cache_clear()
    get_settings()
    # The process's engines are made for this command's settings (a program that runs
    # several commands, under environments of their own, gets each one's databases).
    engines.dispose()


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"error: wrong setting: {exc}", err=True)
        sys.exit(2)
