"""Errors of signals. A refused signal is kept (status rejected, with the reason) and is
answered with one of these; the status code and code are stored with it, so a repeat of
the same signal answers exactly as the first did."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from tradebase.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    TradebaseError,
    Unauthorized,
    Unprocessable,
)


class WebhookKeyInvalid(Unauthorized):
    code = "webhook_key_invalid"


class SenderNotAllowed(Forbidden):
    code = "sender_not_allowed"


class SignatureInvalid(Unauthorized):
    code = "signature_invalid"


class SignalMalformed(BadRequest):
    """The body is not a JSON object."""

    code = "signal_malformed"


class SignalRefused(TradebaseError):
    """Base of the refusals stored with a rejected signal."""

    status_code: ClassVar[int] = 422


class SignalInvalid(SignalRefused, Unprocessable):
    code = "signal_invalid"


class StrategyUnknown(SignalRefused, Unprocessable):
    code = "strategy_unknown"


class StrategyInactive(SignalRefused, Unprocessable):
    code = "strategy_inactive"


class AccountUnknown(SignalRefused, Unprocessable):
    code = "account_unknown"


class MarketClosed(SignalRefused, Unprocessable):
    code = "market_closed"


class TradingPaused(SignalRefused, Conflict):
    status_code = 409
    code = "trading_paused"


class RiskLimitBreached(SignalRefused, Unprocessable):
    code = "risk_limit_breached"


class OrderRefused(SignalRefused, Unprocessable):
    """The broker side refused the order (no price, not enough cash, ...)."""

    code = "order_refused"


class SignalNotFound(TradebaseError):
    status_code = 404
    code = "signal_not_found"


@functools.cache
def _refusal_class(status_code: int, code: str) -> type[TradebaseError]:
    return type("StoredRefusal", (TradebaseError,), {"status_code": status_code, "code": code})


def stored_refusal(
    message: str, *, status_code: int, code: str, details: dict[str, Any]
) -> TradebaseError:
    """A rejected signal's answer, rebuilt from what was stored with it."""
    return _refusal_class(status_code, code)(message, details=details)


class SignalFailed(TradebaseError):
    status_code = 500
    code = "signal_failed"
