"""Timestamps are aware UTC on the way out of every engine; naive ones are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tests.factories import create_user
from tradebase.accounts.models import User
from tradebase.core.time import ensure_utc, utc_now


def test_utc_now_is_aware() -> None:
    assert utc_now().tzinfo is UTC


def test_ensure_utc_converts_offsets_and_refuses_naive() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    assert ensure_utc(datetime(2026, 1, 1, 15, 30, tzinfo=ist)) == datetime(
        2026, 1, 1, 10, 0, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="naive"):
        ensure_utc(datetime(2026, 1, 1))


def test_timestamps_come_back_aware_utc(session: Session) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    moment = datetime(2026, 3, 10, 9, 15, 0, 123456, tzinfo=ist)
    user = create_user(session)
    user.last_login = moment
    session.flush()
    session.expunge_all()
    stored = session.get(User, user.id)
    assert stored is not None
    assert stored.last_login == moment
    assert stored.last_login.tzinfo is UTC
    assert stored.last_login.hour == 3 and stored.last_login.minute == 45
    assert stored.last_login.microsecond == 123456
    assert stored.created_at.tzinfo is UTC


def test_server_side_defaults_are_utc(session: Session) -> None:
    # A row inserted by raw SQL gets created_at from the database's own clock, in UTC.
    session.execute(
        text(
            "INSERT INTO users (username, email, password_hash, role, is_active, email_verified,"
            " two_factor_enabled) VALUES ('rawsql', 'raw@example.com', 'x', 'viewer', 1, 0, 0)"
        )
        if session.get_bind().dialect.name != "postgresql"
        else text(
            "INSERT INTO users (username, email, password_hash, role) VALUES"
            " ('rawsql', 'raw@example.com', 'x', 'viewer')"
        )
    )
    created = session.scalar(select(User.created_at).where(User.username == "rawsql"))
    assert created is not None and created.tzinfo is UTC
    assert abs(created - utc_now()) < timedelta(minutes=5)


def test_naive_datetimes_are_refused(session: Session) -> None:
    user = create_user(session)
    user.last_login = datetime(2026, 1, 1, 12, 0)
    with pytest.raises(Exception, match="naive"):
        session.flush()
    session.rollback()
