"""Sending outgoing webhooks, off the request path: the dispatcher.

A `Dispatcher` runs as a thread in ``tradebase serve`` and ``tradebase worker`` (any
number of them against one database). Each round it

1. turns new events of the outbox into deliveries: the undispatched events are locked
   (``FOR UPDATE SKIP LOCKED``; on SQLite the write lock), a pending delivery is inserted
   for every active webhook of the event's user that subscribes to its type, and the
   events are marked dispatched, in one transaction: each event fans out once;
2. claims the due deliveries, each with a compare-and-set UPDATE that moves its
   ``next_attempt_at`` past the request's timeout (the claim: a dispatcher that dies
   mid-request leaves it due again once that passes), and sends them from a small thread
   pool, outside any transaction;
3. records each attempt in its delivery row: status, HTTP status, the answer's first 2000
   characters, error, duration. A failure schedules attempt n+1 as a new row, due after
   ``WEBHOOK_RETRY_BASE_SECONDS x 2^(n-1)`` (at most ``WEBHOOK_RETRY_MAX_SECONDS``), up to
   ``WEBHOOK_MAX_ATTEMPTS``; every failure counts in the webhook's ``failure_count``, a
   success resets it, and ``WEBHOOK_DISABLE_AFTER`` (10) failures in a row disable the
   webhook (a ``webhook.disabled`` event says so).

Delivery is at least once: a receiver deduplicates by the ``X-Tradebase-Event-Id`` header.
Each request is signed like Stripe's: ``X-Tradebase-Signature: sha256=<hex>`` is the
HMAC-SHA256, under the webhook's secret, of ``X-Tradebase-Timestamp`` (Unix seconds), a
dot, and the raw body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, exists, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from tradebase import __version__
from tradebase.accounts.service import require_writer
from tradebase.alerts.models import DeliveryStatus, Webhook, WebhookDelivery
from tradebase.alerts.service import check_url, matches, secret_identity
from tradebase.alerts.service import webhook as webhook_service
from tradebase.config import Settings
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.errors import TradebaseError
from tradebase.core.time import utc_now
from tradebase.credentials.service import credential as credential_service
from tradebase.events.bus import bus
from tradebase.events.models import Event
from tradebase.events.service import WEBHOOK_TEST, EventType, body, emit, plain

log = logging.getLogger("tradebase.webhooks")

SIGNATURE_HEADER = "X-Tradebase-Signature"
TIMESTAMP_HEADER = "X-Tradebase-Timestamp"
EVENT_HEADER = "X-Tradebase-Event"
EVENT_ID_HEADER = "X-Tradebase-Event-Id"
DELIVERY_HEADER = "X-Tradebase-Delivery"
BODY_LIMIT = 2000  # characters of a receiver's answer kept
READ_LIMIT = 65_536  # bytes of it read at most
FAN_OUT_BATCH = 200
_ANY_ACTIVE_WEBHOOK = select(Webhook.id).where(Webhook.is_active.is_(True)).limit(1)
COALESCE_SECONDS = 0.05  # how long a woken dispatcher waits for the rest of a burst


def sign(secret: str, timestamp: str, raw: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256, under *secret*, of ``<timestamp>.<raw>``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def backoff(attempt: int, settings: Settings) -> float:
    """Seconds between attempt *attempt* failing and the next one."""
    return float(
        min(
            settings.webhook_retry_base_seconds * 2 ** (attempt - 1),
            settings.webhook_retry_max_seconds,
        )
    )


@dataclass(frozen=True)
class Sent:
    """What one HTTP attempt gave."""

    ok: bool
    at: datetime
    status: int | None
    body: str | None
    error: str | None
    duration_ms: int


def post(
    client: httpx.Client,
    url: str,
    secret: str,
    payload: dict[str, Any],
    *,
    delivery_id: int,
    event_id: str,
    event_type: str,
) -> Sent:
    """Send one signed request; any 2xx answer is a success."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"Tradebase-Webhooks/{__version__}",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, raw),
        EVENT_HEADER: event_type,
        EVENT_ID_HEADER: event_id,
        DELIVERY_HEADER: str(delivery_id),
    }
    at = utc_now()
    started = time.monotonic()
    try:
        with client.stream("POST", url, content=raw, headers=headers) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= READ_LIMIT:
                    break
            text = b"".join(chunks).decode("utf-8", errors="replace")[:BODY_LIMIT]
            ok = 200 <= response.status_code < 300
            return Sent(
                ok,
                at,
                response.status_code,
                text,
                None if ok else f"HTTP {response.status_code}",
                _ms(started),
            )
    except httpx.TimeoutException as exc:
        return Sent(False, at, None, None, f"timed out: {type(exc).__name__}", _ms(started))
    except httpx.HTTPError as exc:
        return Sent(False, at, None, None, f"{type(exc).__name__}: {exc}"[:2000], _ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class Secrets:
    """Signing secrets, decrypted (and logged as read) once per change of the secret; the
    cache is checked against the credential's ``updated_at`` on every use (no decryption,
    no log), so a new secret is used from the next request on."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[datetime | None, str]] = {}

    def get(self, hook: Webhook) -> str:
        identity = secret_identity(hook.id)
        with unit_of_work(factory=self._factory, write=False) as session:
            info = credential_service.describe(session, **identity)
        with self._lock:
            cached = self._cache.get(hook.id)
        if cached is not None and info.is_set and cached[0] == info.updated_at:
            return cached[1]
        with unit_of_work(factory=self._factory) as session:
            value = credential_service.read_secret(
                session,
                **identity,
                actor="webhooks",
                actor_user_id=None,
                purpose="sign outgoing webhooks",
            )
        with self._lock:
            self._cache[hook.id] = (info.updated_at, value)
        return value


class Dispatcher:
    """Fans new events out into deliveries and sends the due ones (see the module)."""

    def __init__(self, engines: Engines, settings: Settings) -> None:
        self.settings = settings
        self._main = engines.session_factory(Database.main)
        self._secrets = Secrets(engines.session_factory(Database.credentials))
        self._pool = ThreadPoolExecutor(settings.webhook_concurrency, "webhook-send")
        self._http = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._inflight: set[int] = set()
        self._unsubscribed_marked_at = -float("inf")  # time.monotonic()

    @property
    def lease(self) -> timedelta:
        """How long a claim lasts: past the request's timeout, with room to record it."""
        return timedelta(seconds=self.settings.webhook_timeout_seconds * 2 + 30)

    def start(self) -> None:
        bus.listen(self.wake)
        self._thread = threading.Thread(target=self._run, name="webhook-dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        bus.unlisten(self.wake)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout_seconds + 5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the database away: try again next round
                log.warning("webhook dispatch failed: %s", exc)
                self._stop.wait(1)
            if self._wake.wait(timeout=self.settings.webhook_poll_seconds):
                # Woken by an event: let the burst it belongs to arrive, so that a stream
                # of orders costs one round per COALESCE_SECONDS, not one per event (each
                # round takes the write lock the orders need).
                self._stop.wait(COALESCE_SECONDS)
            self._wake.clear()

    def tick(self) -> int:
        """One round: fan out new events, send what is due; return deliveries started."""
        while self.fan_out() == FAN_OUT_BATCH:
            pass
        return self.send_due()

    # --- events -> deliveries -----------------------------------------------------------

    def fan_out(self) -> int:
        """Turn up to a batch of undispatched events into deliveries; return how many."""
        waiting = select(Event.id).where(Event.dispatched_at.is_(None)).limit(1)
        with unit_of_work(factory=self._main, write=False) as session:
            if session.scalar(waiting) is None:  # the common case, without the write lock
                return 0
            subscribed = session.scalar(_ANY_ACTIVE_WEBHOOK) is not None
        if not subscribed:
            self._mark_unsubscribed()
            return 0
        with unit_of_work(factory=self._main) as session:
            statement = (
                select(Event)
                .where(Event.dispatched_at.is_(None))
                .order_by(Event.id)
                .limit(FAN_OUT_BATCH)
            )
            if session.get_bind().dialect.name != "sqlite":
                statement = statement.with_for_update(skip_locked=True)
            rows = session.scalars(statement).all()
            if not rows:
                return 0
            hooks = session.scalars(
                select(Webhook).where(
                    Webhook.user_id.in_({r.user_id for r in rows}), Webhook.is_active.is_(True)
                )
            ).all()
            now = utc_now()
            deliveries = [
                {
                    "webhook_id": hook.id,
                    "event_id": str(row.id),
                    "event_type": row.event_type,
                    "payload": body(row),
                    "attempt": 1,
                    "status": DeliveryStatus.pending,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for row in rows
                for hook in hooks
                if hook.user_id == row.user_id
                and row.created_at >= hook.created_at  # only what came after subscribing
                and matches(hook.events, row.event_type)
            ]
            if deliveries:
                session.execute(insert(WebhookDelivery), deliveries)
            session.execute(
                update(Event)
                .where(Event.id.in_([r.id for r in rows]))
                .values(dispatched_at=now)
                .execution_options(synchronize_session=False)
            )
            return len(rows)

    def _mark_unsubscribed(self) -> None:
        """With no active webhook there is nothing to deliver: mark the events dispatched,
        once a poll interval in one statement rather than a write-locked round per burst
        of orders. An event of a user who has an active webhook by then is left to
        `fan_out` (the webhook may have been created a moment ago)."""
        now = time.monotonic()
        if now - self._unsubscribed_marked_at < self.settings.webhook_poll_seconds:
            return
        self._unsubscribed_marked_at = now
        with unit_of_work(factory=self._main) as session:
            session.execute(
                update(Event)
                .where(
                    Event.dispatched_at.is_(None),
                    ~exists().where(Webhook.user_id == Event.user_id, Webhook.is_active.is_(True)),
                )
                .values(dispatched_at=utc_now())
                .execution_options(synchronize_session=False)
            )

    # --- sending ------------------------------------------------------------------------

    def send_due(self) -> int:
        """Claim the due deliveries (compare-and-set) and start sending them."""
        now = utc_now()
        free = self.settings.webhook_concurrency * 4 - len(self._inflight)
        if free <= 0:
            return 0
        due_query = (
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == DeliveryStatus.pending,
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(free)
        )
        with unit_of_work(factory=self._main, write=False) as session:
            due = [i for i in session.scalars(due_query) if i not in self._inflight]
        if not due:
            return 0
        claimed: list[int] = []
        with unit_of_work(factory=self._main) as session:
            for delivery_id in due:
                moved = session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == delivery_id,
                        WebhookDelivery.status == DeliveryStatus.pending,
                        WebhookDelivery.next_attempt_at <= now,
                    )
                    .values(next_attempt_at=now + self.lease)
                    .execution_options(synchronize_session=False)
                )
                if cast(CursorResult[Any], moved).rowcount:
                    claimed.append(delivery_id)
        for delivery_id in claimed:
            with self._lock:
                self._inflight.add(delivery_id)
            self._pool.submit(self._deliver, delivery_id)
        return len(claimed)

    def _deliver(self, delivery_id: int) -> None:
        try:
            with unit_of_work(factory=self._main, write=False) as session:
                delivery = session.get(WebhookDelivery, delivery_id)
                hook = session.get(Webhook, delivery.webhook_id) if delivery else None
            if delivery is None or hook is None:  # deleted meanwhile
                return
            if not hook.is_active:
                sent = Sent(False, utc_now(), None, None, "the webhook is disabled", 0)
                self.record(delivery, hook, sent, retry=False)
                return
            try:
                _recheck(hook.url, self.settings)
                secret = self._secrets.get(hook)
            except TradebaseError as exc:
                sent = Sent(False, utc_now(), None, None, exc.message, 0)
            else:
                sent = post(
                    self._http,
                    hook.url,
                    secret,
                    delivery.payload,
                    delivery_id=delivery.id,
                    event_id=delivery.event_id,
                    event_type=delivery.event_type,
                )
            self.record(delivery, hook, sent)
        except Exception:
            log.exception("webhook delivery %s failed", delivery_id)
        finally:
            with self._lock:
                self._inflight.discard(delivery_id)

    def record(
        self, delivery: WebhookDelivery, hook: Webhook, sent: Sent, *, retry: bool = True
    ) -> None:
        """Record the attempt; on failure count it, disable the webhook at the limit, or
        schedule the next attempt. One transaction."""
        settings = self.settings
        now = utc_now()
        with unit_of_work(factory=self._main) as session:
            if not _finish(session, delivery.id, sent, now):
                return  # recorded by another dispatcher whose claim this one outlived
            if not retry:
                return
            hooks = update(Webhook).where(Webhook.id == hook.id)
            if sent.ok:
                session.execute(hooks.values(failure_count=0, last_called_at=sent.at))
                return
            session.execute(
                hooks.values(failure_count=Webhook.failure_count + 1, last_called_at=sent.at)
            )
            reason = (
                f"disabled after {settings.webhook_disable_after} consecutive failed"
                f" deliveries; the last: {sent.error}"
            )[:200]
            disabled = session.execute(
                update(Webhook)
                .where(
                    Webhook.id == hook.id,
                    Webhook.is_active.is_(True),
                    Webhook.failure_count >= settings.webhook_disable_after,
                )
                .values(is_active=False, disabled_at=now, disabled_reason=reason)
            )
            if cast(CursorResult[Any], disabled).rowcount:
                session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.webhook_id == hook.id,
                        WebhookDelivery.status == DeliveryStatus.pending,
                    )
                    .values(
                        status=DeliveryStatus.failed,
                        error="the webhook was disabled",
                        next_attempt_at=None,
                    )
                    .execution_options(synchronize_session=False)
                )
                emit(
                    session,
                    hook.user_id,
                    EventType.webhook_disabled,
                    {"webhook_id": hook.id, "url": hook.url, "reason": reason},
                )
                log.warning("webhook %s disabled: %s", hook.id, reason)
            elif delivery.attempt < settings.webhook_max_attempts:
                session.execute(
                    insert(WebhookDelivery),
                    {
                        "webhook_id": hook.id,
                        "event_id": delivery.event_id,
                        "event_type": delivery.event_type,
                        "payload": delivery.payload,
                        "attempt": delivery.attempt + 1,
                        "status": DeliveryStatus.pending,
                        "next_attempt_at": now
                        + timedelta(seconds=backoff(delivery.attempt, settings)),
                        "created_at": now,
                    },
                )


