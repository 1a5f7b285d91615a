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
        self._configured = False  # publish_to was called, or the settings were consulted

    def listen(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def publish_to(self, redis_url: str, channel: str, *, threaded: bool = True) -> None:
        """Publish every commit with events of this process to Redis (idempotent): from a
        thread of its own in servers and workers, at the commit in one-shot commands."""
        with self._lock:
            self._configured = True
            key = f"{redis_url} {channel}"
            if key not in self._publishers:
                self._publishers[key] = _RedisPublisher(redis_url, channel, threaded)

    def configured(self) -> None:
        """This process's Redis relay is set up as it should be (or there is none): do not
        take it from the environment's settings at the first commit."""
        with self._lock:
            self._configured = True

    def committed(self) -> None:
        if not self._configured:  # a CLI command or a script: the environment's settings
            self._configured = True
            self._from_settings()
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

    def _from_settings(self) -> None:
        from tradebase.config import SettingsError, load_settings

        try:  # read, not get_settings(): its cache is not this hook's to fill
            settings = load_settings()
        except SettingsError:
            return
        if settings.redis_url:
            self.publish_to(settings.redis_url, redis_channel(settings.main_url), threaded=False)


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

    def __init__(self, url: str, channel: str, threaded: bool = True) -> None:
        self.url = url
        self.channel = channel
        self.threaded = threaded
        self._poked = threading.Event()
        if threaded:
            threading.Thread(target=self._run, name="events-redis-pub", daemon=True).start()

    def poke(self) -> None:
        if self.threaded:
            self._poked.set()
            return
        import redis

        try:
            client: Any = redis.Redis.from_url(self.url, socket_timeout=2)
            with client:
                client.publish(self.channel, "1")
        except Exception as exc:  # the hubs' safety poll still finds the events
            log.warning("could not publish events to Redis: %s", exc)

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
