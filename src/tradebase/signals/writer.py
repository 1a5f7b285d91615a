"""A writer process of its own for a server's signals on SQLite.

In one process the writer thread (signals/batch.py) and the event loop take turns on one
interpreter lock: every SQLite call of the writer gives the lock up and waits to get it
back from the loop, which is busy with the next requests, so the writer, which every
signal goes through, ran at two thirds of a core while the machine had a second one idle
(bench/bench_signals.py, docs/benchmarks.md). A server on a SQLite file therefore starts
the writer in a process of its own (``TRADEBASE_SIGNAL_WRITER_PROCESS``, on by default):
the event loop reads the request, the webhook key and the body, and sends the signal over
a socket; the writer process stores and executes it with the signals arriving with it
(the same `Batcher`, group commit, fast lane) and sends back the committed outcome, which
the loop answers with. Nothing else changes: a signal is answered only once its outcome
is committed, copies are told by the writer's memory and the database's unique keys, and
a commit that wrote events wakes this process's listeners (the webhook dispatcher, the
live hub) and its Redis relay as before.

The writer process also takes the WAL's checkpoints off the writer's path (`Checkpoints`):
a commit that crossed SQLite's automatic checkpoint stalled every ninth group for ~10 ms.

If the writer process dies, the signals waiting for it are answered as the database has
them (their idempotency keys find the first copy: a signal that was committed is not
placed twice), the ones it stored but did not execute are recovered, and the server goes
on with the writer thread in process. The writer process exits when the server does (the
socket closes).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import signal as signals
import socket
import subprocess
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tradebase.config import Settings
from tradebase.signals.batch import Batcher, Incoming, grouped
from tradebase.signals.models import Signal

if TYPE_CHECKING:
    from tradebase.signals.service import Answer

log = logging.getLogger("tradebase.signals")

_BUFFER = 1 << 20  # socket buffers: a burst of signals never waits for the other side
_READY_SECONDS = 60.0
_EVENTS = "events"  # the writer committed events: wake this process's listeners


class WriterGone(Exception):
    """The writer process exited: the signal is answered from the database."""


class WriterProcess:
    """The server's side: starts the writer process, sends it signals, hands its answers
    to the requests waiting for them (on the event loop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        mine, theirs = socket.socketpair()
        for end in (mine, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-c", "from tradebase.signals.writer import main; main()",
             str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": _import_path()},
        )  # fmt: skip
        theirs.close()
        self.connection = Connection(mine.detach())
        self.connection.send_bytes(pickle.dumps(settings))
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._outgoing: list[tuple[Any, ...]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.alive = False
        self.pid = self.process.pid

    def wait_ready(self, seconds: float = _READY_SECONDS) -> bool:
        """Block until the writer process says it is ready; False if it did not."""
        if not self.connection.poll(seconds):
            return False
        try:
            message = self.connection.recv()
        except (EOFError, OSError):
            return False
        self.alive = message == ("ready", self.pid)
        return self.alive

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take the writer's answers on *loop* (the server's event loop; call it there)."""
        from tradebase.events.bus import bus

        bus.configured()  # the server's lifespan set its Redis relay up, if any
        self._loop = loop
        loop.add_reader(self.connection.fileno(), self._readable)

    def detach(self) -> None:
        """Stop taking answers (on the loop, before `close`): the requests still waiting
        go their own way (WriterGone)."""
        if self._loop is not None and self.alive:
            self._loop.remove_reader(self.connection.fileno())
        self.alive = False
        self._fail_waiting()

    def _fail_waiting(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(WriterGone())
        self._waiting.clear()

    async def submit(self, item: Incoming) -> Answer:
        """Send *item* (its row read, service.prepared) and wait for its answer.
        WriterGone when the writer process is gone (before or while it waited)."""
        if not self.alive:
            raise WriterGone
        loop = self._loop
        assert loop is not None
        token = next(self._tokens)
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting[token] = future
        row = item.row if item.row is not None and item.row.refusal is None else None
        if not self._outgoing:  # sent once this turn of the loop is over, with the others
            loop.call_soon(self._send)
        self._outgoing.append(
            (token, item.user_id, item.raw, item.content_type, item.source_ip, item.source,
             item.redact, item.window, item.at, row)
        )  # fmt: skip
        try:
            kind, value = await future
        finally:
            self._waiting.pop(token, None)
        if kind == "ok":
            from tradebase.signals.service import Answer

            columns, duplicate = value
            return Answer(_signal(columns), duplicate)
        raise value

    def _send(self) -> None:
        """The signals of this turn of the loop, in one message (a write costs more than
        the pickling of a few signals together)."""
        outgoing, self._outgoing = self._outgoing, []
        if not self.alive:
            return  # _gone answered them
        try:
            self.connection.send(outgoing)
        except OSError:
            self._gone()
        except Exception as exc:  # not sent (a value that does not pickle): say so
            for message in outgoing:
                future = self._waiting.get(message[0])
                if future is not None and not future.done():
                    future.set_exception(exc)

    def _readable(self) -> None:
        connection = self.connection
        waiting = self._waiting
        try:
            while connection.poll():
                message = connection.recv()
                if message == _EVENTS:
                    from tradebase.events.bus import bus

                    bus.committed()
                    continue
                for token, kind, value in message:
                    future = waiting.get(token)
                    if future is not None and not future.done():
                        future.set_result((kind, value))
        except (EOFError, OSError):
            self._gone()

    def _gone(self) -> None:
        if not self.alive:
            return
        self.alive = False
        log.error(
            "the signal writer process (pid %d) exited (code %s): signals go on in this"
            " process; pending ones are recovered",
            self.pid,
            self.process.poll(),
        )
        if self._loop is not None:
            self._loop.remove_reader(self.connection.fileno())
        self._fail_waiting()
        threading.Thread(target=self._recover, name="signal-recover", daemon=True).start()

    def _recover(self) -> None:
        """Reap the writer process; the signals it stored and did not execute, executed
        here."""
        from tradebase.core.db import Database, Engines
        from tradebase.signals.service import recover

        with suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        engines = Engines(self.settings)
        try:
            recover(engines.session_factory(Database.main), self.settings)
        except Exception:
            log.exception("recovering the writer process's pending signals failed")
        finally:
            engines.dispose()

    def close(self) -> None:
        """Stop the writer process (after `detach`, in a thread: this waits for it): the
        socket closes, it finishes its group and exits."""
        self.alive = False
        self.connection.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _import_path() -> str:
    """PYTHONPATH for the writer process: the server's, and the directory this tradebase
    was imported from when it is a source tree (an installed one is found anyway, and
    site-packages must not go ahead of the standard library)."""
    import tradebase

    here = os.path.dirname(os.path.dirname(os.path.abspath(tradebase.__file__)))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if os.path.basename(here) not in ("site-packages", "dist-packages") and here not in paths:
        paths.append(here)
    return os.pathsep.join(paths)


def _signal(columns: dict[str, Any]) -> Signal:
    """The committed signal as the writer sent it: an object of no session with every
    column loaded, made as the ORM's loader makes one (the constructor's attribute events
    cost a tenth of a webhook's time in the event loop)."""
    row = cast(Signal, _NEW_SIGNAL())
    row.__dict__.update(columns)
    return row


_NEW_SIGNAL = Signal.__mapper__.class_manager.new_instance


def _columns(row: Signal) -> dict[str, Any]:
    state = row.__dict__
    return {name: state[name] for name in _NAMES if name in state}


_NAMES = tuple(column.key for column in Signal.__mapper__.column_attrs)

# --- which engines have one -------------------------------------------------------------

_WRITERS: weakref.WeakKeyDictionary[Engine, WriterProcess] = weakref.WeakKeyDictionary()


def wanted(engine: Engine, settings: Settings) -> bool:
    """Whether a server on *engine* starts a writer process (a SQLite file, group commit
    on, the setting on)."""
    return (
        settings.signal_writer_process
        and engine.dialect.name == "sqlite"
        and grouped(engine, settings)
    )


def start(engine: Engine, settings: Settings) -> WriterProcess | None:
    """Start *engine*'s writer process and wait until it is ready (blocking: call it in
    a thread); None when it could not start (the writer thread in process does)."""
    try:
        writer = WriterProcess(settings)
    except OSError:
        log.exception("the signal writer process did not start: signals go on in this process")
        return None
    if not writer.wait_ready():
        log.error("the signal writer process did not start: signals go on in this process")
        writer.close()
        return None
    _WRITERS[engine] = writer
    return writer


def stop(engine: Engine) -> None:
    """Stop *engine*'s writer process (in a thread, after its `detach` on the loop)."""
    writer = _WRITERS.pop(engine, None)
    if writer is not None:
        writer.close()


def writer_for(factory: sessionmaker[Session]) -> WriterProcess | None:
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        return None
    found = _WRITERS.get(bind)
    return found if found is not None and found.alive else None


# --- the writer process -----------------------------------------------------------------


def main() -> None:
    """The writer process: ``python -c 'from tradebase.signals.writer import main; main()'
    FD`` with FD its end of the server's socket."""
    # Ctrl-C, a service manager's SIGTERM to every process of the server, a hang-up: the
    # server stops, closes the socket, and this finishes its group and exits then.
    for name in (signals.SIGINT, signals.SIGTERM, signals.SIGHUP):
        signals.signal(name, signals.SIG_IGN)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s:     [signal writer] %(message)s"
    )
    connection = Connection(int(sys.argv[1]))
    # The server's own settings, from its end of a socket pair only it and this hold.
    settings: Settings = pickle.loads(connection.recv_bytes())  # noqa: S301
    _serve(connection, settings)


