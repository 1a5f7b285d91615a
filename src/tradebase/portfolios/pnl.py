"""Fills -> positions -> cash, exactly (DESIGN.md §4). Pure: no database here.

A position keeps its exact cost basis and the opening fees not yet charged to a close, so
every close releases a pro-rata share of both and the last close releases whatever is
left. Rounding (to 18 decimal places) can move a share between two closes of the same
position but never loses or invents a unit: over a sequence of fills that ends flat, the
realized P&L adds up to the change in cash exactly.

* Netting: one position per symbol; a fill against it reduces it, and a fill larger than it
  closes it and opens the other side with the rest, the fee split pro rata by quantity.
* Hedging: a long and a short may be open at once; a fill opens or adds to its own side
  unless it closes (``closes=True``), and then reduces the opposite side, never reversing.

Realized P&L of a close is net of fees: the closing fee (its share, on a reversal) plus
the closed share of the opening fees.

* Holdings (CNC, settled): a CNC sell first reduces the open CNC long position and then
  draws on the holding (`split_cnc_sell`, `sell_holding`). A holding carries no opening
  fees (settlement leaves them on the settled position row), so the holding part's
  realized P&L is its value less its cost at the holding's average and its share of the
  sell fee.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

from tradebase.core.money import pro_rata, quantize
from tradebase.portfolios.errors import CloseExceedsPosition, CncSellExceedsPosition

ZERO = Decimal(0)
BUY, SELL = "buy", "sell"
LONG, SHORT = "long", "short"


@dataclass(frozen=True)
class Fill:
    side: str  # buy | sell
    quantity: Decimal
    price: Decimal
    fee: Decimal = ZERO
    closes: bool = False  # hedging mode: this fill closes the opposite side

    def __post_init__(self) -> None:
        if self.side not in (BUY, SELL):
            raise ValueError(f"side must be buy or sell, not {self.side!r}")
        if self.quantity <= 0 or self.price <= 0 or self.fee < 0:
            raise ValueError("a fill needs a positive quantity and price and a fee >= 0")

    @property
    def value(self) -> Decimal:
        return self.quantity * self.price

    @property
    def cash_change(self) -> Decimal:
        """A buy costs value + fee; a sell brings value - fee."""
        return -(self.value + self.fee) if self.side == BUY else self.value - self.fee


@dataclass(frozen=True)
class Lot:
    """An open position: direction, quantity, exact cost basis and unreleased open fees."""

    direction: str  # long | short
    quantity: Decimal
    cost: Decimal  # sum of quantity x price of what is still open
    open_fees: Decimal = ZERO

    @property
    def entry_price(self) -> Decimal:
        """Average cost per unit (rounded for display; `cost` is the exact figure)."""
        return quantize(self.cost / self.quantity)

    def unrealized(self, price: Decimal) -> Decimal:
        """P&L if closed at *price*, before closing fees (opening fees included)."""
        gross = self.quantity * price - self.cost
        return (gross if self.direction == LONG else -gross) - self.open_fees


@dataclass(frozen=True)
class Close:
    """What a fill closed: its quantity, the realized P&L (net of fees) and the price."""

    direction: str
    quantity: Decimal
    price: Decimal
    realized: Decimal
    fee: Decimal  # the closing fill's fee charged to this close
    released_fees: Decimal  # the opening fees charged to this close
    flat: bool  # the position is now closed


@dataclass(frozen=True)
class Outcome:
    """A fill applied to a position: what it closed, what is open afterwards, and cash."""

    before: Lot | None
    after: Lot | None
    closed: Close | None = None
    opened_fee: Decimal = ZERO  # the fee share that opened or added to a position
    cash_change: Decimal = ZERO

    @property
    def realized(self) -> Decimal:
        return self.closed.realized if self.closed else ZERO


def _side_direction(side: str) -> str:
    return LONG if side == BUY else SHORT


def _close(lot: Lot, quantity: Decimal, price: Decimal, fee: Decimal) -> tuple[Close, Lot | None]:
    cost = pro_rata(lot.cost, quantity, lot.quantity)
    fees = pro_rata(lot.open_fees, quantity, lot.quantity)
    gross = quantity * price - cost
    if lot.direction == SHORT:
        gross = -gross
    remaining = lot.quantity - quantity
    after = (
        None
        if remaining == 0
        else Lot(lot.direction, remaining, lot.cost - cost, lot.open_fees - fees)
    )
    close = Close(lot.direction, quantity, price, gross - fee - fees, fee, fees, after is None)
    return close, after


def apply_netting(lot: Lot | None, fill: Fill) -> Outcome:
    """Apply *fill* to the one position of its symbol (netting mode)."""
    direction = _side_direction(fill.side)
    cash = fill.cash_change
    if lot is None or lot.direction == direction:
        grown = (
            Lot(direction, fill.quantity, fill.value, fill.fee)
            if lot is None
            else replace(
                lot,
                quantity=lot.quantity + fill.quantity,
                cost=lot.cost + fill.value,
                open_fees=lot.open_fees + fill.fee,
            )
        )
        return Outcome(lot, grown, None, fill.fee, cash)
    if fill.quantity <= lot.quantity:
        close, left = _close(lot, fill.quantity, fill.price, fill.fee)
        return Outcome(lot, left, close, ZERO, cash)
    # A reversal: close all of it, open the other side with the rest; the fee is split
    # pro rata by quantity, the opening part taking the exact remainder.
    closing_fee = pro_rata(fill.fee, lot.quantity, fill.quantity)
    close, _ = _close(lot, lot.quantity, fill.price, closing_fee)
    rest = fill.quantity - lot.quantity
    opening_fee = fill.fee - closing_fee
    reversed_lot = Lot(direction, rest, rest * fill.price, opening_fee)
    return Outcome(lot, reversed_lot, close, opening_fee, cash)


def apply_hedging(lots: dict[str, Lot], fill: Fill) -> tuple[dict[str, Lot], Outcome]:
    """Apply *fill* in hedging mode to the open lots by direction (long and/or short)."""
    lots = dict(lots)
    if not fill.closes:
        direction = _side_direction(fill.side)
        outcome = apply_netting(lots.get(direction), fill)
        assert outcome.after is not None
        lots[direction] = outcome.after
        return lots, outcome
    target = SHORT if fill.side == BUY else LONG
    lot = lots.get(target)
    if lot is None or fill.quantity > lot.quantity:
        held = lot.quantity if lot else ZERO
        raise CloseExceedsPosition(
            f"cannot close {fill.quantity} of a {target} position of {held}",
            details={"direction": target, "open": str(held), "requested": str(fill.quantity)},
        )
    outcome = apply_netting(lot, fill)
    if outcome.after is None:
        lots.pop(target)
    else:
        lots[target] = outcome.after
    return lots, outcome


@dataclass(frozen=True)
class Held:
    """A holding: its quantity and exact invested value (sum of quantity x price, no fees)."""

    quantity: Decimal
    invested: Decimal


@dataclass(frozen=True)
class HoldingSale:
    """The part of a CNC sell that a holding delivered: its quantity and price, its exact
    cost at the holding's average and its share of the sell fee."""

    quantity: Decimal
    price: Decimal
    cost: Decimal
    fee: Decimal

    @property
    def realized(self) -> Decimal:
        """Value less cost less fee: no opening fees, a holding carries none."""
        return self.quantity * self.price - self.cost - self.fee

    @property
    def cash_change(self) -> Decimal:
        return self.quantity * self.price - self.fee


