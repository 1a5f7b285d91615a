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


def snapshot_command(
    portfolio: Annotated[int | None, typer.Option(help="Only this portfolio id.")] = None,
) -> None:
    """Record every portfolio's value now and refresh its P&L and metrics (a daily job)."""
    from sqlalchemy import select

    from tradebase.accounts.cli import CLI
    from tradebase.portfolios.models import Portfolio
    from tradebase.portfolios.service import portfolio as portfolio_service

    with unit_of_work() as session:
        statement = select(Portfolio.id).order_by(Portfolio.id)
        if portfolio is not None:
            statement = statement.where(Portfolio.id == portfolio)
        ids = list(session.scalars(statement))
        for portfolio_id in ids:
            row = portfolio_service.take_snapshot(session, CLI, portfolio_id)
            typer.echo(
                f"portfolio {portfolio_id}: value {row.total_value_usd}"
                f" (cash {row.cash_balance_usd})"
            )
    if not ids:
        typer.echo("no portfolios")