def _serve(connection: Connection, settings: Settings) -> None:
    import gc

    from tradebase.core.db import Database, Engines
    from tradebase.events.bus import bus
    from tradebase.signals import service

    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    checkpoints = Checkpoints(engines.engine(Database.main))
    batcher = Batcher(factory, settings.signal_batch_max)
    lock = threading.Lock()

    def send(message: Any) -> None:
        with lock, suppress(OSError):  # the server is gone: the loop below ends too
            connection.send(message)

    # The server relays to Redis and wakes its own listeners: here the commit only says so.
    bus.configured()
    bus.listen(lambda: send(_EVENTS))
    answering = ThreadPoolExecutor(8, thread_name_prefix="signal-answer")

    def finish(token: int, item: Incoming) -> None:
        """An answer that needs the database (a copy's, one stored on its own)."""
        try:
            if item.error is not None:
                raise item.error
            answer = (
                service._alone(factory, item) if item.alone else service._after_group(factory, item)
            )
            send([(token, "ok", (_columns(answer.signal), answer.duplicate))])
        except Exception as exc:
            send([(token, "error", _sendable(exc))])

    answers: list[tuple[int, str, Any]] = []  # the group's, sent at once (`group_done`)

    def notified(token: int, item: Incoming) -> None:
        answer = None if item.error is not None or item.alone else service._grouped(item)
        if answer is None:
            answering.submit(finish, token, item)
        else:
            answers.append((token, "ok", (_columns(answer.signal), answer.duplicate)))

    def group_done() -> None:
        if answers:
            send(list(answers))
            answers.clear()
        checkpoints.after_group()

    batcher.group_done = group_done
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    send(("ready", os.getpid()))
    while True:
        try:
            messages = connection.recv()
        except (EOFError, OSError):
            break
        for message in messages:
            token, user_id, raw, content_type, ip, source, redact, window, at, row = message
            item = Incoming(user_id, raw, content_type, ip, source, redact, window, at, settings)
            item.row = row
            item.notify = lambda token=token, item=item: notified(token, item)
            if row is None:
                service.prepared(item)
            batcher.queue.put(item)
    batcher.close()
    answering.shutdown(wait=True)
    engines.dispose()
    checkpoints.close()


