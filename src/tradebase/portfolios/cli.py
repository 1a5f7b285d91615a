"""``tradebase reconcile``: positions and cash rebuilt from the fills must match."""

from __future__ import annotations

from typing import Annotated

import typer

from tradebase.core.db import unit_of_work
from tradebase.portfolios.reconcile import reconcile


def reconcile_command(
    portfolio: Annotated[int | None, typer.Option(help="Only this portfolio id.")] = None,
) -> None:
    """Rebuild every position and the cash from the fills ledger; exit 1 on a difference."""
    with unit_of_work(write=False) as session:
        report = reconcile(session, portfolio)
    if report.ok:
        typer.echo(
            f"{report.portfolios} portfolio(s), {report.fills} fills: positions and cash agree"
        )
        return
    for line in report.differences:
        typer.echo(line, err=True)
    typer.echo(
        f"{len(report.differences)} difference(s) in {report.portfolios} portfolio(s)", err=True
    )
    raise typer.Exit(1)
