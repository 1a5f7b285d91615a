"""``tradebase orders …``, ``tradebase positions`` and ``tradebase portfolio``: trade from
the server's shell, as a named user."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from tradebase.accounts.service import user as user_service
from tradebase.core.auth import Principal
from tradebase.core.db import unit_of_work
from tradebase.core.errors import TradebaseError
from tradebase.orders.models import OrderSide, OrderStatus, OrderType, TimeInForce
from tradebase.orders.service import order as order_service
from tradebase.portfolios.service import portfolio as portfolio_service

orders_app = typer.Typer(help="Place, list and cancel orders.", no_args_is_help=True)
UserOption = Annotated[str, typer.Option("--user", "-u", help="Whose orders (username).")]


def _as(session: Session, username: str) -> Principal:
    found = user_service.get_by_login(session, username)
    if found is None:
        typer.echo(f"error: no user {username!r} (see: tradebase users list)", err=True)
        raise typer.Exit(1)
    return Principal(user_id=found.id, username=found.username, role=found.role, via="cli")


def _fail(exc: TradebaseError) -> typer.Exit:
    typer.echo(f"error: {exc.message}", err=True)
    return typer.Exit(1)


@orders_app.command("place")
def place(
    user: UserOption,
    portfolio: Annotated[int, typer.Option(help="Portfolio id.")],
    side: Annotated[OrderSide, typer.Argument(help="buy or sell.")],
    quantity: Annotated[str, typer.Argument(help="How much, e.g. 0.5.")],
    symbol: Annotated[str, typer.Argument(help="e.g. BTC/USDT.")],
    order_type: Annotated[
        OrderType, typer.Option("--type", help="market, limit, stop_loss, stop_limit.")
    ] = OrderType.market,
    price: Annotated[
        str | None, typer.Option(help="Limit price, or a market order's price hint.")
    ] = None,
    trigger: Annotated[str | None, typer.Option(help="Stop price.")] = None,
    tif: Annotated[
        TimeInForce,
        typer.Option(
            "--tif", help="Resting orders: GTC, DAY (until the close) or IOC (now or never)."
        ),
    ] = TimeInForce.GTC,
    exchange: Annotated[str, typer.Option()] = "paper",
    client_order_id: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
) -> None:
    """Place an order; a market order on a paper account fills at once."""
    try:
        with unit_of_work() as session:
            order = order_service.place(
                session,
                _as(session, user),
                portfolio_id=portfolio,
                symbol=symbol,
                side=side,
                quantity=Decimal(quantity),
                order_type=order_type,
                exchange=exchange,
                price=Decimal(price) if price else None,
                trigger_price=Decimal(trigger) if trigger else None,
                time_in_force=tif,
                client_order_id=client_order_id,
            )
            line = (
                f"order {order.id}: {order.side} {order.quantity} {order.symbol} {order.order_type}"
                f" -> {order.status}"
            )
            if order.average_fill_price is not None:
                line += f" at {order.average_fill_price} (fee {order.fee})"
    except TradebaseError as exc:
        raise _fail(exc) from None
    typer.echo(line)


@orders_app.command("list")
def list_orders(
    user: UserOption,
    portfolio: Annotated[int | None, typer.Option(help="Portfolio id.")] = None,
    status: Annotated[OrderStatus | None, typer.Option(help="Only this status.")] = None,
    symbol: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """List orders, newest first."""
    with unit_of_work(write=False) as session:
        rows = order_service.list(
            session,
            _as(session, user),
            portfolio_id=portfolio,
            status=status,
            symbol=symbol,
            limit=limit,
        )
        table = Table(
            "id",
            "portfolio",
            "symbol",
            "side",
            "type",
            "qty",
            "filled",
            "avg price",
            "status",
            "created",
        )
        for o in rows:
            table.add_row(
                str(o.id),
                str(o.portfolio_id),
                o.symbol,
                o.side,
                o.order_type,
                str(o.quantity),
                str(o.filled_quantity),
                str(o.average_fill_price or "-"),
                o.status,
                o.created_at.isoformat(timespec="seconds"),
            )
    Console().print(table)


@orders_app.command("cancel")
def cancel(user: UserOption, order_id: int) -> None:
    """Cancel a pending or resting order."""
    try:
        with unit_of_work() as session:
            order_service.cancel(session, _as(session, user), order_id)
    except TradebaseError as exc:
        raise _fail(exc) from None
    typer.echo(f"order {order_id} cancelled")


@orders_app.command("expire")
def expire(
    at: Annotated[
        str | None,
        typer.Option(
            help="As of this ISO time with its zone, e.g. 2026-12-01T21:00Z (default: now)."
        ),
    ] = None,
) -> None:
    """Expire the DAY orders whose trading day has closed (run it after each close; a bar
    after the close expires its symbol's orders anyway)."""
    moment = None
    if at is not None:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            typer.echo(f"error: --at {at!r} is not an ISO time, e.g. 2026-12-01T21:00Z", err=True)
            raise typer.Exit(1) from None
        if moment.utcoffset() is None:
            typer.echo(f"error: --at {at!r} has no time zone: add Z or +HH:MM", err=True)
            raise typer.Exit(1)
    with unit_of_work() as session:
        count = order_service.expire_day_orders(session, moment)
    typer.echo(f"{count} order{'' if count == 1 else 's'} expired")


def positions_command(
    user: UserOption,
    portfolio: Annotated[int, typer.Option(help="Portfolio id.")],
    closed: Annotated[bool, typer.Option("--closed", help="Closed positions instead.")] = False,
) -> None:
    """Show the open (or closed) positions of a portfolio."""
    try:
        with unit_of_work(write=False) as session:
            rows = portfolio_service.positions(
                session, _as(session, user), portfolio, status="closed" if closed else "open"
            )
            table = Table("id", "symbol", "side", "qty", "entry", "last", "unrealized", "realized")
            for p in rows:
                table.add_row(
                    str(p.id),
                    p.symbol,
                    p.direction,
                    str(p.quantity),
                    str(p.entry_price),
                    str(p.current_price or "-"),
                    str(p.unrealized_pnl),
                    str(p.realized_pnl),
                )
    except TradebaseError as exc:
        raise _fail(exc) from None
    Console().print(table)


def portfolio_command(
    user: UserOption,
    portfolio: Annotated[
        int | None, typer.Option(help="Portfolio id (default: all yours).")
    ] = None,
) -> None:
    """Show portfolios: cash and P&L figures."""
    with unit_of_work(write=False) as session:
        who = _as(session, user)
        rows = (
            [portfolio_service.get(session, who, portfolio)]
            if portfolio
            else portfolio_service.list(session, who)
        )
        table = Table("id", "name", "account", "cash", "total value", "total P&L", "mode")
        for p in rows:
            table.add_row(
                str(p.id),
                p.name,
                str(p.account_id),
                f"{p.cash_balance_usd} {p.base_currency}",
                str(p.total_value_usd),
                str(p.total_pnl),
                p.position_mode,
            )
    Console().print(table)
