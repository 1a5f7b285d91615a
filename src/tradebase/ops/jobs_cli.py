"""``tradebase worker`` and ``tradebase jobs list|run|history``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import datetime
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tradebase.config import get_settings

jobs_app = typer.Typer(
    help="The scheduled jobs: what runs when, their last runs, and running one now.",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _check_migrated() -> None:
    from tradebase.core import migrate
    from tradebase.core.db import Database

    for database in Database:
        current, head = migrate.current_revision(database), migrate.head_revision(database)
        if current != head:
            where = "not created" if current is None else f"at {current}, this version needs {head}"
            raise _fail(
                f"the {database.value} database is {where}: run tradebase db upgrade"
                + (" (after a backup)" if current is not None else "")
            )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def worker_command(
    job: Annotated[
        list[str] | None,
        typer.Option("--job", "-j", help="Run only this job (repeat for more); default: all."),
    ] = None,
    poll: Annotated[
        float,
        typer.Option(min=0.1, max=60, help="Seconds between looks at the schedule at most."),
    ] = 1.0,
) -> None:
    """Run the scheduled jobs until stopped (Ctrl-C or SIGTERM).

    Jobs and their schedules: tradebase jobs list; schedules come from
    TRADEBASE_SCHEDULE_<JOB> (cron in UTC, "every 15m", or "off"). Start as many workers as
    you like against one PostgreSQL or MariaDB: each slot of each job runs once, on
    whichever worker claims it first, and a worker that dies mid-job is taken over by the
    next one to look (after TRADEBASE_JOB_LEASE_SECONDS at most; at once on the same host).
    On SQLite, run one worker beside the server.

    The first Ctrl-C/SIGTERM lets the running jobs finish; a second one stops at once
    (the database rolls back what was not committed).
    """
    from tradebase.core.db import Engines
    from tradebase.ops import jobs as jobs_ops

    settings = get_settings()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _check_migrated()
    try:
        known = jobs_ops.registered(settings)
        chosen = [known[name] for name in job] if job else list(known.values())
    except KeyError as exc:
        raise _fail(f"no job {exc.args[0]!r}; the jobs are: {', '.join(known)}", 2) from None
    except jobs_ops.JobError as exc:
        raise _fail(str(exc), 2) from None
    try:
        engines = Engines(settings)
        runner = jobs_ops.Runner(engines, settings)
        worker = jobs_ops.Worker(runner, chosen, poll_seconds=poll)
    except jobs_ops.JobError as exc:
        raise _fail(str(exc), 2) from None
    active = [j for j in chosen if not worker.schedules[j.name].off]
    typer.echo(
        f"worker {runner.host} pid {runner.pid}: "
        + (", ".join(f"{j.name} ({worker.schedules[j.name].text})" for j in active) or "no jobs")
        + (" scheduled" if active else " scheduled (every schedule is off)"),
        err=True,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        typer.echo("stopping: letting running jobs finish (again to stop at once)", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.redis_url:  # the events this worker writes reach the servers' streams
        from tradebase.events.bus import bus, redis_channel

        bus.publish_to(settings.redis_url, redis_channel(settings.main_url))
    dispatchers: list[Any] = []

    def start_dispatcher() -> None:  # off the main thread: the schedule does not wait
        from tradebase.alerts.delivery import Dispatcher

        dispatcher = Dispatcher(engines, settings)
        dispatcher.start()
        dispatchers.append(dispatcher)

    starting = threading.Thread(target=start_dispatcher, name="webhook-start", daemon=True)
    if settings.webhook_dispatch:  # outgoing webhooks: also here, any number of processes
        starting.start()
    try:
        worker.run(stop)
    finally:
        if starting.is_alive() or dispatchers:
            starting.join(timeout=30)
        for dispatcher in dispatchers:
            dispatcher.stop()
        engines.dispose()


@jobs_app.command("list")
def list_command() -> None:
    """Every job: its schedule, the next slot, and how its last run went."""
    from sqlalchemy import func, select

    from tradebase.core.db import Database, Engines, unit_of_work
    from tradebase.core.time import utc_now
    from tradebase.ops import jobs as jobs_ops
    from tradebase.ops.models import JobRun

    settings = get_settings()
    _check_migrated()
    try:
        known = jobs_ops.registered(settings)
        schedules = {name: j.schedule(settings) for name, j in known.items()}
    except jobs_ops.JobError as exc:
        raise _fail(str(exc), 2) from None
    engines = Engines(settings)
    try:
        with unit_of_work(write=False, factory=engines.session_factory(Database.main)) as session:
            latest = (
                select(JobRun.job, func.max(JobRun.id).label("id"))
                .where(JobRun.status != "skipped")
                .group_by(JobRun.job)
                .subquery()
            )
            last = {
                run.job: run
                for run in session.scalars(select(JobRun).join(latest, JobRun.id == latest.c.id))
            }
    finally:
        engines.dispose()
    now = utc_now()
    table = Table("job", "schedule (UTC)", "next", "last run", "status", "took", "where", "what")
    for name, job in known.items():
        schedule = schedules[name]
        run = last.get(name)
        took = "-"
        if run is not None and run.finished_at is not None:
            took = f"{(run.finished_at - run.started_at).total_seconds():.1f} s"
        table.add_row(
            name,
            schedule.describe(),
            _when(schedule.following(now)),
            _when(run.started_at if run else None),
            run.status if run else "never ran",
            took,
            f"{run.host}:{run.pid}" if run else "-",
            job.description,
        )
    Console(width=200).print(table)


@jobs_app.command("run")
def run_command(
    name: Annotated[str, typer.Argument(help="The job, e.g. backup, prune, maintain, snapshot.")],
) -> None:
    """Run one job now, as the worker would (recorded in the job history).

    Refused while the same job is running elsewhere. Exits 1 if the job fails.
    """
    from tradebase.core.db import Engines
    from tradebase.ops import jobs as jobs_ops
    from tradebase.ops.models import RunStatus

    settings = get_settings()
    _check_migrated()
    engines = Engines(settings)
    try:
        job = jobs_ops.get_job(name, settings)
        outcome = jobs_ops.Runner(engines, settings).run_now(job)
    except jobs_ops.JobError as exc:
        raise _fail(str(exc)) from None
    finally:
        engines.dispose()
    if outcome.status is RunStatus.succeeded:
        details = ", ".join(f"{k}: {v}" for k, v in (outcome.result or {}).items())
        typer.echo(
            f"{name}: succeeded in {outcome.seconds:.1f} s" + (f" ({details})" if details else "")
        )
        return
    raise _fail(f"{name}: {outcome.error}")


@jobs_app.command("history")
def history_command(
    name: Annotated[str | None, typer.Argument(help="Only this job.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many runs.")] = 20,
) -> None:
    """The latest runs, newest first: slot, status, attempt, worker, duration, error."""
    from sqlalchemy import select

    from tradebase.core.db import Database, Engines, unit_of_work
    from tradebase.ops.models import JobRun

    settings = get_settings()
    _check_migrated()
    engines = Engines(settings)
    try:
        with unit_of_work(write=False, factory=engines.session_factory(Database.main)) as session:
            query = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
            if name is not None:
                query = query.where(JobRun.job == name)
            runs = list(session.scalars(query))
    finally:
        engines.dispose()
    table = Table("id", "job", "slot", "kind", "status", "attempt", "where", "took", "error")
    for run in runs:
        took = "-"
        if run.finished_at is not None:
            took = f"{(run.finished_at - run.started_at).total_seconds():.1f} s"
        table.add_row(
            str(run.id),
            run.job,
            _when(run.slot_at),
            run.kind,
            run.status,
            str(run.attempt),
            f"{run.host}:{run.pid}",
            took,
            (run.error or "").splitlines()[0] if run.error else "",
        )
    Console(width=200).print(table)
    if not runs:
        typer.echo("no runs yet")
