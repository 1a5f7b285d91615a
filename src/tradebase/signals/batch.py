"""Group commit of signals: the signals that arrive together at one server process are
stored in one transaction and then executed in the next, by one writer thread (in the
server's writer process on SQLite, signals/writer.py). On SQLite, a group whose new
signals all go the fast lane is stored and executed in one transaction (`_together`).

SQLite has one writer at a time, so concurrent webhooks take turns on the write lock
anyway (core/db.py); what each turn costs is mostly fixed: BEGIN, COMMIT (the WAL pages
written, a checkpoint now and then), a session. On PostgreSQL each commit waits for its
WAL flush. Taking turns as a group pays those once per group.

The inbox's promise is unchanged: a signal is durable (stored as received, its own row)
before anything of it is executed, each signal is executed in a savepoint of its own (a
refusal or a crash of one rolls back only its legs and is recorded as its outcome), and a
signal is answered only once its outcome is committed. A process that dies between
the two transactions leaves the group's signals received, and recovery executes them
(signals/service.py: recover); stored and executed in one transaction, a group leaves
nothing received and nothing answered if it dies before the commit.

A group that cannot be stored (a deadlock with another process) leaves each request to
store its own signal; a group whose execution is rolled back as a whole is executed again
one signal per transaction. MariaDB runs each request's signal in its own transactions
(``submit``): a duplicate key there can end in a deadlock that rolls back everything.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tradebase.config import Settings
from tradebase.core.db import unit_of_work
from tradebase.core.errors import TradebaseError
from tradebase.signals.copies import Flight, copies_for
from tradebase.signals.models import Signal, SignalStatus

if TYPE_CHECKING:
    from tradebase.signals.fast import FastLane
    from tradebase.signals.service import SignalRow

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
    copy_of: Flight | None = None  # the first copy's, when this process has it
    flight: Flight | None = None  # this one's, for its copies to follow
    row: SignalRow | None = None  # read from its body (service.prepared), its keys
    refused: bool = False  # stored as rejected (a malformed body, a bad field): the answer
    alone: bool = False  # the group could not be stored: the request goes its own way
    done: Signal | None = None  # executed by the group, committed, every column loaded
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    notify: Callable[[], None] | None = None  # called once finished (submit_async)

    def finish(self) -> None:
        self.finished.set()
        if self.notify is not None:
            self.notify()


class Batcher:
    """The writer thread of one SQLite engine and the queue of signals it takes from."""

    _lane: FastLane | None = None  # the last committed group's fast lane

    def __init__(self, factory: sessionmaker[Session], limit: int) -> None:
        self.factory = factory
        self.limit = limit
        bind = factory.kw["bind"]
        self.sqlite = bind.dialect.name == "sqlite"
        self.queue: queue.SimpleQueue[Incoming | None] = queue.SimpleQueue()
        self.largest_group = 0  # the most signals one group has held (for tests and ops)
        self.copies = copies_for(bind)
        self.group_done: Callable[[], None] | None = None  # called after each group
        self.thread = threading.Thread(target=self._loop, name="signal-writer", daemon=True)
        self.thread.start()

    def submit(self, item: Incoming) -> Incoming:
        """Queue *item* and wait until its group is committed."""
        self.queue.put(item)
        item.finished.wait()
        if item.error is not None:
            raise item.error
        return item

    async def submit_async(self, item: Incoming) -> Incoming:
        """`submit` for the event loop: the request waits for its group without holding a
        thread (a thread of the pool waiting costs the writer thread its turns)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():  # not when the request was cancelled meanwhile
                done.set_result(None)

        def notify() -> None:
            with suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle)

        item.notify = notify
        self.queue.put(item)
        await done
        if item.error is not None:
            raise item.error
        return item

    def close(self, seconds: float = 30.0) -> None:
        """Stop the writer thread once the signals queued before are done."""
        self.queue.put(None)
        self.thread.join(seconds)

    def _loop(self) -> None:
        closing = False
        while not closing:
            first = self.queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.limit:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                group.append(item)
            self.largest_group = max(self.largest_group, len(group))
            self._group(group)
            if self.group_done is not None:
                self.group_done()

    def _group(self, group: list[Incoming]) -> None:
        """Store and execute *group*, then answer its signals."""
        try:
            mine = self._join(group)
            together = self._together(group, mine)
            if not together:
                self._store(mine)
        except Exception:  # nothing was stored: each request stores its own signal
            log.warning("storing a group of %d signal(s) failed", len(group), exc_info=True)
            for item in group:
                if item.flight is not None:
                    self.copies.forget(item.flight)
                item.stored, item.copy_of, item.flight, item.alone = None, None, None, True
                item.finish()
            return
        if together:  # stored, executed and committed
            self._land(group)
            return
        try:
            try:
                self._execute(group)
            except Exception:
                # Rolled back as a whole (a deadlock with another process, an outage of
                # a moment): the signals are stored, so each is executed on its own.
                log.warning("a group of %d signal(s) is executed one by one", len(group))
                self._one_by_one(group)
        except BaseException as exc:
            for item in group:
                item.error = item.error or exc
        finally:
            self._land(group)

    def _land(self, group: list[Incoming]) -> None:
        for item in group:
            if item.flight is not None:
                self.copies.land(item.flight, item.done)
            item.finish()

    def _join(self, group: list[Incoming]) -> list[Incoming]:
        """Tell the copies of signals this process has (they follow the first one); the
        others, each now the first of its keys here."""
        from tradebase.signals.service import prepared

        mine: list[Incoming] = []
        for item in group:
            row = prepared(item)
            flight, first = self.copies.join(row.keys)
            if not first:  # the INSERT would break a unique key: a copy
                item.stored, item.copy_of = None, flight
                continue
            item.flight = flight
            mine.append(item)
        return mine

    def _together(self, group: list[Incoming], mine: list[Incoming]) -> bool:
        """SQLite with the fast lane, when none of the group's new signals is refused as
        it is stored: store them (one executemany) and execute them in one transaction,
        committed; False when that does not apply, or the transaction rolled
        back (a copy another process stored, an error in the lane), and nothing was
        stored: the caller stores the group, then executes it.

        The inbox's promise holds: each signal is stored as received before it is
        executed, and answered only once that is committed; stored and executed in one
        commit, no signal is left received by a crash (none was answered either). The
        group's second commit was a fifth of the writer's time (docs/benchmarks.md)."""
        from tradebase.signals.fast import store_all

        rows = [item.row for item in mine if item.row is not None]
        if (
            not mine
            or not self.sqlite
            or not mine[0].settings.signal_fast_lane
            or len(rows) != len(mine)
            or any(row.refusal is not None for row in rows)
            or any(row.values.keys() != rows[0].values.keys() for row in rows)
        ):
            return False
        try:
            with unit_of_work(factory=self.factory) as session:
                try:
                    carried = self._carried(session)
                    for item, stored in zip(mine, store_all(session, rows), strict=True):
                        item.stored = stored
                    pending = _pending(group)
                    lane = self._execute_in(session, pending, carried)
                except TradebaseError as exc:  # rolled back, whatever it says of its work
                    raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        except Exception:
            log.info("a group of %d signal(s) is stored, then executed", len(mine), exc_info=True)
            for item in mine:
                item.stored, item.done = None, None
            return False
        self._lane = lane  # committed: its state is the database's
        for item in mine:
            assert item.flight is not None and item.stored is not None
            item.flight.signal_id = item.stored.id
        _settled(pending)
        return True

    def _store(self, mine: list[Incoming]) -> None:
        from tradebase.signals.service import signal as service

        if mine and not self._store_at_once(mine):
            with unit_of_work(factory=self.factory) as session:
                for item in mine:
                    taken = item.flight
                    assert taken is not None and item.row is not None
                    try:
                        # SQLite undoes only the failed statement of a unique key's
                        # violation, so the group's transaction goes on without the copy;
                        # PostgreSQL needs a savepoint for that (a failed statement spoils
                        # the rest).
                        with self._savepoint(session):
                            item.stored = service.store(session, item.row)
                    except IntegrityError:  # a copy of a signal another process stored
                        item.stored, item.flight = None, None
                        self.copies.forget(taken)
                    else:
                        item.refused = item.stored.status != SignalStatus.received
        for item in mine:  # committed
            if item.flight is not None and item.stored is not None:
                item.flight.signal_id = item.stored.id

    def _store_at_once(self, items: list[Incoming]) -> bool:
        """SQLite: the group's signals stored by one executemany (signals/fast.py:
        store_all) in a transaction of their own, when none is refused as it is stored;
        False when that does not apply or a unique key broke (a copy another process
        stored: the transaction rolled back, and each is stored on its own)."""
        from tradebase.signals.fast import store_all

        rows = [item.row for item in items if item.row is not None]
        if (
            not self.sqlite
            or len(rows) < 2
            or len(rows) != len(items)
            or not items[0].settings.signal_fast_lane
            or any(row.refusal is not None for row in rows)
            or any(row.values.keys() != rows[0].values.keys() for row in rows)
        ):
            return False
        try:
            with unit_of_work(factory=self.factory) as session:
                stored = store_all(session, rows)
        except IntegrityError:
            return False
        for item, signal in zip(items, stored, strict=True):
            item.stored = signal
        return True

    def _savepoint(self, session: Session) -> Any:
        """Nothing on SQLite (see _store and _execute), a savepoint elsewhere."""
        return nullcontext() if self.sqlite else session.begin_nested()

    def _execute(self, group: list[Incoming]) -> None:
        pending = _pending(group)
        if not pending:
            return
        with unit_of_work(factory=self.factory) as session:
            lane = self._execute_in(session, pending, self._carried(session))
        self._lane = lane  # committed: its state is the database's
        _settled(pending)

    def _carried(self, session: Session) -> FastLane | None:
        """The last committed group's fast lane, if what it holds is still the database's
        (`FastLane.carry`); first thing in *session*'s transaction."""
        kept, self._lane = self._lane, None  # until this group commits
        return kept if kept is not None and kept.carry(session) else None

    def _execute_in(
        self, session: Session, pending: list[Incoming], carried: FastLane | None
    ) -> FastLane | None:
        """Execute *pending* (stored, received) in *session*'s transaction (*carried*:
        the last group's lane, `_carried`); the fast lane that took part, for the next
        group once this one has committed."""
        from tradebase.signals.fast import FastLane, forget_session_state
        from tradebase.signals.service import signal as service

        if not pending:
            return None
        settings = pending[0].settings
        lane = None
        if self.sqlite and settings.signal_fast_lane:
            lane = carried or FastLane(session, settings)
        wrote = False  # the lane wrote since the general way last ran
        for item in pending:
            stored = item.stored
            assert stored is not None
            if lane is not None:
                if item.row is not None:
                    item.done = lane.execute(stored, item.row)
                    if item.done is not None:
                        wrote = True
                        continue
                lane.flush()  # what the lane left for the end, before the general way
                if wrote:
                    forget_session_state(session)
                    wrote = False
            signal_id = stored.id
            try:
                # execute() runs the signal's work in a savepoint of its own: what
                # breaks there is rolled back, and on SQLite the claim it made is
                # overwritten by mark_failed below (elsewhere a failed statement
                # spoils the transaction up to the enclosing savepoint).
                with self._savepoint(session):
                    item.done = service.execute(
                        session,
                        signal_id,
                        item.settings,
                        stored=stored,
                        fields=item.row.fields if item.row else None,
                    )
            except Exception as exc:
                log.exception("signal %s failed", signal_id)
                if stored in session:
                    session.expunge(stored)
                service.mark_failed(session, signal_id, f"{type(exc).__name__}: {exc}")
                item.done = None  # answered from the database (service.py: _wait)
            if lane is not None:  # what it read may have moved
                session.flush()
                lane.forget()
        if lane is not None:
            lane.flush()
            lane.end()
        return lane

    def _one_by_one(self, group: list[Incoming]) -> None:
        from tradebase.signals.service import run

        for item in _pending(group):
            assert item.stored is not None
            run(self.factory, item.settings, item.stored.id)
            item.done = None


