"""Performance figures from an equity curve and closed trades (DESIGN.md §4). Pure.

* Sharpe: mean over sample standard deviation of the period returns of the equity curve
  (daily snapshots), times the square root of the periods per year (default 365),
  risk-free rate 0. None with fewer than two returns or no variation.
* Max drawdown: the deepest fall from a running peak, in percent, <= 0.
* Win rate: the percent of closing fills with realized P&L > 0.

Computed in Decimal with 40 significant digits, then rounded to the columns' 18 places.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Context, Decimal
from itertools import pairwise

from tradebase.core.money import quantize

_CTX = Context(prec=40)
ZERO = Decimal(0)
HUNDRED = Decimal(100)


def returns(equity: Sequence[Decimal]) -> list[Decimal]:
    """Period returns V[t] / V[t-1] - 1 (periods whose start value is 0 are skipped)."""
    return [_CTX.subtract(_CTX.divide(b, a), Decimal(1)) for a, b in pairwise(equity) if a != 0]


def sharpe_ratio(equity: Sequence[Decimal], periods_per_year: int = 365) -> Decimal | None:
    rs = returns(equity)
    if len(rs) < 2:
        return None
    n = Decimal(len(rs))
    mean = _CTX.divide(sum(rs, ZERO), n)
    variance = _CTX.divide(sum((_CTX.power(r - mean, 2) for r in rs), ZERO), n - 1)
    if variance == 0:
        return None
    deviation = _CTX.sqrt(variance)
    return quantize(
        _CTX.multiply(_CTX.divide(mean, deviation), _CTX.sqrt(Decimal(periods_per_year)))
    )


def max_drawdown(equity: Sequence[Decimal]) -> Decimal | None:
    """The deepest fall from a peak, in percent (0 when the curve never falls)."""
    if not equity:
        return None
    peak = equity[0]
    worst = ZERO
    for value in equity:
        peak = max(peak, value)
        if peak > 0:
            worst = min(worst, _CTX.multiply(_CTX.divide(value - peak, peak), HUNDRED))
    return quantize(worst)


def win_rate(closing_pnls: Sequence[Decimal]) -> Decimal | None:
    """Percent of closing fills that made money."""
    if not closing_pnls:
        return None
    wins = sum(1 for pnl in closing_pnls if pnl > 0)
    return quantize(_CTX.divide(Decimal(wins) * HUNDRED, Decimal(len(closing_pnls))))
