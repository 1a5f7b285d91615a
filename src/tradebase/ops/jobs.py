"""Scheduled jobs: the registry, the built-in jobs, and running a slot exactly once.

Any number of ``tradebase worker`` processes may run against one database. For each job
and slot (``ops/schedule.py``) a worker *claims* the slot by inserting a ``job_runs`` row;
the unique ``(job, slot_at)`` key lets one worker win and the others see it taken. The
claim carries a lease that the running worker renews (a heartbeat every quarter of
``TRADEBASE_JOB_LEASE_SECONDS``). A run whose lease ran out, or whose process is gone
(checked directly when it ran on this host), is dead: the next worker to look marks it
``abandoned`` and, while that slot is still the latest one and attempts remain, starts it
again. A job does not overlap itself: a slot that comes while the previous run is alive
waits for it, and is recorded as ``skipped`` only if the next slot comes first.

Nothing is left half-done by a killed worker because each job's work is either one
transaction or made of steps that are each whole and can be repeated:

* ``transactional`` jobs (snapshot, settle, expire-orders) do their work in the session
  they are given, and the run's ``succeeded`` row is written in that same transaction,
  fenced on ``(id, attempt, status = running)``: if the worker lost its claim the work is
  rolled back, and if it died the database rolls it back;
* backup builds its folder under a temporary name and renames it when complete; prune
  goes in batches of one transaction each; maintain's steps can all run again.

More jobs come from modules named in ``TRADEBASE_JOB_MODULES``::

    from tradebase.ops.jobs import job, JobContext

    @job("refresh-prices", schedule="every 5m", transactional=True)
    def refresh(ctx: JobContext) -> dict[str, object]:
        ...  # ctx.session: commit happens with the run record
        return {"rows": 42}
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from tradebase.config import ENV_PREFIX, Settings
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.time import utc_now
from tradebase.ops.models import JobRun, RunKind, RunStatus
from tradebase.ops.schedule import Schedule, ScheduleError, parse_schedule

log = logging.getLogger("tradebase.worker")

JobResult = dict[str, Any] | None


class JobError(Exception):
    """A job cannot be run as asked (unknown name, already running); the message says why."""


class LeaseLost(Exception):
    """Another worker took the run over: this worker's outcome is not recorded."""


@dataclass
class JobContext:
    """What a job gets: the engines and settings, its slot, and for a transactional job
    the session its work goes in (committed with the run record)."""

    engines: Engines
    settings: Settings
    slot: datetime
    run_id: int
    attempt: int
    session: Session | None = None
    lease_lost: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[JobContext], JobResult]
    description: str
    default_schedule: str = "off"
    setting: str | None = None  # the Settings field holding the schedule
    transactional: bool = False

    @property
    def env_name(self) -> str:
        return f"{ENV_PREFIX}SCHEDULE_{self.name.replace('-', '_').upper()}"

    def schedule(self, settings: Settings) -> Schedule:
        """This job's schedule: its setting, else TRADEBASE_SCHEDULE_<NAME>, else the
        default it was registered with."""
        if self.setting is not None:
            return parse_schedule(str(getattr(settings, self.setting)))
        value = os.environ.get(self.env_name, self.default_schedule)
        try:
            return parse_schedule(value)
        except ScheduleError as exc:
            raise JobError(f"{self.env_name}: {exc}") from None


_REGISTRY: dict[str, Job] = {}
_REGISTRY_LOCK = threading.Lock()


def job(
    name: str,
    *,
    schedule: str = "off",
    description: str | None = None,
    transactional: bool = False,
    setting: str | None = None,
) -> Callable[[Callable[[JobContext], JobResult]], Callable[[JobContext], JobResult]]:
    """Register *function* as the job *name* (lowercase letters, digits and hyphens)."""
    if not name or not all(c.isalnum() or c == "-" for c in name) or name.lower() != name:
        raise ValueError(f"job name {name!r}: use lowercase letters, digits and hyphens")
    parse_schedule(schedule)

    def register(function: Callable[[JobContext], JobResult]) -> Callable[[JobContext], JobResult]:
        text = description or (function.__doc__ or name).strip().splitlines()[0]
        with _REGISTRY_LOCK:
            _REGISTRY[name] = Job(name, function, text, schedule, setting, transactional)
        return function

    return register


