"""Errors of portfolios and positions."""

from __future__ import annotations

from tradebase.core.errors import Conflict


class CloseExceedsPosition(Conflict):
    code = "close_exceeds_position"
