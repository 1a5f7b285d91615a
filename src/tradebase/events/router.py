"""HTTP and WebSocket routes of the outbox: ``GET /api/v1/events`` and the live stream
``/api/v1/stream``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from tradebase.accounts.schemas import MAX_ID
from tradebase.config import Settings
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.errors import Forbidden, TradebaseError, Unauthorized
from tradebase.core.http import SessionDep, require
from tradebase.core.time import utc_now
from tradebase.events import schemas
from tradebase.events.fanout import Hub, Subscriber
from tradebase.events.service import body
from tradebase.events.service import event as event_service

router = APIRouter(tags=["events"])
ReadEvents = Annotated[Principal, Depends(require("read:events"))]
SCOPE = "read:events"
AUTH_SECONDS = 10.0  # how long a client may take to send its auth message
REPLAY_LIMIT = 1000
# Close codes: 4401 not authenticated, 4403 not allowed, 4408 too slow (resume with after_id)
CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN, CLOSE_TOO_SLOW = 4401, 4403, 4408


@router.get("/api/v1/events", response_model=list[schemas.EventRead])
def list_events(
    principal: ReadEvents,
    session: SessionDep,
    after_id: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, description="Cursor: the last id you got (0: from the start)."),
    ] = None,
    type: Annotated[str | None, Query(max_length=50, description="Only this type.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[schemas.EventRead]:
    """Your events, oldest first, after ``after_id``: the outbox that webhooks and the
    stream carry, kept for ``RETENTION_EVENTS``. Pass the last id you got to continue."""
    found = event_service.list(session, principal, after_id=after_id, event_type=type, limit=limit)
    return [schemas.EventRead.of(e) for e in found]


def hub_of(websocket: WebSocket) -> Hub:
    """The process's hub, started with the first stream client."""
    state = websocket.app.state
    hub: Hub | None = getattr(state, "hub", None)
    if hub is None:
        engines: Engines = state.engines
        hub = Hub(engines.session_factory(Database.main), state.settings)
        hub.start()
        state.hub = hub
    return hub


def _authenticate(websocket: WebSocket, token: str) -> Principal:
    from tradebase.accounts.service import api_key as api_key_service

    engines: Engines = websocket.app.state.engines
    with unit_of_work(factory=engines.session_factory(Database.main)) as session:
        return api_key_service.authenticate(
            session,
            token,
            settings=websocket.app.state.settings,
            ip_address=websocket.client.host if websocket.client else None,
            user_agent=websocket.headers.get("user-agent"),
        ).principal


async def _token(websocket: WebSocket) -> str:
    header = websocket.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use Authorization: Bearer <API key>")
        return token.strip()
    if key := websocket.query_params.get("api_key"):
        return key
    try:
        first = await asyncio.wait_for(websocket.receive_text(), AUTH_SECONDS)
        message = json.loads(first)
    except (TimeoutError, ValueError, KeyError):
        message = None
    if not isinstance(message, dict) or message.get("type") != "auth" or not message.get("api_key"):
        raise Unauthorized(
            "authentication required: send Authorization: Bearer <API key>, ?api_key=, or"
            ' first the message {"type": "auth", "api_key": "tb_..."}'
        )
    return str(message["api_key"])


async def _refuse(websocket: WebSocket, error: TradebaseError) -> None:
    await websocket.send_text(json.dumps({"type": "error", **error.to_dict()}))
    code = CLOSE_FORBIDDEN if isinstance(error, Forbidden) else CLOSE_UNAUTHORIZED
    await websocket.close(code=code, reason=error.error_code)


@router.websocket("/api/v1/stream")
async def stream(
    websocket: WebSocket,
    after_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> None:
    """Your events as they happen, one JSON message each (``{"id", "type", "created_at",
    "data"}``, as webhooks get them), after a ``hello``; ``ping`` after a quiet
    STREAM_HEARTBEAT_SECONDS. ``?after_id=`` first replays what came after that id."""
    await websocket.accept()
    try:
        principal = await run_in_threadpool(_authenticate, websocket, await _token(websocket))
        if not principal.allows(SCOPE):
            raise Forbidden(f"this needs the {SCOPE!r} scope", details={"scope": SCOPE})
    except TradebaseError as error:
        await _refuse(websocket, error)
        return
    except WebSocketDisconnect:
        return
    settings: Settings = websocket.app.state.settings
    hub = hub_of(websocket)
    subscriber, start = await run_in_threadpool(
        hub.subscribe, principal.user_id, asyncio.get_running_loop()
    )
    try:
        await websocket.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "user_id": principal.user_id,
                    "after_id": start,
                    "heartbeat_seconds": settings.stream_heartbeat_seconds,
                }
            )
        )
        replayed: set[int] = set()
        if after_id is not None and after_id < start:
            replayed = await _replay(websocket, principal.user_id, after_id, start)
        await _pump(websocket, subscriber, replayed, settings.stream_heartbeat_seconds)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(subscriber)


async def _replay(websocket: WebSocket, user_id: int, after_id: int, up_to: int) -> set[int]:
    engines: Engines = websocket.app.state.engines

    def read() -> list[dict[str, Any]]:
        with unit_of_work(factory=engines.session_factory(Database.main), write=False) as s:
            return [
                body(e)
                for e in event_service.of_user(
                    s, user_id, after_id=after_id, up_to=up_to, limit=REPLAY_LIMIT
                )
            ]

    sent: set[int] = set()
    for message in await run_in_threadpool(read):
        await websocket.send_text(json.dumps(message))
        sent.add(message["id"])
    return sent


async def _pump(
    websocket: WebSocket, subscriber: Subscriber, replayed: set[int], heartbeat: float
) -> None:
    """Send the subscriber's events and heartbeats until the client goes away."""

    async def receive() -> None:  # notices the client leaving; answers its pings
        while True:
            received = await websocket.receive()
            if received["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(received.get("code", 1000))
            with contextlib.suppress(ValueError, TypeError):
                sent = json.loads(received.get("text") or "null")
                if isinstance(sent, dict) and sent.get("type") == "ping":
                    await websocket.send_text(json.dumps({"type": "pong", "at": _now()}))

    listener = asyncio.create_task(receive())
    try:
        while not listener.done():
            getter = asyncio.ensure_future(subscriber.queue.get())
            done, _ = await asyncio.wait(
                {getter, listener}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
            )
            if listener in done:
                getter.cancel()
                break
            if getter not in done:
                getter.cancel()
                await websocket.send_text(json.dumps({"type": "ping", "at": _now()}))
                continue
            message = getter.result()
            if message is None:  # the hub stopped, or the client fell too far behind
                reason = "too slow: reconnect with after_id" if subscriber.overflowed else "bye"
                await websocket.close(
                    code=CLOSE_TOO_SLOW if subscriber.overflowed else 1001, reason=reason
                )
                return
            if replayed and json.loads(message)["id"] in replayed:
                continue
            await websocket.send_text(message)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
            await listener


def _now() -> str:
    return utc_now().isoformat()
