"""The ``tradebase`` command."""

from __future__ import annotations

import sys

import typer

from tradebase import __version__
from tradebase.config import SettingsError, get_settings
from tradebase.ops.cli import app as db_app

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
