"""Rebuild positions and cash from the fills ledger and compare them with the stored rows.

The ledger is the ``trades`` table (every fill, in order) plus the deposits and
withdrawals in ``cash_movements``. Replaying it through `portfolios.pnl` must give exactly
the open positions (quantity, cost basis, unreleased opening fees), the realized P&L per
symbol and the cash that are stored; any difference names the row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradebase.orders.models import Trade
from tradebase.portfolios.models import (
    CashMovement,
    CashMovementKind,
    Portfolio,
    Position,
    PositionMode,
)
from tradebase.portfolios.pnl import Book, Fill

ZERO = Decimal(0)


@dataclass
class Report:
    portfolios: int = 0
    fills: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def _portfolios(session: Session, portfolio_id: int | None) -> Iterator[Portfolio]:
    statement = select(Portfolio).order_by(Portfolio.id)
    if portfolio_id is not None:
        statement = statement.where(Portfolio.id == portfolio_id)
    yield from session.scalars(statement)


def reconcile(session: Session, portfolio_id: int | None = None) -> Report:
    """Compare every portfolio (or one) with a replay of its ledger."""
    report = Report()
    for portfolio in _portfolios(session, portfolio_id):
        report.portfolios += 1
        hedging = portfolio.position_mode == PositionMode.hedging
        books: dict[tuple[str, str, str], Book] = defaultdict(partial(Book, hedging=hedging))
        cash = ZERO
        for (amount,) in session.execute(
            select(CashMovement.amount).where(
                CashMovement.portfolio_id == portfolio.id,
                CashMovement.kind != CashMovementKind.trade,
            )
        ):
            cash += amount
        realized: dict[tuple[str, str, str], Decimal] = defaultdict(lambda: ZERO)
        trades = session.execute(
            select(
                Trade.symbol,
                Trade.exchange,
                Trade.side,
                Trade.quantity,
                Trade.price,
                Trade.fee,
                Trade.meta,
                Trade.position_id,
            )
            .where(Trade.portfolio_id == portfolio.id)
            .order_by(Trade.id)
        )
        products: dict[int, str] = {
            position_id: product
            for position_id, product in session.execute(
                select(Position.id, Position.product).where(Position.portfolio_id == portfolio.id)
            )
        }
        for symbol, exchange, side, quantity, price, fee, meta, position_id in trades:
            key = (symbol, exchange, products.get(position_id, "NRML"))
            outcome = books[key].apply(
                Fill(side, quantity, price, fee, closes=bool((meta or {}).get("closes")))
            )
            cash += outcome.cash_change
            realized[key] += outcome.realized
            report.fills += 1
        if cash != portfolio.cash_balance_usd:
            report.differences.append(
                f"portfolio {portfolio.id}: cash {portfolio.cash_balance_usd} stored,"
                f" {cash} from the ledger"
            )
        stored = session.scalars(
            select(Position).where(Position.portfolio_id == portfolio.id).order_by(Position.id)
        ).all()
        stored_realized: dict[tuple[str, str, str], Decimal] = defaultdict(lambda: ZERO)
        open_rows: dict[tuple[str, str, str, str], Position] = {}
        for row in stored:
            key = (row.symbol, row.exchange, row.product)
            stored_realized[key] += row.realized_pnl
            if row.status == "open":
                open_rows[(*key, row.direction)] = row
        for key, book in books.items():
            for direction, lot in book.lots.items():
                found = open_rows.pop((*key, direction), None)
                if found is None:
                    report.differences.append(
                        f"portfolio {portfolio.id}: no open {direction} position for"
                        f" {key[0]} ({key[1]}, {key[2]}); the fills leave {lot.quantity} open"
                    )
                    continue
                for name, want, have in (
                    ("quantity", lot.quantity, found.quantity),
                    ("cost_basis", lot.cost, found.cost_basis),
                    ("fees_paid", lot.open_fees, found.fees_paid),
                ):
                    if want != have:
                        report.differences.append(
                            f"positions row {found.id} ({found.symbol} {found.direction}):"
                            f" {name} {have} stored, {want} from the fills"
                        )
            if realized[key] != stored_realized[key]:
                report.differences.append(
                    f"portfolio {portfolio.id}: realized P&L of {key[0]} is {stored_realized[key]}"
                    f" in the positions, {realized[key]} from the fills"
                )
        for row in open_rows.values():
            report.differences.append(
                f"positions row {row.id} ({row.symbol} {row.direction}): open with {row.quantity},"
                " but the fills leave nothing open"
            )
    return report
