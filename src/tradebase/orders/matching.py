"""When a resting order fills against a price bar, and at what price. Pure.

The bar's timestamp is the paper clock, so a run over the same bars is deterministic.

* buy limit L: fills at the open if the bar opens at or below L, else at L if low <= L;
* sell limit L: at the open if it opens at or above L, else at L if high >= L;
* buy stop S: triggers at the open if it opens at or above S (a gap), else at S if
  high >= S; sell stop mirrors it;
* stop_limit: the stop rule triggers it at the stop (or the open on a gap); it fills
  there if that is within its limit, else it rests as a limit order from the next bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Bar:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True)
class Match:
    """What a bar did to a resting order: fill it at ``price`` and/or trigger it (a
    stop_limit that became a limit on this bar; ``price`` is None if it did not fill too)."""

    price: Decimal | None
    triggered: bool = False


def limit_price(side: str, limit: Decimal, bar: Bar) -> Decimal | None:
    if side == "buy":
        if bar.open <= limit:
            return bar.open
        return limit if bar.low <= limit else None
    if bar.open >= limit:
        return bar.open
    return limit if bar.high >= limit else None


def stop_price(side: str, stop: Decimal, bar: Bar) -> Decimal | None:
    if side == "buy":
        if bar.open >= stop:
            return bar.open
        return stop if bar.high >= stop else None
    if bar.open <= stop:
        return bar.open
    return stop if bar.low <= stop else None


def match(
    order_type: str,
    side: str,
    bar: Bar,
    *,
    price: Decimal | None,
    trigger: Decimal | None,
    triggered: bool = False,
) -> Match | None:
    """The fill price of a resting order on *bar*, or None if it does not fill."""
    if order_type == "limit":
        assert price is not None
        fill = limit_price(side, price, bar)
        return Match(fill) if fill is not None else None
    if order_type == "stop_loss":
        assert trigger is not None
        fill = stop_price(side, trigger, bar)
        return Match(fill) if fill is not None else None
    if order_type == "stop_limit":
        assert price is not None and trigger is not None
        if triggered:  # already a limit order
            fill = limit_price(side, price, bar)
            return Match(fill) if fill is not None else None
        at = stop_price(side, trigger, bar)
        if at is None:
            return None
        # Triggered at `at` (the stop, or the open on a gap): it fills there if that is
        # within the limit; otherwise it rests as a limit from the next bar on.
        within = at <= price if side == "buy" else at >= price
        return Match(at if within else None, triggered=True)
    raise ValueError(f"{order_type} orders do not rest")
