"""The fast lane of a group of signals on SQLite: the usual signal, booked on the driver.

Most signals are the same thing: a market order (a direction and quantity, or a target
``position_size``) on the user's default paper account, in a netting portfolio. Booking
one through the services costs about 2 ms of Python (ORM objects, the state table, bind
processors for every value, a savepoint through the session) for about 0.4 ms of database
work (bench/bench_signals.py, docs/benchmarks.md). This lane books such a signal with the
same statements (the services' prepared statements, so the same SQL and column defaults),
with values formatted once on the way in and the group's state (the user, the account,
the portfolio's cash, the open positions, the audit chain's head) read once per group.

What it writes is what the services write, row for row: the order with its three events,
the trade, the position (netting: opened, grown, reduced, closed or reversed through zero
with the fee split pro rata, `portfolios.pnl`), the cash and its ledger row, the outbox
events (``order.filled``, ``position.closed``), an audit entry on the hash chain, and the
signal's outcome (tests/signals/test_fast.py runs the same signals both ways and compares
every row).

It decides before it writes: a signal it does not take (any other form, a check that
fails, a refusal) leaves no trace and goes the general way (`SignalService.execute`),
which also records every refusal. What needs no id back, and the orders and trades with
the ids SQLite would give them, wait for the end of the group (`flush`: one executemany a
statement; each position's and portfolio's last values; the chain head once): every
SQLite call costs the writer thread a wait for the GIL that the event loop holds. An error
propagates and rolls the group's transaction back, and signals/batch.py executes the
group again one signal at a time through the services. When a general signal runs in the
middle of a group, the lane flushes first and forgets what it read afterwards (`forget`),
and the session forgets the portfolios and positions it read (they may have moved).
The market's hours are read once per group and exchange.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tradebase.accounts.models import User
from tradebase.audit.models import AuditLog
from tradebase.audit.service import (
    _INSERT_ROW,
    GENESIS_HASH,
    HASHED_FIELDS,
    HEAD_ID,
    AuditChainConflict,
    _bounded,
    _jsonable,
    entry_hash,
)
from tradebase.calendars.service import is_open
from tradebase.config import Settings
from tradebase.core.models import attach
from tradebase.core.money import canonical, check_fits, quantize
from tradebase.core.prepared import Prepared, connection_of
from tradebase.core.time import utc_now
from tradebase.events.bus import EMITTED
from tradebase.events.models import Event
from tradebase.events.service import _INSERT as _INSERT_EVENT_ROW
from tradebase.events.service import EventType, plain
from tradebase.orders.models import (
    Order,
    OrderEvent,
    OrderEventType,
    OrderStatus,
    OrderType,
    Trade,
)
from tradebase.orders.service import _INSERT_EVENT, check_storable
from tradebase.portfolios import pnl
from tradebase.portfolios.models import (
    CashMovementKind,
    Portfolio,
    Position,
    PositionMode,
    PositionStatus,
    Product,
    TradingAccount,
)
from tradebase.portfolios.service import (
    _INSERT_MOVEMENT,
    _INSERT_POSITION,
    _OPEN_POSITIONS,
    _UPDATE_POSITION,
)
from tradebase.signals import payload
from tradebase.signals.models import Signal, SignalStatus, TradeAction
from tradebase.signals.service import (
    _KEPT,
    DEFAULT_EXCHANGE,
    Limits,
    SignalRow,
    client_order_id,
    limits_of,
)

ZERO = Decimal(0)
_BPS = Decimal(10_000)


class _Declined(Exception):
    """The lane does not take this signal (raised before anything is written)."""


def _dec(value: Decimal | None) -> str | None:
    """A decimal as the ExactDecimal column stores it on SQLite (canonical text)."""
    return None if value is None else format(check_fits(value), "f")


def _time(value: datetime) -> str:
    """An aware UTC datetime as UTCDateTime stores it on SQLite."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


