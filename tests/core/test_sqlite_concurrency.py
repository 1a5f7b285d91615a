"""Many writer threads on one SQLite file: no "database is locked", no lost rows."""

from __future__ import annotations

import threading
from decimal import Decimal

from sqlalchemy import func, select

from tests.conftest import ScratchFactory
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.metrics.models import SystemMetric

THREADS = 8
ROWS = 500


def test_eight_threads_of_committed_inserts(scratch_factory: ScratchFactory) -> None:
    scratch = scratch_factory.new("sqlite", "concurrency")
    settings = scratch.settings().model_copy(update={"pool_size": THREADS})
    migrate.upgrade(Database.main, settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(ROWS):
                with unit_of_work(factory=factory) as session:
                    session.add(SystemMetric(component=f"writer-{n}", cpu_percent=Decimal(i % 100)))
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with unit_of_work(factory=factory, write=False) as session:
        total = session.scalar(select(func.count()).select_from(SystemMetric))
        per_writer = session.execute(
            select(SystemMetric.component, func.count()).group_by(SystemMetric.component)
        ).all()
    engines.dispose()
    assert total == THREADS * ROWS
    assert sorted(count for _, count in per_writer) == [ROWS] * THREADS


def test_read_then_write_units_of_work_do_not_lose_updates(scratch_factory: ScratchFactory) -> None:
    # Each unit reads a counter and writes it back incremented: a deferred transaction would
    # hit "database is locked" (its snapshot is stale when it tries to write) or lose updates.
    scratch = scratch_factory.new("sqlite", "counter")
    settings = scratch.settings().model_copy(update={"pool_size": THREADS})
    migrate.upgrade(Database.main, settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    with unit_of_work(factory=factory) as session:
        session.add(SystemMetric(component="counter", active_connections=0))
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)
    increments = 100

    def worker() -> None:
        try:
            start.wait()
            for _ in range(increments):
                with unit_of_work(factory=factory) as session:
                    row = session.scalars(
                        select(SystemMetric).where(SystemMetric.component == "counter")
                    ).one()
                    row.active_connections = (row.active_connections or 0) + 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with unit_of_work(factory=factory, write=False) as session:
        final = session.scalar(
            select(SystemMetric.active_connections).where(SystemMetric.component == "counter")
        )
    engines.dispose()
    assert errors == []
    assert final == THREADS * increments
