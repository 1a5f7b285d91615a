"""Group commit of signals on SQLite: the signals that arrive together are stored in one
transaction and then executed in the next, by one writer thread.

SQLite has one writer at a time, so concurrent webhooks take turns on the write lock
anyway (core/db.py); what each turn costs is mostly fixed: BEGIN, COMMIT (the WAL pages
written, a checkpoint now and then), a session. Taking turns as a group pays those once
per group. The inbox's promise is unchanged: a signal is durable (stored as received, its
own row) before anything of it is executed, each signal is executed in a savepoint of its
own (a refusal or a crash of one rolls back only its legs and is recorded as its outcome),
and a signal is answered only once its outcome is committed. A process that dies between
the two transactions leaves the group's signals received, and recovery executes them
(signals/service.py: recover).

PostgreSQL and MariaDB run concurrent transactions, so there every request stores and
executes its own signal (``submit``): batching would only serialize them.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tradebase.config import Settings
from tradebase.core.db import unit_of_work
from tradebase.signals.models import Signal, SignalStatus

log = logging.getLogger("tradebase.signals")


@dataclass
class Incoming:
    """One signal as the webhook got it, and, once its group is done, what became of it."""

    user_id: int
    raw: bytes
    content_type: str | None
    source_ip: str | None
    source: str
    redact: str | None
    window: int
    at: Any  # the time it was received (datetime)
    settings: Settings
    stored: Signal | None = None  # None: a copy of a signal in the inbox already
    refused: bool = False  # stored as rejected (a malformed body, a bad field): the answer
    done: Signal | None = None  # executed by the group, committed, every column loaded
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """The writer thread of one SQLite engine and the queue of signals it takes from."""

    def __init__(self, factory: sessionmaker[Session], limit: int) -> None:
        self.factory = factory
        self.limit = limit
        self.queue: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="signal-writer", daemon=True)
        self.thread.start()

    def submit(self, item: Incoming) -> Incoming:
        """Queue *item* and wait until its group is committed."""
        self.queue.put(item)
        item.finished.wait()
        if item.error is not None:
            raise item.error
        return item

    def _loop(self) -> None:
        while True:
            group = [self.queue.get()]
            while len(group) < self.limit:
                try:
                    group.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._store(group)
                self._execute([i for i in group if i.stored is not None])
            except BaseException as exc:  # the whole group failed: each request says so
                log.exception("a group of %d signal(s) failed", len(group))
                for item in group:
                    item.error = item.error or exc
            finally:
                for item in group:
                    item.finished.set()

    def _store(self, group: list[Incoming]) -> None:
        from tradebase.signals.service import signal as service

        with unit_of_work(factory=self.factory) as session:
            for item in group:
                try:
                    # SQLite undoes only the failed statement of a unique key's violation:
                    # the group's transaction goes on without the copy.
                    item.stored = service.receive(
                        session,
                        user_id=item.user_id,
                        raw=item.raw,
                        content_type=item.content_type,
                        source_ip=item.source_ip,
                        source=item.source,
                        settings=item.settings,
                        redact=item.redact,
                        at=item.at,
                        window=item.window,
                    )
                except IntegrityError:
                    item.stored = None
                else:
                    item.refused = item.stored.status != SignalStatus.received

    def _execute(self, group: list[Incoming]) -> None:
        from tradebase.signals.service import signal as service

        pending = [i for i in group if i.stored is not None and not i.refused]
        if not pending:
            return
        failed: list[Incoming] = []
        with unit_of_work(factory=self.factory) as session:
            for item in pending:
                stored = item.stored
                assert stored is not None
                signal_id = stored.id
                try:
                    # execute() runs the signal's work in a savepoint of its own: what
                    # breaks there is rolled back, and the claim it made is overwritten
                    # by mark_failed below.
                    item.done = service.execute(session, signal_id, item.settings, stored=stored)
                except Exception as exc:
                    log.exception("signal %s failed", signal_id)
                    if stored in session:
                        session.expunge(stored)
                    service.mark_failed(session, signal_id, f"{type(exc).__name__}: {exc}")
                    failed.append(item)
        for item in failed:
            item.done = None  # answered from the database (signals/service.py: _wait)
        for item in pending:
            if item.done is not None and item.done.status not in _FINAL:
                item.done = None


_FINAL = frozenset({SignalStatus.processed, SignalStatus.rejected, SignalStatus.failed})

_BATCHERS: weakref.WeakKeyDictionary[Engine, Batcher] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def batcher_for(factory: sessionmaker[Session], settings: Settings) -> Batcher | None:
    """The writer thread of *factory*'s SQLite file engine, when group commit is on."""
    bind = factory.kw.get("bind")
    if (
        settings.signal_batch_max <= 1
        or not isinstance(bind, Engine)
        or bind.dialect.name != "sqlite"
        or bind.url.database in (None, "", ":memory:")
    ):
        return None
    found = _BATCHERS.get(bind)
    if found is None:
        with _LOCK:
            found = _BATCHERS.get(bind)
            if found is None:
                found = _BATCHERS[bind] = Batcher(factory, settings.signal_batch_max)
    return found
