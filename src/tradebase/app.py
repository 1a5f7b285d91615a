"""The HTTP application: ``create_app()`` wires routers, error handlers and lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradebase import __version__
from tradebase.config import Settings, get_settings
from tradebase.core.db import Database, Engines
from tradebase.core.errors import TradebaseError
from tradebase.core.http import BodySizeLimit
from tradebase.signals import writer as signal_writer

log = logging.getLogger("tradebase")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def _error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def _recover_signals(engines: Engines, settings: Settings) -> None:
    """Execute the signals a previous process stored but did not finish, and place the
    mirrored legs it left pending, before serving."""
    from tradebase.mirroring.service import resume
    from tradebase.signals.service import recover

    try:
        recover(engines.session_factory(Database.main), settings)
        resume(engines.session_factory(Database.main))
    except SQLAlchemyError as exc:  # e.g. not migrated yet: /ready says so, serving goes on
        log.warning("pending signals not recovered: %s", type(exc).__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; *settings* default to the environment's."""
    settings = settings or get_settings()
    engines = Engines(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(_recover_signals, engines, settings)
        main_engine = engines.engine(Database.main)
        writer = None
        if signal_writer.wanted(main_engine, settings):  # signals/writer.py
            writer = await run_in_threadpool(signal_writer.start, main_engine, settings)
            if writer is not None:
                writer.attach(asyncio.get_running_loop())
        if settings.redis_url:  # every commit with events tells the other processes' hubs
            from tradebase.events.bus import bus, redis_channel

            bus.publish_to(settings.redis_url, redis_channel(settings.main_url))
        dispatcher = None
        if settings.webhook_dispatch:
            from tradebase.alerts.delivery import Dispatcher

            dispatcher = Dispatcher(engines, settings)
            dispatcher.start()
        streams = None
        if settings.broker_streams:
            from tradebase.brokers.stream import BrokerStreams

            streams = BrokerStreams(engines)
            streams.start()
        if settings.gc_freeze:  # what is alive now stays: no full collection walks it again
            gc.collect()
            gc.freeze()
        yield
        if writer is not None:
            writer.detach()
            await run_in_threadpool(signal_writer.stop, main_engine)
        if streams is not None:
            await run_in_threadpool(streams.close)
        if dispatcher is not None:
            await run_in_threadpool(dispatcher.stop)
        hub = getattr(app.state, "hub", None)
        if hub is not None:
            await run_in_threadpool(hub.stop)
        engines.dispose()

    app = FastAPI(
        title="Tradebase",
        version=__version__,
        description=(
            "A self-hosted trading server. Authenticate with `Authorization: Bearer <API key>`"
            " or a dashboard login session."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engines = engines
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(TradebaseError)
    async def domain_error(request: Request, exc: TradebaseError) -> JSONResponse:
        return _error(exc.status_code, exc.error_code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ())),
                "message": err.get("msg"),
                "type": err.get("type"),
            }
            for err in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return _error(
                400, "malformed_json", "the request body is not valid JSON", {"errors": errors}
            )
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        message = (
            f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
        )
        return _error(422, "validation_error", message, {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return _error(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal error; the server log has the details")

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/ready", tags=["health"])
    def ready() -> JSONResponse:
        """Readiness: both databases answer and are migrated to the latest revision."""
        from tradebase.core import migrate

        checks: dict[str, str] = {}
        ok = True
        for database in Database:
            try:
                with engines.engine(database).connect() as conn:
                    conn.execute(text("SELECT 1"))
                    current = migrate.revision_of(conn, database)
                head = migrate.head_revision(database)
                checks[database.value] = (
                    "ready" if current == head else f"at {current}, needs {head}"
                )
                ok = ok and current == head
            except Exception as exc:  # an unreachable database is the answer, not a crash
                checks[database.value] = f"unreachable: {type(exc).__name__}"
                ok = False
        if not ok:
            return _error(503, "not_ready", "a database is unreachable or not migrated", checks)
        return JSONResponse({"status": "ready", "details": checks})

    from tradebase.accounts.router import router as accounts_router
    from tradebase.alerts.router import router as webhooks_router
    from tradebase.audit.router import router as audit_router
    from tradebase.brokers.facade import router as openalgo_router
    from tradebase.brokers.router import router as brokers_router
    from tradebase.calendars.router import router as calendars_router
    from tradebase.events.router import router as events_router
    from tradebase.marketdata.router import router as prices_router
    from tradebase.mirroring.router import router as mirroring_router
    from tradebase.orders.router import router as orders_router
    from tradebase.portfolios.router import router as portfolios_router
    from tradebase.signals.router import redact_access_log
    from tradebase.signals.router import router as signals_router
    from tradebase.strategies.router import router as strategies_router

    # The webhook first: routes are matched in order, and it is the one that takes load.
    app.include_router(signals_router)
    app.include_router(accounts_router)
    app.include_router(portfolios_router)
    app.include_router(orders_router)
    app.include_router(prices_router)
    app.include_router(calendars_router)
    app.include_router(strategies_router)
    app.include_router(mirroring_router)
    app.include_router(audit_router)
    app.include_router(brokers_router)
    app.include_router(openalgo_router)
    app.include_router(events_router)
    app.include_router(webhooks_router)
    redact_access_log()
    return app
