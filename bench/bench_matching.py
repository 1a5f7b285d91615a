"""Resting orders matched by price bars through the service: the book query (indexed price
ranges, `OrderService._bar_orders`) against the brute-force scan it replaced (every resting
order of the symbol loaded and tested on every bar), on identical copies of the data, in
the same run. Both must make the same fills; the script checks it.

The book: 10,000 resting limit orders over 20 symbols (buys below the start price of 100,
sells above it, up to 10% away), written with Core inserts. The bars: a seeded random walk
per symbol, one bar per symbol a minute, matched through ``order.match_bar`` with one unit
of work per minute (all symbols' bars of that minute). Every fill is booked in full
(position, trade, cash and ledger, events). A round replays the bars on a fresh copy of
the database; figures are medians of the rounds.

The scan loads ~500 orders per bar, so it replays only the first ``--scan-bars`` bars; the
book replays those too (the comparison, same fills) and then all ``--bars``.

    python bench/bench_matching.py [--orders 10000] [--bars 100000] [--symbols 20]
        [--scan-bars 2000] [--rounds 3] [--seed 1] [--postgres URL]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import ClauseElement, Engine, Executable, insert, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from tradebase.accounts.service import user as user_service
from tradebase.config import Settings, normalize_database_url
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, create_db_engine, unit_of_work
from tradebase.core.money import key_params
from tradebase.orders.matching import Bar
from tradebase.orders.models import Order, OrderEvent, Trade
from tradebase.orders.service import OrderService, bar_query
from tradebase.orders.service import order as order_service
from tradebase.orders.state import RESTING
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
CENT = Decimal("0.01")


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


# --- data ---------------------------------------------------------------------------------


def walk(rng: random.Random, symbols: int, minutes: int) -> list[list[tuple[str, Bar]]]:
    """Bars minute by minute: for each minute, one bar per symbol (a random walk each)."""
    last = [Decimal(100)] * symbols
    ticks = []
    for _ in range(minutes):
        tick = []
        for s in range(symbols):
            opens = last[s]
            close = (opens * Decimal(math.exp(rng.gauss(0, 0.002)))).quantize(CENT)
            spread = Decimal(abs(rng.gauss(0, 0.001))) + Decimal("0.0001")
            high = (max(opens, close) * (1 + spread)).quantize(CENT)
            low = (min(opens, close) * (1 - spread)).quantize(CENT)
            tick.append((f"S{s}", Bar(opens, high, low, close, Decimal(1000))))
            last[s] = close
        ticks.append(tick)
    return ticks


def book(rng: random.Random, n: int, symbols: int, ids: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        side = "buy" if i % 2 else "sell"
        away = Decimal(rng.uniform(0.001, 0.10))
        limit = Decimal(100) * (1 - away if side == "buy" else 1 + away)
        rows.append(
            {
                "user_id": ids["user"],
                "account_id": ids["account"],
                "portfolio_id": ids["portfolio"],
                "symbol": f"S{i % symbols}",
                "exchange": "paper",
                "side": side,
                "order_type": "limit",
                "status": "open",
                "quantity": Decimal(rng.randint(1, 10)),
                "price": limit.quantize(CENT),
                "placed_at": T0 - timedelta(hours=1),
            }
        )
    return rows


# --- databases ----------------------------------------------------------------------------


class Place:
    """Where the databases live: an SQLite folder, or a PostgreSQL server."""

    def __init__(self, postgres: str | None) -> None:
        self.postgres = make_url(normalize_database_url(postgres)) if postgres else None
        self.folder = Path(tempfile.mkdtemp(prefix="tb-bench-matching-"))
        self.created: list[str] = []
        self.admin: Engine | None = None
        if self.postgres is not None:
            self.admin = create_db_engine(
                self.postgres, Settings(), pooled=False, isolation_level="AUTOCOMMIT"
            )

    @property
    def engine_name(self) -> str:
        return "PostgreSQL" if self.postgres else "SQLite"

    def new(self, template: URL | None = None) -> URL:
        """An empty database, or a copy of *template* (closed)."""
        name = f"tb_bench_match_{uuid.uuid4().hex[:8]}"
        if self.postgres is None:
            path = self.folder / f"{name}.db"
            if template is not None:
                assert template.database
                shutil.copyfile(template.database, path)
            return make_url(f"sqlite:///{path}")
        assert self.admin is not None
        copy = f' TEMPLATE "{template.database}"' if template is not None else ""
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
        self.created.append(name)
        return self.postgres.set(database=name)

    def close(self) -> None:
        if self.admin is not None:
            with self.admin.connect() as conn:
                for name in self.created:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.admin.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)


def settings_for(place: Place, url: URL) -> Settings:
    return Settings(
        data_dir=place.folder,
        database_url=url.render_as_string(hide_password=False),
        credentials_database_url=f"sqlite:///{place.folder / 'credentials.db'}",
    )


@contextmanager
def engines_for(place: Place, url: URL) -> Iterator[Engines]:
    engines = Engines(settings_for(place, url))
    try:
        yield engines
    finally:
        engines.dispose()


def prepare(place: Place, args: argparse.Namespace, rng: random.Random) -> URL:
    """The original: migrated, one paper portfolio, the resting book; analyzed, closed."""
    url = place.new()
    settings = settings_for(place, url)
    migrate.upgrade(Database.main, settings=settings)
    with engines_for(place, url) as engines:
        factory = engines.session_factory(Database.main)
        with unit_of_work(factory=factory) as session:
            user, _ = user_service.create(
                session, username="bencher", email="b@example.com", password="benchmark pw"
            )
            who = Principal(user_id=user.id, username=user.username, role="trader")
            account = account_service.create(
                session, who, account_name="bench", fee_rate=Decimal("0.001")
            )
            portfolio = portfolio_service.create(session, who, account_id=account.id, name="bench")
            portfolio_service.deposit(session, who, portfolio.id, Decimal(10**12))
            ids = {"user": user.id, "account": account.id, "portfolio": portfolio.id}
        with unit_of_work(factory=factory) as session:
            rows = book(rng, args.orders, args.symbols, ids)
            order_ids = session.scalars(insert(Order).returning(Order.id), rows).all()
            session.execute(
                insert(OrderEvent),
                [
                    {
                        "order_id": oid,
                        "event_type": event,
                        "from_status": before,
                        "to_status": after,
                        "occurred_at": T0 - timedelta(hours=1),
                    }
                    for oid in order_ids
                    for event, before, after in (
                        ("created", None, "pending"),
                        ("accepted", "pending", "open"),
                    )
                ],
            )
        with engines.engine(Database.main).connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
            if url.get_backend_name() == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return url


class Explain(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain)
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if compiler.dialect.name == "sqlite" else "EXPLAIN "
    return prefix + compiler.process(element.statement, **kw)


def plan(place: Place, url: URL) -> list[str]:
    """EXPLAIN of the bar query for one bar of S3, on the original data."""
    params = {
        "symbol": "S3",
        "exchange": "paper",
        "at": T0,
        **key_params("low", Decimal("99.5")),
        **key_params("high", Decimal("100.5")),
    }
    with engines_for(place, url) as engines, engines.engine(Database.main).connect() as conn:
        statement = bar_query(conn.dialect.name == "sqlite")
        return [str(row[-1]) for row in conn.execute(Explain(statement), params)]


# --- runs ---------------------------------------------------------------------------------


@dataclass
class Run:
    bars: int
    fills: int
    seconds: float
    trades: list[tuple[Any, ...]]
    quiet_bars: int  # bars that filled nothing: the cost of finding that out
    quiet_seconds: float

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.seconds

    @property
    def fills_per_second(self) -> float:
        return self.fills / self.seconds

    @property
    def quiet_us(self) -> float:
        return self.quiet_seconds / self.quiet_bars * 1e6


def replay(
    place: Place, original: URL, service: OrderService, ticks: list[list[tuple[str, Bar]]]
) -> Run:
    url = place.new(template=original)
    with engines_for(place, url) as engines:
        factory = engines.session_factory(Database.main)
        fills = bars = quiet_bars = 0
        quiet_seconds = 0.0
        clock = time.perf_counter
        start = clock()
        for minute, tick in enumerate(ticks):
            at = T0 + timedelta(minutes=minute)
            with unit_of_work(factory=factory) as session:
                for symbol, bar in tick:
                    began = clock()
                    made = service.match_bar(
                        session, symbol=symbol, exchange="paper", bar=bar, at=at
                    )
                    if not made:
                        quiet_bars += 1
                        quiet_seconds += clock() - began
                    fills += made
                    bars += 1
        seconds = clock() - start
        with unit_of_work(factory=factory, write=False) as session:
            trades = [
                tuple(row)
                for row in session.execute(
                    select(Trade.order_id, Trade.price, Trade.quantity, Trade.executed_at).order_by(
                        Trade.executed_at, Trade.order_id
                    )
                )
            ]
    assert len(trades) == fills
    return Run(bars, fills, seconds, trades, quiet_bars, quiet_seconds)


@dataclass
class Medians:
    last: Run
    bars_per_second: float
    fills_per_second: float
    quiet_us: float


def rounds(n: int, fn: Callable[[], Run]) -> Medians:
    """Medians of *n* runs, and the last run."""
    runs = [fn() for _ in range(n)]
    return Medians(
        runs[-1],
        statistics.median(r.bars_per_second for r in runs),
        statistics.median(r.fills_per_second for r in runs),
        statistics.median(r.quiet_us for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--scan-bars", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--full-rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", help="a PostgreSQL URL; scratch databases go there")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    place = Place(args.postgres)
    try:
        original = prepare(place, args, rng)
        ticks = walk(rng, args.symbols, args.bars // args.symbols)
        subset = ticks[: args.scan_bars // args.symbols]
        print(f"\n{place.engine_name}: the plan of one bar's query")
        for line in plan(place, original):
            print(f"  {line}")

        scan = rounds(args.rounds, lambda: replay(place, original, ScanningOrders(), subset))
        part = rounds(args.rounds, lambda: replay(place, original, order_service, subset))
        assert part.last.trades == scan.last.trades, "the book and the scan filled differently"
        full = rounds(args.full_rounds, lambda: replay(place, original, order_service, ticks))
        assert full.last.trades[: len(part.last.trades)] == part.last.trades

        print(
            f"\n{place.engine_name}: {args.orders:,} resting limit orders, {args.symbols} symbols;"
            f" medians of {args.rounds} rounds (all bars: {args.full_rounds})"
        )
        print(
            f"  {'way':28} {'bars':>8} {'bars/s':>8} {'fills':>6} {'fills/s':>8}"
            f" {'µs/bar, no fill':>16}"
        )
        for name, m in (
            ("scan (every resting order)", scan),
            ("book (indexed ranges)", part),
            ("book, all bars", full),
        ):
            print(
                f"  {name:28} {m.last.bars:8,} {m.bars_per_second:8,.0f} {m.last.fills:6,}"
                f" {m.fills_per_second:8,.1f} {m.quiet_us:16,.0f}"
            )
        print(
            f"  book / scan on the first {part.last.bars:,} bars (the same {part.last.fills:,}"
            f" fills): {part.bars_per_second / scan.bars_per_second:.1f}x the bars/s,"
            f" {scan.quiet_us / part.quiet_us:.1f}x faster on a bar that fills nothing"
        )
    finally:
        place.close()


if __name__ == "__main__":
    main()
