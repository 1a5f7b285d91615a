"""Sharpe, max drawdown and win rate against numpy on the same data (to 1e-9)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebase.portfolios.metrics import max_drawdown, sharpe_ratio, win_rate


def _numpy_sharpe(curve: list[float], periods: int) -> float:
    values = np.array(curve)
    r = values[1:] / values[:-1] - 1
    return float(r.mean() / r.std(ddof=1) * math.sqrt(periods))


def _numpy_drawdown(curve: list[float]) -> float:
    values = np.array(curve)
    peaks = np.maximum.accumulate(values)
    return float(((values - peaks) / peaks).min() * 100)


def test_a_worked_equity_curve() -> None:
    curve = [Decimal(v) for v in ("10000", "10100", "10050", "9800", "10300", "10250")]
    floats = [float(v) for v in curve]
    assert abs(float(sharpe_ratio(curve, 365)) - _numpy_sharpe(floats, 365)) < 1e-9  # type: ignore[arg-type]
    # Peak 10100, trough 9800: (9800 - 10100) / 10100 = -2.970297...%
    assert abs(float(max_drawdown(curve)) - (-300 / 10100 * 100)) < 1e-9  # type: ignore[arg-type]
    assert win_rate([Decimal("67.9"), Decimal(-96), Decimal("-104.1"), Decimal(5)]) == Decimal(50)


def test_degenerate_inputs() -> None:
    assert sharpe_ratio([Decimal(1)]) is None
    assert sharpe_ratio([Decimal(1), Decimal(2)]) is None  # one return: no deviation
    assert sharpe_ratio([Decimal(1), Decimal(1), Decimal(1)]) is None  # flat
    assert max_drawdown([Decimal(5), Decimal(6), Decimal(7)]) == 0
    assert max_drawdown([]) is None and win_rate([]) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.decimals(min_value=Decimal(100), max_value=Decimal(1_000_000), places=2),
        min_size=3,
        max_size=120,
    ),
    st.sampled_from([252, 365]),
)
def test_agrees_with_numpy(curve: list[Decimal], periods: int) -> None:
    floats = [float(v) for v in curve]
    expected_sharpe = _numpy_sharpe(floats, periods) if len(set(curve)) > 1 else None
    ours = sharpe_ratio(curve, periods)
    if ours is None or expected_sharpe is None or not math.isfinite(expected_sharpe):
        returns = np.diff(np.array(floats)) / np.array(floats[:-1])
        assert ours is None or returns.std(ddof=1) < 1e-12
    else:
        assert abs(float(ours) - expected_sharpe) <= 1e-9 * max(1.0, abs(expected_sharpe))
    assert abs(float(max_drawdown(curve)) - _numpy_drawdown(floats)) < 1e-9  # type: ignore[arg-type]
