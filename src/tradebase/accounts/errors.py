"""Errors of users, logins, API keys and sessions."""

from __future__ import annotations

from tradebase.core.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized


class InvalidCredentials(Unauthorized):
    """Wrong password, unknown user or locked account: one answer for all three."""

    code = "invalid_credentials"
    commit_work = True  # the failure counter must persist although the request fails

    def __init__(self) -> None:
        super().__init__("invalid username or password")


class TotpRequired(Unauthorized):
    code = "totp_required"
    commit_work = True


class InvalidTotp(Unauthorized):
    code = "invalid_totp"
    commit_work = True


class UserNotFound(NotFound):
    code = "user_not_found"


class UsernameTaken(Conflict):
    code = "username_taken"


class WeakPassword(BadRequest):
    code = "weak_password"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class ScopeNotAllowed(Forbidden):
    code = "scope_not_allowed"


class ReadOnlyRole(Forbidden):
    code = "read_only"


class TotpAlreadyEnabled(Conflict):
    code = "totp_already_enabled"


class LastAdmin(Conflict):
    code = "last_admin"


class TotpNotEnrolled(BadRequest):
    code = "totp_not_enrolled"


class TradingPaused(Conflict):
    """The user paused all trading (the kill switch); nothing was written."""

    code = "trading_paused"
