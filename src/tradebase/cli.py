"""The ``tradebase`` command."""

from __future__ import annotations

import sys

import typer

from tradebase import __version__
from tradebase.accounts.cli import keys_app, users_app
from tradebase.audit.cli import app as audit_app
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


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
    log_level: str = typer.Option("info", help="Log level of the server."),
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
    uvicorn.run(
        "tradebase.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=False,
    )


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
    get_settings.cache_clear()
    get_settings()


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"error: wrong setting: {exc}", err=True)
        sys.exit(2)
