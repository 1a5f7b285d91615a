"""The worker's jobs: schedules, one run per slot among competing workers, taking over a
dead worker's slot, fencing a worker that lost its claim, no overlap, failures recorded;
and two real `tradebase worker` processes on PostgreSQL and MariaDB, one killed mid-job."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select
from typer.testing import CliRunner

from tests.conftest import Migrated, ScratchFactory
from tradebase.cli import app
from tradebase.config import Settings, SettingsError, load_settings
from tradebase.core import migrate
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.metrics.models import SystemMetric
from tradebase.ops import jobs as jobs_ops
from tradebase.ops.jobs import Claim, JobContext, JobError, Runner
from tradebase.ops.models import JobRun, RunKind, RunStatus
from tradebase.ops.schedule import ScheduleError, parse_schedule

SRC = Path(__file__).resolve().parents[2] / "src"


def _t(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


# --- schedules --------------------------------------------------------------------------


def test_interval_slots_are_whole_multiples_since_the_epoch() -> None:
    every2 = parse_schedule("every 2s")
    assert every2.text == "every 2 seconds"
    assert every2.latest(_t("2026-12-01 10:00:03.500")) == _t("2026-12-01 10:00:02")
    assert every2.latest(_t("2026-12-01 10:00:04")) == _t("2026-12-01 10:00:04")
    assert every2.following(_t("2026-12-01 10:00:03.500")) == _t("2026-12-01 10:00:04")
    every15 = parse_schedule("every 15m")
    # 10:07 is 7 minutes past a quarter hour; quarter hours are multiples of 900 s since 1970
    assert every15.latest(_t("2026-12-01 10:07:00")) == _t("2026-12-01 10:00")
    assert every15.following(_t("2026-12-01 10:07:00")) == _t("2026-12-01 10:15")
    daily = parse_schedule("every 1d")
    assert daily.latest(_t("2026-12-01 23:59:59")) == _t("2026-12-01 00:00")


def test_cron_slots_in_utc() -> None:
    quarter = parse_schedule("*/15 * * * *")
    assert quarter.latest(_t("2026-12-01 10:07:30")) == _t("2026-12-01 10:00")
    assert quarter.latest(_t("2026-12-01 10:15:00")) == _t("2026-12-01 10:15")  # at it: due
    assert quarter.following(_t("2026-12-01 10:15:00")) == _t("2026-12-01 10:30")
    nightly = parse_schedule("0 2 * * *")
    assert nightly.latest(_t("2026-12-01 01:59:59")) == _t("2026-11-30 02:00")
    assert nightly.following(_t("2026-12-01 01:59:59")) == _t("2026-12-01 02:00")
    # 2026-12-06 is a Sunday
    assert parse_schedule("0 3 * * 0").following(_t("2026-12-01 11:00")) == _t("2026-12-06 03:00")
    seconds = parse_schedule("*/10 * * * * *")  # six fields: seconds first
    assert seconds.latest(_t("2026-12-01 10:00:25")) == _t("2026-12-01 10:00:20")
    # a time in another zone is the same instant
    ist = timezone(timedelta(hours=5, minutes=30))
    assert nightly.latest(datetime(2026, 12, 1, 7, 31, tzinfo=ist)) == _t("2026-12-01 02:00")
    assert "02:00" in nightly.describe()


def test_off_never_has_a_slot() -> None:
    off = parse_schedule("off")
    assert off.off and off.latest(_t("2026-12-01 10:00")) is None
    assert off.following(_t("2026-12-01 10:00")) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("every 0s", "at least 1"),
        ("every 5x", "not a schedule"),
        ("* * *", "not a schedule"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 25 * * *", "not a valid cron expression"),
    ],
)
def test_a_wrong_schedule_says_what_is_accepted(value: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse_schedule(value)


def test_a_wrong_schedule_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBASE_SCHEDULE_BACKUP", "at two")
    with pytest.raises(SettingsError, match="TRADEBASE_SCHEDULE_BACKUP: 'at two' is not a"):
        load_settings()


def test_the_built_in_jobs_and_their_default_schedules() -> None:
    settings = Settings()
    jobs = jobs_ops.registered(settings)
    defaults = {
        "backup": "0 2 * * *",
        "prune": "30 2 * * *",
        "maintain": "0 3 * * 0",
        "snapshot": "5 0 * * *",
        "settle": "*/15 * * * *",
        "expire-orders": "*/5 * * * *",
        "recover": "every 1 minute",
    }
    for name, schedule in defaults.items():
        assert jobs[name].schedule(settings).text == schedule
    assert {n for n in defaults if jobs[n].transactional} == {"snapshot", "settle", "expire-orders"}


# --- claiming slots on every engine -----------------------------------------------------


class Jobs:
    """Jobs registered under fresh names (the migrated databases outlive one test), each
    writing a system_metrics row tagged with its name in the job's transaction."""

    def __init__(self, migrated: Migrated, **settings: Any) -> None:
        self.settings = migrated.scratch.settings().model_copy(update=settings)
        self.engines = Engines(self.settings)

    def make(
        self,
        *,
        fail: bool = False,
        pause: threading.Event | None = None,
        transactional: bool = True,
    ) -> jobs_ops.Job:
        """A job writing one row; *pause* keeps it running (outside any transaction when
        not *transactional*: a SQLite transaction would hold the write lock meanwhile)."""
        name = f"t-{uuid.uuid4().hex[:10]}"

        @jobs_ops.job(name, transactional=transactional)
        def work(ctx: JobContext) -> dict[str, Any]:
            """A test job."""
            row = insert(SystemMetric).values(
                component=name, timestamp=ctx.slot, active_connections=1
            )
            if ctx.session is not None:
                ctx.session.execute(row)
            if pause is not None:
                pause.wait(10)
            if ctx.session is None:
                with unit_of_work(factory=ctx.engines.session_factory(Database.main)) as s:
                    s.execute(row)
            if fail:
                raise ValueError("boom")
            return {"slot": ctx.slot, "amount": 1}

        return jobs_ops.registered()[name]

    def close(self) -> None:
        """Remove this test's rows from the shared databases, then the engines."""
        with unit_of_work(factory=self.engines.session_factory(Database.main)) as s:
            s.execute(delete(SystemMetric).where(SystemMetric.component.like("t-%")))
            s.execute(delete(JobRun).where(JobRun.job.like("t-%")))
        self.engines.dispose()

    def runner(self, host: str, pid: int = 4242, clock: Any = None) -> Runner:
        return Runner(self.engines, self.settings, host=host, pid=pid, clock=clock or _now)

    def rows(self, job: jobs_ops.Job) -> int:
        with unit_of_work(write=False, factory=self.engines.session_factory(Database.main)) as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(SystemMetric)
                    .where(SystemMetric.component == job.name)
                )
                or 0
            )

    def runs(self, job: jobs_ops.Job) -> list[JobRun]:
        with unit_of_work(write=False, factory=self.engines.session_factory(Database.main)) as s:
            return list(
                s.scalars(select(JobRun).where(JobRun.job == job.name).order_by(JobRun.slot_at))
            )


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def jobs(migrated: Migrated) -> Iterator[Jobs]:
    made = Jobs(migrated)
    yield made
    made.close()


