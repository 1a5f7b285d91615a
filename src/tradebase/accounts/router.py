"""HTTP routes: login, the caller's profile, two-factor codes, API keys and users (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status

from tradebase.accounts import schemas, security
from tradebase.accounts.schemas import MAX_ID
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.accounts.service import web_session as web_session_service
from tradebase.core.auth import Principal
from tradebase.core.db import Database, unit_of_work
from tradebase.core.http import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    CredentialsSessionDep,
    PrincipalDep,
    SessionDep,
    SettingsDep,
    client_ip,
    engines_of,
    interactive,
    require,
)

router = APIRouter(prefix="/api/v1")


ReadAccount = Annotated[Principal, Depends(require("read:account"))]
WriteAccount = Annotated[Principal, Depends(require("write:account"))]
ReadKeys = Annotated[Principal, Depends(require("read:keys"))]
WriteKeys = Annotated[Principal, Depends(require("write:keys"))]
ReadUsers = Annotated[Principal, Depends(require("read:users"))]
WriteUsers = Annotated[Principal, Depends(require("write:users"))]
# Your own password and two-factor codes: from a dashboard login (not a key), any role.
Interactive = Annotated[Principal, Depends(interactive)]
KeyId = Annotated[int, Path(ge=1, le=MAX_ID, description="An API key's id.")]
UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="A user's id.")]


@router.post("/auth/login", tags=["auth"], response_model=schemas.LoginResponse)
def login(
    body: schemas.LoginRequest, request: Request, response: Response, settings: SettingsDep
) -> schemas.LoginResponse:
    """Log in with username or email; sets the session cookie and returns the CSRF token."""
    ip, agent = client_ip(request), request.headers.get("user-agent")
    engines = engines_of(request)
    user = user_service.login(
        engines,
        login=body.login,
        password=body.password,
        totp_code=body.totp_code,
        settings=settings,
        ip_address=ip,
        user_agent=agent,
    )
    with unit_of_work(factory=engines.session_factory(Database.main)) as session:
        web, token = web_session_service.start(
            session, user, settings=settings, ip_address=ip, user_agent=agent
        )
    csrf = security.csrf_token(token)
    max_age = settings.session_hours * 3600
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        path="/",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=settings.cookie_secure,
        path="/",
    )
    return schemas.LoginResponse(
        user=schemas.UserRead.model_validate(user),
        csrf_token=csrf,
        expires_at=web.expires_at,
        password_change_required=user.password_changed_at is None,
    )


@router.post("/auth/logout", tags=["auth"], status_code=status.HTTP_204_NO_CONTENT)
def logout(principal: PrincipalDep, session: SessionDep, response: Response) -> None:
    """End the dashboard session (an API key is revoked instead)."""
    web_session_service.end(session, principal)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


@router.get("/me", tags=["me"], response_model=schemas.UserRead)
def read_me(principal: ReadAccount, session: SessionDep) -> schemas.UserRead:
    return schemas.UserRead.model_validate(user_service.get(session, principal, principal.user_id))


@router.patch("/me", tags=["me"], response_model=schemas.UserRead)
def update_me(
    body: schemas.ProfileUpdate, principal: WriteAccount, session: SessionDep
) -> schemas.UserRead:
    user = user_service.update_profile(session, principal, email=body.email, settings=body.settings)
    return schemas.UserRead.model_validate(user)


@router.post("/me/password", tags=["me"], status_code=status.HTTP_204_NO_CONTENT)
def change_password(
    body: schemas.PasswordChange, principal: Interactive, session: SessionDep
) -> None:
    """Change your password; your other dashboard sessions end."""
    user_service.change_password(
        session, principal, current=body.current_password, new=body.new_password
    )


@router.post("/me/totp", tags=["me"], response_model=schemas.TotpEnrolment)
def start_totp(
    principal: Interactive, session: SessionDep, credentials_session: CredentialsSessionDep
) -> schemas.TotpEnrolment:
    """Start two-factor enrolment: returns the secret once; confirm it with a code."""
    secret, uri = user_service.totp_begin(session, credentials_session, principal)
    return schemas.TotpEnrolment(secret=secret, otpauth_uri=uri)


@router.post("/me/totp/confirm", tags=["me"], response_model=schemas.UserRead)
def confirm_totp(
    body: schemas.TotpCode,
    principal: Interactive,
    session: SessionDep,
    credentials_session: CredentialsSessionDep,
) -> schemas.UserRead:
    user = user_service.totp_confirm(session, credentials_session, principal, body.code)
    return schemas.UserRead.model_validate(user)


@router.post("/me/totp/disable", tags=["me"], response_model=schemas.UserRead)
def disable_totp(
    body: schemas.TotpCode,
    principal: Interactive,
    session: SessionDep,
    credentials_session: CredentialsSessionDep,
) -> schemas.UserRead:
    user = user_service.totp_disable(session, credentials_session, principal, body.code)
    return schemas.UserRead.model_validate(user)


@router.get("/keys", tags=["keys"], response_model=list[schemas.ApiKeyRead])
def list_keys(principal: ReadKeys, session: SessionDep) -> list[schemas.ApiKeyRead]:
    return [schemas.ApiKeyRead.model_validate(k) for k in api_key_service.list(session, principal)]


@router.post(
    "/keys",
    tags=["keys"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.ApiKeyCreated,
)
def create_key(
    body: schemas.ApiKeyCreate, principal: WriteKeys, session: SessionDep
) -> schemas.ApiKeyCreated:
    """Create an API key; the key itself is in this response only."""
    key, plaintext = api_key_service.create(
        session,
        principal,
        name=body.name,
        description=body.description,
        scopes=body.scopes,
        expires_at=body.expires_at,
        rate_limit_per_minute=body.rate_limit_per_minute,
    )
    return schemas.ApiKeyCreated(api_key=schemas.ApiKeyRead.model_validate(key), key=plaintext)


@router.get("/keys/{key_id}", tags=["keys"], response_model=schemas.ApiKeyRead)
def read_key(key_id: KeyId, principal: ReadKeys, session: SessionDep) -> schemas.ApiKeyRead:
    return schemas.ApiKeyRead.model_validate(api_key_service.get(session, principal, key_id))


@router.delete("/keys/{key_id}", tags=["keys"], response_model=schemas.ApiKeyRead)
def revoke_key(key_id: KeyId, principal: WriteKeys, session: SessionDep) -> schemas.ApiKeyRead:
    return schemas.ApiKeyRead.model_validate(api_key_service.revoke(session, principal, key_id))


@router.get("/users", tags=["users"], response_model=list[schemas.UserRead])
def list_users(principal: ReadUsers, session: SessionDep) -> list[schemas.UserRead]:
    return [schemas.UserRead.model_validate(u) for u in user_service.list(session, principal)]


@router.post(
    "/users",
    tags=["users"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.UserCreated,
)
def create_user(
    body: schemas.UserCreate, principal: WriteUsers, session: SessionDep
) -> schemas.UserCreated:
    user, one_time = user_service.create(
        session,
        username=body.username,
        email=str(body.email),
        role=body.role,
        password=body.password,
        actor=principal,
    )
    return schemas.UserCreated(
        user=schemas.UserRead.model_validate(user), one_time_password=one_time
    )


@router.get("/users/{user_id}", tags=["users"], response_model=schemas.UserRead)
def read_user(user_id: UserId, principal: ReadUsers, session: SessionDep) -> schemas.UserRead:
    return schemas.UserRead.model_validate(user_service.get(session, principal, user_id))


@router.patch("/users/{user_id}", tags=["users"], response_model=schemas.UserRead)
def update_user(
    user_id: UserId, body: schemas.UserAdminUpdate, principal: WriteUsers, session: SessionDep
) -> schemas.UserRead:
    user = user_service.admin_update(
        session,
        principal,
        user_id,
        role=body.role,
        is_active=body.is_active,
        email_verified=body.email_verified,
    )
    return schemas.UserRead.model_validate(user)


@router.post(
    "/users/{user_id}/password-reset", tags=["users"], response_model=schemas.PasswordReset
)
def reset_password(
    user_id: UserId, principal: WriteUsers, session: SessionDep
) -> schemas.PasswordReset:
    """Give a user a one-time password (shown once); their sessions end."""
    user_service.get(session, principal, user_id)
    return schemas.PasswordReset(
        one_time_password=user_service.reset_password(session, principal, user_id)
    )
