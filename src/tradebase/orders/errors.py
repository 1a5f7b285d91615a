"""Errors of orders and fills."""

from __future__ import annotations

from tradebase.core.errors import Conflict, NotFound, Unprocessable


class InvalidOrderTransition(Conflict):
    code = "invalid_order_transition"


class OrderNotFound(NotFound):
    code = "order_not_found"


class OrderRejected(Unprocessable):
    """The order was refused; it is kept, with status rejected and the reason."""

    code = "order_rejected"
    commit_work = True


class ClientOrderIdTaken(Conflict):
    code = "client_order_id_taken"


class UnsupportedOrder(Unprocessable):
    code = "unsupported_order"


class AmendRefused(Unprocessable):
    code = "amend_refused"


class MarketClosed(Unprocessable):
    code = "market_closed"


class ReduceOnlyRefused(Unprocessable):
    code = "reduce_only_refused"


class FillTooPrecise(Unprocessable):
    """A fill whose value (quantity x price) needs more decimal places than are kept."""

    code = "fill_too_precise"
