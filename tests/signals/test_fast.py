"""The fast lane (signals/fast.py) writes what the services write.

The same signals, in the same groups, go through two SQLite databases: one with the lane,
one without (every signal through `SignalService.execute`). Every row of every table must
be the same in both, but for the clock (the two runs are milliseconds apart) and what
hashes the clock (the audit chain's hashes); the lane's audit chain verifies, and its
positions rebuilt from its fills equal the stored ones (`tradebase reconcile`).

The signals walk a netting position through every move (open, add, partial close,
reversal both ways, a target position, a close to flat) with a fee and slippage, and mix
in signals the lane leaves to the services, in the same groups and on the same portfolio:
an order on a named account, a resting limit order, a signal without a price, a refusal
for cash, a no-op target, a malformed body, a hedging signal.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.orm import Session, sessionmaker

from tradebase.accounts.service import user as user_service
from tradebase.audit.service import audit as audit_service
from tradebase.config import Settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.time import utc_now
from tradebase.portfolios.reconcile import reconcile
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.signals import batch
from tradebase.signals import fast as fast_module

ACCOUNT = "fast acct"


def _groups() -> list[list[dict[str, Any] | bytes]]:
    def sig(n: int, **fields: Any) -> dict[str, Any]:
        return {"order_id": f"f{n}", **fields}

    return [
        [  # open, add, partial close, reversal to short
            sig(1, symbol="AAA", action="buy", quantity="3", price="100", comment="entry"),
            sig(2, symbol="AAA", action="BUY", qty="2", price="101.5"),
            sig(3, ticker="AAA", side="sell", contracts="1", price="102.25"),
            sig(4, symbol="AAA", action="sell", quantity="6", price="99"),
        ],
        [  # target positions: short 2 -> long 3 (a reversal), then a close to flat
            sig(5, symbol="AAA", position_size="3", price="98"),
            sig(6, symbol="AAA", trade_action="close", price="97.125"),
            sig(7, symbol="AAA", action="sell", quantity="0.5", price="96"),  # a new short
            sig(8, symbol="AAA", position_size="0", price="95"),
        ],
        [  # the services in the middle of the lane's group, on the same portfolio
            sig(9, symbol="BBB", action="buy", quantity="2", price="50"),
            sig(10, symbol="BBB", action="buy", quantity="1", price="51", account=ACCOUNT),
            sig(11, symbol="BBB", action="buy", quantity="4", price="52", comment="add"),
            sig(12, symbol="BBB", action="buy", quantity="1", order_type="limit", limit_price="40"),
            sig(13, symbol="BBB", action="sell", quantity="7", price="53"),
        ],
        [  # flat and open again on the same side: the closed row frees its open slot first
            sig(20, symbol="EEE", action="buy", quantity="1", price="10"),
            sig(21, symbol="EEE", action="sell", quantity="1", price="11"),
            sig(22, symbol="EEE", action="buy", quantity="2", price="12"),
            sig(23, symbol="EEE", action="sell", quantity="1", price="13"),
        ],
        [  # sums with trailing zeros (1.25 + 1.75 = 3.00): the next target sees 3, as read
            sig(24, symbol="FFF", action="buy", quantity="1.25", price="10"),
            sig(25, symbol="FFF", action="buy", quantity="1.75", price="10"),
            sig(26, symbol="FFF", position_size="5", price="10.5"),
            sig(27, symbol="FFF", position_size="-1.00", price="11"),
            sig(28, symbol="FFF", trade_action="close", price="10.75"),
        ],
        [  # refusals and forms the lane leaves alone, then the lane again
            sig(14, symbol="CCC", action="buy", quantity="1"),  # no price, no bars
            sig(15, symbol="CCC", action="buy", quantity="100000", price="100"),  # cash
            sig(16, symbol="CCC", position_size="0", price="10"),  # nothing to do
            b"not json at all",
            sig(17, symbol="DDD", action="buy", quantity="1", price="10", hedging_enabled=True),
            sig(18, symbol="CCC", action="buy", quantity="1.123456789", price="10.5"),
            sig(19, symbol="CCC", action="sell", quantity="1.123456789", price="11"),
        ],
    ]


def _install(tmp: Path, lane: bool) -> tuple[Settings, sessionmaker[Session], int]:
    settings = Settings(data_dir=tmp, signal_fast_lane=lane)
    for database in Database:
        migrate.upgrade(database, settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    with unit_of_work(factory=factory) as session:
        user, _ = user_service.create(
            session, username="fast", email="fast@example.com", password="fast lane pw"
        )
        who = Principal(user_id=user.id, username=user.username, role="trader")
        account = account_service.create(
            session,
            who,
            account_name=ACCOUNT,
            fee_rate=Decimal("0.001"),
            slippage_bps=Decimal("5"),
        )
        portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
        portfolio_service.deposit(session, who, portfolio.id, Decimal(100_000))
    return settings, factory, user.id


def _run(
    tmp: Path, lane: bool, start: datetime | None = None
) -> tuple[Engines, sessionmaker[Session], int]:
    """Migrate, make the trader, send the groups; *start*: when the signals arrive (the
    idempotency keys are windows of that time)."""
    settings, factory, user_id = _install(tmp, lane)
    writer = batch.Batcher.__new__(batch.Batcher)  # its methods, not its thread
    writer.factory, writer.limit, writer.sqlite = factory, 64, True
    writer.copies = batch.copies_for(factory.kw["bind"])
    start = start or utc_now()
    n = 0
    for group in _groups():
        items = []
        for body in group:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            n += 1
            items.append(
                batch.Incoming(
                    user_id,
                    raw,
                    "application/json",
                    "127.0.0.1",
                    "webhook",
                    None,
                    settings.signal_dedup_window_seconds,
                    start + timedelta(seconds=n),
                    settings,
                )
            )
        writer._group(items)  # stored and executed, one transaction or two, and landed
    return Engines(settings), factory, user_id


_CLOCK = ("_at", "timestamp", "last_login")
_HASHES = {"row_hash", "prev_hash", "last_hash"}


def _rows(engines: Engines) -> dict[str, list[dict[str, Any]]]:
    engine = engines.engine(Database.main)
    tables: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for name in inspect(engine).get_table_names():
            if name in ("alembic_version", "sqlite_sequence"):
                continue
            rows = []
            for row in conn.execute(text(f'SELECT * FROM "{name}" ORDER BY 1')).mappings():
                kept = {}
                for column, value in row.items():
                    if column.endswith(_CLOCK) or column in _HASHES or column == "password_hash":
                        continue
                    if column == "payload" and isinstance(value, str):  # events: drop times
                        value = {
                            k: v for k, v in json.loads(value).items() if not k.endswith("_at")
                        }
                    kept[column] = value
                rows.append(kept)
            tables[name] = rows
    return tables


def test_the_lane_writes_what_the_services_write(tmp_path: Path, monkeypatch: Any) -> None:
    taken: list[int] = []
    execute = fast_module.FastLane.execute

    def counted(self: fast_module.FastLane, stored: Any, row: Any) -> Any:
        done = execute(self, stored, row)
        if done is not None:
            taken.append(done.id)
        return done

    monkeypatch.setattr(fast_module.FastLane, "execute", counted)
    start = utc_now()
    fast, fast_factory, _ = _run(tmp_path / "fast", lane=True, start=start)
    assert len(taken) == 22  # the lane booked these; the rest went through the services
    slow, _, _ = _run(tmp_path / "slow", lane=False, start=start)
    assert len(taken) == 22
    try:
        mine, theirs = _rows(fast), _rows(slow)
        assert mine.keys() == theirs.keys()
        for table in mine:
            assert mine[table] == theirs[table], table
        refused = {r["sender_order_id"]: r["error"] for r in mine["signals"] if r["error"]}
        assert len(mine["signals"]) == 29 and len(refused) == 3, refused
        assert "no price for CCC" in refused["f14"] and "not enough cash" in refused["f15"]
        assert "not valid JSON" in refused[None] or "JSON" in refused[None]
        with unit_of_work(factory=fast_factory, write=False) as session:
            assert audit_service.verify(session).ok
            report = reconcile(session)
            assert report.ok, report.differences
            assert report.fills == len(mine["trades"])
    finally:
        fast.dispose()
        slow.dispose()


def test_positions_and_cash_worked_by_hand(tmp_path: Path) -> None:
    """The first group's AAA position and cash, worked out by hand: fee 0.1 %, slippage
    5 bps against the taker."""
    engines, _, _ = _run(tmp_path, lane=True)
    try:
        with engines.engine(Database.main).connect() as conn:
            trades = conn.execute(
                text(
                    "SELECT side, quantity, price, fee, pnl FROM trades WHERE symbol = 'AAA'"
                    " ORDER BY id"
                )
            ).all()
    finally:
        engines.dispose()
    # buy 3 @ 100 -> 100.05, fee 0.30015; buy 2 @ 101.5 -> 101.55075, fee 0.2031015
    # sell 1 @ 102.25 -> 102.198875, fee 0.102198875: closes 1 of 5 long
    #   cost of 5 = 300.15 + 203.1015 = 503.2515, 1/5 = 100.6503; open fees 0.5032515, 1/5
    #   = 0.1006503; realized = 102.198875 - 100.6503 - 0.102198875 - 0.1006503
    assert [tuple(str(v) for v in t[:4]) for t in trades[:3]] == [
        ("buy", "3", "100.05", "0.30015"),
        ("buy", "2", "101.55075", "0.2031015"),
        ("sell", "1", "102.198875", "0.102198875"),
    ]
    assert trades[0][4] is None and trades[1][4] is None
    assert Decimal(trades[2][4]) == Decimal("102.198875") - Decimal("100.6503") - Decimal(
        "0.102198875"
    ) - Decimal("0.1006503")


def test_a_copy_another_process_stored_leaves_the_group_to_store_one_by_one(
    tmp_path: Path,
) -> None:
    from tradebase.signals.service import prepared
    from tradebase.signals.service import signal as signal_service

    settings, factory, user_id = _install(tmp_path, lane=True)
    writer = batch.Batcher.__new__(batch.Batcher)
    writer.factory, writer.limit, writer.sqlite = factory, 64, True
    writer.copies = batch.copies_for(factory.kw["bind"])
    at = utc_now()
    items = [
        batch.Incoming(
            user_id, json.dumps(body).encode(), "application/json", "127.0.0.1", "webhook",
            None, settings.signal_dedup_window_seconds, at, settings,
        )
        for body in (
            {"symbol": "CPY", "action": "buy", "quantity": "1", "price": "5", "order_id": "c1"},
            {"symbol": "CPY", "action": "buy", "quantity": "2", "price": "5", "order_id": "c2"},
            {"symbol": "CPY", "action": "buy", "quantity": "3", "price": "5", "order_id": "c3"},
        )
    ]  # fmt: skip
    # c2 is in the inbox already, stored by "another process" (this one's registry does
    # not know it): the group's executemany breaks its unique key and rolls back.
    with unit_of_work(factory=factory) as session:
        other = signal_service.store(session, prepared(items[1]))
    writer._group(items)  # one transaction tried, rolled back; then stored one by one
    assert items[1].stored is None and items[1].copy_of is None  # told by its INSERT
    assert [i.done.status if i.done else None for i in (items[0], items[2])] == [
        "processed",
        "processed",
    ]
    with unit_of_work(factory=factory, write=False) as session:
        rows = session.execute(
            text("SELECT sender_order_id, status FROM signals ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("c2", "received"),
        ("c1", "processed"),
        ("c3", "processed"),
    ]
    assert other.id == 1


def test_the_next_group_keeps_the_lane_only_while_the_database_is_as_it_left_it(
    tmp_path: Path,
) -> None:
    """The lane carries what it read into the next group (no read of the user, account,
    cash, positions or audit head again) only while nothing else wrote: a pause made by
    another connection (SQLite's data_version), or a change on the lane's own connection
    between groups (its total_changes), makes the next group read again and see it."""
    from sqlalchemy import create_engine

    settings, factory, user_id = _install(tmp_path, lane=True)
    writer = batch.Batcher.__new__(batch.Batcher)
    writer.factory, writer.limit, writer.sqlite = factory, 64, True
    writer.copies = batch.copies_for(factory.kw["bind"])
    n = iter(range(1000))

    def send(**body: Any) -> batch.Incoming:
        item = batch.Incoming(
            user_id, json.dumps({"order_id": f"k{next(n)}", **body}).encode(),
            "application/json", "127.0.0.1", "webhook", None,
            settings.signal_dedup_window_seconds, utc_now(), settings,
        )  # fmt: skip
        writer._group([item])
        assert item.done is not None or item.stored is not None
        return item

    def pause(paused: bool, via: Any) -> None:
        via.execute(
            text("UPDATE users SET settings = :s WHERE id = :u"),
            {"s": json.dumps({"signals": {"paused": paused}}), "u": user_id},
        )

    buy = {"symbol": "KEP", "action": "buy", "quantity": "1", "price": "10"}
    assert send(**buy).done.status == "processed"  # type: ignore[union-attr]
    kept = writer._lane
    assert kept is not None
    assert send(**buy).done.status == "processed"  # type: ignore[union-attr]
    assert writer._lane is kept  # carried: nothing else wrote

    other = create_engine(f"sqlite:///{tmp_path / 'tradebase.db'}")  # another connection
    with other.begin() as conn:
        pause(True, conn)
    paused = send(**buy)
    assert paused.done is None or paused.done.status == "rejected"
    assert writer._lane is not kept  # read again, and saw the pause
    with unit_of_work(factory=factory, write=False) as session:
        status = session.execute(
            text("SELECT status FROM signals WHERE id = :i"),
            {"i": paused.stored.id},  # type: ignore[union-attr]
        ).scalar_one()
    assert status == "rejected"

    with other.begin() as conn:
        pause(False, conn)
    assert send(**buy).done.status == "processed"  # type: ignore[union-attr]
    kept = writer._lane
    # The lane's own connection, between groups (the pool hands the next unit of work
    # the connection the writer returned): data_version does not move for it.
    with unit_of_work(factory=factory) as session:
        pause(True, session)
    paused = send(**buy)
    assert writer._lane is not kept
    with unit_of_work(factory=factory, write=False) as session:
        status = session.execute(
            text("SELECT status FROM signals WHERE id = :i"),
            {"i": paused.stored.id},  # type: ignore[union-attr]
        ).scalar_one()
        held = session.execute(
            text("SELECT quantity FROM positions WHERE symbol = 'KEP' AND status = 'open'")
        ).scalar_one()
    assert status == "rejected"
    assert Decimal(held) == 3  # three buys of 1 booked, the two paused ones refused
    other.dispose()
