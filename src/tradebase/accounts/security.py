"""Passwords, tokens and scopes: the pure parts of identity (no database)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# Argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile: t=3, m=64 MiB, p=4).
_hasher = PasswordHasher()
# Verified against when there is no user or the account is locked, so that a wrong
# password, an unknown user and a locked account cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

API_KEY_PREFIX = "tb_"
MIN_PASSWORD_LENGTH = 10

# Scopes a key may carry. "read:*"/"write:*" cover every read/write scope; "admin" covers
# everything and only an admin's key may hold it.
RESOURCES = (
    "account",
    "keys",
    "portfolio",
    "orders",
    "signals",
    "strategies",
    "market",
    "users",
    "audit",
)
SCOPES = frozenset(
    {f"{verb}:{resource}" for verb in ("read", "write") for resource in RESOURCES}
    | {"read:*", "write:*", "admin"}
)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check *password*; with no hash, burn the same time and answer False."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_password() -> str:
    """A one-time password for a new or reset account."""
    return secrets.token_urlsafe(15)


def new_api_key() -> str:
    """``tb_`` + 32 random bytes, URL-safe."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def key_prefix(key: str) -> str:
    """The part of a key that is shown in lists (enough to tell keys apart)."""
    return key[: len(API_KEY_PREFIX) + 8]


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its secret token, so it needs no storage
    and a page on another origin, which cannot read the cookie, cannot compute it."""
    return hmac.new(session_token.encode(), b"tradebase-csrf", hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def scope_allows(granted: frozenset[str] | set[str], needed: str) -> bool:
    """Whether a key with *granted* scopes may do *needed* (e.g. ``write:orders``)."""
    if "admin" in granted:
        return True
    if needed == "admin":
        return False
    verb = needed.split(":", 1)[0]
    return needed in granted or f"{verb}:*" in granted
