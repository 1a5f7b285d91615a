"""Random fill sequences through the database, on every engine (issue 4).

Each example opens a fresh portfolio (netting or hedging), places its sequence as market
orders with a price hint through `OrderService.place`, and checks what was stored against
a replay of the stored trades written here with plain Decimal arithmetic from DESIGN.md §4
(average cost, the fee split pro rata on a reversal, realized P&L net of the closing fee
and the closed share of the opening fees). pnl.py is not used for the expected figures.

Issue 4's acceptance line, in both modes: the stored positions equal a replay of the
fills; a sequence that ends flat has Σ realized P&L equal to the change in cash exactly;
quantities are conserved. `tradebase reconcile` must agree at the end of every example.

Reduce-only orders (orders/service.py `place`, `_check_reduces`, `_book`):

* Hedging: a buy opens or adds to the long and a sell to the short, whatever is open on
  the other side, unless the order is ``reduce_only``: then it closes that much of the
  opposite side (a sell the long, a buy the short), never reversing, and its trade's
  metadata says ``{"closes": true}``.
* Netting: a ``reduce_only`` order is an ordinary fill that may only reduce the open
  position, never open or reverse one.
* In both, a ``reduce_only`` order larger than the opposite open quantity (0 when nothing
  is open on that side) is refused: `OrderRejected` with the cause
  ``reduce_only_refused``, kept as a rejected order, and nothing else written.

The sequences mix opening orders, reduce-only orders drawn to fit the opposite side and
some drawn beyond it; half of them end with the orders that close every side flat.

The replay works in a context with room for every digit (`_EXACT`). The values drawn here
keep every figure below 10**10 (beyond, see the tests at the end).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from tests.factories import create_user
from tradebase.core.auth import Principal
from tradebase.core.time import utc_now
from tradebase.orders.errors import OrderRejected
from tradebase.orders.matching import Bar
from tradebase.orders.models import Order, OrderEvent, Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import CashMovement, Portfolio, Position
from tradebase.portfolios.reconcile import reconcile
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

ZERO = Decimal(0)
QUANTUM = Decimal(1).scaleb(-18)  # the columns' 18 decimal places
_EXACT = Context(prec=100)
DEPOSIT = Decimal(1_000_000)
SYMBOLS = ("ACME", "BETA")
SIDES = ("buy", "sell")
MODES = ("netting", "hedging")
LOT = Decimal("0.001")  # every drawn quantity is a multiple of it


def _direction(side: str) -> str:
    return "long" if side == "buy" else "short"


def _target(side: str) -> str:
    """The direction a reduce-only order of *side* reduces: a sell the long, a buy the short."""
    return "short" if side == "buy" else "long"


# --- the sequences ---------------------------------------------------------------------


def _decimal(top: int, places: int) -> st.SearchStrategy[Decimal]:
    """n / 10**k for n in 1..top and k in 0..places (0.001 .. top)."""
    return st.builds(
        lambda n, k: Decimal(n).scaleb(-k), st.integers(1, top), st.integers(0, places)
    )


@dataclass(frozen=True)
class Step:
    symbol: str
    side: str
    quantity: Decimal
    hint: Decimal
    reduce_only: bool = False


quantities = _decimal(5_000, 3)  # up to 5000
hints = _decimal(20_000, 3)  # up to 20000: a fill is worth at most 10**9 (45000 x 20000)
fee_rates = st.builds(lambda n, k: Decimal(n).scaleb(-k), st.integers(0, 100), st.integers(4, 5))
slippages = st.builds(lambda n, k: Decimal(n).scaleb(-k), st.integers(0, 500), st.integers(0, 1))
# What each drawn step tries to be: an opening order (in netting mode: any order, which may
# reduce or reverse), a reduce-only order within the opposite side, or one beyond it.
KINDS = ("open", "open", "reduce", "reduce", "beyond")


@dataclass
class _Open:
    """What a sequence leaves open, by (symbol, direction): quantities only (prices play no
    part), for drawing reduce-only orders that fit or do not. Not the replay."""

    hedging: bool
    held: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def reducible(self, symbol: str, side: str) -> Decimal:
        return self.held[(symbol, _target(side))]

    def apply(self, step: Step) -> None:
        mine, other = (step.symbol, _direction(step.side)), (step.symbol, _target(step.side))
        if step.reduce_only:
            if step.quantity <= self.held[other]:  # else refused: nothing moves
                self.held[other] -= step.quantity
        elif self.hedging:
            self.held[mine] += step.quantity
        else:
            reduced = min(step.quantity, self.held[other])
            self.held[other] -= reduced
            self.held[mine] += step.quantity - reduced


@st.composite
def sequences(draw: st.DrawFn, mode: str) -> list[Step]:
    """A random sequence for *mode*; half the time followed by the orders that close every
    open side flat (hedging: reduce-only closes of each long and short; netting: an order
    against each symbol's position, reduce-only or not)."""
    book = _Open(hedging=mode == "hedging")
    raw = draw(
        st.lists(
            st.tuples(
                st.sampled_from(KINDS),
                st.sampled_from(SYMBOLS),
                st.sampled_from(SIDES),
                quantities,
                hints,
                st.just(0) | st.integers(1, 999),  # a close takes n/1000 of it; 0: all
            ),
            min_size=1,
            max_size=8,
        )
    )
    drawn: list[Step] = []
    for kind, symbol, side, quantity, hint, part in raw:
        step = Step(symbol, side, quantity, hint)
        if kind == "beyond":
            # Beyond the opposite side by the drawn quantity (all of it when none is open).
            step = Step(symbol, side, book.reducible(symbol, side) + quantity, hint, True)
        elif kind == "reduce":
            # The drawn symbol and side if they can reduce, else the first pair that can.
            pairs = [(symbol, side), (symbol, "sell" if side == "buy" else "buy")]
            pairs += [(s, d) for s in SYMBOLS for d in SIDES]
            found = next(((s, d) for s, d in pairs if book.reducible(s, d) > 0), None)
            if found is not None:
                held = book.reducible(*found)
                with localcontext(_EXACT):
                    share = (held * part / 1000).quantize(LOT, rounding=ROUND_DOWN)
                step = Step(*found, held if part == 0 else max(share, LOT), hint, True)
        book.apply(step)
        drawn.append(step)
    if draw(st.booleans()):
        for (symbol, direction), held in sorted(book.held.items()):
            if held:
                reduce_only = book.hedging or draw(st.booleans())
                side = "sell" if direction == "long" else "buy"
                drawn.append(Step(symbol, side, held, draw(hints), reduce_only))
    return drawn


# --- the replay --------------------------------------------------------------------------


def _share(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """total x part / whole to 18 places (half even); all of it when part is the whole, so
    that the shares of a position add up to its total."""
    if part == whole:
        return total
    with localcontext(_EXACT):
        return (total * part / whole).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


@dataclass
class Row:
    """A replayed position row."""

    symbol: str
    direction: str
    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    fees_paid: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    status: str = "open"

    def as_stored(self) -> tuple[Any, ...]:
        return (
            self.symbol,
            self.direction,
            self.quantity,
            self.cost_basis,
            self.fees_paid,
            self.realized_pnl,
            self.status,
        )


@dataclass
class Replayed:
    """A trade's effect: the row it is booked on, its P&L and the cost it released."""

    row: int
    pnl: Decimal | None = None
    released_cost: Decimal = ZERO


@dataclass
class Replay:
    hedging: bool
    rows: list[Row] = field(default_factory=list)  # in the order they were opened

    def _open(self, symbol: str, direction: str | None = None) -> int | None:
        for index, row in enumerate(self.rows):
            mine = direction is None or row.direction == direction
            if row.symbol == symbol and row.status == "open" and mine:
                return index
        return None

    def reducible(self, symbol: str, side: str) -> Decimal:
        """The open quantity a reduce-only order of *side* may take (0: none open)."""
        index = self._open(symbol, _target(side))
        return ZERO if index is None else self.rows[index].quantity

    def _add(
        self, index: int | None, symbol: str, direction: str, q: Decimal, p: Decimal, fee: Decimal
    ) -> int:
        if index is None:
            self.rows.append(Row(symbol, direction))
            index = len(self.rows) - 1
        row = self.rows[index]
        row.quantity += q
        row.cost_basis += q * p
        row.fees_paid += fee
        return index

    def _reduce(self, index: int, q: Decimal, p: Decimal, fee: Decimal) -> tuple[Decimal, Decimal]:
        """Close q (at most the row's quantity) of row *index* at p, charging it *fee*;
        return the realized P&L and the cost released."""
        row = self.rows[index]
        assert q <= row.quantity
        cost = _share(row.cost_basis, q, row.quantity)
        opening_fees = _share(row.fees_paid, q, row.quantity)
        gross = q * p - cost
        if row.direction == "short":
            gross = -gross
        realized = gross - fee - opening_fees
        row.realized_pnl += realized
        row.quantity -= q
        row.cost_basis -= cost
        row.fees_paid -= opening_fees
        if row.quantity == 0:
            row.status = "closed"
            row.cost_basis = row.fees_paid = ZERO
        return realized, cost

    def apply(
        self, symbol: str, side: str, q: Decimal, p: Decimal, fee: Decimal, closes: bool = False
    ) -> Replayed:
        with localcontext(_EXACT):
            direction = _direction(side)
            if self.hedging:
                if closes:  # a reduce-only order: it closes the opposite side, never more
                    index = self._open(symbol, _target(side))
                    assert index is not None, "the order should have been refused"
                    return Replayed(index, *self._reduce(index, q, p, fee))
                index = self._open(symbol, direction)
                return Replayed(self._add(index, symbol, direction, q, p, fee))
            index = self._open(symbol)
            if index is None or self.rows[index].direction == direction:
                return Replayed(self._add(index, symbol, direction, q, p, fee))
            closed = min(q, self.rows[index].quantity)
            # On a reversal the fee is split by quantity; the opening part takes the rest.
            closing_fee = fee if q == closed else _share(fee, closed, q)
            realized, cost = self._reduce(index, closed, p, closing_fee)
            if q > closed:
                index = self._add(None, symbol, direction, q - closed, p, fee - closing_fee)
            return Replayed(index, realized, cost)

    def signed_open(self, symbol: str) -> Decimal:
        with localcontext(_EXACT):
            return sum(
                (
                    r.quantity if r.direction == "long" else -r.quantity
                    for r in self.rows
                    if r.symbol == symbol and r.status == "open"
                ),
                ZERO,
            )


# --- through the database ----------------------------------------------------------------


def _portfolio(
    session: Session, mode: str, fee_rate: Decimal, slippage: Decimal
) -> tuple[Principal, Portfolio]:
    user = create_user(session)
    who = Principal(user_id=user.id, username=user.username, role="trader")
    account = account_service.create(
        session, who, account_name="props", fee_rate=fee_rate, slippage_bps=slippage
    )
    # Margin: a random sequence may buy more than the deposit; nothing is to be refused.
    portfolio = portfolio_service.create(
        session, who, account_id=account.id, name="props", position_mode=mode, allow_margin=True
    )
    portfolio_service.deposit(session, who, portfolio.id, DEPOSIT)
    return who, portfolio


def _cash(session: Session, portfolio_id: int) -> Decimal:
    cash = session.scalar(select(Portfolio.cash_balance_usd).where(Portfolio.id == portfolio_id))
    assert cash is not None
    return cash


_positions = cast(Table, Position.__table__)


def _written(session: Session, portfolio_id: int) -> tuple[Any, ...]:
    """Everything a fill writes for the portfolio: its cash, its position rows (every
    column), and how many trades and cash movements it has."""
    return (
        _cash(session, portfolio_id),
        session.execute(
            select(_positions)
            .where(_positions.c.portfolio_id == portfolio_id)
            .order_by(_positions.c.id)
        ).all(),
        session.scalar(select(func.count()).where(Trade.portfolio_id == portfolio_id)),
        session.scalar(select(func.count()).where(CashMovement.portfolio_id == portfolio_id)),
    )


def _check(
    session: Session, mode: str, fee_rate: Decimal, slippage: Decimal, sequence: list[Step]
) -> None:
    hedging = mode == "hedging"
    who, portfolio = _portfolio(session, mode, fee_rate, slippage)
    before = _cash(session, portfolio.id)
    placed: list[int] = []
    refusals: dict[int, OrderRejected] = {}  # by the step's index
    for index, step in enumerate(sequence):
        # Only a reduce-only order may be refused here; it must write nothing but itself.
        written = _written(session, portfolio.id) if step.reduce_only else None
        try:
            placed.append(
                order_service.place(
                    session,
                    who,
                    portfolio_id=portfolio.id,
                    symbol=step.symbol,
                    side=step.side,
                    quantity=step.quantity,
                    price=step.hint,
                    reduce_only=step.reduce_only,
                ).id
            )
        except OrderRejected as refused:
            placed.append(refused.details["order_id"])
            refusals[index] = refused
        if index in refusals:
            assert _written(session, portfolio.id) == written, f"step {index} refused"
    after = _cash(session, portfolio.id)

    # Read back with Core-style column selects: the fill path writes with Core, so ORM
    # objects in the session may be stale.
    trades = session.execute(
        select(
            Trade.id,
            Trade.order_id,
            Trade.position_id,
            Trade.symbol,
            Trade.side,
            Trade.quantity,
            Trade.price,
            Trade.value,
            Trade.fee,
            Trade.pnl,
            Trade.pnl_percent,
            Trade.meta,
        )
        .where(Trade.portfolio_id == portfolio.id)
        .order_by(Trade.id)
    ).all()
    stored_rows = session.execute(
        select(
            Position.id,
            Position.symbol,
            Position.direction,
            Position.quantity,
            Position.cost_basis,
            Position.fees_paid,
            Position.realized_pnl,
            Position.status,
        )
        .where(Position.portfolio_id == portfolio.id)
        .order_by(Position.id)
    ).all()
    orders = session.execute(
        select(
            Order.id,
            Order.status,
            Order.filled_quantity,
            Order.average_fill_price,
            Order.fee,
            Order.algo_params,
            Order.reject_reason,
        )
        .where(Order.portfolio_id == portfolio.id)
        .order_by(Order.id)
    ).all()
    events = session.execute(
        select(
            OrderEvent.order_id, OrderEvent.event_type, OrderEvent.from_status, OrderEvent.to_status
        )
        .where(OrderEvent.order_id.in_(placed))
        .order_by(OrderEvent.order_id, OrderEvent.id)
    ).all()
    movements = session.execute(
        select(
            CashMovement.kind,
            CashMovement.amount,
            CashMovement.balance_after,
            CashMovement.trade_id,
        )
        .where(CashMovement.portfolio_id == portfolio.id)
        .order_by(CashMovement.id)
    ).all()
    by_order: dict[int, list[tuple[str, str | None, str]]] = defaultdict(list)
    for e in events:
        by_order[e.order_id].append((e.event_type, e.from_status, e.to_status))
    assert [o.id for o in orders] == placed

    # Walk the steps with the replay: it decides which reduce-only orders are refused (the
    # opposite side it holds is smaller), and every other order must have filled, with
    # one trade, the next stored one, that the replay books.
    replay = Replay(hedging=hedging)
    effects: list[Replayed] = []
    pending = iter(trades)
    for index, (step, order) in enumerate(zip(sequence, orders, strict=True)):
        options = {"reduce_only": True} if step.reduce_only else None
        reducible = replay.reducible(step.symbol, step.side)
        if step.reduce_only and step.quantity > reducible:
            # Refused, kept as a rejected order that filled nothing (and, checked above
            # while placing, wrote no trade, cash or position).
            refused = refusals.get(index)
            assert refused is not None, f"step {index}: {step} beyond {reducible} was filled"
            assert refused.details["cause"] == "reduce_only_refused"
            assert refused.details["direction"] == _target(step.side)
            assert Decimal(refused.details["open"]) == reducible
            assert (order.status, order.filled_quantity, order.average_fill_price) == (
                "rejected",
                ZERO,
                None,
            )
            assert (order.fee, order.algo_params) == (ZERO, options)
            assert order.reject_reason == refused.details["reason"]
            assert by_order[order.id] == [
                ("created", None, "pending"),
                ("rejected", "pending", "rejected"),
            ], order.id
            continue
        assert index not in refusals, f"step {index}: {step} refused: {refusals.get(index)}"
        trade = next(pending, None)
        assert trade is not None and trade.order_id == order.id, index
        assert by_order[order.id] == [
            ("created", None, "pending"),
            ("accepted", "pending", "open"),
            ("filled", "open", "filled"),
        ], order.id
        # The fill is the paper broker's: the hint moved by slippage against the taker,
        # and a fee of fee_rate x value, both to 18 places.
        with localcontext(_EXACT):
            move = step.hint * slippage / 10_000
            price = (step.hint + move if step.side == "buy" else step.hint - move).quantize(
                QUANTUM, rounding=ROUND_HALF_EVEN
            )
            fee = (step.quantity * price * fee_rate).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
            assert (trade.symbol, trade.side, trade.quantity, trade.price, trade.fee) == (
                step.symbol,
                step.side,
                step.quantity,
                price,
                fee,
            )
            assert trade.value == trade.quantity * trade.price
        assert (
            order.status,
            order.filled_quantity,
            order.average_fill_price,
            order.fee,
            order.algo_params,
        ) == ("filled", trade.quantity, trade.price, trade.fee, options)
        closes = hedging and step.reduce_only
        assert trade.meta == ({"closes": True} if closes else {}), trade.id
        effect = replay.apply(
            trade.symbol, trade.side, trade.quantity, trade.price, trade.fee, closes
        )
        if step.reduce_only:  # it closed part or all of the opposite side, nothing more
            assert effect.pnl is not None
            assert replay.rows[effect.row].direction == _target(step.side)
        effects.append(effect)
    assert next(pending, None) is None

    # (a) the stored rows, open and closed, are a replay of the stored trades.
    assert [tuple(r[1:]) for r in stored_rows] == [r.as_stored() for r in replay.rows]
    row_ids = [r.id for r in stored_rows]
    for trade, effect in zip(trades, effects, strict=True):
        assert (trade.position_id, trade.pnl) == (row_ids[effect.row], effect.pnl), trade.id
        if effect.pnl is not None:
            with localcontext(_EXACT):
                percent = (effect.pnl * 100 / effect.released_cost).quantize(
                    QUANTUM, rounding=ROUND_HALF_EVEN
                )
            assert trade.pnl_percent == percent, trade.id
        elif hedging:  # a hedging fill realizes only when it closes
            assert trade.meta == {}, trade.id

    with localcontext(_EXACT):
        change = after - before
        realized = sum((t.pnl for t in trades if t.pnl is not None), ZERO)
        # (b) a book that ends flat has realized exactly the change in cash; in general the
        # cash moved by the realized P&L less what the open rows cost (a short's sale value
        # comes in), and less their opening fees.
        if all(r.status == "closed" for r in stored_rows):
            assert realized == change
        held = sum(
            (
                (-r.cost_basis if r.direction == "long" else r.cost_basis) - r.fees_paid
                for r in stored_rows
                if r.status == "open"
            ),
            ZERO,
        )
        assert realized + held == change

        # (c) quantities are conserved: Σ signed fills == Σ signed open positions; in
        # hedging mode also by side: a long holds its opening buys less its closing sells,
        # a short its opening sells less its closing buys.
        for symbol in SYMBOLS:
            filled = sum(
                (
                    t.quantity if t.side == "buy" else -t.quantity
                    for t in trades
                    if t.symbol == symbol
                ),
                ZERO,
            )
            stored_open = sum(
                (
                    r.quantity if r.direction == "long" else -r.quantity
                    for r in stored_rows
                    if r.symbol == symbol and r.status == "open"
                ),
                ZERO,
            )
            assert filled == stored_open == replay.signed_open(symbol), symbol
            if not hedging:
                continue
            for direction in ("long", "short"):
                opened = sum(
                    (
                        t.quantity
                        for t in trades
                        if (t.symbol, _direction(t.side)) == (symbol, direction)
                        and not t.meta.get("closes")
                    ),
                    ZERO,
                )
                closed = sum(
                    (
                        t.quantity
                        for t in trades
                        if (t.symbol, _target(t.side)) == (symbol, direction)
                        and t.meta.get("closes")
                    ),
                    ZERO,
                )
                stored_side = sum(
                    (
                        r.quantity
                        for r in stored_rows
                        if (r.symbol, r.direction, r.status) == (symbol, direction, "open")
                    ),
                    ZERO,
                )
                assert opened - closed == stored_side, (symbol, direction)

        # (d) the cash ledger: the deposit, then one movement per trade of its cash change,
        # each balance the running sum; the trades' movements add up to the change.
        assert [(m.kind, m.amount, m.trade_id) for m in movements] == [
            ("deposit", DEPOSIT, None),
            *(
                (
                    "trade",
                    -(t.value + t.fee) if t.side == "buy" else t.value - t.fee,
                    t.id,
                )
                for t in trades
            ),
        ]
        running = ZERO
        for m in movements:
            running += m.amount
            assert m.balance_after == running
        assert running == after
        assert sum((m.amount for m in movements[1:]), ZERO) == change

    # What the example exercised (pytest --hypothesis-show-statistics).
    event(f"refused: {min(len(refusals), 2)}{'+' if len(refusals) > 1 else ''}")
    reductions = sum(1 for s, e in zip(sequence, orders, strict=True) if s.reduce_only) - len(
        refusals
    )
    event(f"reduce-only fills: {min(reductions, 3)}{'+' if reductions > 2 else ''}")
    event("ends flat" if all(r.status == "closed" for r in stored_rows) else "ends open")
    if (
        hedging
        and any(r.direction == "long" for r in stored_rows)
        and any(r.direction == "short" for r in stored_rows)
    ):
        event("a long and a short of one portfolio")
    sides = [(r.symbol, r.direction) for r in stored_rows]
    if len(set(sides)) < len(sides):
        event("a side closed and opened again")

    # (e) `tradebase reconcile` replays the same ledger through pnl.py and agrees.
    report = reconcile(session, portfolio.id)
    assert report.differences == []
    assert report.fills == len(trades)


@pytest.mark.parametrize("mode", MODES)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fee_rate=fee_rates, slippage=slippages, data=st.data())
def test_stored_positions_are_a_replay_of_the_fills(
    session: Session, mode: str, fee_rate: Decimal, slippage: Decimal, data: st.DataObject
) -> None:
    sequence = data.draw(sequences(mode), label="sequence")
    # One test session serves every example: each runs in a savepoint that is rolled back,
    # and the identity map is emptied, since SQLite hands the rolled-back ids out again.
    savepoint = session.begin_nested()
    try:
        _check(session, mode, fee_rate, slippage, sequence)
    finally:
        savepoint.rollback()
        session.expunge_all()


# --- bugs found while choosing the drawn ranges (fixed since: regressions) --------------


def _place(
    session: Session,
    who: Principal,
    portfolio: Portfolio,
    side: str,
    quantity: str,
    hint: str,
    symbol: str = "ACME",
    **options: Any,
) -> Order:
    return order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol=symbol,
        side=side,
        quantity=Decimal(quantity),
        price=Decimal(hint),
        **options,
    )


