"""Request and response bodies of the identity API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from tradebase.accounts.models import UserRole

MAX_ID = 2_147_483_647  # ids are 32-bit integers on every engine
MAX_SETTINGS_BYTES = 65_536
MAX_SETTINGS_DEPTH = 16


def _bounded_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None

    stack: list[tuple[Any, int]] = [(value, 1)]  # iterative: deep input must not recurse
    while stack:
        item, level = stack.pop()
        if level > MAX_SETTINGS_DEPTH:
            raise ValueError(f"nested deeper than {MAX_SETTINGS_DEPTH} levels")
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((child, level + 1) for child in children)
    if len(json.dumps(value)) > MAX_SETTINGS_BYTES:
        raise ValueError(f"larger than {MAX_SETTINGS_BYTES} bytes as JSON")
    return value


def _sane_expiry(value: datetime | None) -> datetime | None:
    if value is not None and value.year > 9000:
        raise ValueError("too far in the future")
    return value


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    login: str = Field(min_length=1, max_length=255, description="Username or email.")
    password: str = Field(min_length=1, max_length=1024)
    totp_code: str | None = Field(default=None, pattern=r"^\d{6}$")


class LoginResponse(BaseModel):
    user: UserRead
    csrf_token: str
    expires_at: datetime
    password_change_required: bool


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    email: str
    role: str
    is_active: bool
    email_verified: bool
    two_factor_enabled: bool
    settings: dict[str, Any]
    last_login: datetime | None
    created_at: datetime
    updated_at: datetime


class UserCreate(Strict):
    username: str = Field(min_length=3, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")
    email: EmailStr
    role: UserRole = UserRole.trader
    password: str | None = Field(
        default=None, min_length=10, max_length=1024, description="Default: a one-time password."
    )


class UserCreated(BaseModel):
    user: UserRead
    one_time_password: str | None = Field(
        default=None, description="Shown once, when no password was given."
    )


class UserAdminUpdate(Strict):
    role: UserRole | None = None
    is_active: bool | None = None
    email_verified: bool | None = None


class ProfileUpdate(Strict):
    email: EmailStr | None = None
    settings: Annotated[dict[str, Any] | None, AfterValidator(_bounded_json)] = None


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=10, max_length=1024)


class PasswordReset(BaseModel):
    one_time_password: str


class TotpEnrolment(BaseModel):
    secret: str = Field(description="Shown once; add it to an authenticator app.")
    otpauth_uri: str


class TotpCode(Strict):
    code: str = Field(pattern=r"^\d{6}$")


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    scopes: list[str] | None = Field(default=None, description="Default: all your role allows.")
    expires_at: Annotated[AwareDatetime | None, AfterValidator(_sane_expiry)] = Field(
        default=None, description="With a time zone, e.g. 2027-01-01T00:00:00Z."
    )
    rate_limit_per_minute: int = Field(
        default=60, ge=1, le=100_000, description="Above 60 needs an admin."
    )


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str | None
    description: str | None
    key_prefix: str
    scopes: list[str]
    rate_limit_per_minute: int
    is_active: bool
    expires_at: datetime | None
    last_used_at: datetime | None
    total_requests: int
    created_at: datetime


class ApiKeyCreated(BaseModel):
    api_key: ApiKeyRead
    key: str = Field(description="The key itself: shown this once, never again.")


class Health(BaseModel):
    status: str
    details: dict[str, Any] = Field(default_factory=dict)


LoginResponse.model_rebuild()
