"""``tradebase strategies …``: strategies and their deployments, as a named user."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tradebase.core.db import unit_of_work
from tradebase.core.errors import TradebaseError
from tradebase.orders.cli import UserOption, _as, _fail
from tradebase.strategies.models import DeploymentStatus, StrategyType
from tradebase.strategies.service import strategy as strategy_service

strategies_app = typer.Typer(
    help="Strategies and their deployments to trading accounts.", no_args_is_help=True
)


def _decimal(value: str | None, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not a number", param_hint=name) from None


@strategies_app.command("list")
def list_command(user: UserOption) -> None:
    """The user's strategies with their performance."""
    try:
        with unit_of_work(write=False) as session:
            rows = strategy_service.list(session, _as(session, user))
            table = Table("id", "name", "type", "active", "trades", "total P&L", "win %", "sharpe")
            for s in rows:
                table.add_row(
                    str(s.id),
                    s.name,
                    s.strategy_type,
                    "yes" if s.is_active else "no",
                    str(s.num_trades),
                    str(s.total_pnl),
                    str(s.win_rate if s.win_rate is not None else "-"),
                    str(s.sharpe_ratio if s.sharpe_ratio is not None else "-"),
                )
    except TradebaseError as exc:
        raise _fail(exc) from None
    Console().print(table)


@strategies_app.command("create")
def create_command(
    user: UserOption,
    name: Annotated[str, typer.Argument(help="A name unique among the user's strategies.")],
    strategy_type: Annotated[
        StrategyType, typer.Option("--type", help="What kind of strategy.")
    ] = StrategyType.custom,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    config: Annotated[str | None, typer.Option(help="Its settings as a JSON object.")] = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it switched off.")] = False,
    backtest: Annotated[bool, typer.Option("--backtest", help="A backtest strategy.")] = False,
) -> None:
    """Create a strategy (then deploy it to accounts)."""
    parsed: dict[str, Any] = {}
    if config is not None:
        try:
            parsed = json.loads(config)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--config") from None
        if not isinstance(parsed, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--config")
    try:
        with unit_of_work() as session:
            created = strategy_service.create(
                session,
                _as(session, user),
                name=name,
                strategy_type=strategy_type,
                description=description,
                config=parsed,
                is_active=not inactive,
                is_backtest=backtest,
            )
            typer.echo(f"strategy {created.id} {created.name!r} created")
    except TradebaseError as exc:
        raise _fail(exc) from None


@strategies_app.command("deploy")
def deploy_command(
    user: UserOption,
    strategy_id: Annotated[int, typer.Argument(help="The strategy id.")],
    account: Annotated[int, typer.Option(help="Trading account id.")],
    portfolio: Annotated[
        int | None, typer.Option(help="Portfolio id (default: the account's only one).")
    ] = None,
    capital: Annotated[str | None, typer.Option(help="Capital allocated to it.")] = None,
    max_positions: Annotated[int, typer.Option(min=1, help="Most open positions.")] = 5,
    multiplier: Annotated[str, typer.Option(help="Scales signal quantities.")] = "1",
    paused: Annotated[bool, typer.Option("--paused", help="Deploy it paused.")] = False,
) -> None:
    """Deploy a strategy to one of the user's accounts."""
    factor = _decimal(multiplier, "--multiplier")
    assert factor is not None
    try:
        with unit_of_work() as session:
            created = strategy_service.deploy(
                session,
                _as(session, user),
                strategy_id,
                account_id=account,
                portfolio_id=portfolio,
                capital_allocated=_decimal(capital, "--capital"),
                max_positions=max_positions,
                multiplier=factor,
                status=DeploymentStatus.paused if paused else DeploymentStatus.active,
            )
            typer.echo(
                f"deployment {created.id}: strategy {strategy_id} on account {account}"
                f" (portfolio {created.portfolio_id}), {created.status}"
            )
    except TradebaseError as exc:
        raise _fail(exc) from None


@strategies_app.command("deployments")
def deployments_command(
    user: UserOption, strategy_id: Annotated[int, typer.Argument(help="The strategy id.")]
) -> None:
    """A strategy's deployments."""
    try:
        with unit_of_work(write=False) as session:
            rows = strategy_service.deployments(session, _as(session, user), strategy_id)
            table = Table("id", "account", "portfolio", "status", "capital", "max pos", "x", "P&L")
            for d in rows:
                table.add_row(
                    str(d.id),
                    str(d.account_id),
                    str(d.portfolio_id or "-"),
                    d.status,
                    str(d.capital_allocated if d.capital_allocated is not None else "-"),
                    str(d.max_positions),
                    str(d.multiplier),
                    str(d.total_pnl),
                )
    except TradebaseError as exc:
        raise _fail(exc) from None
    Console().print(table)


@strategies_app.command("set-status")
def set_status_command(
    user: UserOption,
    strategy_id: Annotated[int, typer.Argument(help="The strategy id.")],
    deployment_id: Annotated[int, typer.Argument(help="The deployment id.")],
    new_status: Annotated[DeploymentStatus, typer.Argument(help="active, paused or inactive.")],
) -> None:
    """Start, pause or stop one deployment."""
    try:
        with unit_of_work() as session:
            updated = strategy_service.update_deployment(
                session, _as(session, user), strategy_id, deployment_id, status=new_status
            )
            typer.echo(f"deployment {updated.id}: {updated.status}")
    except TradebaseError as exc:
        raise _fail(exc) from None


@strategies_app.command("delete")
def delete_command(
    user: UserOption, strategy_id: Annotated[int, typer.Argument(help="The strategy id.")]
) -> None:
    """Delete a strategy and its deployments (its orders and signals stay)."""
    try:
        with unit_of_work() as session:
            strategy_service.delete(session, _as(session, user), strategy_id)
    except TradebaseError as exc:
        raise _fail(exc) from None
    typer.echo(f"strategy {strategy_id} deleted")