def test_a_large_position_keeps_every_digit(session: Session) -> None:
    """An IDR position of 3 million shares keeps its exact cost after a partial close.

    pnl.py `_close` computes ``lot.cost - cost`` in Python's default decimal context (28
    significant digits), so a cost of 11 integer digits less an 18-place share is rounded
    to 17 places, although the column holds 38 digits.
    """
    who, portfolio = _portfolio(session, "netting", ZERO, ZERO)
    portfolio_service.deposit(session, who, portfolio.id, Decimal(10) ** 11)
    before = _cash(session, portfolio.id)
    _place(session, who, portfolio, "buy", "1000000", "10000")
    _place(session, who, portfolio, "buy", "2000000", "10001")  # cost 30002000000 for 3M
    _place(session, who, portfolio, "sell", "1000000", "10050")  # releases 1/3 of it
    cost_basis = session.scalar(
        select(Position.cost_basis).where(
            Position.portfolio_id == portfolio.id, Position.status == "open"
        )
    )
    _place(session, who, portfolio, "sell", "2000000", "10050")
    pnl = session.scalars(
        select(Trade.pnl).where(Trade.portfolio_id == portfolio.id, Trade.pnl.is_not(None))
    ).all()
    with localcontext(_EXACT):
        change = _cash(session, portfolio.id) - before  # 148000000
        realized = sum(pnl, ZERO)
    # 30002000000 - 10000666666.666666666666666667; flat, the P&L is the change in cash.
    # Today: 20001333333.33333333333333333 and Σ P&L 148000000.000000000000000003.
    assert (cost_basis, realized) == (Decimal("20001333333.333333333333333333"), change)


