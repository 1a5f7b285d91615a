"""Group commit (signals/batch.py): signals arriving together are stored in one
transaction and executed in the next, each in its own savepoint; one that breaks is kept
as failed without touching the others; a group rolled back as a whole is executed again
one by one. MariaDB does not group (each request's own transactions), and passes too."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import LiveServer
from tests.signals.helpers import make_trader, positions
from tradebase.core.db import Database
from tradebase.signals import batch


def _send_all(live: LiveServer, key: str, bodies: list[dict[str, Any]]) -> list[Any]:
    def send(body: dict[str, Any]) -> Any:
        with live.client() as http:
            return http.post(f"/webhook/{key}", json=body)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_one_broken_signal_of_a_group_fails_alone(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tradebase.portfolios import pnl

    apply_netting = pnl.apply_netting

    def sometimes_broken(lot: Any, fill: pnl.Fill) -> Any:
        # The P&L step, which the services and the fast lane (signals/fast.py) both take.
        if fill.quantity == 7:
            raise RuntimeError("a fault injected into one signal")
        return apply_netting(lot, fill)

    trader = make_trader(live)
    monkeypatch.setattr(pnl, "apply_netting", sometimes_broken)
    bodies = [
        {"ticker": "GRP", "side": "buy", "qty": "7" if n == 5 else "1", "price": "10",
         "order_id": f"g{n}"}
        for n in range(12)
    ]  # fmt: skip
    factory = live.app.state.engines.session_factory(Database.main)  # the server's own
    writer = batch.batcher_for(factory, live.settings)
    if writer is not None:
        writer.largest_group = 0
    answers = _send_all(live, trader.webhook_key, bodies)
    if writer is not None:  # they did arrive together (MariaDB does not group)
        assert writer.largest_group > 1
    codes = [a.status_code for a in answers]
    assert codes == [500 if n == 5 else 200 for n in range(12)], [a.text for a in answers]
    assert answers[5].json()["error"]["code"] == "signal_failed"
    assert positions(live, trader) == [("GRP", "long", "11")]
    with live.engines.engine(Database.main).connect() as conn:
        rows = conn.execute(
            text("SELECT status, COUNT(*) FROM signals WHERE user_id = :u GROUP BY status"),
            {"u": trader.user_id},
        ).all()
        orders = conn.execute(
            text(
                "SELECT COUNT(*) FROM orders o JOIN signals s ON s.id = o.signal_id"
                " WHERE s.user_id = :u"
            ),
            {"u": trader.user_id},
        ).scalar_one()
    assert dict(rows) == {"processed": 11, "failed": 1}
    assert orders == 11


def test_a_group_rolled_back_as_a_whole_is_executed_one_by_one(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rolled_back(self: batch.Batcher, session: Any, pending: Any, carried: Any) -> None:
        raise RuntimeError("the group's transaction was rolled back")

    # Stored and executed in one transaction, rolled back; stored alone and executed in
    # the next, rolled back; then one by one.
    monkeypatch.setattr(batch.Batcher, "_execute_in", rolled_back)
    trader = make_trader(live)
    bodies = [
        {"ticker": "ONE", "side": "buy", "qty": "2", "price": "10", "order_id": f"o{n}"}
        for n in range(6)
    ]
    answers = _send_all(live, trader.webhook_key, bodies)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert {a.json()["signal"]["status"] for a in answers} == {"processed"}
    assert positions(live, trader) == [("ONE", "long", "12")]


def test_a_group_holds_copies_and_malformed_bodies(live: LiveServer) -> None:
    trader = make_trader(live)
    same = {"ticker": "CPY", "side": "buy", "qty": "1", "price": "10", "order_id": "same"}
    bodies = [same] * 6 + [{"ticker": "CPY", "side": "buy", "qty": "lots", "order_id": "bad"}]
    answers = _send_all(live, trader.webhook_key, bodies)
    ok = answers[:6]
    assert {a.status_code for a in ok} == {200}
    assert len({a.json()["signal"]["id"] for a in ok}) == 1
    assert sorted(a.json()["duplicate"] for a in ok) == [False] + [True] * 5
    assert answers[6].status_code == 422
    assert "quantity" in answers[6].json()["error"]["message"]
    assert positions(live, trader) == [("CPY", "long", "1")]


def test_a_copy_in_a_group_leaves_the_others_stored(live: LiveServer) -> None:
    """PostgreSQL: a copy's unique-key violation must not spoil the group's transaction
    (its COMMIT would silently roll back every signal of the group)."""
    from datetime import UTC, datetime

    trader = make_trader(live)
    factory = live.app.state.engines.session_factory(Database.main)
    writer = batch.batcher_for(factory, live.settings)
    if writer is None:  # MariaDB: no groups
        return

    def incoming(order_id: str) -> batch.Incoming:
        raw = (
            f'{{"ticker": "GRPC", "side": "buy", "qty": "1", "price": "5", '
            f'"order_id": "{order_id}"}}'
        ).encode()
        return batch.Incoming(
            trader.user_id, raw, "application/json", None, "api", None, 60,
            datetime.now(UTC), live.settings,
        )  # fmt: skip

    group = [incoming("c1"), incoming("c1"), incoming("c2"), incoming("c1"), incoming("c3")]
    writer._store(writer._join(group))
    assert [i.stored is None for i in group] == [False, True, False, True, False]
    assert not any(i.alone for i in group)
    with live.engines.engine(Database.main).connect() as conn:
        stored = (
            conn.execute(
                text("SELECT sender_order_id FROM signals WHERE user_id = :u ORDER BY id"),
                {"u": trader.user_id},
            )
            .scalars()
            .all()
        )
    assert stored == ["c1", "c2", "c3"]
