"""Rebuild positions and cash from the fills ledger and compare them with the stored rows.

The ledger is the ``trades`` table (every fill, in order) plus the deposits and
withdrawals in ``cash_movements`` and the settlements of CNC positions into holdings (the
settled position rows, see portfolios/settlement.py). Replaying it through
`portfolios.pnl` must give exactly the open positions (quantity, cost basis, unreleased
opening fees), the realized P&L per symbol, the holdings (quantity, invested value) and
the cash that are stored; any difference names the row.

A settlement is replayed right after the last fill of the position it settled: the
replayed long lot leaves the position book (a later fill opens a new lot, as it opened a
new position) and adds to the replayed holding of its symbol. The settled row must show
what the replay moved.

A CNC sell that drew on a holding (its trade's metadata has ``holding``) is replayed by
the fill path's rule: the replayed CNC long takes what it can (none in a hedging
portfolio), and the rest comes out of the replayed holding at its average
(`pnl.split_cnc_sell`, `pnl.sell_holding`). The trade's ``pnl`` and its ``holding``
record must equal the replay, and a holding the replay sells out must be gone. This is
exact because a holding part happens only when no CNC long of the symbol is left open
(netting: the sell closed it; hedging: refused while one is open), so every settlement
that fed the holding comes before the sale in the replay, as it did in fact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tradebase.orders.models import Trade
from tradebase.portfolios.models import (
    CashMovement,
    CashMovementKind,
    Holding,
    Portfolio,
    Position,
    PositionMode,
    Product,
)
from tradebase.portfolios.pnl import LONG, Book, Fill, Held, split_cnc_sell
from tradebase.portfolios.pnl import sell_holding as pnl_sell_holding

ZERO = Decimal(0)


@dataclass
class Report:
    portfolios: int = 0
    fills: int = 0
    settlements: int = 0
    holding_sales: int = 0  # CNC sells that drew on a holding
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
        stored = session.scalars(
            select(Position).where(Position.portfolio_id == portfolio.id).order_by(Position.id)
        ).all()
        products = {row.id: row.product for row in stored}
        settles_after = _settlements(session, report, portfolio, stored)
        held: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        trades = session.execute(
            select(
                Trade.id,
                Trade.symbol,
                Trade.exchange,
                Trade.side,
                Trade.quantity,
                Trade.price,
                Trade.fee,
                Trade.meta,
                Trade.position_id,
                Trade.pnl,
            )
            .where(Trade.portfolio_id == portfolio.id)
            .order_by(Trade.id)
        )
        for trade in trades:
            trade_id, symbol, exchange, side, quantity, price, fee, meta, position_id, _ = trade
            meta = meta if isinstance(meta, dict) else {}
            report.fills += 1
            if "holding" in meta:
                key = (symbol, exchange, Product.CNC.value)
                change, position_realized = _replay_holding_sale(
                    report, books[key], trade, meta["holding"], held, hedging=hedging
                )
                cash += change
                realized[key] += position_realized
                continue
            key = (symbol, exchange, products.get(position_id, "NRML"))
            outcome = books[key].apply(
                Fill(side, quantity, price, fee, closes=bool(meta.get("closes")))
            )
            cash += outcome.cash_change
            realized[key] += outcome.realized
            for row in settles_after.pop(trade_id, ()):
                _replay_settlement(report, books[key], row, held)
        if cash != portfolio.cash_balance_usd:
            report.differences.append(
                f"portfolio {portfolio.id}: cash {portfolio.cash_balance_usd} stored,"
                f" {cash} from the ledger"
            )
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
        _compare_holdings(session, report, portfolio, held)
    return report


def _settlements(
    session: Session, report: Report, portfolio: Portfolio, stored: Sequence[Position]
) -> dict[int, list[Position]]:
    """The settled rows by the id of their last fill, after which the replay settles them."""
    settled = [row for row in stored if row.settled]
    if not settled:
        return {}
    last_fill = {
        position_id: trade_id
        for position_id, trade_id in session.execute(
            select(Trade.position_id, func.max(Trade.id))
            .where(Trade.position_id.in_([row.id for row in settled]))
            .group_by(Trade.position_id)
        )
    }
    after: dict[int, list[Position]] = defaultdict(list)
    for row in settled:
        if row.id in last_fill:
            after[last_fill[row.id]].append(row)
        else:
            report.differences.append(
                f"positions row {row.id} ({row.symbol} {row.direction}): settled {row.quantity}"
                " into holdings, but no fill opened it"
            )
    return after


def _replay_settlement(
    report: Report,
    book: Book,
    row: Position,
    held: dict[tuple[str, str], tuple[Decimal, Decimal]],
) -> None:
    report.settlements += 1
    lot = book.lots.pop(row.direction, None)
    if lot is None:
        report.differences.append(
            f"positions row {row.id} ({row.symbol} {row.direction}): settled {row.quantity}"
            " into holdings, but the fills leave nothing open to settle"
        )
        return
    for name, want, have in (
        ("quantity", lot.quantity, row.quantity),
        ("cost_basis", lot.cost, row.cost_basis),
        ("fees_paid", lot.open_fees, row.fees_paid),
    ):
        if want != have:
            report.differences.append(
                f"positions row {row.id} ({row.symbol} {row.direction}, settled):"
                f" {name} {have} stored, {want} from the fills"
            )
    quantity, cost = held.get((row.symbol, row.exchange), (ZERO, ZERO))
    held[(row.symbol, row.exchange)] = (quantity + lot.quantity, cost + lot.cost)


def _replay_holding_sale(
    report: Report,
    book: Book,
    trade: Any,
    recorded: object,
    held: dict[tuple[str, str], tuple[Decimal, Decimal]],
    *,
    hedging: bool,
) -> tuple[Decimal, Decimal]:
    """Replay a CNC sell that drew on a holding (*recorded*: its metadata's ``holding``);
    return its cash change and the realized P&L of its position part."""
    report.holding_sales += 1
    label = f"trades row {trade.id} ({trade.symbol} {trade.side})"
    fill = Fill(trade.side, trade.quantity, trade.price, trade.fee)
    if trade.side != "sell":
        report.differences.append(f"{label}: a buy cannot draw on a holding")
        return fill.cash_change, ZERO
    long = None if hedging else book.lots.get(LONG)
    from_position, from_holding = split_cnc_sell(long.quantity if long else ZERO, fill)
    position_realized = ZERO
    if from_position is not None:
        position_realized = book.apply(from_position).realized
    if from_holding is None:
        report.differences.append(
            f"{label}: records a sale from the holding, but the replayed CNC position"
            f" covers all {trade.quantity}"
        )
        return fill.cash_change, position_realized
    quantity, cost = held.get((trade.symbol, trade.exchange), (ZERO, ZERO))
    if from_holding.quantity > quantity:
        report.differences.append(
            f"{label}: sells {from_holding.quantity} from the holding, but the settlements"
            f" and sales before it leave {quantity} there"
        )
        return fill.cash_change, position_realized
    sale, left = pnl_sell_holding(Held(quantity, cost), from_holding)
    held[(trade.symbol, trade.exchange)] = (
        (left.quantity, left.invested) if left is not None else (ZERO, ZERO)
    )
    if not isinstance(recorded, Mapping):
        recorded = {}
    for name, want, have in (
        ("pnl", position_realized + sale.realized, trade.pnl),
        ("holding quantity", sale.quantity, _decimal(recorded.get("quantity"))),
        ("holding cost", sale.cost, _decimal(recorded.get("cost"))),
        ("holding fee", sale.fee, _decimal(recorded.get("fee"))),
        ("holding pnl", sale.realized, _decimal(recorded.get("pnl"))),
    ):
        if want != have:
            report.differences.append(f"{label}: {name} {have} stored, {want} from the replay")
    return fill.cash_change, position_realized


def _decimal(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def _compare_holdings(
    session: Session,
    report: Report,
    portfolio: Portfolio,
    held: dict[tuple[str, str], tuple[Decimal, Decimal]],
) -> None:
    rows = {
        (row.symbol, row.exchange): row
        for row in session.scalars(
            select(Holding).where(Holding.portfolio_id == portfolio.id).order_by(Holding.id)
        )
    }
    for (symbol, exchange), (quantity, cost) in held.items():
        found = rows.pop((symbol, exchange), None)
        if found is None:
            if quantity:  # a holding sold out is deleted
                report.differences.append(
                    f"portfolio {portfolio.id}: no holding of {symbol} ({exchange}); the"
                    f" settlements and sales leave {quantity} there"
                )
            continue
        if not quantity:
            report.differences.append(
                f"holdings row {found.id} ({symbol}): holds {found.quantity}, but the sales"
                " sold it out"
            )
            continue
        for name, want, have in (
            ("quantity", quantity, found.quantity),
            ("invested_value", cost, found.invested_value),
        ):
            if want != have:
                report.differences.append(
                    f"holdings row {found.id} ({symbol}): {name} {have} stored,"
                    f" {want} from the settlements and sales"
                )
    for row in rows.values():
        report.differences.append(
            f"holdings row {row.id} ({row.symbol}): holds {row.quantity}, but no settlement"
            " put it there"
        )