def test_a_large_balance_keeps_every_digit(session: Session) -> None:
    """Cash of 11 integer digits moved by an 18-place amount keeps every digit.

    `PortfolioService.move_cash` adds in the default decimal context (28 digits), so the
    balance is rounded while the ledger keeps the exact amount: Σ ledger != cash.
    """
    who, portfolio = _portfolio(session, "netting", Decimal("0.00075"), Decimal(5))
    portfolio_service.deposit(session, who, portfolio.id, Decimal(10) ** 11)  # JPY
    _place(session, who, portfolio, "buy", "0.12345678", "10234567.89", symbol="BTC/JPY")
    amounts = session.scalars(
        select(CashMovement.amount).where(CashMovement.portfolio_id == portfolio.id)
    ).all()
    # 100001000000 - 1265106.678708831339297825; today ...70218 (rounded to 28 digits).
    assert _cash(session, portfolio.id) == Decimal("99999734893.321291168660702175")
    with localcontext(_EXACT):
        assert sum(amounts, ZERO) == _cash(session, portfolio.id)


def test_a_fill_too_precise_to_store_is_refused_not_crashed(session: Session) -> None:
    """A market order whose fill value has more than 18 places is rejected, or filled.

    With 2.5 bps of slippage the paper broker's price of a low-priced coin has 12 places
    (0.000012343085), and 12345.12345678 x that has 19: the position insert refuses the
    value with a bare ValueError, so `place` neither fills nor records a rejected order
    (over the API: the 500 of an unexpected error).
    """
    who, portfolio = _portfolio(session, "netting", Decimal("0.001"), Decimal("2.5"))
    try:
        order = _place(session, who, portfolio, "buy", "12345.12345678", "0.00001234", "SHIB")
    except OrderRejected as refused:
        rejected = session.get(Order, refused.details["order_id"])
        assert rejected is not None and rejected.status == "rejected"
    else:
        trade = session.scalars(select(Trade).where(Trade.order_id == order.id)).one()
        assert trade.value == trade.quantity * trade.price


