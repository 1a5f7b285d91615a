"""The order state table, against DESIGN.md §4 written out by hand."""

from __future__ import annotations

import itertools

import pytest

from tradebase.orders.errors import InvalidOrderTransition
from tradebase.orders.models import OrderStatus
from tradebase.orders.state import check_move, is_terminal

ALLOWED = {
    ("pending", "open"),
    ("pending", "cancelled"),
    ("pending", "rejected"),
    ("open", "partially_filled"),
    ("open", "filled"),
    ("open", "cancelled"),
    ("open", "expired"),
    ("partially_filled", "partially_filled"),
    ("partially_filled", "filled"),
    ("partially_filled", "cancelled"),
    ("partially_filled", "expired"),
}


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(list(OrderStatus), repeat=2))
)
def test_every_pair_of_statuses(current: OrderStatus, target: OrderStatus) -> None:
    if (current.value, target.value) in ALLOWED:
        assert check_move(current, target) is target
    else:
        with pytest.raises(InvalidOrderTransition) as info:
            check_move(current, target)
        assert info.value.status_code == 409
        assert info.value.details == {"from": current.value, "to": target.value}


def test_terminal_statuses() -> None:
    assert {s.value for s in OrderStatus if is_terminal(s)} == {
        "filled",
        "cancelled",
        "rejected",
        "expired",
    }
