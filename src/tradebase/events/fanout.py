"""Live fan-out of committed events to the stream clients of every server process.

A notification only says "there are new events": each process's `Hub` then reads the rows
after its cursor from the outbox, once for all its clients, and hands each client its own
user's events. So whatever wakes a hub, the events and their order come from the database:

* PostgreSQL: ``emit`` NOTIFYs ``tradebase_events`` in the emitting transaction (delivered
  on commit); each hub LISTENs on a connection of its own.
* Redis (``TRADEBASE_REDIS_URL``): after a commit that wrote events, the process publishes
  on a channel named after the database; every hub subscribes to it.
* In-process (SQLite): the commit wakes the hubs of this process directly.
* MariaDB/MySQL without Redis: hubs poll the outbox every ``EVENTS_POLL_SECONDS``.

Every hub also polls now and then (ten times that interval) in case a notification was
lost, e.g. while its LISTEN connection was reconnecting.

Ids are handed out before commit, so a transaction may commit an event with a lower id
after a higher one is seen (PostgreSQL sequences, InnoDB auto-increment). A hub remembers
the ids it skipped and looks for them again for ``GAP_SECONDS``; after that, a skipped id
is taken to be a rolled-back one. `GET /api/v1/events` reads the outbox itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tradebase.config import Settings
from tradebase.core.db import unit_of_work
from tradebase.events.bus import bus, redis_channel
from tradebase.events.models import Event
from tradebase.events.service import NOTIFY_CHANNEL, body
from tradebase.events.service import event as event_service

log = logging.getLogger("tradebase.events")

GAP_SECONDS = 60.0
MAX_GAPS = 10_000
BATCH = 500
SAFETY_FACTOR = 10  # notified hubs poll at EVENTS_POLL_SECONDS x this
QUEUE_LIMIT = 1_000  # events waiting for one slow client before it is disconnected


@dataclass(eq=False)
class Subscriber:
    """One stream client: its user's events go into its queue, on its event loop."""

    user_id: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def offer(self, message: str | None) -> None:
        self.loop.call_soon_threadsafe(self._put, message)

    def _put(self, message: str | None) -> None:
        if self.overflowed:
            return
        if message is not None and self.queue.qsize() >= QUEUE_LIMIT:
            self.overflowed = True
            message = None  # ends the client's pump: it resumes with after_id
        self.queue.put_nowait(message)


class Hub:
    """Reads new events for this process's stream clients and hands them out by user."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self._factory = factory
        self._settings = settings
        self._lock = threading.Lock()
        self._subscribers: dict[int, set[Subscriber]] = {}
        self._cursor = 0
        self._gaps: dict[int, float] = {}  # skipped id -> when to give up on it
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        backend = settings.main_url.get_backend_name()
        self.mechanism = (
            "redis"
            if settings.redis_url
            else {"postgresql": "listen", "sqlite": "in-process"}.get(backend, "poll")
        )
        poll = settings.events_poll_seconds
        self._poll = poll if self.mechanism == "poll" else poll * SAFETY_FACTOR

    def start(self) -> None:
        bus.listen(self.wake)
        self._spawn(self._read_loop, "events-hub")
        if self.mechanism == "listen":
            self._spawn(self._listen_postgres, "events-listen")
        elif self.mechanism == "redis":
            assert self._settings.redis_url is not None
            channel = redis_channel(self._settings.main_url)
            bus.publish_to(self._settings.redis_url, channel)
            self._spawn(lambda: self._listen_redis(channel), "events-redis-sub")

    def stop(self) -> None:
        bus.unlisten(self.wake)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            subscribers = [s for group in self._subscribers.values() for s in group]
            self._subscribers.clear()
        for subscriber in subscribers:
            subscriber.offer(None)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def subscribe(self, user_id: int, loop: asyncio.AbstractEventLoop) -> tuple[Subscriber, int]:
        """Add a client of *user_id*; return it and the last event id before it joined
        (it gets every event after that). Blocking: call it from a worker thread."""
        with unit_of_work(factory=self._factory, write=False) as session:
            start = event_service.last_id(session)
        subscriber = Subscriber(user_id, loop)
        with self._lock:
            if not self._subscribers:  # idle until now: start from here
                self._cursor = start
                self._gaps.clear()
            self._subscribers.setdefault(user_id, set()).add(subscriber)
        return subscriber, start

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            group = self._subscribers.get(subscriber.user_id)
            if group is not None:
                group.discard(subscriber)
                if not group:
                    del self._subscribers[subscriber.user_id]

    @property
    def clients(self) -> int:
        with self._lock:
            return sum(len(group) for group in self._subscribers.values())

    # --- reading ----------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                idle = not self._subscribers
            if idle:
                continue
            try:
                while self._read_once() and not self._stop.is_set():
                    pass  # a full batch: there may be more
            except Exception as exc:  # the database away: try again at the next wake-up
                log.warning("reading events for the stream failed: %s", exc)
                self._stop.wait(1)

    def _read_once(self) -> bool:
        now = time.monotonic()
        with self._lock:
            cursor = self._cursor
            self._gaps = {i: until for i, until in self._gaps.items() if until > now}
            gaps = sorted(self._gaps)[:1000]
        with unit_of_work(factory=self._factory, write=False) as session:
            rows = list(
                session.scalars(
                    select(Event).where(Event.id > cursor).order_by(Event.id).limit(BATCH)
                )
            )
            found = list(session.scalars(select(Event).where(Event.id.in_(gaps)))) if gaps else []
        with self._lock:
            expected = cursor + 1
            for row in rows:
                if row.id > expected and len(self._gaps) < MAX_GAPS:
                    for missing in range(expected, min(row.id, expected + MAX_GAPS)):
                        self._gaps[missing] = now + GAP_SECONDS
                expected = row.id + 1
            if rows:
                self._cursor = max(self._cursor, rows[-1].id)
            for row in found:
                self._gaps.pop(row.id, None)
            deliver = sorted(found + rows, key=lambda r: r.id)
            targets = [(row, list(self._subscribers.get(row.user_id, ()))) for row in deliver]
        for row, subscribers in targets:
            if subscribers:
                message = json.dumps(body(row))
                for subscriber in subscribers:
                    subscriber.offer(message)
        return len(rows) == BATCH

    # --- being told -------------------------------------------------------------------

    def _listen_postgres(self) -> None:
        import psycopg

        url = self._settings.main_url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.wake()  # whatever was committed while not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=100):
                            self.wake()
            except Exception as exc:
                log.warning("LISTEN %s failed, retrying: %s", NOTIFY_CHANNEL, exc)
                self._stop.wait(1)

    def _listen_redis(self, channel: str) -> None:
        import redis

        assert self._settings.redis_url is not None
        while not self._stop.is_set():
            try:
                client: Any = redis.Redis.from_url(self._settings.redis_url, socket_timeout=5)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                self.wake()
                try:
                    while not self._stop.is_set():
                        if pubsub.get_message(timeout=1.0) is not None:
                            self.wake()
                finally:
                    pubsub.close()
                    client.close()
            except Exception as exc:
                log.warning("Redis subscription failed, retrying: %s", exc)
                self._stop.wait(1)