class Checkpoints:
    """The WAL's checkpoints of the writer process, off the writer's path.

    A commit that crosses SQLite's ``wal_autocheckpoint`` (1,000 pages: about nine groups of
    signals) copies the WAL into the database and syncs both, ~10 ms in which the group's
    answers and the next group wait (a sixth of the writer's time, and its worst stalls,
    docs/benchmarks.md). Here a thread of this process copies with PASSIVE checkpoints,
    which run beside the writer's commits, every few groups. The WAL starts over from its
    beginning only when a writer begins after a checkpoint copied all of it, which a busy
    writer never leaves room for: so the writer itself makes a short checkpoint (the last
    groups' pages) now and then, between two groups. The writer's connections keep an
    automatic checkpoint at a larger size, in case this thread falls behind."""

    EVERY = 8  # groups between two checkpoints of the thread
    CATCH_UP = 4  # the thread's checkpoints between two of the writer's
    LIMIT = 10_000  # pages: the writer's own automatic checkpoint, a safety net

    def __init__(self, engine: Engine) -> None:
        import sqlite3

        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _larger(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA wal_autocheckpoint = {self.LIMIT}")

        path = str(engine.url.database)
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA busy_timeout = 5000")
        self._lock = threading.Lock()  # one checkpoint at a time on this connection
        self._wake = threading.Event()
        self._groups = 0
        self._rounds = 0
        threading.Thread(target=self._run, name="signal-checkpoints", daemon=True).start()

    def _checkpoint(self) -> None:
        with self._lock:
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self._checkpoint()
            except Exception:  # the writer's automatic checkpoint is the safety net
                log.warning("a checkpoint failed", exc_info=True)
            self._rounds += 1

    def after_group(self) -> None:
        """In the writer thread, once a group has committed."""
        self._groups += 1
        if self._groups % self.EVERY == 0:
            self._wake.set()
        if self._rounds < self.CATCH_UP:
            return
        idle = not self._wake.is_set() and not self._lock.locked()
        if idle or self._rounds >= 4 * self.CATCH_UP:  # else it would wait for the thread
            self._rounds = 0
            try:
                self._checkpoint()  # a short one: the WAL starts over at the next group
            except Exception:
                log.warning("a checkpoint failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _sendable(exc: BaseException) -> BaseException:
    """*exc* if it travels (pickles and comes back), else a failure that says what it was."""
    from tradebase.signals.errors import SignalFailed

    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - what this process just made
    except Exception:
        return SignalFailed(f"executing the signal failed: {type(exc).__name__}: {exc}")
    return exc