def split_cnc_sell(open_long: Decimal, fill: Fill) -> tuple[Fill | None, Fill | None]:
    """Split a CNC sell into the part that reduces the open CNC long position (of
    *open_long*, bought since the last settlement) and the rest, which the holding must
    deliver; either may be None. The fee is split pro rata by quantity, the holding's part
    taking the exact remainder (as a reversal splits it)."""
    if fill.side != SELL:
        raise ValueError("only a sell draws on a holding")
    if fill.quantity <= open_long:
        return fill, None
    if open_long <= 0:
        return None, fill
    fee = pro_rata(fill.fee, open_long, fill.quantity)
    rest = Fill(SELL, fill.quantity - open_long, fill.price, fill.fee - fee)
    return Fill(SELL, open_long, fill.price, fee), rest


def sell_holding(held: Held, fill: Fill) -> tuple[HoldingSale, Held | None]:
    """Deliver the sell *fill* from *held*: the sale, and what is left (None: sold out).

    The cost is the pro-rata share of the invested value, i.e. quantity x the exact
    average price, rounded; selling the last unit releases whatever is left, so the
    shares add up to the invested value exactly and the average of the rest stays put.
    """
    if fill.side != SELL:
        raise ValueError("only a sell draws on a holding")
    if fill.quantity > held.quantity:
        raise CncSellExceedsPosition(
            f"cannot deliver {fill.quantity} from a holding of {held.quantity}",
            details={"holding": str(held.quantity), "requested": str(fill.quantity)},
        )
    cost = pro_rata(held.invested, fill.quantity, held.quantity)
    sale = HoldingSale(fill.quantity, fill.price, cost, fill.fee)
    remaining = held.quantity - fill.quantity
    return sale, None if remaining == 0 else Held(remaining, held.invested - cost)


@dataclass
class Book:
    """Replays a ledger of fills for one symbol: the lots, realized P&L and cash."""

    hedging: bool = False
    lots: dict[str, Lot] = field(default_factory=dict)
    realized: Decimal = ZERO
    cash: Decimal = ZERO
    closes: list[Close] = field(default_factory=list)

    def apply(self, fill: Fill) -> Outcome:
        if self.hedging:
            self.lots, outcome = apply_hedging(self.lots, fill)
        else:
            lot = next(iter(self.lots.values()), None)
            outcome = apply_netting(lot, fill)
            self.lots = {} if outcome.after is None else {outcome.after.direction: outcome.after}
        self.cash += outcome.cash_change
        if outcome.closed:
            self.realized += outcome.closed.realized
            self.closes.append(outcome.closed)
        return outcome

    @property
    def net_quantity(self) -> Decimal:
        """Long minus short."""
        return sum(
            (
                lot.quantity if lot.direction == LONG else -lot.quantity
                for lot in self.lots.values()
            ),
            ZERO,
        )