def load_modules(settings: Settings) -> None:
    """Import the modules of TRADEBASE_JOB_MODULES, whose @job functions register."""
    for module in (settings.job_modules or "").split(","):
        module = module.strip()
        if not module:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise JobError(
                f"TRADEBASE_JOB_MODULES: cannot import {module!r} ({exc}); is it on PYTHONPATH?"
            ) from None


def registered(settings: Settings | None = None) -> dict[str, Job]:
    """Every job by name: the built-in ones and those of TRADEBASE_JOB_MODULES."""
    if settings is not None:
        load_modules(settings)
    with _REGISTRY_LOCK:
        return dict(sorted(_REGISTRY.items()))


def get_job(name: str, settings: Settings) -> Job:
    jobs = registered(settings)
    if name not in jobs:
        raise JobError(f"no job {name!r}; the jobs are: {', '.join(jobs)}")
    return jobs[name]


# --- the built-in jobs ------------------------------------------------------------------


@job("backup", setting="schedule_backup")
def _backup(ctx: JobContext) -> JobResult:
    """Back up both databases into the backup folder, then rotate the backups there."""
    from tradebase.ops import backup as backup_ops

    folder = ctx.settings.backups_path
    made = backup_ops.create_backup(
        folder, databases=[Database.main, Database.credentials], settings=ctx.settings
    )
    rotation = backup_ops.rotate(folder, settings=ctx.settings)
    return {
        "path": str(made.path),
        "bytes": made.size,
        "rows": {db.value: entry.rows for db, entry in made.manifest.databases.items()},
        "rotated_away": list(rotation.deleted),
    }


@job("prune", setting="schedule_prune")
def _prune(ctx: JobContext) -> JobResult:
    """Delete or archive the rows past each table's retention (db prune)."""
    from tradebase.ops.retention import retention

    reports = retention.prune(
        ctx.engines.session_factory(Database.main), ctx.settings, at=utc_now(), dry_run=False
    )
    return {r.policy.table: r.done for r in reports if r.cutoff is not None}


@job("maintain", setting="schedule_maintain")
def _maintain(ctx: JobContext) -> JobResult:
    """Vacuum and analyze both databases, check SQLite's integrity (db maintain)."""
    from tradebase.ops.maintain import maintain

    reports = maintain(ctx.engines, [Database.main, Database.credentials])
    problems = [
        f"{r.database.value}: {p}"
        for r in reports
        for p in [*r.problems, *(r.integrity if r.integrity not in (None, ["ok"]) else [])]
        if p
    ]
    if problems:
        raise RuntimeError("; ".join(problems))
    return {
        r.database.value: {"engine": r.engine, "bytes": sum(t.size or 0 for t in r.tables)}
        for r in reports
    }


@job("snapshot", setting="schedule_snapshot", transactional=True)
def _snapshot(ctx: JobContext) -> JobResult:
    """Record every portfolio's value and refresh its P&L and metrics (tradebase snapshot),
    and every strategy's performance."""
    from tradebase.accounts.cli import CLI
    from tradebase.portfolios.models import Portfolio
    from tradebase.portfolios.service import portfolio as portfolio_service
    from tradebase.strategies.models import Strategy
    from tradebase.strategies.service import strategy as strategy_service

    assert ctx.session is not None
    ids = list(ctx.session.scalars(select(Portfolio.id).order_by(Portfolio.id)))
    for portfolio_id in ids:
        portfolio_service.take_snapshot(ctx.session, CLI, portfolio_id)
    strategies = list(ctx.session.scalars(select(Strategy.id).order_by(Strategy.id)))
    for strategy_id in strategies:
        strategy_service.refresh_performance(ctx.session, strategy_id)
    return {"portfolios": len(ids), "strategies": len(strategies)}


@job("settle", setting="schedule_settle", transactional=True)
def _settle(ctx: JobContext) -> JobResult:
    """Settle CNC positions into holdings once their trading day closed (tradebase settle)."""
    from tradebase.portfolios.settlement import settle

    assert ctx.session is not None
    report = settle(ctx.session)
    return {"settled": len(report.settled), "waiting": report.waiting, "held": report.held}


@job("expire-orders", setting="schedule_expire_orders", transactional=True)
def _expire_orders(ctx: JobContext) -> JobResult:
    """Expire DAY orders whose trading day has closed (tradebase orders expire)."""
    from tradebase.orders.service import order as order_service

    assert ctx.session is not None
    return {"expired": order_service.expire_day_orders(ctx.session)}


