"""Errors of brokers."""

from __future__ import annotations

from typing import Any

from tradebase.core.errors import TradebaseError, Unprocessable


class NoPrice(Unprocessable):
    code = "no_price"


class BrokerUnreachable(TradebaseError):
    """The broker did not answer: refused the connection, timed out or broke off.

    ``maybe_sent`` says whether the request may have reached it (a read timeout, a broken
    answer) or surely did not (the connection was never made)."""

    status_code = 503
    code = "broker_unreachable"

    def __init__(
        self, message: str, *, maybe_sent: bool, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={"maybe_sent": maybe_sent, **(details or {})})
        self.maybe_sent = maybe_sent


class BrokerTimeout(BrokerUnreachable):
    """The broker took longer than TRADEBASE_BROKER_TIMEOUT_SECONDS to answer: the request
    may have reached it."""

    code = "broker_timeout"


class BrokerRefused(Unprocessable):
    """The broker answered and said no (its message is the reason)."""

    code = "broker_refused"


class BrokerNotConfigured(Unprocessable):
    code = "broker_not_configured"
