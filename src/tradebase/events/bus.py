"""Wake-ups within one process after a commit that wrote events, and their relay to
Redis: the after-commit hook every session runs (a dictionary lookup when there were no
events)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

log = logging.getLogger("tradebase.events")

EMITTED = "tradebase.events.emitted"  # session.info flag: this transaction wrote events


def redis_channel(main_url: URL) -> str:
    """The Redis channel of one main database (several installs may share one Redis)."""
    identity = main_url.render_as_string(hide_password=True)
    return "tradebase:events:" + hashlib.sha256(identity.encode()).hexdigest()[:16]


class LocalBus:
    """Wake-ups within this process after a commit that wrote events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._publishers: dict[str, _RedisPublisher] = {}

    def listen(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def publish_to(self, redis_url: str, channel: str) -> None:
        """Publish every commit with events of this process to Redis (idempotent)."""
        with self._lock:
            key = f"{redis_url} {channel}"
            if key not in self._publishers:
                self._publishers[key] = _RedisPublisher(redis_url, channel)

    def committed(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
            publishers = list(self._publishers.values())
        for publisher in publishers:
            publisher.poke()
        for callback in listeners:
            try:
                callback()
            except Exception:  # a listener's failure must not fail the caller's commit
                log.exception("event listener failed")


bus = LocalBus()


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(EMITTED, False):
        bus.committed()


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(EMITTED, None)


class _RedisPublisher:
    """Publishes on a thread of its own, so that no commit waits for Redis; pokes that
    arrive while it publishes make one more message, not one each."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel
        self._poked = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events-redis-pub", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._poked.set()

    def _run(self) -> None:
        import redis

        client: Any = None
        while True:
            self._poked.wait()
            self._poked.clear()
            try:
                if client is None:
                    client = redis.Redis.from_url(self.url, socket_timeout=5)
                client.publish(self.channel, "1")
            except Exception as exc:  # Redis down: the hubs' safety poll still finds them
                log.warning("could not publish events to Redis: %s", exc)
                client = None
                time.sleep(1)
