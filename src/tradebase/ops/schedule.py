"""When a job runs: cron expressions (cronsim) and fixed intervals, always in UTC.

A schedule is one of

* ``off`` — never (the job still runs with ``tradebase jobs run NAME``);
* a cron expression of 5 fields (``minute hour day-of-month month day-of-week``, e.g.
  ``0 2 * * *`` at 02:00 UTC every day) or 6 with seconds first (``*/10 * * * * *``);
* ``every N`` with a unit, ``s``, ``m``, ``h`` or ``d`` (``every 2s``, ``every 15m``):
  slots at whole multiples of the interval since 1970-01-01 UTC, so that every worker
  computes the same slots without talking to the others.

A *slot* is one scheduled moment. The worker runs a job for the latest slot that is due
(at or before now), once, whichever worker gets there first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cronsim import CronSim, CronSimError

_EVERY: Final = re.compile(r"^every\s+(?P<amount>[0-9]{1,7})\s*(?P<unit>[smhd])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_UNIT_NAMES: Final = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)


class ScheduleError(ValueError):
    """A schedule that cannot be parsed; the message says what is accepted."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: *cron* or *interval* (seconds), neither when off."""

    text: str
    cron: str | None = None
    interval: int | None = None

    @property
    def off(self) -> bool:
        return self.cron is None and self.interval is None

    def latest(self, now: datetime) -> datetime | None:
        """The latest slot at or before *now* (None when off)."""
        now = now.astimezone(UTC)
        if self.interval is not None:
            seconds = int((now - _EPOCH).total_seconds() // self.interval) * self.interval
            return _EPOCH + timedelta(seconds=seconds)
        if self.cron is not None:
            # cronsim going backwards skips the start itself unless it has microseconds:
            # one more microsecond makes a slot exactly at *now* count.
            try:
                return next(CronSim(self.cron, now + _ONE_MICROSECOND, reverse=True))
            except StopIteration:  # pragma: no cover - cronsim always finds one
                return None
        return None

    def following(self, now: datetime) -> datetime | None:
        """The first slot after *now* (None when off)."""
        now = now.astimezone(UTC)
        if self.interval is not None:
            latest = self.latest(now)
            assert latest is not None
            return latest + timedelta(seconds=self.interval)
        if self.cron is not None:
            try:
                return next(CronSim(self.cron, now))
            except StopIteration:  # pragma: no cover
                return None
        return None

    def describe(self) -> str:
        if self.off:
            return "off"
        if self.interval is not None:
            return self.text
        assert self.cron is not None
        try:
            return f"{self.cron} ({CronSim(self.cron, _EPOCH).explain()} UTC)"
        except Exception:  # explain() is best effort; the expression itself is valid
            return self.cron


def parse_schedule(value: str) -> Schedule:
    """Parse ``off``, ``every 2s`` or a cron expression; raise ScheduleError naming the
    accepted forms otherwise."""
    text = " ".join(value.strip().split())
    lowered = text.lower()
    if lowered in ("off", "never", ""):
        return Schedule("off")
    match = _EVERY.match(lowered)
    if match is not None:
        amount = int(match["amount"])
        if amount == 0:
            raise ScheduleError(f"{value!r}: the interval must be at least 1")
        unit = match["unit"]
        name = _UNIT_NAMES[unit] + ("" if amount == 1 else "s")
        return Schedule(f"every {amount} {name}", interval=amount * _UNIT_SECONDS[unit])
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"{value!r} is not a schedule: write off, every N (s, m, h or d, e.g. every 15m),"
            " or a cron expression of 5 fields (minute hour day month weekday, e.g."
            " '0 2 * * *') or 6 with seconds first"
        )
    try:
        CronSim(text, _EPOCH)
    except CronSimError as exc:
        raise ScheduleError(f"{value!r} is not a valid cron expression: {exc}") from None
    return Schedule(text, cron=text)
