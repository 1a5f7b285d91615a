"""A chain of 10,000 entries on every engine: each tampering with raw SQL is found and the
entry it touched is named. Each case runs in a transaction that is rolled back, so every
case starts from the intact chain of a database of its own (not the shared one)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, text

from tests.audit import ChainDB, build_chain, count_rows, hand_hash, new_chain_db, read_entries
from tests.conftest import ScratchFactory
from tradebase.audit.service import VerifyResult
from tradebase.audit.service import audit as audit_service

pytestmark = pytest.mark.slow

ENTRIES = 10_000


@pytest.fixture(scope="module")
def _chains() -> Iterator[dict[str, tuple[ChainDB, list[int]]]]:
    chains: dict[str, tuple[ChainDB, list[int]]] = {}
    yield chains
    for db, _ in chains.values():
        db.engines.dispose()


@pytest.fixture
def chain(
    backend: str,
    scratch_factory: ScratchFactory,
    _chains: dict[str, tuple[ChainDB, list[int]]],
) -> tuple[ChainDB, list[int]]:
    """A chain of 10,000 entries built through the service, and its ids in order."""
    if backend not in _chains:
        db = new_chain_db(scratch_factory, backend, "chain10k")
        build_chain(db, ENTRIES)
        with db.engine.connect() as conn:
            ids = [row[0] for row in conn.execute(text("SELECT id FROM audit_log ORDER BY id"))]
        _chains[backend] = (db, ids)
    return _chains[backend]


def _verify(chain: tuple[ChainDB, list[int]], tamper: str, **params: Any) -> VerifyResult:
    db, _ = chain
    with db.tampered() as (conn, session):
        for statement in tamper.split(";"):
            if statement.strip():
                conn.execute(text(statement), params)
        return audit_service.verify(session)


def _renumber_after(conn: Connection, entry_id: int) -> None:
    # Move every later entry one id up to free the id after *entry_id* (two steps, so no
    # engine trips over its primary key half way).
    conn.execute(text("UPDATE audit_log SET id = -id WHERE id > :k"), {"k": entry_id})
    conn.execute(text("UPDATE audit_log SET id = 1 - id WHERE id < 0"))


def _forge(conn: Connection, new_id: int, after_id: int) -> str:
    """Insert an entry at *new_id* that links to entry *after_id* and carries a correct
    hash of its own (worked out here); return that hash."""
    (after,) = read_entries(conn, f"id = {after_id}")
    forged = {
        "id": new_id,
        "timestamp": after["timestamp"],
        "user_id": None,
        "actor_user_id": None,
        "actor": "mallory",
        "action": "login.ok",
        "resource_type": None,
        "resource_id": None,
        "ip_address": None,
        "user_agent": None,
        "details": None,
        "message": "forged",
        "prev_hash": after["row_hash"],
    }
    digest = hand_hash(forged)
    conn.execute(
        text(
            "INSERT INTO audit_log (id, timestamp, actor, action, message, prev_hash, row_hash)"
            " SELECT :new_id, timestamp, 'mallory', 'login.ok', 'forged', row_hash, :digest"
            " FROM audit_log WHERE id = :after_id"
        ),
        {"new_id": new_id, "after_id": after_id, "digest": digest},
    )
    return digest


def _copy(conn: Connection, new_id: int, source_id: int) -> None:
    conn.execute(
        text(
            "INSERT INTO audit_log (id, timestamp, user_id, actor_user_id, actor, action,"
            " resource_type, resource_id, ip_address, user_agent, details, message, prev_hash,"
            " row_hash)"
            " SELECT :new_id, timestamp, user_id, actor_user_id, actor, action, resource_type,"
            " resource_id,"
            " ip_address, user_agent, details, message, prev_hash, row_hash"
            " FROM audit_log WHERE id = :source_id"
        ),
        {"new_id": new_id, "source_id": source_id},
    )


def _bad(result: VerifyResult, entry_id: int | None, problem: str) -> None:
    assert (result.ok, result.first_bad_id, result.problem) == (False, entry_id, problem), result
    if entry_id is not None:
        assert f"entry {entry_id} " in result.message


def test_the_untampered_chain_verifies(chain: tuple[ChainDB, list[int]]) -> None:
    db, ids = chain
    with db.engine.connect() as conn:
        rows = count_rows(conn)
        entries = read_entries(conn)
    result = _verify(chain, "")
    assert rows == ENTRIES == len(ids)
    assert (result.ok, result.checked, result.first_bad_id, result.problem) == (
        True, ENTRIES, None, None
    )  # fmt: skip
    assert result.message == f"chain of {ENTRIES} entries verifies"
    assert (result.last_id, result.last_hash) == (entries[-1]["id"], entries[-1]["row_hash"])
    # Independently of the service: every hash and every link, worked out here.
    assert entries[0]["prev_hash"] == "0" * 64
    for previous, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == previous["row_hash"]
    assert all(hand_hash(entry) == entry["row_hash"] for entry in entries)


@pytest.mark.parametrize(
    ("position", "change"),
    [
        (4_321, "action = 'login.ok'"),
        (4_322, "actor = 'mallory'"),
        (5_001, "user_id = NULL"),
        (6_001, "resource_id = '1'"),
        (7_777, "ip_address = '127.0.0.1'"),
        (1_111, "message = 'nothing happened'"),
        (2_223, "prev_hash = row_hash"),
        (3_334, "row_hash = prev_hash"),
        (0, "actor = 'root'"),
        (-1, "action = 'login.failed'"),
    ],
)
def test_a_changed_field_names_its_entry(
    chain: tuple[ChainDB, list[int]], position: int, change: str
) -> None:
    _, ids = chain
    target = ids[position]
    result = _verify(chain, f"UPDATE audit_log SET {change} WHERE id = :id", id=target)
    _bad(result, target, "altered")


def test_changed_details_and_timestamp_name_their_entry(
    chain: tuple[ChainDB, list[int]],
) -> None:
    db, ids = chain
    target = ids[8_001]  # odd: it has details
    with db.tampered() as (conn, session):
        (entry,) = read_entries(conn, f"id = {target}")
        details = {**entry["details"], "price": "999.99"}
        value = "CAST(:d AS JSONB)" if db.backend == "postgresql" else ":d"
        conn.execute(
            text(f"UPDATE audit_log SET details = {value} WHERE id = :id"),
            {"d": json.dumps(details), "id": target},
        )
        assert audit_service.verify(session).first_bad_id == target
    later = ids[9_000]
    with db.tampered() as (conn, session):
        conn.execute(
            text("UPDATE audit_log SET timestamp = (SELECT t FROM (SELECT timestamp AS t"
                 " FROM audit_log WHERE id = :other) AS x) WHERE id = :id"),
            {"other": ids[1], "id": later},
        )  # fmt: skip
        _bad(audit_service.verify(session), later, "altered")


def test_a_re_hashed_entry_is_named(chain: tuple[ChainDB, list[int]]) -> None:
    # Changed and given a correct new hash: the next entry still links to the old one.
    db, ids = chain
    target = ids[4_000]
    with db.tampered() as (conn, session):
        (entry,) = read_entries(conn, f"id = {target}")
        entry["action"] = "order.cancelled" if entry["action"] != "order.cancelled" else "x"
        conn.execute(
            text("UPDATE audit_log SET action = :a, row_hash = :h WHERE id = :id"),
            {"a": entry["action"], "h": hand_hash(entry), "id": target},
        )
        _bad(audit_service.verify(session), target, "altered")


@pytest.mark.parametrize("position", [5_000, 1, ENTRIES - 2])
def test_a_deleted_entry_is_named_by_the_next_one(
    chain: tuple[ChainDB, list[int]], position: int
) -> None:
    _, ids = chain
    result = _verify(chain, "DELETE FROM audit_log WHERE id = :id", id=ids[position])
    _bad(result, ids[position + 1], "deleted")


def test_a_deleted_first_entry_is_named_by_the_next_one(
    chain: tuple[ChainDB, list[int]],
) -> None:
    _, ids = chain
    result = _verify(chain, "DELETE FROM audit_log WHERE id = :id", id=ids[0])
    _bad(result, ids[1], "deleted")


def test_a_deleted_last_entry_is_named_by_the_head(chain: tuple[ChainDB, list[int]]) -> None:
    _, ids = chain
    result = _verify(chain, "DELETE FROM audit_log WHERE id = :id", id=ids[-1])
    _bad(result, ids[-1], "deleted")
    assert result.checked == ENTRIES - 1


def test_a_deleted_tail_is_named_by_the_head(chain: tuple[ChainDB, list[int]]) -> None:
    _, ids = chain
    result = _verify(chain, "DELETE FROM audit_log WHERE id > :id", id=ids[-50])
    _bad(result, ids[-1], "deleted")


@pytest.mark.parametrize("position", [5_000, 0, ENTRIES - 2])
def test_a_forged_entry_inserted_in_the_middle_is_named(
    chain: tuple[ChainDB, list[int]], position: int
) -> None:
    db, ids = chain
    after = ids[position]
    with db.tampered() as (conn, session):
        _renumber_after(conn, after)
        _forge(conn, after + 1, after)
        assert count_rows(conn) == ENTRIES + 1
        _bad(audit_service.verify(session), after + 1, "inserted")


def test_a_copied_entry_inserted_in_the_middle_is_named(
    chain: tuple[ChainDB, list[int]],
) -> None:
    db, ids = chain
    after = ids[6_000]
    with db.tampered() as (conn, session):
        _renumber_after(conn, after)
        _copy(conn, after + 1, ids[100])
        _bad(audit_service.verify(session), after + 1, "inserted")
    with db.tampered() as (conn, session):
        _renumber_after(conn, after)
        _copy(conn, after + 1, after)  # a copy of the entry just before it
        _bad(audit_service.verify(session), after + 1, "inserted")


def test_a_forged_entry_inserted_after_the_head_is_named(
    chain: tuple[ChainDB, list[int]],
) -> None:
    db, ids = chain
    with db.tampered() as (conn, session):
        _forge(conn, ids[-1] + 1, ids[-1])  # links and hashes correctly
        _bad(audit_service.verify(session), ids[-1] + 1, "inserted")
    with db.tampered() as (conn, session):
        _forge(conn, ids[-1] + 1000, ids[-1])
        _forge(conn, ids[-1] + 1001, ids[-1] + 1000)
        _bad(audit_service.verify(session), ids[-1] + 1000, "inserted")


def test_a_copied_entry_inserted_after_the_head_is_named(
    chain: tuple[ChainDB, list[int]],
) -> None:
    db, ids = chain
    for source in (ids[-1], ids[42]):
        with db.tampered() as (conn, session):
            _copy(conn, ids[-1] + 1, source)
            _bad(audit_service.verify(session), ids[-1] + 1, "inserted")


def test_a_changed_head_is_reported(chain: tuple[ChainDB, list[int]]) -> None:
    _, ids = chain
    result = _verify(chain, "UPDATE audit_chain_head SET entries = entries + 1")
    _bad(result, None, "head mismatch")
    result = _verify(chain, "UPDATE audit_chain_head SET last_hash = :h", h="f" * 64)
    _bad(result, ids[-1], "head mismatch")
    result = _verify(chain, "DELETE FROM audit_chain_head")
    _bad(result, None, "head mismatch")


def test_a_rewritten_tail_verifies_but_fails_its_anchor(chain: tuple[ChainDB, list[int]]) -> None:
    # The whole tail re-hashed and the head moved along: consistent in itself, so only an
    # anchor kept outside the database (a verified result's last entry) exposes it.
    db, ids = chain
    with db.engine.connect() as conn:
        (last,) = read_entries(conn, f"id = {ids[-1]}")
    anchor = (last["id"], last["row_hash"])
    with db.tampered() as (conn, session):
        tail = read_entries(conn, f"id >= {ids[-50]}")
        tail[0]["actor"] = "mallory"
        prev = tail[0]["prev_hash"]
        for entry in tail:
            entry["prev_hash"] = prev
            entry["row_hash"] = prev = hand_hash(entry)
            conn.execute(
                text(
                    "UPDATE audit_log SET actor = :a, prev_hash = :p, row_hash = :h WHERE id = :id"
                ),
                {"a": entry["actor"], "p": entry["prev_hash"], "h": prev, "id": entry["id"]},
            )
        conn.execute(text("UPDATE audit_chain_head SET last_hash = :h"), {"h": prev})
        assert audit_service.verify(session).ok  # consistent in itself
        earlier = read_entries(conn, f"id = {ids[100]}")[0]
        assert audit_service.verify(session, anchor=(ids[100], earlier["row_hash"])).ok
        _bad(audit_service.verify(session, anchor=anchor), ids[-1], "anchor mismatch")
    with db.tampered() as (conn, session):
        conn.execute(text("DELETE FROM audit_log WHERE id >= :id"), {"id": ids[-3]})
        conn.execute(
            text("UPDATE audit_chain_head SET last_id = :i, last_hash = :h, entries = :n"),
            {"i": ids[-4], "h": read_entries(conn, f"id = {ids[-4]}")[0]["row_hash"],
             "n": ENTRIES - 3},
        )  # fmt: skip
        assert audit_service.verify(session).ok  # a truncated tail with a matching head
        _bad(audit_service.verify(session, anchor=anchor), ids[-1], "anchor mismatch")
