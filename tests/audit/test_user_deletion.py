"""Deleting a user sets audit_log.user_id to NULL (seed rule) and the chain still verifies;
raw SQL that detaches or reassigns a live user's entry is caught."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.factories import create_user
from tradebase.audit.service import audit as audit_service


@pytest.fixture
def chain(session: Session) -> tuple[int, int, list[int]]:
    alice, bob = create_user(session), create_user(session)
    ids = []
    for i in range(6):
        who = (alice, bob)[i % 2]
        entry = audit_service.record(session, action="login.ok", user_id=who.id, actor=who.username)
        ids.append(entry.id)
    session.flush()
    assert audit_service.verify(session).ok
    return alice.id, bob.id, ids


def test_deleting_a_user_keeps_the_chain_verifiable(
    session: Session, chain: tuple[int, int, list[int]]
) -> None:
    alice, _bob, _ids = chain
    session.execute(text("DELETE FROM users WHERE id = :id"), {"id": alice})
    nulls = session.execute(
        text("SELECT COUNT(*) FROM audit_log WHERE user_id IS NULL AND actor_user_id = :id"),
        {"id": alice},
    ).scalar()
    assert nulls == 3
    result = audit_service.verify(session)
    assert result.ok, result.message


def test_detaching_a_live_users_entry_is_found(
    session: Session, chain: tuple[int, int, list[int]]
) -> None:
    _alice, _bob, ids = chain
    session.execute(text("UPDATE audit_log SET user_id = NULL WHERE id = :id"), {"id": ids[3]})
    result = audit_service.verify(session)
    assert not result.ok and result.first_bad_id == ids[3] and result.problem == "altered"


def test_reassigning_an_entry_to_another_user_is_found(
    session: Session, chain: tuple[int, int, list[int]]
) -> None:
    alice, _bob, ids = chain
    session.execute(
        text("UPDATE audit_log SET user_id = :u WHERE id = :id"), {"u": alice, "id": ids[1]}
    )
    result = audit_service.verify(session)
    assert not result.ok and result.first_bad_id == ids[1]