def _pending(group: list[Incoming]) -> list[Incoming]:
    return [i for i in group if i.stored is not None and not i.refused]


def _settled(pending: list[Incoming]) -> None:
    """Committed: an outcome that is not final is read back by the request."""
    for item in pending:
        if item.done is not None and item.done.status not in _FINAL:
            item.done = None


_FINAL = frozenset({SignalStatus.processed, SignalStatus.rejected, SignalStatus.failed})

_BATCHERS: weakref.WeakKeyDictionary[Engine, Batcher] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def grouped(bind: object, settings: Settings) -> TypeGuard[Engine]:
    """Whether signals on *bind* go through a writer with group commit: an engine of a
    SQLite file or PostgreSQL, with ``signal_batch_max`` above 1."""
    if settings.signal_batch_max <= 1 or not isinstance(bind, Engine):
        return False
    name = bind.dialect.name
    if name == "sqlite":
        return bind.url.database not in (None, "", ":memory:")
    return name == "postgresql"


def batcher_for(factory: sessionmaker[Session], settings: Settings) -> Batcher | None:
    """The writer thread of *factory*'s engine, when group commit is on (`grouped`)."""
    bind = factory.kw.get("bind")
    if not grouped(bind, settings):
        return None
    found = _BATCHERS.get(bind)
    if found is None:
        with _LOCK:
            found = _BATCHERS.get(bind)
            if found is None:
                found = _BATCHERS[bind] = Batcher(factory, settings.signal_batch_max)
    return found
