"""Portfolio numbers: marking positions and holdings to the latest price, equity,
snapshots and the performance figures (DESIGN.md §4: equity = cash + sum of signed
quantity x price, over the open positions and the holdings)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tradebase.core.money import quantize
from tradebase.core.time import ensure_utc
from tradebase.orders.models import Trade
from tradebase.portfolios import metrics
from tradebase.portfolios.models import (
    CashMovement,
    CashMovementKind,
    Holding,
    Portfolio,
    PortfolioSnapshot,
    Position,
    PositionStatus,
)
from tradebase.portfolios.pnl import Lot

ZERO = Decimal(0)


def mark(session: Session, *, symbol: str, exchange: str, price: Decimal) -> int:
    """Move every open position and holding in *symbol* to *price*: current price and
    (unrealized) P&L. Returns the positions moved."""
    rows = session.scalars(
        select(Position).where(
            Position.symbol == symbol,
            Position.exchange == exchange,
            Position.status == PositionStatus.open,
        )
    ).all()
    for row in rows:
        lot = Lot(row.direction, row.quantity, row.cost_basis, row.fees_paid)
        unrealized = lot.unrealized(price)
        row.current_price = price
        row.unrealized_pnl = quantize(unrealized)
        row.unrealized_pnl_percent = (
            quantize(unrealized * 100 / row.cost_basis) if row.cost_basis else ZERO
        )
    for holding in session.scalars(
        select(Holding).where(Holding.symbol == symbol, Holding.exchange == exchange)
    ):
        holding.mark(price)
    return len(rows)


@dataclass(frozen=True)
class Valuation:
    cash: Decimal
    positions_value: Decimal  # sum of signed quantity x price of the open positions
    total: Decimal
    holdings: dict[str, Any]  # what the snapshot keeps: every position and holding
    holdings_value: Decimal = ZERO  # sum of quantity x price of the holdings (CNC, settled)


def value(session: Session, portfolio: Portfolio) -> Valuation:
    """Equity now: cash plus every open position at its last price (entry price if none)
    plus every holding at its last price (average price if none)."""
    rows = session.scalars(
        select(Position)
        .where(Position.portfolio_id == portfolio.id, Position.status == PositionStatus.open)
        .order_by(Position.id)
    ).all()
    positions_value = ZERO
    holdings: dict[str, Any] = {}
    for row in rows:
        price = row.current_price or row.entry_price
        signed = row.quantity if row.direction == "long" else -row.quantity
        worth = signed * price
        positions_value += worth
        holdings[f"{row.symbol}:{row.exchange}:{row.product}:{row.direction}"] = {
            "quantity": str(row.quantity),
            "price": str(price),
            "value": str(worth),
        }
    holdings_value = ZERO
    for held in session.scalars(
        select(Holding).where(Holding.portfolio_id == portfolio.id).order_by(Holding.id)
    ):
        price = held.current_price or held.average_price
        worth = held.quantity * price
        holdings_value += worth
        holdings[f"{held.symbol}:{held.exchange}:holding"] = {
            "quantity": str(held.quantity),
            "price": str(price),
            "value": str(worth),
        }
    cash = portfolio.cash_balance_usd
    return Valuation(
        cash, positions_value, cash + positions_value + holdings_value, holdings, holdings_value
    )


def _value_before(session: Session, portfolio_id: int, moment: datetime) -> Decimal | None:
    return session.scalar(
        select(PortfolioSnapshot.total_value_usd)
        .where(
            PortfolioSnapshot.portfolio_id == portfolio_id, PortfolioSnapshot.timestamp <= moment
        )
        .order_by(PortfolioSnapshot.timestamp.desc())
        .limit(1)
    )


def daily_curve(session: Session, portfolio_id: int) -> list[Decimal]:
    """The last snapshot of each UTC day, in order: the equity curve of the metrics."""
    return list(_last_of_each_day(session, portfolio_id).values())


def _last_of_each_day(session: Session, portfolio_id: int) -> dict[Any, Decimal]:
    rows = session.execute(
        select(
            PortfolioSnapshot.snapshot_date,
            PortfolioSnapshot.timestamp,
            PortfolioSnapshot.total_value_usd,
        )
        .where(PortfolioSnapshot.portfolio_id == portfolio_id)
        .order_by(PortfolioSnapshot.timestamp)
    ).all()
    last_of_day: dict[Any, Decimal] = {}
    for day, _moment, total in rows:
        last_of_day[day] = total
    return last_of_day


def _net_deposits(session: Session, portfolio_id: int) -> Decimal:
    return (
        session.scalar(
            select(func.coalesce(func.sum(CashMovement.amount), 0)).where(
                CashMovement.portfolio_id == portfolio_id,
                CashMovement.kind.in_([CashMovementKind.deposit, CashMovementKind.withdrawal]),
            )
        )
        or ZERO
    )


def _closing_pnls(session: Session, portfolio_id: int) -> list[Decimal]:
    return [
        pnl
        for pnl in session.scalars(
            select(Trade.pnl).where(Trade.portfolio_id == portfolio_id, Trade.pnl.is_not(None))
        )
        if pnl is not None
    ]


def snapshot(session: Session, portfolio: Portfolio, at: datetime) -> PortfolioSnapshot:
    """Record the portfolio's value at *at* and refresh its figures: total value, total
    P&L against the net deposits, the 24h/7d/30d changes, Sharpe, drawdown, win rate."""
    valuation = value(session, portfolio)
    changes = {}
    for name, delta in (
        ("pnl_24h", timedelta(days=1)),
        ("pnl_7d", timedelta(days=7)),
        ("pnl_30d", timedelta(days=30)),
    ):
        before = _value_before(session, portfolio.id, at - delta)
        changes[name] = None if before is None else valuation.total - before
    row = PortfolioSnapshot(
        portfolio_id=portfolio.id,
        user_id=portfolio.user_id,
        timestamp=at,
        snapshot_date=at.date(),
        total_value_usd=valuation.total,
        cash_balance_usd=valuation.cash,
        holdings=valuation.holdings,
        **changes,
    )
    session.add(row)
    session.flush()
    invested = _net_deposits(session, portfolio.id)
    portfolio.total_value_usd = valuation.total
    portfolio.total_pnl = valuation.total - invested
    portfolio.total_pnl_percent = (
        quantize(portfolio.total_pnl * 100 / invested) if invested else ZERO
    )
    portfolio.daily_pnl = changes["pnl_24h"] or ZERO
    curve = daily_curve(session, portfolio.id)
    portfolio.sharpe_ratio = metrics.sharpe_ratio(curve, portfolio.periods_per_year)
    portfolio.max_drawdown = metrics.max_drawdown(curve)
    portfolio.win_rate = metrics.win_rate(_closing_pnls(session, portfolio.id))
    return row


@dataclass(frozen=True)
class EquityPoint:
    """One snapshot of the equity curve, with the P&L against the money put in by then."""

    timestamp: datetime
    total_value: Decimal
    cash: Decimal
    net_deposits: Decimal  # deposits less withdrawals made by `timestamp`
    pnl: Decimal  # total_value - net_deposits: the figure `snapshot` stores as total P&L
    pnl_24h: Decimal | None
    pnl_7d: Decimal | None
    pnl_30d: Decimal | None


def equity_curve(session: Session, portfolio: Portfolio) -> list[EquityPoint]:
    """Every snapshot of *portfolio* in time order, each with the net deposits made by its
    time and its P&L against them (so a deposit moves the value, never the P&L)."""
    snapshots = session.scalars(
        select(PortfolioSnapshot)
        .where(PortfolioSnapshot.portfolio_id == portfolio.id)
        .order_by(PortfolioSnapshot.timestamp)
    ).all()
    movements = session.execute(
        select(CashMovement.created_at, CashMovement.amount)
        .where(
            CashMovement.portfolio_id == portfolio.id,
            CashMovement.kind.in_([CashMovementKind.deposit, CashMovementKind.withdrawal]),
        )
        .order_by(CashMovement.created_at, CashMovement.id)
    ).all()
    points = []
    invested = ZERO
    taken = 0
    for row in snapshots:
        while taken < len(movements) and movements[taken].created_at <= row.timestamp:
            invested += movements[taken].amount
            taken += 1
        points.append(
            EquityPoint(
                timestamp=row.timestamp,
                total_value=row.total_value_usd,
                cash=row.cash_balance_usd,
                net_deposits=invested,
                pnl=row.total_value_usd - invested,
                pnl_24h=row.pnl_24h,
                pnl_7d=row.pnl_7d,
                pnl_30d=row.pnl_30d,
            )
        )
    return points


@dataclass(frozen=True)
class Figures:
    """A portfolio's numbers at a moment, as a snapshot taken then would record them."""

    portfolio_id: int
    base_currency: str
    at: datetime
    cash: Decimal
    positions_value: Decimal
    holdings_value: Decimal
    total_value: Decimal
    net_deposits: Decimal
    total_pnl: Decimal
    total_pnl_percent: Decimal
    daily_pnl: Decimal | None  # None: no snapshot a day old to compare with
    sharpe_ratio: Decimal | None
    max_drawdown: Decimal | None
    win_rate: Decimal | None
    closing_trades: int


