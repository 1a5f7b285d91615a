"""``tradebase signals recover``: execute the signals a dead process stored but did not
finish (``tradebase serve`` does it on start; this is for a job or an operator)."""

from __future__ import annotations

import typer

from tradebase.config import get_settings
from tradebase.core.db import Database, engines
from tradebase.signals.service import recover

signals_app = typer.Typer(help="The signal inbox.", no_args_is_help=True)


@signals_app.command("recover")
def recover_command() -> None:
    """Execute every signal left received or processing, once each (safe while servers run)."""
    pending = recover(engines.session_factory(Database.main), get_settings())
    typer.echo(f"{pending} pending signal(s) executed")
