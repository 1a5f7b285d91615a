"""Per-minute request limits shared by every server process.

Requests are counted per calendar minute in the main database (an upsert per request) or,
when ``TRADEBASE_REDIS_URL`` is set, in Redis (``INCR`` with an expiry). The limit applies
to a sliding minute: the current minute's count plus the previous minute's, weighted by how
much of it the sliding minute still covers (Cloudflare's estimate), so a burst across the
turn of a minute cannot get twice the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tradebase.accounts.models import RateLimitCounter
from tradebase.core.time import utc_now


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    count: int
    limit: int
    retry_after: int  # seconds until the window ends


def _window(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def _verdict(count: int, previous: int, limit: int, now: datetime, window: datetime) -> Verdict:
    elapsed = (now - window).total_seconds() / 60
    estimate = count + previous * (1 - elapsed)
    retry_after = max(1, int((window + timedelta(minutes=1) - now).total_seconds() + 0.999))
    return Verdict(estimate <= limit, count, limit, retry_after)


def hit_database(session: Session, bucket: str, limit: int, now: datetime | None = None) -> Verdict:
    """Count one request in *bucket* in the current minute, atomically, in the database."""
    now = now or utc_now()
    window = _window(now)
    dialect = session.get_bind().dialect.name
    values = {"bucket": bucket, "window_start": window, "count": 1}
    if dialect in ("mysql", "mariadb"):
        upsert = mysql_insert(RateLimitCounter).values(**values)
        session.execute(upsert.on_duplicate_key_update(count=RateLimitCounter.count + 1))
        count = session.scalar(
            select(RateLimitCounter.count).where(
                RateLimitCounter.bucket == bucket, RateLimitCounter.window_start == window
            )
        )
    else:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        counted = (
            insert(RateLimitCounter)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["bucket", "window_start"],
                set_={"count": RateLimitCounter.count + 1},
            )
            .returning(RateLimitCounter.count)
        )
        count = session.scalar(counted)
    assert count is not None
    previous_window = window - timedelta(minutes=1)
    if count == 1:  # first request of this window: forget the windows before the previous
        session.execute(
            delete(RateLimitCounter).where(
                RateLimitCounter.bucket == bucket, RateLimitCounter.window_start < previous_window
            )
        )
    previous = session.scalar(
        select(RateLimitCounter.count).where(
            RateLimitCounter.bucket == bucket, RateLimitCounter.window_start == previous_window
        )
    )
    return _verdict(count, previous or 0, limit, now, window)


@cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def hit_redis(url: str, bucket: str, limit: int, now: datetime | None = None) -> Verdict:
    """Count one request in *bucket* in the current minute, in Redis."""
    now = now or utc_now()
    window = _window(now)
    key = f"tradebase:rl:{bucket}:{int(window.timestamp())}"
    previous_key = f"tradebase:rl:{bucket}:{int(window.timestamp()) - 60}"
    pipe = _redis(url).pipeline()
    pipe.incr(key)
    pipe.expire(key, 150)
    pipe.get(previous_key)
    count, _, previous = pipe.execute()
    return _verdict(int(count), int(previous or 0), limit, now, window)
