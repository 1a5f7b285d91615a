"""Scheduled job runs: one row per job and slot, the record that makes a slot run once.

A worker claims a slot by inserting ``(job, slot_at)``: the unique key lets exactly one of
several workers win. While it runs, the worker keeps ``lease_until`` in the future
(heartbeats); a run whose lease ran out, or whose worker process is gone on the same
host, is abandoned and may be taken over (``attempt`` + 1). Finishing is a compare-and-set
on ``(id, attempt, status = running)``, so a worker that lost its lease cannot record an
outcome, and a job whose work is one transaction commits that work with it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck, ck_in
from tradebase.core.models import Base
from tradebase.core.time import utc_now


class RunStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    abandoned = "abandoned"  # its worker stopped (killed, lease expired) before it finished
    skipped = "skipped"  # the previous run of the job was still going at this slot


class RunKind(StrEnum):
    schedule = "schedule"
    manual = "manual"  # tradebase jobs run NAME


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    job: Mapped[str] = mapped_column(String(100))
    slot_at: Mapped[datetime]  # the scheduled moment (UTC); a manual run's own start
    kind: Mapped[str] = mapped_column(String(10), default=RunKind.schedule)
    status: Mapped[str] = mapped_column(String(10), default=RunStatus.running)
    attempt: Mapped[int] = mapped_column(default=1, server_default="1")
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utc_now)
    lease_until: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]  # what the job reports: counts, file names
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("job", "slot_at", name="uq_job_runs_job_slot"),
        Index("idx_job_runs_job_status", "job", "status"),
        Index("idx_job_runs_started", "started_at"),
        ck_in("status", "status", list(RunStatus)),
        ck_in("kind", "kind", list(RunKind)),
        ck("attempt_positive", "attempt >= 1"),
    )
