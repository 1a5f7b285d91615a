"""Errors of brokers."""

from __future__ import annotations

from tradebase.core.errors import Unprocessable


class NoPrice(Unprocessable):
    code = "no_price"
