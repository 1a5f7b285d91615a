"""The order lifecycle as data: which status may follow which (DESIGN.md §4).

Modelled on nautilus_trader's ``_ORDER_STATE_TABLE``: a move is legal only if it is in
`TRANSITIONS`; anything else raises `InvalidOrderTransition`. Pure: no database here.

    pending -> open -> partially_filled -> filled
    pending | open | partially_filled -> cancelled
    pending -> rejected
    open | partially_filled -> expired

plus the moves those arrows imply for real markets: an open order filled at once
(open -> filled) and further partial fills (partially_filled -> partially_filled).
"""

from __future__ import annotations

from tradebase.orders.errors import InvalidOrderTransition
from tradebase.orders.models import OrderStatus

S = OrderStatus

TRANSITIONS: frozenset[tuple[OrderStatus, OrderStatus]] = frozenset(
    {
        (S.pending, S.open),
        (S.pending, S.cancelled),
        (S.pending, S.rejected),
        (S.open, S.partially_filled),
        (S.open, S.filled),
        (S.open, S.cancelled),
        (S.open, S.expired),
        (S.partially_filled, S.partially_filled),
        (S.partially_filled, S.filled),
        (S.partially_filled, S.cancelled),
        (S.partially_filled, S.expired),
    }
)

TERMINAL: frozenset[OrderStatus] = frozenset({S.filled, S.cancelled, S.rejected, S.expired})
RESTING: frozenset[OrderStatus] = frozenset({S.open, S.partially_filled})
CANCELLABLE: frozenset[OrderStatus] = frozenset({S.pending, S.open, S.partially_filled})


def can_move(current: str, target: str) -> bool:
    return (OrderStatus(current), OrderStatus(target)) in TRANSITIONS


def check_move(current: str, target: str) -> OrderStatus:
    """Return *target* as a status, or raise if the lifecycle does not allow the move."""
    if not can_move(current, target):
        raise InvalidOrderTransition(
            f"an order that is {current} cannot become {target}",
            details={"from": str(current), "to": str(target)},
        )
    return OrderStatus(target)


def is_terminal(status: str) -> bool:
    """Terminal orders take no more events; a late one is dropped, not applied."""
    return OrderStatus(status) in TERMINAL
