"""Errors of portfolios and positions."""

from __future__ import annotations

from tradebase.core.errors import BadRequest, Conflict, NotFound, Unprocessable


class CloseExceedsPosition(Conflict):
    code = "close_exceeds_position"


class AccountNotFound(NotFound):
    code = "account_not_found"


class PortfolioNotFound(NotFound):
    code = "portfolio_not_found"


class AccountNameTaken(Conflict):
    code = "account_name_taken"


class InsufficientCash(Unprocessable):
    code = "insufficient_cash"


class CncSellExceedsPosition(CloseExceedsPosition):
    """A CNC sell for more than the open CNC position and the holding cover together (no
    CNC short selling; in a hedging portfolio, the holding alone, and not while a CNC long
    is open)."""

    code = "cnc_sell_exceeds_position"


class SettlementInFuture(BadRequest):
    code = "settlement_in_future"