class _Statement:
    """A service's prepared statement run with values already in the driver's form: the
    same SQL and constant defaults, none of the per-value bind processing."""

    def __init__(self, prepared: Prepared, names: tuple[str, ...], dialect: Any) -> None:
        compiled = prepared._compile(dialect, dict.fromkeys(names))
        self.sql = compiled.sql
        self.binds = tuple((name, literal) for name, literal, _ in compiled.binds)

    def args(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] if name is not None else literal for name, literal in self.binds)


@dataclass
class _Lot:
    """An open position as the lane holds it during the group."""

    id: int
    lot: pnl.Lot
    realized: Decimal


def _held(position_id: int, lot: pnl.Lot, realized: Decimal) -> _Lot:
    """*lot* as a read of its row would give it back (canonical: 1.25 + 1.75 is 3, not
    3.00), so that the group's next signal computes what the services would."""
    return _Lot(
        position_id,
        pnl.Lot(lot.direction, canonical(lot.quantity), canonical(lot.cost),
                canonical(lot.open_fees)),
        canonical(realized),
    )  # fmt: skip


class FastLane:
    """Books the usual signals of one group transaction (see the module's docstring)."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        connection = connection_of(session)
        self.dialect = connection.dialect
        self.driver: sqlite3.Connection = connection.connection.dbapi_connection  # type: ignore[assignment]
        self.cursor = self.driver.cursor()
        self.version = self._data_version()
        self.changes = -1  # the connection's total changes when the group ended (`carry`)
        self.venues: dict[int, tuple[_User, Limits, TradingAccount, Portfolio]] = {}
        self.positions: dict[tuple[int, str, str, str], _Lot | None] = {}
        self.markets: dict[str, bool] = {}
        # [last_id as read, last id given, last hash, entries added, last entry's time]
        self.head: list[Any] | None = None
        # Written by `flush`: rows by statement, the cash and position rows' last values,
        # the signals' outcomes, and the objects to tell.
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.ids: dict[str, int] = {}  # the last id given, by table
        self.cash: dict[int, tuple[str, str]] = {}
        self.position_rows: dict[int, dict[str, Any]] = {}
        self.outcomes: list[tuple[Any, ...]] = []
        self.done: list[tuple[Signal, dict[str, Any]]] = []
        self.json: dict[str, Callable[[Any], Any]] = {
            name: _processor(table, column, self.dialect)
            for name, table, column in (
                ("outcome", Signal.__table__, "outcome"),
                ("algo_params", Order.__table__, "algo_params"),
                ("metadata", Trade.__table__, "metadata"),
                ("details", OrderEvent.__table__, "details"),
                ("payload", Event.__table__, "payload"),
                ("audit", AuditLog.__table__, "details"),
            )
        }

    # --- the group's state ----------------------------------------------------------

    def _data_version(self) -> int:
        # Moves when another connection commits to the database (SQLite's data_version).
        return int(self.driver.execute("PRAGMA data_version").fetchone()[0])

    def end(self) -> None:
        """The group is flushed (its transaction about to commit): note the connection's
        changes, for `carry`."""
        self.changes = self.driver.total_changes

    def carry(self, session: Session) -> bool:
        """Take *session*'s transaction, the next group's, keeping what this lane read and
        kept up to date as it wrote (the user and their limits, accounts, cash, positions,
        the audit head, the largest ids) when it is still what the database holds: on the
        same connection, which changed nothing since this lane's group ended, and no other
        connection committed since it began (this one held the write lock in between).
        Reading that state again was a third of a group's fixed cost. False: the caller
        makes a new lane. Call it first in the transaction, once the last group committed."""
        driver: Any = connection_of(session).connection.dbapi_connection
        if self.changes < 0 or driver is not self.driver:
            return False
        if self.driver.total_changes != self.changes or self._data_version() != self.version:
            return False
        self.session = session
        self.markets.clear()  # the hours move on
        self.changes = -1
        return True

    def forget(self) -> None:
        """Drop what the lane read: a general signal may have moved any of it."""
        self.venues.clear()
        self.positions.clear()
        self.ids.clear()
        self.head = None

    def flush(self) -> None:
        """Write what the group's signals left for the end (their events, ledger rows,
        audit entries, outcomes; the last state of each position and cash balance; the
        audit chain's head), and tell the signals' objects their outcome."""
        cursor = self.cursor
        self._write_positions()
        for sql, rows in self.rows.items():
            cursor.executemany(sql, rows)
        self.rows.clear()
        if self.cash:
            cursor.executemany(_SET_CASH_SQL, [(c, at, pid) for pid, (c, at) in self.cash.items()])
            self.cash.clear()
        if self.outcomes:
            cursor.executemany(_FINISH_SQL, self.outcomes)
            if cursor.rowcount != len(self.outcomes):  # another process claimed one: redo all
                raise SignalTaken("a signal of the group was executed by another process")
            self.outcomes.clear()
            self.session.info[EMITTED] = True
        head = self.head
        if head is not None and head[3]:
            # `_MOVE_HEAD`'s compare-and-set, for all the group's entries at once.
            cursor.execute(
                "UPDATE audit_chain_head SET last_id = ?, last_hash = ?, entries = entries + ?,"
                " updated_at = ? WHERE id = ? AND last_id IS ?",
                (head[1], head[2], head[3], head[4], HEAD_ID, head[0]),
            )
            if cursor.rowcount != 1:
                raise AuditChainConflict("the audit chain head moved under the signal writer")
            self.head = [head[1], head[1], head[2], 0, head[4]]
        for stored, changes in self.done:
            for name, value in changes.items():
                set_committed_value(stored, name, value)
        self.done.clear()

    def _write_positions(self) -> None:
        for position_id, values in self.position_rows.items():
            self._run(_UPDATE_POSITION, {"pos_id": position_id, **values})
        self.position_rows.clear()

    def _venue(self, user_id: int) -> tuple[_User, Limits, TradingAccount, Portfolio]:
        """The user, their limits, default account and its first portfolio: one read."""
        found = self.venues.get(user_id)
        if found is None:
            row = _VENUE.rows(self.session, {"uid": user_id})[0]._asdict()
            if row["a__id"] is None or row["p__id"] is None:
                raise _Declined  # no account or portfolio: the general way says so
            user = _User(row["id"], row["username"], row["role"], row["is_active"], row["settings"])
            account = _loaded(TradingAccount, {k[3:]: v for k, v in row.items() if k[:3] == "a__"})
            portfolio = _loaded(Portfolio, {k[3:]: v for k, v in row.items() if k[:3] == "p__"})
            limits = limits_of(user, self.settings)  # type: ignore[arg-type]
            found = self.venues[user_id] = (user, limits, account, portfolio)
        return found

    def _open(self, exchange: str) -> bool:
        found = self.markets.get(exchange)
        if found is None:
            found = self.markets[exchange] = is_open(self.session, exchange, utc_now()).open
        return found

    def _position(self, key: tuple[int, str, str, str]) -> _Lot | None:
        if key in self.positions:
            return self.positions[key]
        rows = _OPEN_POSITIONS.rows(
            self.session, {"pid": key[0], "symbol": key[1], "exchange": key[2], "product": key[3]}
        )
        if len(rows) > 1:
            raise _Declined  # not a netting book
        found = None
        if rows:
            row = rows[0]
            found = _Lot(
                row.id, pnl.Lot(row.direction, row.quantity, row.cost_basis, row.fees_paid),
                row.realized_pnl,
            )  # fmt: skip
        self.positions[key] = found
        return found

    def _head(self) -> list[Any]:
        if self.head is None:
            self._tops()
        assert self.head is not None
        return self.head

    def _tops(self) -> None:
        """The chain head and the largest ids of orders and trades, in one read (the
        general way claims the head with an UPDATE to take the write lock first; the
        lane's unit of work holds it from its BEGIN)."""
        self.cursor.execute(
            "SELECT h.last_id, h.last_hash, (SELECT max(id) FROM audit_log),"
            " (SELECT max(id) FROM orders), (SELECT max(id) FROM trades)"
            " FROM audit_chain_head h WHERE h.id = ?",
            (HEAD_ID,),
        )
        last_id, last_hash, top, orders, trades = self.cursor.fetchone()
        self.head = [last_id, max(top or 0, last_id or 0), last_hash or GENESIS_HASH, 0, None]
        self.ids.setdefault("orders", orders or 0)
        self.ids.setdefault("trades", trades or 0)

    # --- one signal -----------------------------------------------------------------

    def execute(self, stored: Signal, row: SignalRow) -> Signal | None:
        """Book *stored* (received, committed) if the lane takes it and return it (its
        outcome is on the object once `flush` has written it); None when it goes the
        general way (nothing written). An error propagates: the group's transaction
        rolls back as a whole, and signals/batch.py executes its signals one by one."""
        fields = row.fields
        if fields is None or not _usual(fields):
            return None
        try:
            plan = self._plan(stored, fields)
        except _Declined:
            return None
        self.done.append((stored, self._book(stored, fields, plan)))
        plan.portfolio.cash_balance_usd = canonical(plan.cash)  # as a read gives it back
        self.positions[plan.key] = plan.moved
        return stored

    def _plan(self, stored: Signal, fields: payload.SignalFields) -> _Plan:
        user, limits, account, portfolio = self._venue(stored.user_id)
        if limits.paused or not user.is_active or user.role == "viewer":
            raise _Declined
        if account.broker != "paper" or portfolio.position_mode != PositionMode.netting:
            raise _Declined
        exchange = fields.exchange or DEFAULT_EXCHANGE
        product = fields.product or Product.NRML
        symbol = fields.symbol
        if symbol is None or product == Product.CNC or not self._open(exchange):
            raise _Declined
        key = (portfolio.id, symbol, exchange, product)
        held = self._position(key)
        current = ZERO
        if held is not None:
            current = held.lot.quantity if held.lot.direction == pnl.LONG else -held.lot.quantity
        target = fields.position_size
        if target is None and fields.trade_action == TradeAction.close:
            target = ZERO
        if target is not None:
            change = quantize(target) - current
            if change == 0:
                raise _Declined  # nothing to place: the general way records that
            side, quantity = (pnl.BUY if change > 0 else pnl.SELL), abs(change)
        elif fields.direction is not None and fields.quantity is not None:
            side, quantity = fields.direction, quantize(fields.quantity)
        else:
            raise _Declined
        after = current + (quantity if side == pnl.BUY else -quantity)
        grows = abs(after) > abs(current)
        if limits.max_position_size is not None and grows and abs(after) > limits.max_position_size:
            raise _Declined
        if fields.price is None:
            raise _Declined  # a price read from the bars: the general way
        reference = fields.limit_price or fields.price
        if limits.max_order_value is not None and quantity * reference > limits.max_order_value:
            raise _Declined
        move = fields.price * account.slippage_bps / _BPS
        price = quantize(fields.price + move if side == pnl.BUY else fields.price - move)
        try:
            fill = pnl.Fill(side, quantity, price, quantize(quantity * price * account.fee_rate))
            check_storable(fill)
        except Exception:
            raise _Declined from None
        if portfolio.cash_balance_usd + fill.cash_change < 0 and not portfolio.allow_margin:
            raise _Declined
        return _Plan(user, account, portfolio, key, held, after, fill)

    def _book(self, stored: Signal, fields: payload.SignalFields, plan: _Plan) -> dict[str, Any]:
        now = utc_now()
        at = _time(now)
        user, account, portfolio, fill = plan.user, plan.account, plan.portfolio, plan.fill
        portfolio_id, symbol, exchange, product = plan.key
        cid = client_order_id(stored.id, account.id, 0)
        tag = (fields.comment or "")[:100] or None
        quantity, price, fee = _dec(fill.quantity), _dec(fill.price), _dec(fill.fee)
        order = {
            "user_id": portfolio.user_id, "account_id": portfolio.account_id,
            "portfolio_id": portfolio_id, "client_order_id": cid, "symbol": symbol,
            "exchange": exchange, "side": fill.side, "order_type": OrderType.market.value,
            "product": product, "time_in_force": "GTC", "quantity": quantity,
            "price": _dec(fields.price), "trigger_price": _dec(fields.stop_price), "tag": tag,
            "signal_id": stored.id, "strategy_id": None, "deployment_id": None,
            "algo_params": self.json["algo_params"](None), "status": OrderStatus.filled.value,
            "filled_quantity": quantity, "average_fill_price": price, "fee": fee,
            "fee_currency": portfolio.base_currency, "placed_at": at, "filled_at": at,
            "created_at": at, "updated_at": at,
        }  # fmt: skip
        order_id = self._id("orders")
        self._later(_ORDER_ROW, {"id": order_id, **order})
        position_id, realized, released = self._move_position(plan, stored.id, now, at)
        trade_id = self._id("trades")
        self._later(
            _TRADE_ROW,
            {
                "id": trade_id, "created_at": at, "updated_at": at,
                "metadata": self.json["metadata"]({}),
                "user_id": portfolio.user_id, "portfolio_id": portfolio_id, "order_id": order_id,
                "position_id": position_id, "symbol": symbol, "exchange": exchange,
                "side": fill.side, "quantity": quantity, "price": price,
                "value": _dec(fill.value), "fee": fee, "fee_currency": portfolio.base_currency,
                "pnl": _dec(realized),
                "pnl_percent": _dec(quantize(realized * 100 / released))
                if realized is not None and released
                else None,
                "executed_at": at,
            },
        )  # fmt: skip
        plan.cash = portfolio.cash_balance_usd + fill.cash_change
        self.cash[portfolio_id] = (_dec(plan.cash), at)  # type: ignore[assignment]
        self._later(
            _INSERT_MOVEMENT,
            {
                "created_at": at, "portfolio_id": portfolio_id, "user_id": portfolio.user_id,
                "kind": CashMovementKind.trade.value, "amount": _dec(fill.cash_change),
                "balance_after": _dec(plan.cash), "trade_id": trade_id,
                "note": f"order {order_id}",
            },
        )  # fmt: skip
        details = self.json["details"]
        event = self._statement(
            _INSERT_EVENT,
            ("created_at", "order_id", "event_type", "from_status", "to_status", "quantity",
             "price", "details", "occurred_at"),
        )  # fmt: skip
        self.rows.setdefault(event.sql, []).extend(
            [
                event.args({
                    "created_at": at, "order_id": order_id, "event_type": name,
                    "from_status": before, "to_status": to,
                    "quantity": quantity if to == "filled" else None,
                    "price": price if to == "filled" else None,
                    "details": details(extra), "occurred_at": at,
                })
                for name, before, to, extra in (
                    (OrderEventType.created.value, None, "pending", None),
                    (OrderEventType.accepted.value, "pending", "open", None),
                    (OrderEventType.filled.value, "open", "filled",
                     {"trade_id": trade_id, "fee": str(fill.fee)}),
                )
            ],
        )  # fmt: skip
        self._emit(
            portfolio.user_id,
            EventType.order_filled,
            {
                "order_id": order_id, "client_order_id": cid, "portfolio_id": portfolio_id,
                "account_id": portfolio.account_id, "symbol": symbol, "exchange": exchange,
                "side": fill.side, "order_type": OrderType.market.value, "product": product,
                "quantity": fill.quantity, "price": fields.price,
                "trigger_price": fields.stop_price, "filled_quantity": fill.quantity,
                "average_fill_price": fill.price, "fee": fill.fee,
                "fee_currency": portfolio.base_currency, "status": OrderStatus.filled.value,
                "reject_reason": None, "tag": tag, "signal_id": stored.id, "strategy_id": None,
                "parent_order_id": None, "trade_id": trade_id, "fill_quantity": fill.quantity,
                "fill_price": fill.price, "filled_at": now,
            },
            at,
        )  # fmt: skip
        self._audit(user, stored.source_ip, order_id, fields, fill, now)
        outcome = {
            "orders": [
                {
                    "id": order_id, "client_order_id": cid, "account_id": account.id,
                    "portfolio_id": portfolio_id, "side": fill.side,
                    "quantity": str(check_fits(fill.quantity)),
                    "status": OrderStatus.filled.value,
                    "average_fill_price": str(check_fits(fill.price)),
                }
            ]
        }  # fmt: skip
        after = plan.after
        changes: dict[str, Any] = {
            "strategy_id": None,
            "account_id": account.id,
            "position_status": "open" if after else "closed",
            "trade_direction": pnl.LONG if after > 0 else pnl.SHORT if after < 0 else None,
            "status": SignalStatus.processed,
            "error": None,
            "outcome": outcome,
            "processed_at": now,
            "updated_at": now,
        }
        self.outcomes.append(
            (account.id, changes["position_status"], changes["trade_direction"],
             self.json["outcome"](outcome), at, at, stored.id)
        )  # fmt: skip
        return changes

    def _move_position(
        self, plan: _Plan, signal_id: int, now: datetime, at: str
    ) -> tuple[int, Decimal | None, Decimal]:
        """`PortfolioService.apply_fill` for a netting book: the position's row moved."""
        held, fill = plan.held, plan.fill
        portfolio_id, symbol, exchange, product = plan.key
        outcome = pnl.apply_netting(held.lot if held is not None else None, fill)
        released = ZERO
        position_id: int | None = None
        pending: dict[str, Any] = {}
        new_realized = held.realized if held is not None else ZERO
        if outcome.closed is not None:
            assert held is not None
            before = held.lot
            after_same = outcome.after is not None and outcome.after.direction == before.direction
            released = before.cost - (outcome.after.cost if after_same else ZERO)  # type: ignore[union-attr]
            new_realized = held.realized + outcome.closed.realized
            values: dict[str, Any] = {
                "realized_pnl": _dec(new_realized),
                "exit_price": _dec(fill.price),
            }
            if outcome.closed.flat:
                values.update(
                    quantity="0", cost_basis="0", fees_paid="0",
                    status=PositionStatus.closed.value, open_slot=None, closed_at=at,
                    unrealized_pnl="0", unrealized_pnl_percent="0",
                )  # fmt: skip
                self._update_position(held.id, {"updated_at": at, **values})
                position_id = held.id
                self._emit(
                    plan.portfolio.user_id,
                    EventType.position_closed,
                    {
                        "position_id": held.id, "portfolio_id": portfolio_id, "symbol": symbol,
                        "exchange": exchange, "product": product, "direction": before.direction,
                        "quantity": before.quantity, "exit_price": fill.price,
                        "realized_pnl": new_realized, "closed_at": now,
                    },
                    at,
                )  # fmt: skip
            else:
                pending = values
        after = outcome.after
        new: _Lot | None = None
        if after is not None:
            unrealized = after.unrealized(fill.price)
            values = {
                "quantity": _dec(after.quantity), "cost_basis": _dec(after.cost),
                "fees_paid": _dec(after.open_fees), "entry_price": _dec(after.entry_price),
                "current_price": _dec(fill.price), "unrealized_pnl": _dec(quantize(unrealized)),
                "unrealized_pnl_percent": _dec(quantize(unrealized * 100 / after.cost)),
            }  # fmt: skip
            if held is not None and not (outcome.closed is not None and outcome.closed.flat):
                values.update(pending)
                self._update_position(held.id, {"updated_at": at, **values})
                position_id = held.id
                new = _held(held.id, after, new_realized)
            else:
                # A row the group closed still holds its open slot until written.
                self._write_positions()
                position_id = self._run(
                    _INSERT_POSITION,
                    {
                        "portfolio_id": portfolio_id, "signal_id": signal_id, "deal_id": None,
                        "symbol": symbol, "exchange": exchange, "product": product,
                        "direction": after.direction, "opened_at": at, "created_at": at,
                        "updated_at": at, "status": PositionStatus.open.value, "open_slot": 1,
                        **values,
                    },
                ).fetchone()[0]  # fmt: skip
                new = _held(position_id, after, ZERO)
        plan.moved = new
        assert position_id is not None
        realized = outcome.closed.realized if outcome.closed else None
        return position_id, realized, released

    def _id(self, table: str) -> int:
        """The id SQLite would give the table's next row (the largest plus one: these
        tables have no AUTOINCREMENT), so that the row can wait for `flush`; the unit of
        work holds the write lock, and the general way's rows make the lane read again."""
        if table not in self.ids:
            self._tops()
        self.ids[table] += 1
        return self.ids[table]

    def _update_position(self, position_id: int, values: dict[str, Any]) -> None:
        """Each UPDATE sets whole values: the row's last one is what the group leaves."""
        self.position_rows.setdefault(position_id, {}).update(values)

    def _emit(self, user_id: int, event_type: str, data: dict[str, Any], at: str) -> None:
        self._later(
            _INSERT_EVENT_ROW,
            {"user_id": user_id, "event_type": event_type,
             "payload": self.json["payload"](plain(data)), "created_at": at},
        )  # fmt: skip

    def _audit(
        self,
        user: _User,
        ip: str | None,
        order_id: int,
        fields: payload.SignalFields,
        fill: pnl.Fill,
        now: datetime,
    ) -> None:
        """`AuditService.record_by` of ``order.placed``; the head moves in `flush`."""
        head = self._head()
        details = _jsonable(
            {"symbol": fields.symbol, "side": fill.side, "quantity": str(fill.quantity),
             "status": OrderStatus.filled.value}
        )  # fmt: skip
        values: dict[str, Any] = {
            "id": head[1] + 1, "timestamp": now, "user_id": user.id, "actor_user_id": user.id,
            "actor": _bounded("actor", user.username), "action": "order.placed",
            "resource_type": "order", "resource_id": str(order_id),
            "ip_address": _bounded("ip_address", ip), "user_agent": None, "message": None,
            "details": details, "prev_hash": head[2],
        }  # fmt: skip
        values["row_hash"] = entry_hash([values[name] for name in HASHED_FIELDS])
        self._later(
            _INSERT_ROW,
            {**values, "timestamp": _time(now), "details": self.json["audit"](details)},
        )
        # As `_MOVE_HEAD` leaves it: its updated_at is the last entry's timestamp.
        self.head = [head[0], values["id"], values["row_hash"], head[3] + 1, _time(now)]

    # --- statements -------------------------------------------------------------------

    def _statement(self, prepared: Prepared, names: tuple[str, ...]) -> _Statement:
        key = (id(prepared), names)
        found = _STATEMENTS.get(key)
        if found is None:
            found = _STATEMENTS[key] = _Statement(prepared, names, self.dialect)
        return found

    def _later(self, prepared: Prepared, values: dict[str, Any]) -> None:
        statement = self._statement(prepared, tuple(values))
        self.rows.setdefault(statement.sql, []).append(statement.args(values))

    def _run(self, prepared: Prepared, values: dict[str, Any]) -> sqlite3.Cursor:
        statement = self._statement(prepared, tuple(values))
        return self.cursor.execute(statement.sql, statement.args(values))


_STATEMENTS: dict[tuple[int, tuple[str, ...]], _Statement] = {}
# The rows of orders and trades with their ids given (written by executemany, which takes
# no RETURNING): the columns and constant defaults of the services' statements.
_ORDER_ROW = Prepared(insert(cast(Table, Order.__table__)))
_SIGNAL_ROW = Prepared(insert(cast(Table, Signal.__table__)))
_TRADE_ROW = Prepared(insert(cast(Table, Trade.__table__)))
_SET_CASH_SQL = "UPDATE portfolios SET cash_balance_usd = ?, updated_at = ? WHERE id = ?"
_FINISH_SQL = (
    "UPDATE signals SET strategy_id = NULL, account_id = ?, position_status = ?,"
    " trade_direction = ?, status = 'processed', error = NULL, outcome = ?, processed_at = ?,"
    " updated_at = ? WHERE id = ? AND status = 'received'"
)
_users = cast(Table, User.__table__)
_accounts = cast(Table, TradingAccount.__table__)
_portfolios = cast(Table, Portfolio.__table__)
# `_DEFAULT_ACCOUNT` and `_PORTFOLIO` (signals/service.py) joined to the user's row.
_first_account = (
    select(_accounts.c.id)
    .where(_accounts.c.user_id == _users.c.id, _accounts.c.is_active.is_(True))
    .order_by(_accounts.c.is_primary.desc(), _accounts.c.priority, _accounts.c.id)
    .limit(1)
    .correlate(_users)
    .scalar_subquery()
)
_first_portfolio = (
    select(_portfolios.c.id)
    .where(_portfolios.c.account_id == _accounts.c.id, _portfolios.c.is_active.is_(True))
    .order_by(_portfolios.c.id)
    .limit(1)
    .correlate(_accounts)
    .scalar_subquery()
)
_VENUE = Prepared(
    select(
        _users.c.id, _users.c.username, _users.c.role, _users.c.is_active, _users.c.settings,
        *(c.label(f"a__{c.key}") for c in _accounts.c),
        *(c.label(f"p__{c.key}") for c in _portfolios.c),
    )
    .select_from(
        _users.outerjoin(_accounts, _accounts.c.id == _first_account).outerjoin(
            _portfolios, _portfolios.c.id == _first_portfolio
        )
    )
    .where(_users.c.id == bindparam("uid"))
)  # fmt: skip


@dataclass(frozen=True)
class _User:
    """The columns of a user the lane needs (`limits_of` reads ``settings``)."""

    id: int
    username: str
    role: str
    is_active: bool
    settings: dict[str, Any] | None


class SignalTaken(Exception):
    """Another process claimed one of the group's signals first: the group is redone."""


@dataclass
class _Plan:
    user: _User
    account: TradingAccount
    portfolio: Portfolio
    key: tuple[int, str, str, str]
    held: _Lot | None
    after: Decimal
    fill: pnl.Fill
    cash: Decimal = ZERO
    moved: _Lot | None = None


def store_all(session: Session, rows: list[SignalRow]) -> list[Signal]:
    """Insert the received signals *rows*, all with the same columns, at once
    (`SignalService.store` for each, by one executemany with their ids given, as SQLite
    would give them: the unit of work holds the write lock). IntegrityError when a unique
    key broke (the caller rolls the transaction back)."""
    connection = connection_of(session)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute("SELECT max(id) FROM signals")
    first = ((cursor.fetchone() or (None,))[0] or 0) + 1
    values = [{**row.values, "id": first + n} for n, row in enumerate(rows)]
    _SIGNAL_ROW.run_many(connection, values)
    return [attach(session, Signal, value) for value in values]


def _usual(fields: payload.SignalFields) -> bool:
    """The signal's form is one the lane books (anything else goes the general way)."""
    return (
        fields.error is None
        and fields.strategy is None
        and fields.account is None
        and fields.portfolio is None
        and fields.deal_id is None
        and not fields.hedging_enabled
        and fields.trade_action in (None, TradeAction.open, TradeAction.close)
        and fields.order_type in (None, OrderType.market)
    )


def forget_session_state(session: Session) -> None:
    """After the lane wrote: the session's portfolios and positions may be stale, and the
    general way's kept objects with them."""
    session.info.pop(_KEPT, None)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Portfolio | Position | TradingAccount):
            session.expire(obj)


_T = TypeVar("_T", TradingAccount, Portfolio)


def _loaded(model: type[_T], values: dict[str, Any]) -> _T:
    """An object of no session holding the row *values* read (every column), made as the
    ORM's loader makes one: the constructor's attribute events were half of reading the
    group's user, account and portfolio."""
    obj = cast(_T, model.__mapper__.class_manager.new_instance())
    obj.__dict__.update(values)
    return obj


def _processor(table: Any, column: str, dialect: Any) -> Callable[[Any], Any]:
    """The JSON column's own serializer (its key order and separators are the row's)."""
    found = table.c[column].type._cached_bind_processor(dialect)
    assert found is not None
    return cast(Callable[[Any], Any], found)
