"""HTTP routes: the webhook (key in the path or the body), signals with an API key, the
inbox's history, the webhook key and the signal settings (kill switch, IP allow-list,
risk limits)."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tradebase.accounts.schemas import MAX_ID
from tradebase.brokers.service import send_pending
from tradebase.config import Settings
from tradebase.core.auth import Principal
from tradebase.core.db import Database, unit_of_work
from tradebase.core.errors import PayloadTooLarge
from tradebase.core.http import (
    CredentialsSessionDep,
    SessionDep,
    client_ip,
    engines_of,
    require,
    settings_of,
)
from tradebase.signals import payload, schemas
from tradebase.signals import service as inbox
from tradebase.signals.errors import SenderNotAllowed, SignalMalformed, WebhookKeyInvalid
from tradebase.signals.models import SignalSource, SignalStatus
from tradebase.signals.service import limits_of
from tradebase.signals.service import signal as signal_service

router = APIRouter(tags=["signals"])
ReadSignals = Annotated[Principal, Depends(require("read:signals"))]
WriteSignals = Annotated[Principal, Depends(require("write:signals"))]
SignalId = Annotated[int, Path(ge=1, le=MAX_ID)]
# The raw body is kept in a TEXT column, 64 KiB on MariaDB/MySQL; a signal is a few hundred.
MAX_SIGNAL_BYTES = 65_535


class WebhookKeyFilter(logging.Filter):
    """Blank the webhook key in access-log lines (``POST /webhook/<key>``): the key in the
    path is a password that TradingView makes us take there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(
                _WEBHOOK_PATH.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in args
            )
        return True


_WEBHOOK_PATH = re.compile(r"^(/webhook/)[^/?]+")


def redact_access_log() -> None:
    """Install `WebhookKeyFilter` on uvicorn's access log (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, WebhookKeyFilter) for f in access.filters):
        access.addFilter(WebhookKeyFilter())


async def _body(request: Request) -> bytes:
    raw = await request.body()
    if len(raw) > MAX_SIGNAL_BYTES:
        raise PayloadTooLarge(f"a signal's body must be at most {MAX_SIGNAL_BYTES} bytes")
    return raw


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": schemas.SignalAnswer, "description": "Executed (or a repeat of one that was)."},
    202: {"model": schemas.SignalAnswer, "description": "Stored; still being executed."},
    400: {"description": "The body is not a JSON object (stored as rejected)."},
    401: {"description": "Unknown webhook key."},
    403: {"description": "The sender's address is not on the allow-list."},
    409: {"description": "Trading is paused (stored as rejected)."},
    422: {"description": "Refused: a bad field, unknown strategy, closed market, risk limit."},
}


@router.post("/webhook/{webhook_key}", responses=_ANSWERS, response_model=schemas.SignalAnswer)
async def webhook(webhook_key: str, request: Request) -> Response:
    """A TradingView-style signal, the webhook key in the path; the body JSON, sent as
    application/json or text/plain."""
    raw = await _body(request)
    return _respond(await _webhook(request, webhook_key, raw, None), request)


@router.post("/webhook", responses=_ANSWERS, response_model=schemas.SignalAnswer)
async def webhook_key_in_body(request: Request) -> Response:
    """A signal with the webhook key as ``key`` or ``passphrase`` in its JSON body."""
    raw = await _body(request)
    try:
        key = payload.webhook_key_of(payload.decode(raw))
    except payload.PayloadError as exc:
        raise SignalMalformed(f"{exc}; the webhook key goes in the URL or as key") from None
    if key is None:
        raise WebhookKeyInvalid("no webhook key: POST to /webhook/<key> or send it as key")
    return _respond(await _webhook(request, key, raw, key), request)


async def _webhook(request: Request, key: str, raw: bytes, redact: str | None) -> inbox.Answer:
    settings: Settings = settings_of(request)
    engines = engines_of(request)
    factory = engines.session_factory(Database.main)
    ip = client_ip(request)
    engine = engines.engine(Database.main)
    seconds = settings.signal_sender_cache_seconds
    if _in_loop(engine):
        user = _sender(engine, key, seconds)
    else:
        user = await run_in_threadpool(_sender, engine, key, seconds)
    limits = limits_of(user, settings)
    if limits.ip_allowlist and ip not in limits.ip_allowlist:
        raise SenderNotAllowed(
            f"signals from {ip} are not allowed: add the address to your signal"
            " settings' ip_allowlist",
            details={"ip": ip},
        )
    if limits.signed:
        await run_in_threadpool(_check_signature, request, user, raw, ip)
    # A signed replay carries its old timestamp: the idempotency window covers the
    # signature's, so a replay inside it is a repeat and one outside it is refused.
    window = max(settings.signal_dedup_window_seconds, settings.signal_signature_window_seconds)
    return await inbox.submit_async(
        factory,
        settings,
        user_id=user.id,
        raw=raw,
        content_type=request.headers.get("content-type"),
        source_ip=ip,
        source="webhook",
        redact=redact,
        window=window if limits.signed else None,
    )


def _in_loop(engine: Engine) -> bool:
    """Whether the sender is read in the event loop: on SQLite (one prepared read of an
    index, a few tens of µs, cheaper than the trip to the thread pool) while the pool has
    a connection to spare (a checkout that waits must not hold the loop up); elsewhere
    the read is a round trip, made in the pool."""
    if engine.dialect.name != "sqlite":
        return False
    pool = engine.pool
    return not isinstance(pool, QueuePool) or pool.checkedout() < pool.size()


def _sender(engine: Engine, key: str, seconds: float) -> inbox.Sender:
    user = signal_service.cached_sender(engine, key, seconds)
    if user is None:
        raise WebhookKeyInvalid("unknown webhook key")
    return user


def _check_signature(request: Request, user: inbox.Sender, raw: bytes, ip: str | None) -> None:
    credentials = engines_of(request).session_factory(Database.credentials)
    with unit_of_work(Database.credentials, factory=credentials) as secrets_session:
        signal_service.check_signature(
            secrets_session,
            user,
            raw,
            timestamp=request.headers.get(inbox.TIMESTAMP_HEADER),
            signature=request.headers.get(inbox.SIGNATURE_HEADER),
            settings=settings_of(request),
            ip_address=ip,
        )


@router.post("/api/v1/signals", responses=_ANSWERS, response_model=schemas.SignalAnswer)
async def post_signal(request: Request, principal: WriteSignals) -> Response:
    """A signal from a program holding an API key; the same body as the webhook's."""
    raw = await _body(request)
    answer = await inbox.submit_async(
        engines_of(request).session_factory(Database.main),
        settings_of(request),
        user_id=principal.user_id,
        raw=raw,
        content_type=request.headers.get("content-type"),
        source_ip=client_ip(request),
        source="api",
    )
    return _respond(answer, request)


