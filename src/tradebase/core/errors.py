"""Domain errors: the HTTP status lives on the class, one handler renders them all.

Services raise these (never ``HTTPException``); the app renders every error as
``{"error": {"code": ..., "message": ..., "details": ...}}``. Expected failures are 4xx,
so a 500 always means a bug.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class TradebaseError(Exception):
    """Base of every expected failure."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str | None] = None  # default: the class name in snake_case
    # True when the unit of work must commit what it did before the error (e.g. a failed
    # login's counter, a rejected signal's record) instead of rolling back.
    commit_work: ClassVar[bool] = False
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    @property
    def error_code(self) -> str:
        return self.code or _snake(type(self).__name__)

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {"code": self.error_code, "message": self.message, "details": self.details}
        }


class BadRequest(TradebaseError):
    status_code = 400


class Unauthorized(TradebaseError):
    status_code = 401
    code = "unauthorized"


class Forbidden(TradebaseError):
    status_code = 403
    code = "forbidden"


class NotFound(TradebaseError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(TradebaseError):
    status_code = 413
    code = "payload_too_large"


class Conflict(TradebaseError):
    status_code = 409
    code = "conflict"


class Unprocessable(TradebaseError):
    status_code = 422
    code = "validation_error"


class TooManyRequests(TradebaseError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, details: dict[str, Any] | None = None):
        super().__init__(message, details={"retry_after": retry_after, **(details or {})})
        self.headers = {"Retry-After": str(retry_after)}