def figures(session: Session, portfolio: Portfolio, at: datetime) -> Figures:
    """The figures at *at* (now) without recording anything: the value now, total P&L
    against the net deposits, the change since the last snapshot a day before, Sharpe and
    max drawdown over the daily equity curve with the value now as today's last point,
    and the win rate of the closing fills."""
    valuation = value(session, portfolio)
    invested = _net_deposits(session, portfolio.id)
    total_pnl = valuation.total - invested
    before = _value_before(session, portfolio.id, at - timedelta(days=1))
    curve = _last_of_each_day(session, portfolio.id)
    curve[ensure_utc(at).date()] = valuation.total
    closing = _closing_pnls(session, portfolio.id)
    return Figures(
        portfolio_id=portfolio.id,
        base_currency=portfolio.base_currency,
        at=at,
        cash=valuation.cash,
        positions_value=valuation.positions_value,
        holdings_value=valuation.holdings_value,
        total_value=valuation.total,
        net_deposits=invested,
        total_pnl=total_pnl,
        total_pnl_percent=quantize(total_pnl * 100 / invested) if invested else ZERO,
        daily_pnl=None if before is None else valuation.total - before,
        sharpe_ratio=metrics.sharpe_ratio(list(curve.values()), portfolio.periods_per_year),
        max_drawdown=metrics.max_drawdown(list(curve.values())),
        win_rate=metrics.win_rate(closing),
        closing_trades=len(closing),
    )
