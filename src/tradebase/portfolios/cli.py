"""``tradebase reconcile``: positions and cash rebuilt from the fills must match."""

from __future__ import annotations

from datetime import datetime
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
        line = f"{report.portfolios} portfolio(s), {report.fills} fills: positions and cash agree"
        if report.settlements or report.holding_sales:
            line += f"; {report.settlements} settlement(s)"
            if report.holding_sales:
                line += f", {report.holding_sales} sale(s) from holdings"
            line += ": holdings agree"
        typer.echo(line)
        return
    for line in report.differences:
        typer.echo(line, err=True)
    typer.echo(
        f"{len(report.differences)} difference(s) in {report.portfolios} portfolio(s)", err=True
    )
    raise typer.Exit(1)


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{value!r} has no time zone: add Z or +05:30, say")
    return moment


def settle_command(
    portfolio: Annotated[int | None, typer.Option(help="Only this portfolio id.")] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="Settle as of this moment (ISO 8601 with a time zone, e.g."
            " 2026-11-23T10:00:00Z; default: now). Not in the future."
        ),
    ] = None,
) -> None:
    """Move CNC (delivery) positions into holdings once their trading day has closed.

    A trading day ends at its exchange's close (00:00 UTC on an exchange without one).

    Holdings add up at the weighted average cost. Running it again moves nothing.
    """
    from tradebase.core.errors import TradebaseError
    from tradebase.portfolios.settlement import settle

    moment = _moment(at)
    try:
        with unit_of_work() as session:
            report = settle(session, portfolio_id=portfolio, at=moment)
    except TradebaseError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    for item in report.settled:
        typer.echo(
            f"portfolio {item.portfolio_id}: settled {item.quantity} {item.symbol}"
            f" ({item.exchange or 'no exchange'}) from position {item.position_id}; holding"
            f" {item.holding_quantity} at {item.average_price}"
        )
    waiting = report.waiting + report.held
    line = (
        f"{len(report.settled)} position(s) settled into holdings as of"
        f" {report.at.isoformat(timespec='seconds')}"
    )
    if waiting:
        line += f"; {report.waiting} wait for their trading day to end"
        if report.held:
            line += f", {report.held} for a working CNC sell order"
    typer.echo(line)


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
