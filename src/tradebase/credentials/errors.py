"""Errors of the credentials domain."""

from __future__ import annotations

from typing import ClassVar

from tradebase.core.errors import Conflict, NotFound, TradebaseError, Unprocessable


class CredentialNotFound(NotFound):
    code = "credential_not_found"


class CredentialInvalid(Unprocessable):
    """A secret, its identity or its access-log fields are not acceptable."""

    code = "credential_invalid"


class CredentialOwnerMismatch(Conflict):
    """The secret exists, but belongs to another user than the one given."""

    code = "credential_owner_mismatch"


class CredentialDecryptionFailed(TradebaseError):
    """A stored secret does not decrypt: its key is not configured, or the row was altered.

    Not the caller's fault, and never answered with garbage: a server-side 500 that
    someone must look at (restore the key, or set the secret again).
    """

    status_code: ClassVar[int] = 500
    code = "credential_decryption_failed"