@job("recover", setting="schedule_recover")
def _recover(ctx: JobContext) -> JobResult:
    """Execute signals and place mirrored legs that a dead server left pending."""
    from tradebase.mirroring.service import resume
    from tradebase.signals.service import recover

    factory = ctx.engines.session_factory(Database.main)
    return {"signals": recover(factory, ctx.settings), "mirrored": resume(factory)}


@job("broker-health", setting="schedule_broker_health")
def _broker_health(ctx: JobContext) -> JobResult:
    """Check every live broker account (connection status) and settle its pending orders."""
    from tradebase.brokers.service import broker

    reports = broker.check_all(ctx.engines)
    return {str(r.account_id): r.connection_status for r in reports}


# --- claiming and running a slot --------------------------------------------------------

# Runs this process is executing now (several Runner objects may share a process).
_RUNNING_HERE: set[int] = set()
_RUNNING_LOCK = threading.Lock()
_FINISHED: Final = (RunStatus.succeeded, RunStatus.failed, RunStatus.skipped, RunStatus.abandoned)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (a CursorResult's rowcount)."""
    return int(cast(CursorResult[Any], result).rowcount)


def _process_gone(pid: int) -> bool:
    """Whether process *pid* of this host has ended (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Claim:
    run_id: int
    job: str
    slot: datetime
    attempt: int
    kind: RunKind


@dataclass(frozen=True)
class Outcome:
    run_id: int
    job: str
    slot: datetime
    status: RunStatus | None  # None: the claim was lost before the outcome was recorded
    result: JobResult = None
    error: str | None = None
    seconds: float = 0.0


class Runner:
    """Claims slots and runs jobs for one worker (host and process)."""

    def __init__(
        self,
        engines: Engines,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.engines = engines
        self.settings = settings
        self.clock = clock
        self.host = host or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.job_lease_seconds)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Session]:
        with unit_of_work(factory=self.engines.session_factory(Database.main)) as session:
            yield session

    def _alive(self, run: JobRun, now: datetime) -> bool:
        if run.lease_until <= now:
            return False
        if run.host == socket.gethostname():
            if run.pid == os.getpid():
                with _RUNNING_LOCK:
                    return run.id in _RUNNING_HERE
            return not _process_gone(run.pid)
        return True

    def _dead_reason(self, run: JobRun, now: datetime) -> str:
        if run.lease_until <= now:
            return (
                f"the claim of {run.host} pid {run.pid} expired at"
                f" {run.lease_until.isoformat(timespec='seconds')} without a heartbeat"
            )
        return f"worker {run.host} pid {run.pid} stopped before the job finished"

    def claim(self, job: Job, slot: datetime, kind: RunKind = RunKind.schedule) -> Claim | str:
        """Claim *job*'s *slot*: a Claim when this worker is to run it, else why not —
        ``"done"`` (the slot has a final outcome), ``"running"`` (another worker is on
        it), ``"waiting"`` (the run of an earlier slot is still going: try again) or
        ``"busy: …"`` for a manual run refused because the job is running."""
        now = self.clock()
        with self._transaction() as session:
            live: list[JobRun] = []
            running = session.scalars(
                select(JobRun)
                .where(JobRun.job == job.name, JobRun.status == RunStatus.running)
                .order_by(JobRun.slot_at)
            ).all()
            for run in running:
                if self._alive(run, now):
                    live.append(run)
                    continue
                reason = self._dead_reason(run, now)
                if run.slot_at == slot and run.attempt < self.settings.job_max_attempts:
                    taken = session.execute(
                        update(JobRun)
                        .where(
                            JobRun.id == run.id,
                            JobRun.attempt == run.attempt,
                            JobRun.status == RunStatus.running,
                        )
                        .values(
                            attempt=run.attempt + 1,
                            host=self.host,
                            pid=self.pid,
                            started_at=now,
                            lease_until=now + self.lease,
                            error=f"attempt {run.attempt}: {reason}",
                        )
                        .execution_options(synchronize_session=False)
                    )
                    if _rowcount(taken) == 1:
                        log.warning("%s %s: %s; running it again", job.name, slot, reason)
                        return self._claimed(run.id, job, slot, run.attempt + 1, kind)
                    return "running"
                session.execute(
                    update(JobRun)
                    .where(
                        JobRun.id == run.id,
                        JobRun.attempt == run.attempt,
                        JobRun.status == RunStatus.running,
                    )
                    .values(status=RunStatus.abandoned, finished_at=now, error=reason)
                    .execution_options(synchronize_session=False)
                )
                log.warning("%s %s abandoned: %s", job.name, run.slot_at, reason)
            if any(run.slot_at == slot for run in live):
                return "running"
            if live:
                if kind is RunKind.manual:
                    run = live[-1]
                    return (
                        f"busy: {job.name} is running on {run.host} pid {run.pid} since"
                        f" {run.started_at.isoformat(timespec='seconds')}"
                    )
                return "waiting"
            row = JobRun(
                job=job.name,
                slot_at=slot,
                kind=kind,
                status=RunStatus.running,
                host=self.host,
                pid=self.pid,
                started_at=now,
                lease_until=now + self.lease,
            )
            try:
                with session.begin_nested():
                    session.add(row)
            except IntegrityError:
                existing = session.scalar(
                    select(JobRun.status).where(JobRun.job == job.name, JobRun.slot_at == slot)
                )
                return "done" if existing in _FINISHED else "running"
            return self._claimed(row.id, job, slot, 1, kind)

    def skip(self, job: Job, slot: datetime, reason: str) -> bool:
        """Record *slot* of *job* as skipped (a later slot came while it waited for the
        previous run); False if the slot has a row already."""
        now = self.clock()
        with self._transaction() as session:
            try:
                with session.begin_nested():
                    session.add(
                        JobRun(
                            job=job.name,
                            slot_at=slot,
                            status=RunStatus.skipped,
                            host=self.host,
                            pid=self.pid,
                            started_at=now,
                            lease_until=now,
                            finished_at=now,
                            error=reason,
                        )
                    )
            except IntegrityError:
                return False
        log.warning("%s %s skipped: %s", job.name, slot, reason)
        return True

    def _claimed(self, run_id: int, job: Job, slot: datetime, attempt: int, kind: RunKind) -> Claim:
        with _RUNNING_LOCK:
            _RUNNING_HERE.add(run_id)
        return Claim(run_id, job.name, slot, attempt, kind)

    def _fenced(self, claim: Claim) -> Any:
        return update(JobRun).where(
            JobRun.id == claim.run_id,
            JobRun.attempt == claim.attempt,
            JobRun.status == RunStatus.running,
        )

    def _heartbeat(self, claim: Claim, stop: threading.Event, lost: threading.Event) -> None:
        every = max(self.settings.job_lease_seconds / 4, 0.5)
        while not stop.wait(every):
            try:
                with self._transaction() as session:
                    renewed = session.execute(
                        self._fenced(claim)
                        .values(lease_until=self.clock() + self.lease)
                        .execution_options(synchronize_session=False)
                    )
                if _rowcount(renewed) != 1:
                    if not stop.is_set():
                        lost.set()
                        log.error("%s %s: another worker took this run over", claim.job, claim.slot)
                    return
            except OperationalError as exc:  # the database is away: try again next beat
                log.warning("%s heartbeat failed: %s", claim.job, exc)

    def execute(self, job: Job, claim: Claim) -> Outcome:
        """Run the claimed slot and record how it ended."""
        started = time.monotonic()
        stop, lost = threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(claim, stop, lost), name=f"lease-{job.name}", daemon=True
        )
        beat.start()
        ctx = JobContext(
            self.engines, self.settings, claim.slot, claim.run_id, claim.attempt, lease_lost=lost
        )
        try:
            if job.transactional:
                with self._transaction() as session:
                    ctx.session = session
                    result = _json_safe(job.run(ctx))
                    self._record(session, claim, RunStatus.succeeded, result, None)
            else:
                result = _json_safe(job.run(ctx))
                with self._transaction() as session:
                    self._record(session, claim, RunStatus.succeeded, result, None)
            status, error = RunStatus.succeeded, None
        except LeaseLost:
            status, result, error = None, None, "another worker took this run over"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            tail = "".join(traceback.format_exception(exc)[-3:])
            status, result = RunStatus.failed, None
            try:
                with self._transaction() as session:
                    self._record(session, claim, RunStatus.failed, None, f"{error}\n{tail}")
            except LeaseLost:
                status = None
        finally:
            stop.set()
            beat.join()
            with _RUNNING_LOCK:
                _RUNNING_HERE.discard(claim.run_id)
        seconds = time.monotonic() - started
        return Outcome(claim.run_id, job.name, claim.slot, status, result, error, seconds)

    def _record(
        self,
        session: Session,
        claim: Claim,
        status: RunStatus,
        result: JobResult,
        error: str | None,
    ) -> None:
        done = session.execute(
            self._fenced(claim)
            .values(
                status=status,
                finished_at=self.clock(),
                result=result,
                error=error if error is not None else JobRun.error,
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(done) != 1:
            raise LeaseLost

    def run_now(self, job: Job) -> Outcome:
        """Run *job* at once as a manual run (tradebase jobs run NAME)."""
        claim = self.claim(job, self.clock(), RunKind.manual)
        if isinstance(claim, str):
            raise JobError(claim.removeprefix("busy: ") + "; wait for it to finish")
        return self.execute(job, claim)


def _json_safe(value: JobResult) -> JobResult:
    """A job's result as JSON values (Decimals, times and paths as strings)."""
    if value is None:
        return None

    def clean(item: Any) -> Any:
        if isinstance(item, dict):
            return {str(k): clean(v) for k, v in item.items()}
        if isinstance(item, list | tuple | set):
            return [clean(v) for v in item]
        if item is None or isinstance(item, bool | int | float | str):
            return item
        return str(item)

    return {str(k): clean(v) for k, v in value.items()}


# --- the worker loop --------------------------------------------------------------------


class Worker:
    """Runs due slots of *jobs* until *stop* is set; each run in its own thread, at most
    one per job in this process."""

    def __init__(
        self,
        runner: Runner,
        jobs: Iterable[Job],
        *,
        poll_seconds: float = 1.0,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.runner = runner
        self.jobs = list(jobs)
        self.poll = poll_seconds
        self.on_outcome = on_outcome
        self.schedules = {j.name: j.schedule(runner.settings) for j in self.jobs}
        self._settled: dict[str, datetime] = {}  # per job: the latest slot known finished
        self._waiting: dict[str, datetime] = {}  # per job: a slot waiting for the previous run
        self._threads: dict[str, threading.Thread] = {}

    def due(self, now: datetime) -> list[tuple[Job, datetime]]:
        grace = timedelta(seconds=self.runner.settings.job_misfire_grace_seconds)
        due = []
        for job in self.jobs:
            slot = self.schedules[job.name].latest(now)
            if slot is None or now - slot > grace or self._settled.get(job.name) == slot:
                continue
            thread = self._threads.get(job.name)
            if thread is not None and thread.is_alive():
                continue
            due.append((job, slot))
        return due

    def tick(self) -> None:
        """Claim and start what is due now."""
        for job, slot in self.due(self.runner.clock()):
            try:
                waited = self._waiting.pop(job.name, None)
                if waited is not None and waited != slot:
                    self.runner.skip(
                        job, waited, f"the previous run was still going when slot {slot} came"
                    )
                claim = self.runner.claim(job, slot)
            except OperationalError as exc:
                log.warning("%s: cannot reach the database (%s); trying again", job.name, exc)
                continue
            if isinstance(claim, str):
                if claim == "waiting":
                    self._waiting[job.name] = slot
                elif claim != "running":
                    self._settled[job.name] = slot
                continue
            thread = threading.Thread(
                target=self._run, args=(job, claim), name=f"job-{job.name}", daemon=True
            )
            self._threads[job.name] = thread
            thread.start()

    def _run(self, job: Job, claim: Claim) -> None:
        log.info("%s %s: started (attempt %d)", job.name, claim.slot, claim.attempt)
        outcome = self.runner.execute(job, claim)
        self._settled[job.name] = claim.slot
        if outcome.status is RunStatus.succeeded:
            log.info(
                "%s %s: succeeded in %.1f s %s",
                job.name,
                claim.slot,
                outcome.seconds,
                outcome.result or "",
            )
        else:
            log.error("%s %s: %s", job.name, claim.slot, outcome.error)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def sleep_seconds(self, now: datetime) -> float:
        """Until the next slot of any job, at most the poll interval."""
        wait = self.poll
        for schedule in self.schedules.values():
            following = schedule.following(now)
            if following is not None:
                wait = min(wait, max((following - now).total_seconds(), 0.0) + 0.001)
        return wait

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.tick()
            stop.wait(self.sleep_seconds(self.runner.clock()))
        for thread in list(self._threads.values()):
            thread.join()
