"""Errors of portfolios and positions."""

from __future__ import annotations

from tradebase.core.errors import Conflict, NotFound, Unprocessable


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
