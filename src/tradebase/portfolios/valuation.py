"""Portfolio numbers: marking positions to the latest price, equity, snapshots and the
performance figures (DESIGN.md §4: equity = cash + sum of signed quantity x price)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tradebase.core.money import quantize
from tradebase.orders.models import Trade
from tradebase.portfolios import metrics
from tradebase.portfolios.models import (
    CashMovement,
    CashMovementKind,
    Portfolio,
    PortfolioSnapshot,
    Position,
    PositionStatus,
)
from tradebase.portfolios.pnl import Lot

ZERO = Decimal(0)


def mark(session: Session, *, symbol: str, exchange: str, price: Decimal) -> int:
    """Move every open position in *symbol* to *price*: current price and unrealized P&L."""
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
    return len(rows)


@dataclass(frozen=True)
class Valuation:
    cash: Decimal
    positions_value: Decimal  # sum of signed quantity x price
    total: Decimal
    holdings: dict[str, Any]


def value(session: Session, portfolio: Portfolio) -> Valuation:
    """Equity now: cash plus every open position at its last price (entry price if none)."""
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
    cash = portfolio.cash_balance_usd
    return Valuation(cash, positions_value, cash + positions_value, holdings)


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
    return list(last_of_day.values())


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
    invested = (
        session.scalar(
            select(func.coalesce(func.sum(CashMovement.amount), 0)).where(
                CashMovement.portfolio_id == portfolio.id,
                CashMovement.kind.in_([CashMovementKind.deposit, CashMovementKind.withdrawal]),
            )
        )
        or ZERO
    )
    portfolio.total_value_usd = valuation.total
    portfolio.total_pnl = valuation.total - invested
    portfolio.total_pnl_percent = (
        quantize(portfolio.total_pnl * 100 / invested) if invested else ZERO
    )
    portfolio.daily_pnl = changes["pnl_24h"] or ZERO
    curve = daily_curve(session, portfolio.id)
    portfolio.sharpe_ratio = metrics.sharpe_ratio(curve, portfolio.periods_per_year)
    portfolio.max_drawdown = metrics.max_drawdown(curve)
    closing = [
        pnl
        for pnl in session.scalars(
            select(Trade.pnl).where(Trade.portfolio_id == portfolio.id, Trade.pnl.is_not(None))
        )
        if pnl is not None
    ]
    portfolio.win_rate = metrics.win_rate(closing)
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
