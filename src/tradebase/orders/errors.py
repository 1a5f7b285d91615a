"""Errors of orders and fills."""

from __future__ import annotations

from tradebase.core.errors import Conflict


class InvalidOrderTransition(Conflict):
    code = "invalid_order_transition"
