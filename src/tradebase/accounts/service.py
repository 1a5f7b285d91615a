"""Users, logins with lockout and two-factor codes, API keys and dashboard sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradebase.accounts import security
from tradebase.accounts.errors import (
    ApiKeyNotFound,
    InvalidCredentials,
    InvalidTotp,
    LastAdmin,
    ReadOnlyRole,
    ScopeNotAllowed,
    TotpAlreadyEnabled,
    TotpNotEnrolled,
    TotpRequired,
    TradingPaused,
    UsernameTaken,
    UserNotFound,
    WeakPassword,
)
from tradebase.accounts.models import ApiKey, User, UserRole, WebSession
from tradebase.accounts.ratelimit import Verdict, hit_database, hit_redis
from tradebase.audit.service import audit as audit_service
from tradebase.config import Settings
from tradebase.core.auth import Principal, role_permits, role_scopes, scoped
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.errors import BadRequest, TooManyRequests, Unauthorized
from tradebase.core.time import ensure_utc, utc_now
from tradebase.credentials.models import CredentialKind, CredentialOwner
from tradebase.credentials.service import credential as credential_service

DEFAULT_RATE_LIMIT = 60
TOTP_PENDING = "pending"
TOTP_ACTIVE = "active"


def _is_server(session: Session) -> bool:
    return session.get_bind().dialect.name != "sqlite"


def _lock_user(session: Session, user_id: int) -> User | None:
    """Load a user holding its row lock (SQLite's writers already hold the database lock)."""
    statement = select(User).where(User.id == user_id)
    if _is_server(session):
        statement = statement.with_for_update()
    return session.scalars(statement).one_or_none()


class UserService:
    def get_by_login(self, session: Session, login: str) -> User | None:
        """Find a user by username or (case-insensitively) email."""
        return session.scalars(
            select(User).where(
                or_(User.username == login, func.lower(User.email) == login.strip().lower())
            )
        ).first()

    def create(
        self,
        session: Session,
        *,
        username: str,
        email: str,
        role: str = UserRole.trader,
        password: str | None = None,
        actor: Principal | None = None,
    ) -> tuple[User, str | None]:
        """Create a user; without a password, return a one-time password to hand over."""
        one_time = None
        if password is None:
            one_time = password = security.new_password()
        elif len(password) < security.MIN_PASSWORD_LENGTH:
            raise WeakPassword(
                f"a password needs at least {security.MIN_PASSWORD_LENGTH} characters"
            )
        user = User(
            username=username,
            email=email.strip().lower(),
            role=role,
            password_hash=security.hash_password(password),
            password_changed_at=None if one_time else utc_now(),
        )
        try:
            with session.begin_nested():
                session.add(user)
                session.flush()
        except IntegrityError:
            raise UsernameTaken("that username or email is already in use") from None
        _audit(session, actor, "user.created", user, details={"role": role})
        return user, one_time

    def ensure_first_admin(self, session: Session) -> str | None:
        """On first run create ``admin`` and return its one-time password (else None)."""
        if session.scalar(select(func.count()).select_from(User)):
            return None
        try:
            _user, password = self.create(
                session, username="admin", email="admin@localhost", role=UserRole.admin
            )
        except UsernameTaken:  # another process got there first
            return None
        return password

    def get(self, session: Session, principal: Principal, user_id: int) -> User:
        """A user the caller may see: themselves, or anyone for an admin."""
        user = session.scalars(
            scoped(select(User), User.id, principal).where(User.id == user_id)
        ).first()
        if user is None:
            raise UserNotFound(f"no user {user_id}")
        return user

    def list(self, session: Session, principal: Principal) -> list[User]:
        return list(session.scalars(scoped(select(User), User.id, principal).order_by(User.id)))

    def admin_update(
        self,
        session: Session,
        principal: Principal,
        user_id: int,
        *,
        role: str | None = None,
        is_active: bool | None = None,
        email_verified: bool | None = None,
    ) -> User:
        user = self.get(session, principal, user_id)
        demoted = role is not None and role != UserRole.admin
        disabled = is_active is False
        if user.role == UserRole.admin and user.is_active and (demoted or disabled):
            admins = session.scalar(
                select(func.count())
                .select_from(User)
                .where(User.role == UserRole.admin, User.is_active.is_(True), User.id != user.id)
            )
            if not admins:
                raise LastAdmin("this is the last active admin: make another admin first")
        old_role = user.role
        role_changed = role is not None and role != user.role
        active_changed = is_active is not None and is_active != user.is_active
        if role is not None:
            user.role = role
        if is_active is not None and active_changed:
            user.is_active = is_active
            if not is_active:
                self._end_sessions(session, user.id)
        if email_verified is not None:
            user.email_verified = email_verified
        session.flush()
        if role_changed:
            _audit(
                session,
                principal,
                "user.role_changed",
                user,
                details={"from": old_role, "to": role},
            )
        if active_changed:
            _audit(session, principal, "user.enabled" if is_active else "user.disabled", user)
        return user

    def update_profile(
        self,
        session: Session,
        principal: Principal,
        *,
        email: str | None,
        settings: dict[str, object] | None,
    ) -> User:
        user = self.get(session, principal, principal.user_id)
        if email is not None and email.strip().lower() != user.email:
            user.email = email.strip().lower()
            user.email_verified = False
        if settings is not None:
            user.settings = settings
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:
            raise UsernameTaken("that email cannot be used") from None
        _audit(session, principal, "settings.changed", user)
        return user

    def login(
        self,
        engines: Engines,
        *,
        login: str,
        password: str,
        totp_code: str | None,
        settings: Settings,
        ip_address: str | None = None,
        user_agent: str | None = None,
    ) -> User:
        """Check a login; count failures and lock the account after too many.

        Three short steps, so no database lock is held during the deliberately slow
        password hash: count the attempt against the client address's per-minute limit;
        check the password (and two-factor code) in a read transaction; then record the
        outcome in a write transaction that locks the user's row. A wrong password, an
        unknown user and a locked or disabled account run the same password check and
        raise the same `InvalidCredentials`.
        """
        main = engines.session_factory(Database.main)
        context: dict[str, Any] = {"ip_address": ip_address, "user_agent": user_agent}
        with unit_of_work(factory=main) as session:
            verdict = _hit(
                session, settings, f"login-ip:{ip_address}", settings.login_attempts_per_minute
            )
        if not verdict.allowed:
            raise TooManyRequests(
                "too many login attempts from this address: wait a minute",
                retry_after=verdict.retry_after,
            )
        now = utc_now()
        with unit_of_work(factory=main, write=False) as session:
            found = self.get_by_login(session, login)
            locked = (
                found is not None and found.locked_until is not None and found.locked_until > now
            )
            usable = found is not None and found.is_active and not locked
            password_ok = security.verify_password(
                found.password_hash if usable and found else None, password
            )
            user_id = found.id if found else None
        totp_step: int | None = None
        totp_checked = False
        if usable and password_ok and found is not None and found.two_factor_enabled:
            if not totp_code:
                raise TotpRequired("this account needs a two-factor code: send totp_code")
            totp_checked = True
            with unit_of_work(
                Database.credentials, factory=engines.session_factory(Database.credentials)
            ) as creds:
                totp_step = self._totp_step(creds, found, TOTP_ACTIVE, totp_code, "login")
        with unit_of_work(factory=main) as session:
            user = _lock_user(session, user_id) if user_id is not None else None
            if user is not None and user.locked_until is not None and user.locked_until > now:
                locked = True  # locked by a concurrent failure since we looked
            if user is None or locked or not user.is_active or not password_ok:
                if user is not None and user.is_active and not locked:
                    self._count_failure(session, user, now, settings, context)
                audit_service.record(
                    session,
                    action="login.locked" if locked else "login.failed",
                    user_id=user.id if user else None,
                    # Never what was typed: a password typed into the wrong field would land here.
                    actor=user.username if user else "unknown",
                    resource_type="user",
                    resource_id=user.id if user else None,
                    details={
                        "reason": "locked"
                        if locked
                        else "inactive"
                        if user and not user.is_active
                        else "credentials"
                    },
                    **context,
                )
                raise InvalidCredentials()
            if totp_checked:
                audit_service.record(
                    session,
                    action="credential.read",
                    user_id=user.id,
                    actor=user.username,
                    resource_type="user",
                    resource_id=user.id,
                    details={"kind": CredentialKind.totp_secret, "purpose": "login"},
                    **context,
                )
                if totp_step is None or (
                    user.totp_last_step is not None and totp_step <= user.totp_last_step
                ):
                    self._count_failure(session, user, now, settings, context)
                    audit_service.record(
                        session,
                        action="login.failed",
                        user_id=user.id,
                        actor=user.username,
                        resource_type="user",
                        resource_id=user.id,
                        details={"reason": "totp" if totp_step is None else "totp reused"},
                        **context,
                    )
                    raise InvalidTotp("the two-factor code is wrong, expired or already used")
                user.totp_last_step = totp_step
            user.failed_login_count = 0
            user.failed_login_window_start = None
            user.locked_until = None
            user.last_login = now
            if security.needs_rehash(user.password_hash):
                user.password_hash = security.hash_password(password)
            audit_service.record(
                session,
                action="login.ok",
                user_id=user.id,
                actor=user.username,
                resource_type="user",
                resource_id=user.id,
                **context,
            )
            return user

    def _count_failure(
        self,
        session: Session,
        user: User,
        now: datetime,
        settings: Settings,
        context: dict[str, Any],
    ) -> None:
        window = timedelta(minutes=settings.login_window_minutes)
        start = user.failed_login_window_start
        if start is None or now - start > window:
            user.failed_login_window_start = now
            user.failed_login_count = 1
        else:
            user.failed_login_count += 1
        if user.failed_login_count >= settings.login_max_failures:
            user.locked_until = now + timedelta(minutes=settings.login_lockout_minutes)
            user.failed_login_count = 0
            user.failed_login_window_start = None
            audit_service.record(
                session,
                action="user.locked",
                user_id=user.id,
                actor=user.username,
                resource_type="user",
                resource_id=user.id,
                details={"until": user.locked_until.isoformat()},
                **context,
            )

    def change_password(
        self, session: Session, principal: Principal, *, current: str, new: str
    ) -> None:
        user = _lock_user(session, principal.user_id)
        if user is None or not security.verify_password(user.password_hash, current):
            raise BadRequest("the current password is wrong", details={"field": "current_password"})
        if len(new) < security.MIN_PASSWORD_LENGTH:
            raise WeakPassword(
                f"a password needs at least {security.MIN_PASSWORD_LENGTH} characters"
            )
        user.password_hash = security.hash_password(new)
        user.password_changed_at = utc_now()
        self._end_sessions(session, user.id, keep=principal.session_id)
        _audit(session, principal, "user.password_changed", user)

    def reset_password(self, session: Session, principal: Principal | None, user_id: int) -> str:
        """Give a user a new one-time password (admins; the CLI)."""
        user = session.get(User, user_id)
        if user is None:
            raise UserNotFound(f"no user {user_id}")
        password = security.new_password()
        user.password_hash = security.hash_password(password)
        user.password_changed_at = None
        user.locked_until = None
        user.failed_login_count = 0
        self._end_sessions(session, user.id)
        _audit(session, principal, "user.password_reset", user)
        return password

    def _end_sessions(self, session: Session, user_id: int, keep: int | None = None) -> None:
        statement = update(WebSession).where(
            WebSession.user_id == user_id, WebSession.revoked_at.is_(None)
        )
        if keep is not None:
            statement = statement.where(WebSession.id != keep)
        session.execute(statement.values(revoked_at=utc_now()))

    # --- two-factor codes -------------------------------------------------------------

    def totp_begin(
        self, session: Session, credentials_session: Session, principal: Principal
    ) -> tuple[str, str]:
        """Start enrolment: a new secret, kept pending until a code confirms it."""
        user = self.get(session, principal, principal.user_id)
        if user.two_factor_enabled:
            raise TotpAlreadyEnabled(
                "two-factor codes are already on: disable them with a current code first"
            )
        secret = pyotp.random_base32()
        credential_service.set_secret(
            credentials_session,
            user_id=user.id,
            **_totp(user, TOTP_PENDING),
            value=secret,
            **_by(principal),
            purpose="totp enrolment",
            ip_address=principal.ip_address,
        )
        _audit(session, principal, "totp.enrolment_started", user)
        _audit_secret(session, principal, "credential.written", user, "totp enrolment")
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name="Tradebase")
        return secret, uri

    def totp_confirm(
        self, session: Session, credentials_session: Session, principal: Principal, code: str
    ) -> User:
        user = self.get(session, principal, principal.user_id)
        info = credential_service.describe(credentials_session, **_totp(user, TOTP_PENDING))
        if user.two_factor_enabled:
            raise TotpAlreadyEnabled("two-factor codes are already on")
        if not info.is_set:
            raise TotpNotEnrolled("start enrolment first: POST /api/v1/me/totp")
        if not self._totp_matches(
            credentials_session, user, TOTP_PENDING, code, "totp confirmation"
        ):
            raise InvalidTotp("the two-factor code is wrong or expired")
        secret = credential_service.read_secret(
            credentials_session,
            **_totp(user, TOTP_PENDING),
            **_by(principal),
            purpose="totp activation",
        )
        credential_service.set_secret(
            credentials_session,
            user_id=user.id,
            **_totp(user, TOTP_ACTIVE),
            value=secret,
            **_by(principal),
            purpose="totp activation",
        )
        credential_service.delete_secret(
            credentials_session,
            **_totp(user, TOTP_PENDING),
            **_by(principal),
            purpose="totp activation",
        )
        user.two_factor_enabled = True
        _audit_secret(session, principal, "credential.read", user, "totp activation")
        _audit_secret(session, principal, "credential.written", user, "totp activation")
        _audit(session, principal, "totp.enabled", user)
        return user

    def totp_disable(
        self, session: Session, credentials_session: Session, principal: Principal, code: str
    ) -> User:
        user = self.get(session, principal, principal.user_id)
        if not user.two_factor_enabled:
            raise TotpNotEnrolled("two-factor codes are not enabled")
        if not self._totp_matches(credentials_session, user, TOTP_ACTIVE, code, "totp disable"):
            raise InvalidTotp("the two-factor code is wrong or expired")
        credential_service.delete_secret(
            credentials_session,
            **_totp(user, TOTP_ACTIVE),
            **_by(principal),
            purpose="totp disable",
        )
        user.two_factor_enabled = False
        _audit_secret(session, principal, "credential.deleted", user, "totp disable")
        _audit(session, principal, "totp.disabled", user)
        return user

    def _totp_step(
        self, credentials_session: Session, user: User, name: str, code: str, purpose: str
    ) -> int | None:
        """The 30-second time step *code* is valid for (this one or a neighbour), or None."""
        secret = credential_service.read_secret(
            credentials_session,
            **_totp(user, name),
            **_by_user(user),
            purpose=purpose,
        )
        totp = pyotp.TOTP(secret)
        now = utc_now()
        current = totp.timecode(now)
        for offset in (0, -1, 1):
            step = current + offset
            if security.same(totp.generate_otp(step), code):
                return int(step)
        return None

    def _totp_matches(
        self, credentials_session: Session, user: User, name: str, code: str, purpose: str
    ) -> bool:
        """Check a code for enrolment and disabling, and spend it (no replay)."""
        step = self._totp_step(credentials_session, user, name, code, purpose)
        if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
            return False
        user.totp_last_step = step
        return True


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    verdict: Verdict


