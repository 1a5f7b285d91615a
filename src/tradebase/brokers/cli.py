"""``tradebase brokers …``: check live broker accounts from the server's shell."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tradebase.brokers.service import broker as broker_service
from tradebase.core.db import Engines

brokers_app = typer.Typer(help="Live broker accounts: health checks.", no_args_is_help=True)


@brokers_app.command("check")
def check(
    account: Annotated[
        int | None,
        typer.Option("--account", "-a", help="One account id (default: every live one)."),
    ] = None,
) -> None:
    """Check live broker accounts now: sets connection_status and last_connected, and
    settles orders an outage left pending. Exits 1 if any is not connected."""
    engines = Engines()
    try:
        if account is not None:
            if not broker_service.exists(engines, account):
                typer.echo(f"error: no trading account {account}", err=True)
                raise typer.Exit(1)
            reports = [broker_service.check(engines, account)]
            if reports[0].connection_status == "connected":
                broker_service.resolve_pending(engines, account_id=account)
        else:
            reports = broker_service.check_all(engines)
    finally:
        engines.dispose()
    table = Table("account", "broker", "status", "last connected", "detail")
    for r in reports:
        seen = r.last_connected.isoformat() if r.last_connected else "-"
        table.add_row(str(r.account_id), r.broker, r.connection_status, seen, r.detail)
    Console().print(table)
    if any(r.connection_status != "connected" for r in reports):
        raise typer.Exit(1)