def _recheck(url: str, settings: Settings) -> None:
    """Without WEBHOOK_ALLOW_PRIVATE, look at the host again before each request: its
    name may resolve to a private address by now."""
    if not settings.webhook_allow_private:
        check_url(url, settings)


def _finish(session: Session, delivery_id: int, sent: Sent, now: datetime) -> bool:
    moved = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.pending)
        .values(
            status=DeliveryStatus.succeeded if sent.ok else DeliveryStatus.failed,
            response_status=sent.status,
            response_body=sent.body,
            error=sent.error,
            duration_ms=sent.duration_ms,
            attempted_at=sent.at,
            delivered_at=now if sent.ok else None,
            next_attempt_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], moved).rowcount)


def send_test(engines: Engines, principal: Principal, webhook_id: int) -> WebhookDelivery:
    """Send a ``webhook.test`` event to the webhook now (active or not) and return the
    recorded attempt; it does not count towards the webhook's failures. No transaction is
    open while the request is in flight."""
    require_writer(principal)
    main = engines.session_factory(Database.main)
    settings = engines.settings
    with unit_of_work(factory=main, write=False) as session:
        hook = webhook_service.get(session, principal, webhook_id)
    now = utc_now()
    event_id = "test_" + secrets.token_hex(8)
    payload = {
        "id": event_id,
        "type": WEBHOOK_TEST,
        "created_at": plain(now),
        "data": {"webhook_id": hook.id, "message": "a test event from Tradebase"},
    }
    with unit_of_work(factory=main) as session:
        delivery = WebhookDelivery(
            webhook_id=hook.id,
            event_id=event_id,
            event_type=WEBHOOK_TEST,
            payload=payload,
            attempt=1,
            status=DeliveryStatus.pending,
            next_attempt_at=None,
        )
        session.add(delivery)
        session.flush()
    try:
        _recheck(hook.url, settings)
        secret = Secrets(engines.session_factory(Database.credentials)).get(hook)
    except TradebaseError as exc:
        sent = Sent(False, utc_now(), None, None, exc.message, 0)
    else:
        with httpx.Client(timeout=settings.webhook_timeout_seconds) as client:
            sent = post(
                client,
                hook.url,
                secret,
                payload,
                delivery_id=delivery.id,
                event_id=event_id,
                event_type=WEBHOOK_TEST,
            )
    with unit_of_work(factory=main) as session:
        _finish(session, delivery.id, sent, utc_now())
        found = session.get(WebhookDelivery, delivery.id, populate_existing=True)
        assert found is not None
        return found
