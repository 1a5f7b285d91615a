"""Timestamps are aware UTC on the way out of every engine; naive ones are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tests.factories import create_user
from tradebase.accounts.models import User
from tradebase.core.time import ensure_utc, utc_now
from tradebase.portfolios.models import TradingAccount


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


def test_server_side_defaults_are_utc_whatever_the_session_time_zone(
    session: Session, backend: str
) -> None:
    # A raw insert from a client whose session runs at +05:30 still stamps UTC.
    if backend == "postgresql":
        session.execute(text("SET LOCAL TIME ZONE '+05:30'"))
    elif backend == "mysql":
        session.execute(text("SET time_zone = '+05:30'"))
    session.execute(
        text(
            "INSERT INTO trading_accounts (user_id, account_name, broker)"
            " VALUES (:user_id, 'raw insert', 'paper')"
        ),
        {"user_id": create_user(session).id},
    )
    if backend == "mysql":
        session.execute(text("SET time_zone = '+00:00'"))
    created = session.scalar(
        select(TradingAccount.created_at).where(TradingAccount.account_name == "raw insert")
    )
    assert created is not None and created.tzinfo is UTC
    assert abs(created - utc_now()) < timedelta(minutes=1)


def test_database_stamps_compare_equal_to_themselves(session: Session) -> None:
    # A created_at written by the database's default, read back and used as a parameter,
    # finds its row (same precision on the way in and out).
    session.execute(
        text(
            "INSERT INTO trading_accounts (user_id, account_name, broker)"
            " VALUES (:user_id, 'stamped', 'paper')"
        ),
        {"user_id": create_user(session).id},
    )
    created = session.scalar(
        select(TradingAccount.created_at).where(TradingAccount.account_name == "stamped")
    )
    found = session.scalar(
        select(func.count()).where(
            TradingAccount.account_name == "stamped", TradingAccount.created_at == created
        )
    )
    assert found == 1


def test_naive_datetimes_are_refused(session: Session) -> None:
    user = create_user(session)
    user.last_login = datetime(2026, 1, 1, 12, 0)
    with pytest.raises(Exception, match="naive"):
        session.flush()
    session.rollback()
