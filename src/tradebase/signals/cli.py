"""``tradebase signals list|replay|recover``: the signal inbox from the shell.

``recover`` executes the signals a dead process stored but did not finish (``tradebase
serve`` does it on start; this is for a job or an operator). ``replay`` executes again a
signal that was rejected or failed, once its cause is mended (the market opened, cash
was deposited): the same signal, so the same deterministic client_order_ids.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import update

from tradebase.accounts.cli import CLI
from tradebase.config import get_settings
from tradebase.core.db import Database, engines, unit_of_work
from tradebase.core.errors import TradebaseError
from tradebase.core.time import utc_now
from tradebase.orders.cli import _as
from tradebase.signals.models import Signal, SignalStatus
from tradebase.signals.service import recover, run
from tradebase.signals.service import signal as signal_service

signals_app = typer.Typer(help="The signal inbox.", no_args_is_help=True)
REPLAYABLE = (SignalStatus.rejected, SignalStatus.failed)


@signals_app.command("list")
def list_command(
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Only this user's signals.")
    ] = None,
    status: Annotated[
        SignalStatus | None, typer.Option(help="received, processed, rejected, failed…")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 20,
) -> None:
    """The latest signals: what came in, from where, and what became of each."""
    with unit_of_work(write=False) as session:
        principal = _as(session, user) if user is not None else CLI
        rows = signal_service.list(session, principal, status=status, limit=limit)
        table = Table("id", "received", "user", "source", "symbol", "side", "qty", "status", "why")
        for s in rows:
            table.add_row(
                str(s.id),
                s.received_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                str(s.user_id),
                s.source,
                s.symbol or "-",
                s.direction or "-",
                str(s.quantity if s.quantity is not None else s.position_size or "-"),
                s.status,
                (s.error or "")[:80],
            )
    Console(width=200).print(table)
    if not rows:
        typer.echo("no signals")


@signals_app.command("replay")
def replay_command(
    signal_id: Annotated[int, typer.Argument(help="The rejected or failed signal.")],
) -> None:
    """Execute again a signal that was rejected or failed (after mending the cause).

    A processed signal is not replayed: its orders exist, and its client_order_ids would
    only find them again. Exits 1 if the signal is refused again.
    """
    factory = engines.session_factory(Database.main)
    try:
        with unit_of_work(factory=factory) as session:
            found = signal_service.get(session, CLI, signal_id)
            if found.status not in REPLAYABLE:
                typer.echo(
                    f"error: signal {signal_id} is {found.status}: only a rejected or failed"
                    " signal is replayed",
                    err=True,
                )
                raise typer.Exit(1)
            session.execute(
                update(Signal)
                .where(Signal.id == signal_id, Signal.status.in_(REPLAYABLE))
                .values(status=SignalStatus.received, error=None, updated_at=utc_now())
                .execution_options(synchronize_session=False)
            )
    except TradebaseError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    run(factory, get_settings(), signal_id)
    with unit_of_work(factory=factory, write=False) as session:
        done = signal_service.get(session, CLI, signal_id)
        outcome, error = done.status, done.error
        orders = (done.outcome or {}).get("orders", [])
    if outcome == SignalStatus.processed:
        typer.echo(f"signal {signal_id}: processed, {len(orders)} order(s)")
        return
    typer.echo(f"signal {signal_id}: {outcome}: {error}", err=True)
    raise typer.Exit(1)


@signals_app.command("recover")
def recover_command() -> None:
    """Execute every signal left received or processing, once each (safe while servers run)."""
    pending = recover(engines.session_factory(Database.main), get_settings())
    typer.echo(f"{pending} pending signal(s) executed")