def _respond(answer: inbox.Answer, request: Request) -> Response:
    answer.raise_refusal()
    body = schemas.SignalAnswer(
        signal=schemas.SignalRead.model_validate(answer.signal), duplicate=answer.duplicate
    )
    status = 200 if answer.signal.status == SignalStatus.processed else 202
    # Orders on live broker accounts are stored pending: they are sent once the answer is
    # out (TradingView waits 3 s at most; a broker may take longer), by the first copy.
    pending = [
        int(order["id"])
        for order in (answer.signal.outcome or {}).get("orders", [])
        if order.get("status") == "pending" and not answer.duplicate
    ]
    task = BackgroundTask(send_pending, engines_of(request), pending) if pending else None
    # Serialized by pydantic-core at once (the same bytes as JSONResponse of model_dump).
    return Response(
        body.model_dump_json(), status_code=status, media_type="application/json", background=task
    )


@router.get("/api/v1/signals", response_model=list[schemas.SignalRead])
def list_signals(
    principal: ReadSignals,
    session: SessionDep,
    status: SignalStatus | None = None,
    after_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    symbol: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
    strategy_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    source: SignalSource | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> list[schemas.SignalRead]:
    """Signals, newest first, with what became of each (and the raw payload); filters by
    status, symbol, strategy, source and the time received (``since`` inclusive,
    ``until`` exclusive); ``after_id`` pages on."""
    rows = signal_service.list(
        session,
        principal,
        status=status,
        after_id=after_id,
        limit=limit,
        symbol=symbol,
        strategy_id=strategy_id,
        source=source,
        since=since,
        until=until,
    )
    return [schemas.SignalRead.model_validate(s) for s in rows]


@router.get("/api/v1/signals/settings", response_model=schemas.SignalSettings)
def read_settings(principal: ReadSignals, session: SessionDep) -> schemas.SignalSettings:
    return schemas.SignalSettings(**signal_service.own_settings(session, principal))


@router.put("/api/v1/signals/settings", response_model=schemas.SignalSettings)
def update_settings(
    body: schemas.SignalSettingsUpdate, principal: WriteSignals, session: SessionDep
) -> schemas.SignalSettings:
    """Pause or resume trading from signals (the kill switch), set the IP allow-list and
    the risk limits; fields left out stay as they are."""
    changes = body.model_dump(exclude_unset=True)
    return schemas.SignalSettings(**signal_service.update_settings(session, principal, changes))


@router.post("/api/v1/signals/webhook-key", response_model=schemas.WebhookKey)
def create_webhook_key(principal: WriteSignals, session: SessionDep) -> schemas.WebhookKey:
    """A new webhook key, shown once; the previous one stops working."""
    key = signal_service.new_webhook_key(session, principal)
    return schemas.WebhookKey(webhook_key=key, url_path=f"/webhook/{key}")


@router.post("/api/v1/signals/signing-secret", response_model=schemas.SigningSecret)
def create_signing_secret(
    principal: WriteSignals, session: SessionDep, credentials_session: CredentialsSessionDep
) -> schemas.SigningSecret:
    """A new signing secret, shown once: from now on your webhooks must be signed."""
    secret = signal_service.new_signing_secret(session, credentials_session, principal)
    return schemas.SigningSecret(
        signing_secret=secret,
        timestamp_header=inbox.TIMESTAMP_HEADER,
        signature_header=inbox.SIGNATURE_HEADER,
    )


@router.delete("/api/v1/signals/signing-secret", status_code=204)
def delete_signing_secret(
    principal: WriteSignals, session: SessionDep, credentials_session: CredentialsSessionDep
) -> None:
    """Stop requiring signed webhooks; the secret is deleted."""
    signal_service.drop_signing_secret(session, credentials_session, principal)


@router.get("/api/v1/signals/{signal_id}", response_model=schemas.SignalRead)
def read_signal(
    signal_id: SignalId, principal: ReadSignals, session: SessionDep
) -> schemas.SignalRead:
    return schemas.SignalRead.model_validate(signal_service.get(session, principal, signal_id))
