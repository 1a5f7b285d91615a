"""The resting book: a bar selects, by indexed ranges, exactly the orders a scan of every
resting order would have matched, on every engine, and the plans use the book indexes."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D  # noqa: N817
from typing import Any

import pytest
from sqlalchemy import (
    ClauseElement,
    Executable,
    column,
    insert,
    select,
    table,
    text,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from tests.conftest import Scratch
from tests.factories import create_user
from tests.orders.test_resting_orders import _setup
from tradebase.core import migrate
from tradebase.core.db import Database, create_db_engine
from tradebase.core.ddl import JSONDoc
from tradebase.core.money import key_params
from tradebase.orders.matching import Bar, match
from tradebase.orders.models import Order, Trade
from tradebase.orders.service import RESTING_TYPES, OrderService, bar_query
from tradebase.orders.service import order as order_service
from tradebase.orders.state import RESTING
from tradebase.portfolios.models import Portfolio

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


class ScanningOrders(OrderService):
    """The book as it was: every resting order of the symbol loaded and tested per bar."""

    def _bar_orders(
        self, session: Session, *, symbol: str, exchange: str, bar: Bar, at: datetime
    ) -> list[Order]:
        return list(
            session.scalars(
                select(Order)
                .where(
                    Order.symbol == symbol,
                    Order.exchange == exchange,
                    Order.status.in_(list(RESTING)),
                )
                .order_by(Order.id)
            )
        )


def _order(portfolio: Portfolio, **values: Any) -> dict[str, Any]:
    return {
        "user_id": portfolio.user_id,
        "account_id": portfolio.account_id,
        "portfolio_id": portfolio.id,
        "symbol": "ACME",
        "exchange": "paper",
        "status": "open",
        "quantity": D(10),
        "filled_quantity": D(0),
        "price": None,
        "trigger_price": None,
        "triggered_at": None,
        "algo_params": None,
        "placed_at": T0,
    } | values


# Neighbours closer than a float can tell apart, and the extremes of NUMERIC(38, 18).
EDGES = [
    "0.000000000000000001",
    "99.999999999999999999",
    "100",
    "100.000000000000000001",
    "100.000000000000000002",
    "100.5",
    "101",
    "12345678901234567890.123456789012345678",
]


def _edge_book(portfolio: Portfolio) -> list[dict[str, Any]]:
    rows = []
    for side in ("buy", "sell"):
        for i, p in enumerate(EDGES):
            status = "partially_filled" if i % 3 == 0 else "open"
            filled = D(1) if status == "partially_filled" else D(0)
            common = {"side": side, "status": status, "filled_quantity": filled}
            rows.append(_order(portfolio, order_type="limit", price=D(p), **common))
            rows.append(_order(portfolio, order_type="stop_loss", trigger_price=D(p), **common))
            for limit in EDGES[i - 1 : i + 2]:
                rows.append(
                    _order(
                        portfolio,
                        order_type="stop_limit",
                        price=D(limit),
                        trigger_price=D(p),
                        **common,
                    )
                )
                rows.append(
                    _order(
                        portfolio,
                        order_type="stop_limit",
                        price=D(limit),
                        trigger_price=D(p),
                        triggered_at=T0,
                        **common,
                    )
                )
            # Not in this bar's book: done, another symbol, another exchange, an algo parent.
            limit = {"order_type": "limit", "price": D(p), "side": side}
            rows.append(_order(portfolio, status="filled", filled_quantity=D(10), **limit))
            rows.append(_order(portfolio, symbol="OTHER", **limit))
            rows.append(_order(portfolio, exchange="NYSE", **limit))
            rows.append(_order(portfolio, order_type="twap", side=side, algo_params={"slices": 2}))
    return rows


def _book(session: Session, bar: Bar) -> list[int]:
    found = order_service._bar_orders(session, symbol="ACME", exchange="paper", bar=bar, at=T0)
    return [o.id for o in found if o.order_type in RESTING_TYPES]


def _scan(session: Session, bar: Bar) -> list[int]:
    resting = ScanningOrders()._bar_orders(session, symbol="ACME", exchange="paper", bar=bar, at=T0)
    return [
        o.id
        for o in resting
        if o.order_type in RESTING_TYPES
        and match(
            o.order_type,
            o.side,
            bar,
            price=o.price,
            trigger=o.trigger_price,
            triggered=o.triggered_at is not None,
        )
        is not None
    ]


def test_a_bar_selects_exactly_the_orders_a_scan_would_match(session: Session) -> None:
    _who, portfolio = _setup(session)
    session.execute(insert(Order), _edge_book(portfolio))
    bars = []
    for lo in range(len(EDGES)):
        for hi in range(lo, len(EDGES)):
            low, high = D(EDGES[lo]), D(EDGES[hi])
            bars.append(Bar(high, high, low, low, D(100)))
    reached = set()
    for bar in bars:
        book = _book(session, bar)
        assert book == _scan(session, bar), bar
        reached |= set(book)
    assert len(reached) > 100


def test_neighbours_a_float_cannot_tell_apart(session: Session) -> None:
    _who, portfolio = _setup(session)
    session.execute(
        insert(Order),
        [
            _order(portfolio, order_type="limit", side="buy", price=D("100.000000000000000001")),
            _order(portfolio, order_type="limit", side="sell", price=D("100.000000000000000002")),
        ],
    )
    buy, sell = session.scalars(
        select(Order.id).where(Order.portfolio_id == portfolio.id).order_by(Order.id)
    ).all()

    def book(low: str, high: str) -> list[int]:
        return _book(session, Bar(D(high), D(high), D(low), D(low), D(1)))

    # A low one unit (1e-18) above the buy limit does not reach it; a high one unit below
    # the sell limit does not reach that one either. As floats all four are 100.0.
    assert book("100.000000000000000002", "100.000000000000000002") == [sell]
    assert book("100.000000000000000001", "100.000000000000000001") == [buy]
    assert book("100.000000000000000001", "100.000000000000000002") == [buy, sell]
    assert book("100.000000000000000003", "100.000000000000000003") == [sell]


def _walk(rng: random.Random, n: int) -> list[Bar]:
    bars, price = [], D(100)
    for _ in range(n):
        moves = [price * (1 + D(rng.randint(-200, 200)) / 10_000) for _ in range(3)]
        close = moves[-1].quantize(D("0.01"))
        high = max(price, *moves).quantize(D("0.01")) + D("0.01")
        low = min(price, *moves).quantize(D("0.01")) - D("0.01")
        bars.append(Bar(price, high, low, close, D(rng.randint(5, 50))))
        price = close
    return bars


def _outcome(session: Session, portfolio: Portfolio) -> tuple[list[Any], list[Any]]:
    trades = session.execute(
        select(Trade.order_id, Trade.side, Trade.price, Trade.quantity, Trade.executed_at)
        .where(Trade.portfolio_id == portfolio.id)
        .order_by(Trade.id)
    ).all()
    orders = session.execute(
        select(Order.id, Order.status, Order.filled_quantity, Order.triggered_at)
        .where(Order.portfolio_id == portfolio.id)
        .order_by(Order.id)
    ).all()
    return [tuple(t) for t in trades], [tuple(o) for o in orders]


def test_bars_through_the_book_fill_what_the_scan_filled(session: Session) -> None:
    rng = random.Random(4)
    _who, portfolio = _setup(session)  # 10,000 of cash: some buys are cancelled for it
    rows = []
    for _ in range(60):
        side = rng.choice(["buy", "sell"])
        kind = rng.choice(["limit", "limit", "stop_loss", "stop_limit"])
        level = D(100) + D(rng.randint(-600, 600)) / 100
        cap = {"participation": "0.05"} if rng.random() < 0.3 else None
        values: dict[str, Any] = {"side": side, "order_type": kind, "algo_params": cap}
        if kind == "limit":
            values["price"] = level
        else:
            values["trigger_price"] = level
        if kind == "stop_limit":
            values["price"] = level + (1 if side == "buy" else -1) * D(rng.randint(0, 150)) / 100
        rows.append(_order(portfolio, quantity=D(rng.randint(1, 60)), **values))
    session.execute(insert(Order), rows)
    session.flush()
    bars = _walk(rng, 80)

    def replay(service: OrderService) -> tuple[int, tuple[list[Any], list[Any]]]:
        fills = sum(
            service.match_bar(
                session,
                symbol="ACME",
                exchange="paper",
                bar=bar,
                at=T0 + timedelta(minutes=i),
            )
            for i, bar in enumerate(bars)
        )
        return fills, _outcome(session, portfolio)

    scan = session.begin_nested()
    scanned = replay(ScanningOrders())
    scan.rollback()
    booked = replay(order_service)
    assert booked == scanned
    fills, (trades, orders) = booked
    assert fills == len(trades) > 20
    # Fills, partial fills under a participation cap, a buy cancelled for cash, triggers.
    assert {o[1] for o in orders} >= {"filled", "partially_filled", "cancelled"}
    assert sum(1 for o in orders if o[3] is not None) > 5


# --- the plans ---------------------------------------------------------------------------


class _Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(_Explain)
def _explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


@compiles(_Explain, "sqlite")
def _explain_sqlite(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN QUERY PLAN " + compiler.process(element.statement, **kw)


def _plan(session: Session, statement: Any, params: dict[str, Any]) -> list[str]:
    rows = session.execute(_Explain(statement), params).all()
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        # id, select_type, table, type, possible_keys, key, ...: the index of each branch
        return [f"{row[2]}: {row[3]} {row[5]}" for row in rows if row[2] == "orders"]
    return [str(row[-1]) for row in rows]


def test_the_book_indexes_serve_the_bar_queries(session: Session) -> None:
    _who, portfolio = _setup(session)
    rng = random.Random(7)
    history = []
    for i in range(4000):  # mostly done orders of 20 symbols, a few hundred resting
        resting = rng.random() < 0.1
        kind = rng.choice(["limit", "stop_loss", "stop_limit"])
        level = D(rng.randint(9000, 11000)) / 100
        history.append(
            _order(
                portfolio,
                symbol=f"S{i % 20}",
                side=rng.choice(["buy", "sell"]),
                order_type=kind,
                price=level if kind != "stop_loss" else None,
                trigger_price=level if kind != "limit" else None,
                status="open" if resting else rng.choice(["filled", "cancelled"]),
                filled_quantity=D(0) if resting else D(10),
                expires_at=T0 if resting and i % 7 == 0 else None,
            )
        )
    session.execute(insert(Order), history)
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):  # MariaDB's ANALYZE TABLE would commit the test
        session.execute(text("ANALYZE orders" if dialect == "postgresql" else "ANALYZE"))
    params = {
        "symbol": "S3",
        "exchange": "paper",
        "at": T0 + timedelta(hours=7),
        **key_params("low", D("99.5")),
        **key_params("high", D("100.2")),
    }
    plan = _plan(session, bar_query(dialect == "sqlite"), params)
    joined = "\n".join(plan)
    assert joined.count("idx_orders_book_price") >= 2, joined
    assert joined.count("idx_orders_book_trigger") >= 2, joined
    assert "idx_orders_book_expiry" in joined, joined
    if dialect == "postgresql":
        assert "Seq Scan" not in joined, joined
    if dialect == "sqlite":
        searches = [line for line in plan if "orders" in line]
        assert len(searches) == 6, plan
        assert all("USING INDEX idx_orders_book_" in line for line in searches), plan
    if dialect in ("mysql", "mariadb"):
        assert len(plan) == 6 and all(" idx_orders_book_" in line for line in plan), plan


def test_the_migration_carries_triggered_stop_limits_both_ways(scratch: Scratch) -> None:
    settings = scratch.settings()
    migrate.upgrade(Database.main, "main_0006", settings=settings)
    engine = create_db_engine(scratch.main_url, settings, pooled=False)
    try:
        with Session(engine) as session, session.begin():
            user = create_user(session)
            # the account as main_0006 has it (the ORM model has columns of later revisions)
            account_id = session.execute(
                text(
                    "INSERT INTO trading_accounts (user_id, account_name) VALUES (:user, 'old')"
                    " RETURNING id"
                ),
                {"user": user.id},
            ).scalar_one()
            for status, params in (
                ("open", '{"triggered": true, "participation": "0.5"}'),
                ("partially_filled", '{"triggered": true}'),
                ("open", None),
                ("filled", '{"triggered": true}'),
            ):
                session.execute(
                    text(
                        "INSERT INTO orders (user_id, account_id, symbol, exchange, side,"
                        " order_type, status, quantity, filled_quantity, price, trigger_price,"
                        " algo_params) VALUES (:user, :account, 'ACME', 'paper', 'buy',"
                        " 'stop_limit', :status, '10', :filled, '101', '100', :params)"
                    ),
                    {
                        "user": user.id,
                        "account": account_id,
                        "status": status,
                        "filled": "10" if status == "filled" else "1",
                        "params": params,
                    },
                )
        migrate.upgrade(Database.main, "head", settings=settings)
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT status, triggered_at FROM orders ORDER BY id")
            ).all()
        # The resting ones that had triggered; the filled one keeps its history as it was.
        assert [(status, when is not None) for status, when in rows] == [
            ("open", True),
            ("partially_filled", True),
            ("open", False),
            ("filled", False),
        ]
        migrate.downgrade(Database.main, "main_0006", settings=settings)
        with Session(engine) as session:
            params = session.scalars(
                select(type_coerce(column("algo_params"), JSONDoc()))
                .select_from(table("orders"))
                .order_by(column("id"))
            ).all()
        assert params == [
            {"triggered": True, "participation": "0.5"},
            {"triggered": True},
            None,
            {"triggered": True},
        ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_sqlite3_shell_can_still_write_orders(scratch: Scratch) -> None:
    # The book indexes hold `price + 0` on SQLite: a connection without Tradebase's
    # tb_decimal collation (the sqlite3 shell, a script) can insert and reprice orders.
    migrate.upgrade(Database.main, "head", settings=scratch.settings())
    assert scratch.main_url.database is not None
    shell = sqlite3.connect(scratch.main_url.database)
    try:
        shell.execute(
            "INSERT INTO users (username, email, password_hash, role)"
            " VALUES ('shelly', 'shelly@example.com', 'x', 'trader')"
        )
        shell.execute(
            "INSERT INTO trading_accounts (user_id, account_name, broker)"
            " VALUES (1, 'shell', 'paper')"
        )
        shell.execute(
            "INSERT INTO orders (user_id, account_id, symbol, exchange, side, order_type, status,"
            " quantity, price) VALUES (1, 1, 'ACME', 'paper', 'buy', 'limit', 'open', '1', '99.5')"
        )
        shell.execute("UPDATE orders SET price = '99.25', trigger_price = NULL")
        shell.commit()
    finally:
        shell.close()