# --- reduce-only orders the market-order properties do not reach (fail until src is fixed) -


def _open_sides(session: Session, portfolio: Portfolio) -> dict[str, tuple[Decimal, Decimal]]:
    rows = session.execute(
        select(Position.direction, Position.quantity, Position.cost_basis).where(
            Position.portfolio_id == portfolio.id, Position.status == "open"
        )
    ).all()
    return {r.direction: (r.quantity, r.cost_basis) for r in rows}


def _bar(session: Session, price: str) -> int:
    """A bar that opens, and closes, at *price*: it reaches every resting limit there."""
    p = Decimal(price)
    return order_service.match_bar(
        session, symbol="ACME", exchange="paper", bar=Bar(p, p + 1, p - 1, p, Decimal(1000)),
        at=utc_now(),
    )  # fmt: skip


def test_a_resting_reduce_only_sell_closes_a_hedging_long(session: Session) -> None:
    """A reduce_only limit sell in a hedging portfolio closes 4 of the long of 10.

    `_place_resting` keeps ``{"reduce_only": true}`` in the order's algo_params, but
    `_fill_resting` hands `_book` the order's values without algo_params, so `_book`
    books the fill with ``closes=False``. Today the fill opens a short of 4 beside the
    long (pnl None, metadata {}), the opposite of what the order asked.
    """
    who, portfolio = _portfolio(session, "hedging", ZERO, ZERO)
    _place(session, who, portfolio, "buy", "10", "100")
    limit = _place(session, who, portfolio, "sell", "4", "105", order_type="limit",
                   reduce_only=True)  # fmt: skip
    assert (limit.status, limit.algo_params) == ("open", {"reduce_only": True})
    assert _bar(session, "105") == 1
    trade = session.execute(
        select(Trade.price, Trade.pnl, Trade.meta).where(Trade.order_id == limit.id)
    ).one()
    assert _open_sides(session, portfolio) == {"long": (Decimal(6), Decimal(600))}
    assert (trade.pnl, trade.meta) == (4 * (trade.price - 100), {"closes": True})
    assert reconcile(session, portfolio.id).differences == []


