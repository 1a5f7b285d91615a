"""Who is calling, and what they may do: authorization in one place.

A `Principal` is the caller of a request (through an API key or a dashboard session) or of
a CLI command. Every domain query goes through `scoped`, so a row of another user is never
visible (admins see all), and a request for such a row answers 404 rather than 403.
Viewers are read-only, and a key's scopes narrow its owner's rights further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Select

from tradebase.accounts.models import UserRole
from tradebase.accounts.security import scope_allows

S = TypeVar("S", bound=Select[*tuple[Any, ...]])

_ROLE_SCOPES: dict[str, frozenset[str]] = {
    UserRole.admin: frozenset({"admin"}),
    UserRole.trader: frozenset({"read:*", "write:*"}),
    UserRole.viewer: frozenset({"read:*"}),
}
# Scopes that only an admin's role grants, whatever a key says.
# Posting prices drives every user's paper orders: an admin's (or a feeder key's) job.
_ADMIN_ONLY = frozenset(
    {"admin", "read:users", "write:users", "read:audit", "write:audit", "write:market"}
)


def role_scopes(role: str) -> frozenset[str]:
    return _ROLE_SCOPES.get(role, frozenset())


def role_permits(role: str, scope: str) -> bool:
    if role == UserRole.admin:
        return True
    if scope in _ADMIN_ONLY:
        return False
    return scope_allows(role_scopes(role), scope)


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    via: str = "session"  # "key", "session", "cli" or "python" (tradebase.client)
    key_id: int | None = None
    session_id: int | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    trading_paused: bool = False  # the user's kill switch (signal settings' "paused")

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.admin and "admin" in self.effective_scopes()

    @property
    def read_only(self) -> bool:
        return self.role == UserRole.viewer

    def effective_scopes(self) -> frozenset[str]:
        return self.scopes if self.via == "key" else role_scopes(self.role)

    def allows(self, scope: str) -> bool:
        """Both the role and (for a key) the key's scopes must permit *scope*."""
        return role_permits(self.role, scope) and scope_allows(self.effective_scopes(), scope)


def scoped(statement: S, owner_column: Any, principal: Principal) -> S:
    """Restrict *statement* to rows owned by the caller (admins see every row)."""
    if principal.is_admin:
        return statement
    return statement.where(owner_column == principal.user_id)
