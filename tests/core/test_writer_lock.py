"""The in-process SQLite writer lock: writers of one process take turns, and two units of
work nested in opposite orders across the two databases end (one of them refused by
SQLite's busy timeout) instead of waiting on each other for ever."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.conftest import ScratchFactory
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work


def test_opposite_nesting_ends_within_the_busy_timeout(scratch_factory: ScratchFactory) -> None:
    scratch = scratch_factory.new("sqlite", "writer_lock")
    settings = scratch.settings().model_copy(update={"sqlite_busy_timeout_ms": 500})
    for database in Database:
        migrate.upgrade(database, settings=settings)
    engines = Engines(settings)
    both_inside = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def nested(first: Database, second: Database) -> None:
        try:
            with unit_of_work(first, factory=engines.session_factory(first)) as outer:
                outer.execute(text("SELECT 1"))
                both_inside.wait(5)
                with unit_of_work(second, factory=engines.session_factory(second)) as inner:
                    inner.execute(text("SELECT 1"))
            outcomes[first.value] = "committed"
        except OperationalError as exc:
            outcomes[first.value] = "locked" if "locked" in str(exc) else str(exc)

    threads = [
        threading.Thread(target=nested, args=(Database.main, Database.credentials)),
        threading.Thread(target=nested, args=(Database.credentials, Database.main)),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    try:
        assert not any(t.is_alive() for t in threads), "the two writers waited for ever"
        assert time.monotonic() - started < 10
        assert sorted(outcomes.values()) in (["committed", "locked"], ["locked", "locked"]), (
            outcomes
        )
    finally:
        engines.dispose()


def test_writers_of_one_process_take_turns(scratch_factory: ScratchFactory) -> None:
    scratch = scratch_factory.new("sqlite", "writer_turns")
    settings = scratch.settings()
    migrate.upgrade(Database.main, settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    inside = 0
    most = 0
    lock = threading.Lock()

    def write(n: int) -> None:
        nonlocal inside, most
        with unit_of_work(factory=factory) as session:
            with lock:
                inside += 1
                most = max(most, inside)
            session.execute(
                text("INSERT INTO system_metrics (timestamp, component) VALUES (:t, :c)"),
                {"t": "2026-12-01 00:00:00.000000", "c": f"w{n}"},
            )
            time.sleep(0.01)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        with unit_of_work(factory=factory, write=False) as session:
            count = session.scalar(
                text("SELECT COUNT(*) FROM system_metrics WHERE component LIKE 'w%'")
            )
        assert count == 8 and most == 1
    finally:
        engines.dispose()


def test_the_writer_lock_is_released_by_another_thread_and_reentrant_in_its_own() -> None:
    """FastAPI enters a dependency's unit of work in one thread-pool thread and leaves it
    in another: the lock must let that thread release it (an RLock refuses)."""
    import threading

    from tradebase.core.db import WriterLock

    lock = WriterLock()
    owner = lock.acquire(timeout=1)
    assert owner == threading.get_ident()
    assert lock.acquire(timeout=1) == owner  # again in its own thread: re-entrant
    lock.release(owner)
    taken: list[int | None] = []
    other = threading.Thread(target=lambda: taken.append(lock.acquire(timeout=0.2)))
    other.start()
    other.join()
    assert taken == [None]  # held: another thread waits, and gives up at its timeout
    done = threading.Thread(target=lock.release, args=(owner,))  # released elsewhere
    done.start()
    done.join()
    later = threading.Thread(target=lambda: taken.append(lock.acquire(timeout=1)))
    later.start()
    later.join()
    assert taken[1] == later.ident  # free again: the other thread has it