def _gone_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


SLOT = _t("2026-12-01 10:00:00")


def test_competing_workers_run_a_slot_once(jobs: Jobs) -> None:
    job = jobs.make()
    runners = [jobs.runner(f"host-{i}") for i in range(4)]
    start = threading.Barrier(len(runners))
    claims: list[Claim | str] = []
    lock = threading.Lock()

    def compete(runner: Runner) -> None:
        start.wait()
        got = runner.claim(job, SLOT)
        with lock:
            claims.append(got)

    threads = [threading.Thread(target=compete, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [c for c in claims if isinstance(c, Claim)]
    assert len(won) == 1 and sorted(c for c in claims if isinstance(c, str)) == ["running"] * 3
    outcome = runners[0].execute(job, won[0])
    assert outcome.status is RunStatus.succeeded
    assert outcome.result == {"slot": "2026-12-01 10:00:00+00:00", "amount": 1}
    assert [r.claim(job, SLOT) for r in runners] == ["done"] * 4
    assert jobs.rows(job) == 1
    (run,) = jobs.runs(job)
    assert (run.status, run.attempt, run.kind, run.slot_at) == ("succeeded", 1, "schedule", SLOT)
    assert run.result == {"slot": "2026-12-01 10:00:00+00:00", "amount": 1}
    assert run.finished_at is not None and run.finished_at >= run.started_at


def test_a_slot_whose_worker_process_is_gone_is_taken_over(jobs: Jobs) -> None:
    job = jobs.make()
    here = socket.gethostname()
    dead = _gone_pid()
    first = jobs.runner(here, pid=dead).claim(job, SLOT)
    assert isinstance(first, Claim)  # ... and its worker dies before it runs the job
    second = jobs.runner(here, pid=os.getpid()).claim(job, SLOT)
    assert isinstance(second, Claim) and second.run_id == first.run_id and second.attempt == 2
    assert jobs.runner(here).execute(job, second).status is RunStatus.succeeded
    (run,) = jobs.runs(job)
    assert (run.status, run.attempt, run.pid) == ("succeeded", 2, os.getpid())
    assert run.error == f"attempt 1: worker {here} pid {dead} stopped before the job finished"
    assert jobs.rows(job) == 1


def test_a_claim_whose_lease_ran_out_is_taken_over_elsewhere(jobs: Jobs) -> None:
    job = jobs.make()
    lease = jobs.settings.job_lease_seconds
    first = jobs.runner("far-away").claim(job, SLOT)
    assert isinstance(first, Claim)
    # within the lease the claim stands, whatever happened to far-away
    assert (
        jobs.runner("here", clock=lambda: _now() + timedelta(seconds=lease - 5)).claim(job, SLOT)
        == "running"
    )
    late = jobs.runner("here", clock=lambda: _now() + timedelta(seconds=lease + 1))
    second = late.claim(job, SLOT)
    assert isinstance(second, Claim) and second.attempt == 2
    # far-away wakes up and finishes its (first) attempt: the fence refuses it, and its
    # work is rolled back with it
    lost = jobs.runner("far-away").execute(job, first)
    assert lost.status is None and lost.error == "another worker took this run over"
    assert jobs.rows(job) == 0
    assert late.execute(job, second).status is RunStatus.succeeded
    assert jobs.rows(job) == 1
    (run,) = jobs.runs(job)
    assert (run.status, run.attempt, run.host) == ("succeeded", 2, "here")
    assert "far-away" in (run.error or "") and "without a heartbeat" in (run.error or "")


def test_a_dead_run_past_its_attempts_is_abandoned(migrated: Migrated) -> None:
    jobs = Jobs(migrated, job_max_attempts=1)
    try:
        job = jobs.make()
        here = socket.gethostname()
        assert isinstance(jobs.runner(here, pid=_gone_pid()).claim(job, SLOT), Claim)
        assert jobs.runner(here).claim(job, SLOT) == "done"
        (run,) = jobs.runs(job)
        assert run.status == "abandoned" and "stopped before the job finished" in (run.error or "")
        assert run.finished_at is not None
        # the next slot runs as usual
        following = jobs.runner(here).claim(job, SLOT + timedelta(minutes=5))
        assert isinstance(following, Claim) and following.attempt == 1
    finally:
        jobs.close()


def test_a_job_does_not_overlap_itself(jobs: Jobs) -> None:
    pause = threading.Event()
    job = jobs.make(pause=pause, transactional=False)
    worker = jobs.runner("worker-a")
    claim = worker.claim(job, SLOT)
    assert isinstance(claim, Claim)
    thread = threading.Thread(target=worker.execute, args=(job, claim))
    thread.start()
    later = SLOT + timedelta(minutes=1)
    try:
        # the next slot waits for the run before it; nothing is recorded meanwhile
        assert jobs.runner("worker-b").claim(job, later) == "waiting"
        assert jobs.runner("worker-c").claim(job, later) == "waiting"
        assert len(jobs.runs(job)) == 1
        with pytest.raises(JobError, match=r"is running on worker-a pid 4242 since .*; wait"):
            jobs.runner("worker-b").run_now(job)
    finally:
        pause.set()
        thread.join()
    follows = jobs.runner("worker-b").claim(job, later)  # free again: the waiting slot runs
    assert isinstance(follows, Claim)
    assert jobs.runner("worker-b").execute(job, follows).status is RunStatus.succeeded
    # a slot overtaken by the next one while it waited is recorded as skipped, once
    between = SLOT + timedelta(seconds=30)
    assert jobs.runner("worker-c").skip(job, between, "the previous run was still going")
    assert not jobs.runner("worker-b").skip(job, between, "the previous run was still going")
    first, skipped, second = jobs.runs(job)
    assert (first.status, skipped.status, second.status) == ("succeeded", "skipped", "succeeded")
    assert skipped.error == "the previous run was still going" and skipped.host == "worker-c"
    assert jobs.rows(job) == 2
    manual = jobs.runner("worker-b").run_now(job)
    assert manual.status is RunStatus.succeeded
    assert jobs.runs(job)[-1].kind == RunKind.manual and jobs.rows(job) == 3


def test_a_failing_job_is_recorded_and_its_work_rolled_back(jobs: Jobs) -> None:
    job = jobs.make(fail=True)
    runner = jobs.runner("worker-a")
    claim = runner.claim(job, SLOT)
    assert isinstance(claim, Claim)
    outcome = runner.execute(job, claim)
    assert outcome.status is RunStatus.failed and outcome.error == "ValueError: boom"
    (run,) = jobs.runs(job)
    assert run.status == "failed" and (run.error or "").startswith("ValueError: boom\n")
    assert jobs.rows(job) == 0
    assert runner.claim(job, SLOT) == "done"  # a failed slot is not retried


def test_the_lease_is_renewed_while_a_job_runs(migrated: Migrated) -> None:
    jobs = Jobs(migrated, job_lease_seconds=2)  # a heartbeat every 0.5 s
    try:
        pause = threading.Event()
        job = jobs.make(pause=pause, transactional=False)
        runner = jobs.runner("worker-a")
        claim = runner.claim(job, SLOT)
        assert isinstance(claim, Claim)
        thread = threading.Thread(target=runner.execute, args=(job, claim))
        thread.start()
        try:
            time.sleep(3.0)  # longer than the lease: only the heartbeat keeps it
            (run,) = jobs.runs(job)
            assert run.status == "running" and run.lease_until > _now()
            assert jobs.runner("worker-b").claim(job, SLOT) == "running"
        finally:
            pause.set()
            thread.join()
        assert jobs.runs(job)[0].status == "succeeded"
    finally:
        jobs.close()


# --- the CLI ----------------------------------------------------------------------------


def test_jobs_list_run_and_history(migrated: Migrated, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in migrated.scratch.env().items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    listed = runner.invoke(app, ["jobs", "list"])
    assert listed.exit_code == 0, listed.output
    for name in ("backup", "prune", "maintain", "snapshot", "settle", "expire-orders"):
        assert name in listed.output
    ran = runner.invoke(app, ["jobs", "run", "expire-orders"])
    assert ran.exit_code == 0, ran.output
    assert ran.output.startswith("expire-orders: succeeded in ") and "expired: 0" in ran.output
    unknown = runner.invoke(app, ["jobs", "run", "nope"])
    assert unknown.exit_code == 1 and "no job 'nope'; the jobs are: backup," in unknown.output
    history = runner.invoke(app, ["jobs", "history", "expire-orders", "--limit", "1"])
    assert history.exit_code == 0 and "manual" in history.output and "succeeded" in history.output
    helped = runner.invoke(app, ["worker", "--help"])
    assert helped.exit_code == 0 and "each slot of each job runs once" in " ".join(
        helped.output.split()
    )


# --- real worker processes --------------------------------------------------------------

TICK_MODULE = """
    import time

    from sqlalchemy import insert

    from tradebase.metrics.models import SystemMetric
    from tradebase.ops.jobs import job


    @job("tick", schedule="every 2s", transactional=True)
    def tick(ctx):
        \"\"\"Write one row per slot, then take a while about it.\"\"\"
        ctx.session.execute(
            insert(SystemMetric).values(component="tick", timestamp=ctx.slot, active_connections=1)
        )
        time.sleep(1.0)
        return {"slot": ctx.slot.isoformat()}
"""


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_two_worker_processes_run_each_slot_once_and_survive_a_kill(
    backend: str, scratch_factory: ScratchFactory, tmp_path: Path
) -> None:
    scratch = scratch_factory.new(backend, "workers")
    settings = scratch.settings()
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    (tmp_path / "tickjobs.py").write_text(textwrap.dedent(TICK_MODULE))
    env = {
        **os.environ,
        **scratch.env(),
        "TRADEBASE_JOB_MODULES": "tickjobs",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC)]),
    }
    command = [sys.executable, "-m", "tradebase", "worker", "--job", "tick", "--poll", "0.2"]
    logs = [open(tmp_path / f"worker{i}.log", "wb") for i in range(2)]  # noqa: SIM115
    workers = [
        subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs
    ]
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)

    def runs() -> list[JobRun]:
        with unit_of_work(factory=factory) as s:
            return list(
                s.scalars(select(JobRun).where(JobRun.job == "tick").order_by(JobRun.slot_at))
            )

    try:
        began = time.monotonic()
        killed: subprocess.Popen[bytes] | None = None
        killed_slot = None
        while time.monotonic() - began < 20:
            if killed is None and time.monotonic() - began > 7:
                running = [
                    r
                    for r in runs()
                    if r.status == "running" and _now() - r.started_at < timedelta(seconds=0.6)
                ]
                victims = [w for w in workers if running and w.pid == running[-1].pid]
                if victims:
                    killed, killed_slot = victims[0], running[-1].slot_at
                    killed.send_signal(signal.SIGKILL)
                    killed.wait()
            time.sleep(0.1)
        assert killed is not None, "no run was caught mid-job"
        survivor = next(w for w in workers if w is not killed)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=15) == 0  # lets its running job finish, then exits
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for log in logs:
            log.close()
    try:
        done = runs()
        with unit_of_work(factory=factory) as s:
            rows = list(
                s.scalars(select(SystemMetric.timestamp).where(SystemMetric.component == "tick"))
            )
    finally:
        engines.dispose()
    output = "\n".join((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    # every slot was written once, and exactly the slots whose run succeeded
    assert len(rows) == len(set(rows)), output
    succeeded = [r.slot_at for r in done if r.status == "succeeded"]
    assert sorted(rows) == succeeded, output
    # no slot missing between the first and the last: each 2 s, over the 20 s
    assert [b - a for a, b in pairwise(succeeded)] == [timedelta(seconds=2)] * (
        len(succeeded) - 1
    ), output
    assert len(succeeded) >= 8, output
    assert {r.status for r in done} == {"succeeded"}, output
    # the slot the killed worker was in the middle of was run again by the survivor...
    (retried,) = [r for r in done if r.slot_at == killed_slot]
    assert retried.attempt == 2 and retried.pid == survivor.pid, output
    assert f"pid {killed.pid} stopped before the job finished" in (retried.error or ""), output
    # ... and so was every later slot
    assert {r.pid for r in done if r.slot_at >= killed_slot} == {survivor.pid}, output
    assert {r.pid for r in done} <= {killed.pid, survivor.pid}, output


def test_worker_refuses_an_unmigrated_database(scratch_factory: ScratchFactory) -> None:
    scratch = scratch_factory.new("sqlite", "unmigrated")
    result = subprocess.run(
        [sys.executable, "-m", "tradebase", "worker"],
        env={**os.environ, **scratch.env(), "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "the main database is not created: run tradebase db upgrade" in result.stderr


def test_serve_with_worker_runs_the_jobs_in_the_server_process(
    scratch_factory: ScratchFactory, tmp_path: Path
) -> None:
    import httpx

    from tests.conftest import free_port

    scratch = scratch_factory.new("sqlite", "serve_worker")
    settings = scratch.settings()
    (tmp_path / "tickjobs.py").write_text(textwrap.dedent(TICK_MODULE).replace("2s", "1s"))
    env = {
        **os.environ,
        **scratch.env(),
        "TRADEBASE_JOB_MODULES": "tickjobs",
        "TRADEBASE_JOB_MISFIRE_GRACE_SECONDS": "2",  # no daily job from hours ago
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC)]),
    }
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tradebase", "serve", "--worker", "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        deadline = time.monotonic() + 20
        while True:
            with unit_of_work(write=False, factory=factory) as s:
                done = list(
                    s.scalars(
                        select(JobRun).where(JobRun.job == "tick", JobRun.status == "succeeded")
                    )
                )
            if len(done) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(done) >= 3
        assert {run.pid for run in done} == {server.pid}  # in the server's own process
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0]
        # uvicorn ends the process by the signal once it has shut down; the worker's
        # running job finished first: no run is left running
        assert server.returncode in (0, -signal.SIGTERM), output
        assert "worker thread: " in output and "tick" in output
        with unit_of_work(write=False, factory=factory) as s:
            statuses = set(s.scalars(select(JobRun.status).where(JobRun.job == "tick")))
        assert statuses == {"succeeded"}, output
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        engines.dispose()