def test_a_resting_reduce_only_sell_never_reverses_a_netting_long(session: Session) -> None:
    """A reduce_only limit sell of 10 against a netting long of 4 may not go short.

    Neither `_place_resting` nor `_fill_resting` checks reduce_only (`_check_reduces` runs
    for market orders only), so today the order rests and its fill reverses the long into
    a short of 6. Refusing it when placed, or when it would fill, both pass this test.
    """
    who, portfolio = _portfolio(session, "netting", ZERO, ZERO)
    _place(session, who, portfolio, "buy", "4", "100")
    with suppress(OrderRejected):  # refused when placed: fine
        _place(session, who, portfolio, "sell", "10", "105", order_type="limit",
               reduce_only=True)  # fmt: skip
    _bar(session, "105")
    assert "short" not in _open_sides(session, portfolio)
    assert reconcile(session, portfolio.id).differences == []


def test_a_reduce_only_cnc_sell_closes_a_hedging_cnc_long(session: Session) -> None:
    """reduce_only is how a hedging position closes (orders/schemas.py): a CNC long too.

    settlement.py `_check_sell`, which `_insert_order` runs for every CNC sell, refuses a
    CNC sell in a hedging portfolio while a CNC long is open ("an order cannot reduce a
    hedging position; sell once it has settled", written before reduce_only existed), so
    today the reduce_only sell of 4 raises CncSellExceedsPosition and no order is kept:
    a hedging CNC long cannot be closed before it settles.
    """
    who, portfolio = _portfolio(session, "hedging", ZERO, ZERO)
    _place(session, who, portfolio, "buy", "10", "100", product="CNC")
    sell = _place(session, who, portfolio, "sell", "4", "110", product="CNC", reduce_only=True)
    trade = session.execute(select(Trade.pnl, Trade.meta).where(Trade.order_id == sell.id)).one()
    assert (trade.pnl, trade.meta) == (Decimal(40), {"closes": True})  # 4 x (110 - 100)
    assert _open_sides(session, portfolio) == {"long": (Decimal(6), Decimal(600))}
    assert reconcile(session, portfolio.id).differences == []