class ApiKeyService:
    def create(
        self,
        session: Session,
        principal: Principal,
        *,
        name: str,
        description: str | None = None,
        scopes: list[str] | None = None,
        expires_at: datetime | None = None,
        rate_limit_per_minute: int = 60,
        owner: User | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key for the caller (or, for the CLI, *owner*); return it with the key
        itself, which is never shown again."""
        user = owner or UserService().get(session, principal, principal.user_id)
        # A key can only hand on what its caller has: a key's own scopes bound a new key.
        default = principal.scopes if principal.via == "key" else role_scopes(user.role)
        wanted = sorted(set(scopes)) if scopes is not None else sorted(default)
        unknown = [s for s in wanted if s not in security.SCOPES]
        if unknown:
            raise BadRequest(
                f"unknown scope {unknown[0]!r}",
                details={"unknown": unknown, "known": sorted(security.SCOPES)},
            )
        refused = [s for s in wanted if not role_permits(user.role, s)]
        if refused:
            raise ScopeNotAllowed(f"a {user.role} cannot hold scope {refused[0]!r}")
        beyond = [s for s in wanted if principal.via == "key" and not principal.allows(s)]
        if beyond:
            raise ScopeNotAllowed(f"this key cannot grant scope {beyond[0]!r}: it does not hold it")
        if rate_limit_per_minute > DEFAULT_RATE_LIMIT and not principal.is_admin:
            raise ScopeNotAllowed(
                f"only an admin can set a limit above {DEFAULT_RATE_LIMIT} requests a minute"
            )
        if expires_at is not None and ensure_utc(expires_at) <= utc_now():
            raise BadRequest("expires_at is in the past", details={"field": "expires_at"})
        plaintext = security.new_api_key()
        key = ApiKey(
            user_id=user.id,
            key_prefix=security.key_prefix(plaintext),
            key_hash=security.sha256_hex(plaintext),
            name=name,
            description=description,
            scopes=wanted,
            expires_at=expires_at,
            rate_limit_per_minute=rate_limit_per_minute,
        )
        session.add(key)
        session.flush()
        _audit(session, principal, "api_key.created", key, details={"scopes": wanted})
        return key, plaintext

    def list(self, session: Session, principal: Principal) -> list[ApiKey]:
        return list(
            session.scalars(scoped(select(ApiKey), ApiKey.user_id, principal).order_by(ApiKey.id))
        )

    def get(self, session: Session, principal: Principal, key_id: int) -> ApiKey:
        key = session.scalars(
            scoped(select(ApiKey), ApiKey.user_id, principal).where(ApiKey.id == key_id)
        ).first()
        if key is None:
            raise ApiKeyNotFound(f"no API key {key_id}")
        return key

    def revoke(self, session: Session, principal: Principal, key_id: int) -> ApiKey:
        key = self.get(session, principal, key_id)
        if key.is_active:
            key.is_active = False
            session.flush()
            _audit(session, principal, "api_key.revoked", key)
        return key

    def authenticate(
        self,
        session: Session,
        presented: str,
        *,
        settings: Settings,
        ip_address: str | None = None,
        user_agent: str | None = None,
    ) -> Authenticated:
        """Resolve a presented key to its owner, count the request against the key's
        per-minute limit and record its use."""
        if not presented.startswith(security.API_KEY_PREFIX):
            raise Unauthorized("not a Tradebase API key (they start with tb_)")
        row = session.execute(
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == security.sha256_hex(presented))
        ).first()
        now = utc_now()
        if row is None:
            raise Unauthorized("unknown API key")
        key, user = row
        if not key.is_active:
            raise Unauthorized("this API key was revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized("this API key has expired")
        if not user.is_active:
            raise Unauthorized("this API key's user is disabled")
        bucket = f"key:{key.key_hash[:24]}"  # unique across databases sharing one Redis
        verdict = _hit(session, settings, bucket, key.rate_limit_per_minute, now)
        if not verdict.allowed:
            raise TooManyRequests(
                f"rate limit of {key.rate_limit_per_minute} requests a minute reached",
                retry_after=verdict.retry_after,
            )
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key.id)
            .values(last_used_at=now, total_requests=ApiKey.total_requests + 1)
        )
        principal = principal_for(
            user,
            via="key",
            scopes=frozenset(key.scopes),
            key_id=key.id,
            ip_address=ip_address,
            user_agent=user_agent,
        )
        return Authenticated(principal, verdict)


def trading_paused(user: User) -> bool:
    """Whether *user* switched all trading off (the kill switch of the signal settings)."""
    return bool(((user.settings or {}).get("signals") or {}).get("paused", False))


class WebSessionService:
    def start(
        self,
        session: Session,
        user: User,
        *,
        settings: Settings,
        ip_address: str | None,
        user_agent: str | None,
    ) -> tuple[WebSession, str]:
        token = security.new_session_token()
        row = WebSession(
            user_id=user.id,
            token_hash=security.sha256_hex(token),
            ip_address=ip_address,
            user_agent=(user_agent or "")[:500] or None,
            expires_at=utc_now() + timedelta(hours=settings.session_hours),
        )
        session.add(row)
        session.flush()
        return row, token

    def resolve(
        self, session: Session, token: str, *, ip_address: str | None, user_agent: str | None
    ) -> Principal:
        row = session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == security.sha256_hex(token))
        ).first()
        if row is None:
            raise Unauthorized("not logged in")
        web_session, user = row
        if web_session.revoked_at is not None or web_session.expires_at <= utc_now():
            raise Unauthorized("the session has ended: log in again")
        if not user.is_active:
            raise Unauthorized("this user is disabled")
        return principal_for(
            user,
            via="session",
            session_id=web_session.id,
            ip_address=ip_address,
            user_agent=user_agent,
        )

    def end(self, session: Session, principal: Principal) -> None:
        if principal.session_id is not None:
            session.execute(
                update(WebSession)
                .where(WebSession.id == principal.session_id)
                .values(revoked_at=utc_now())
            )
            audit_service.record(
                session,
                action="logout",
                user_id=principal.user_id,
                actor=principal.username,
                ip_address=principal.ip_address,
                user_agent=principal.user_agent,
            )


def _hit(
    session: Session, settings: Settings, bucket: str, limit: int, now: datetime | None = None
) -> Verdict:
    if settings.redis_url:
        return hit_redis(settings.redis_url, bucket, limit, now)
    return hit_database(session, bucket, limit, now)


def require_writer(principal: Principal) -> None:
    if principal.read_only:
        raise ReadOnlyRole("a viewer cannot change anything")


def require_trading(principal: Principal) -> None:
    """Refuse an order of a user who paused all trading (the kill switch)."""
    if principal.trading_paused:
        raise TradingPaused(
            f"trading is paused for {principal.username}: resume it (PUT"
            " /api/v1/signals/settings with paused false) to place orders"
        )


def principal_for(user: User, *, via: str = "python", **extra: Any) -> Principal:
    """Who acts when *user* does (their role and kill switch), for a server-side caller."""
    return Principal(
        user_id=user.id,
        username=user.username,
        role=user.role,
        via=via,
        trading_paused=trading_paused(user),
        **extra,
    )


def _totp(user: User, name: str) -> dict[str, Any]:
    """Which secret: the user's two-factor secret, pending or active."""
    return {
        "owner_type": CredentialOwner.user,
        "owner_id": user.id,
        "kind": CredentialKind.totp_secret,
        "name": name,
    }


def _by(principal: Principal) -> dict[str, Any]:
    return {"actor": principal.username, "actor_user_id": principal.user_id}


def _by_user(user: User) -> dict[str, Any]:
    return {"actor": user.username, "actor_user_id": user.id}


def _audit_secret(
    session: Session, principal: Principal, action: str, user: User, purpose: str
) -> None:
    """Mirror a secret's read or write into the audit trail (the credentials database keeps
    the detailed access log)."""
    _audit(
        session,
        principal,
        action,
        user,
        details={"kind": CredentialKind.totp_secret, "purpose": purpose},
    )


def _audit(
    session: Session,
    principal: Principal | None,
    action: str,
    target: User | ApiKey,
    details: dict[str, object] | None = None,
) -> None:
    audit_service.record(
        session,
        action=action,
        user_id=principal.user_id if principal and principal.via != "cli" else None,
        actor=principal.username if principal else "system",
        resource_type="user" if isinstance(target, User) else "api_key",
        resource_id=target.id,
        ip_address=principal.ip_address if principal else None,
        user_agent=principal.user_agent if principal else None,
        details=details,
    )


user = UserService()
api_key = ApiKeyService()
web_session = WebSessionService()
