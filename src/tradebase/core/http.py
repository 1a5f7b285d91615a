"""FastAPI plumbing shared by every router: sessions, the caller, scopes, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tradebase.accounts import security
from tradebase.config import Settings
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.errors import Forbidden, PayloadTooLarge, Unauthorized

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_COOKIE = "tb_session"
CSRF_COOKIE = "tb_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def engines_of(request: Request) -> Engines:
    engines: Engines = request.app.state.engines
    return engines


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """The request's unit of work on the main database, committed before the response."""
    factory = engines_of(request).session_factory(Database.main)
    with unit_of_work(factory=factory, write=request.method not in SAFE_METHODS) as session:
        yield session


def get_credentials_session(request: Request) -> Iterator[Session]:
    factory = engines_of(request).session_factory(Database.credentials)
    with unit_of_work(
        Database.credentials, factory=factory, write=request.method not in SAFE_METHODS
    ) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
CredentialsSessionDep = Annotated[Session, Depends(get_credentials_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(settings_of)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def current_principal(request: Request) -> Principal:
    """Authenticate the request: an API key (``Authorization: Bearer tb_…``) or a dashboard
    session cookie, whose state-changing requests must carry the CSRF token, in the
    ``X-CSRF-Token`` header or, for a form post, the ``csrf_token`` field."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use Authorization: Bearer <API key>")
        principal = await run_in_threadpool(_key_principal, request, token.strip())
    elif cookie := request.cookies.get(SESSION_COOKIE):
        principal = await run_in_threadpool(_session_principal, request, cookie)
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER) or await _form_csrf_token(request)
            if not security.same(sent, security.csrf_token(cookie)):
                raise Forbidden(
                    f"missing or wrong CSRF token: send the {CSRF_HEADER} header"
                    f" (or the {CSRF_FIELD} field of a form)",
                    details={"header": CSRF_HEADER, "field": CSRF_FIELD},
                )
    else:
        raise Unauthorized(
            "authentication required: send Authorization: Bearer <API key>, or log in"
        )
    request.state.principal = principal
    return principal


def _key_principal(request: Request, token: str) -> Principal:
    from tradebase.accounts.service import api_key as api_key_service

    # Its own transaction: the request counts against the limit even if it then fails.
    with unit_of_work(factory=engines_of(request).session_factory(Database.main)) as session:
        result = api_key_service.authenticate(
            session,
            token,
            settings=settings_of(request),
            ip_address=client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )
    request.state.rate_limit = result.verdict
    return result.principal


def key_principal(request: Request, token: str) -> Principal:
    """The owner of API key *token* (counted against its rate limit), for routes that take
    the key elsewhere than the Authorization header (the OpenAlgo facade's ``apikey``)."""
    return _key_principal(request, token)


def _session_principal(request: Request, cookie: str) -> Principal:
    from tradebase.accounts.service import web_session as web_session_service

    factory = engines_of(request).session_factory(Database.main)
    with unit_of_work(factory=factory, write=False) as session:
        return web_session_service.resolve(
            session,
            cookie,
            ip_address=client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )


async def _form_csrf_token(request: Request) -> str:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return ""
    form = await request.form()  # cached on the request: the route reads the same form
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else ""


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def interactive(principal: PrincipalDep) -> Principal:
    """The caller, who must be logged in on the dashboard: an API key cannot change its
    owner's password or two-factor codes (any role may change its own)."""
    if principal.via != "session":
        raise Forbidden("log in on the dashboard to change your password or two-factor codes")
    return principal


def require(scope: str) -> Callable[..., Principal]:
    """A dependency: the caller, who must be allowed *scope* (e.g. ``write:keys``)."""

    def check(principal: PrincipalDep) -> Principal:
        if not principal.allows(scope):
            if principal.read_only and scope.startswith("write:"):
                raise Forbidden("a viewer cannot change anything", details={"scope": scope})
            raise Forbidden(f"this needs the {scope!r} scope", details={"scope": scope})
        return principal

    check.__name__ = f"require_{scope.replace(':', '_').replace('*', 'any')}"
    return check


def Scope(scope: str) -> Any:  # noqa: N802 - reads like Depends
    return Depends(require(scope))


class BodySizeLimit:
    """Refuse bodies over the limit with 413 before they are read whole (pure ASGI)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await _send_json(send, PayloadTooLarge(self._message()))
                return
            await self.app(scope, receive, send)  # the server reads no more than announced
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        # A chunked body of unknown length: read it (up to the limit) before the app does.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await _send_json(send, PayloadTooLarge(self._message()))
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            message: dict[str, Any] = await receive()
            return message

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"


async def _send_json(send: Any, error: PayloadTooLarge) -> None:
    import json

    body = json.dumps(error.to_dict()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
