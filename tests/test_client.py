"""The Python facade, end to end on every engine; the figures are worked out by hand."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817 - the hand-worked figures read better
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.orm import sessionmaker

import tradebase
from tests.conftest import Scratch, ScratchFactory
from tests.factories import create_user
from tradebase.accounts.errors import UserNotFound
from tradebase.client import Tradebase
from tradebase.config import Settings, get_settings
from tradebase.core import migrate
from tradebase.core.db import Database, create_db_engine, unit_of_work
from tradebase.core.errors import Forbidden, Unauthorized, Unprocessable
from tradebase.orders.errors import (
    InvalidOrderTransition,
    OrderNotFound,
    OrderRejected,
    UnsupportedOrder,
)
from tradebase.orders.schemas import OrderRead, TradeRead
from tradebase.portfolios.errors import (
    AccountNameTaken,
    AccountNotFound,
    InsufficientCash,
    PortfolioNotFound,
)
from tradebase.portfolios.reconcile import Report
from tradebase.portfolios.schemas import PositionRead

OpenAs = Callable[..., Tradebase]
BAR_TIME = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

_databases: dict[str, Scratch] = {}


@pytest.fixture
def db(backend: str, scratch_factory: ScratchFactory) -> Scratch:
    """Databases of the facade's own (it commits), migrated once per engine and run."""
    if backend not in _databases:
        scratch = scratch_factory.new(backend, "client")
        for database in Database:
            migrate.upgrade(database, "head", settings=scratch.settings())
        _databases[backend] = scratch
    return _databases[backend]


@pytest.fixture
def open_as(db: Scratch) -> Iterator[OpenAs]:
    """Open the facade as a new user of *role*; every one opened is closed afterwards."""
    opened: list[Tradebase] = []
    engine = create_db_engine(db.main_url, Settings(), pooled=False)

    def open_as(role: str = "trader") -> Tradebase:
        username = f"{role}_{uuid.uuid4().hex[:10]}"
        with unit_of_work(factory=sessionmaker(bind=engine, expire_on_commit=False)) as session:
            create_user(session, username=username, role=role)
        tb = tradebase.connect(
            db.main_url, credentials_url=db.credentials_url, user=username, migrate=False
        )
        opened.append(tb)
        return tb

    yield open_as
    for tb in opened:
        tb.close()
    engine.dispose()


def _symbol() -> str:
    # Bars drive every resting order of their symbol: each test trades its own.
    return f"ACME{uuid.uuid4().hex[:8].upper()}"


def _bar(close: str, *, at: datetime = BAR_TIME, low: str | None = None) -> dict[str, object]:
    c = D(close)
    return {
        "timestamp": at,
        "open": c,
        "high": c,
        "low": D(low) if low else c,
        "close": c,
        "volume": D(10),
    }


def _funded(tb: Tradebase, cash: str = "1000", fee_rate: str = "0.001") -> int:
    account = tb.create_account("paper one", fee_rate=fee_rate)
    portfolio = tb.create_portfolio(account.id, "main")
    tb.deposit(portfolio.id, cash)
    return portfolio.id


def _buy_two_sell_one(tb: Tradebase, pid: int, symbol: str) -> tuple[OrderRead, OrderRead]:
    buy = tb.place_order(pid, symbol=symbol, side="buy", quantity=2, price="100")
    sell = tb.place_order(pid, symbol=symbol, side="sell", quantity=1, price=D(110))
    return buy, sell


def test_market_orders_make_trades_cash_and_pnl(open_as: OpenAs) -> None:
    tb = open_as()
    symbol = _symbol()
    account = tb.create_account("paper one", fee_rate="0.001")
    assert (account.fee_rate, account.slippage_bps, account.is_paper) == (D("0.001"), D(0), True)
    portfolio = tb.create_portfolio(account.id, "main")
    movement = tb.deposit(portfolio.id, 1000, note="start")
    assert (movement.kind, movement.amount, movement.balance_after) == ("deposit", D(1000), D(1000))
    buy, sell = _buy_two_sell_one(tb, portfolio.id, symbol)
    # Buy 2 at 100 (no slippage): value 200, fee 0.001 x 200 = 0.2.
    assert (buy.status, buy.filled_quantity, buy.average_fill_price, buy.fee) == (
        "filled",
        D(2),
        D(100),
        D("0.2"),
    )
    # Sell 1 at 110: value 110, fee 0.11; it releases half the cost (100) and half the
    # opening fee (0.1): realized 110 - 100 - 0.11 - 0.1 = 9.79, i.e. 9.79 % of 100.
    trades = tb.trades(portfolio.id)
    assert list(trades.columns) == list(TradeRead.model_fields)
    assert trades["order_id"].tolist() == [buy.id, sell.id]
    assert trades["side"].tolist() == ["buy", "sell"]
    assert trades["quantity"].tolist() == [D(2), D(1)]
    assert trades["price"].tolist() == [D(100), D(110)]
    assert trades["value"].tolist() == [D(200), D(110)]
    assert trades["fee"].tolist() == [D("0.2"), D("0.11")]
    assert trades["pnl"].tolist() == [None, D("9.79")]
    assert trades["pnl_percent"].tolist() == [None, D("9.79")]
    for column in ("quantity", "price", "value", "fee", "pnl", "pnl_percent"):
        assert trades[column].dtype == object
    assert all(isinstance(v, D) for v in trades["fee"])
    assert trades["executed_at"].dtype == pd.DatetimeTZDtype(unit="us", tz="UTC")
    assert trades["executed_at"].tolist() == [t.executed_at for t in tb.list_trades(portfolio.id)]

    after = tb.get_portfolio(portfolio.id)
    assert after.cash_balance_usd == D("909.69")  # 1000 - 200 - 0.2 + 110 - 0.11
    positions = tb.positions(portfolio.id)
    assert list(positions.columns) == list(PositionRead.model_fields)
    assert len(positions) == 1
    row = positions.iloc[0]
    # One left, cost 100 and half the opening fee (0.1) still to release, marked at 110:
    # unrealized 110 - 100 - 0.1 = 9.9.
    assert (row.symbol, row.direction, row.quantity, row.cost_basis, row.entry_price) == (
        symbol,
        "long",
        D(1),
        D(100),
        D(100),
    )
    assert (row.current_price, row.unrealized_pnl, row.realized_pnl) == (
        D(110),
        D("9.9"),
        D("9.79"),
    )
    assert tb.positions(portfolio.id, status="closed").empty

    orders = tb.orders(portfolio_id=portfolio.id)
    assert list(orders.columns) == list(OrderRead.model_fields)
    assert orders["id"].tolist() == [sell.id, buy.id]  # newest first
    assert orders["average_fill_price"].tolist() == [D(110), D(100)]
    assert orders["filled_at"].dtype == pd.DatetimeTZDtype(unit="us", tz="UTC")
    assert [o.id for o in tb.list_orders(portfolio_id=portfolio.id, side="buy")] == [buy.id]
    assert [e.to_status for e in tb.list_order_events(buy.id)] == ["pending", "open", "filled"]

    report = tb.reconcile(portfolio.id)
    assert (report.ok, report.portfolios, report.fills) == (True, 1, 2)
    assert tb.reconcile().ok


def test_a_resting_limit_order_fills_on_a_posted_bar(open_as: OpenAs) -> None:
    tb, feed = open_as(), open_as("admin")
    symbol = _symbol()
    pid = _funded(tb)
    order = tb.place_order(
        pid, symbol=symbol, side="buy", quantity=1, order_type="limit", price=95, tag="dip"
    )
    assert (order.status, order.order_type, order.price, order.tag) == (
        "open",
        "limit",
        D(95),
        "dip",
    )
    assert tb.amend_order(order.id, price="96").price == D(96)
    bar = {"timestamp": BAR_TIME, "open": D(98), "high": D(99), "low": D(95), "close": D(97)}
    with pytest.raises(Forbidden):  # prices drive everyone's orders: admins and feeders only
        tb.post_bars(symbol, [bar])

    result = feed.post_bars(symbol, [bar])
    assert (result.stored, result.duplicates, result.fills) == (1, 0, 1)
    # The bar opens at 98, above the limit, and reaches down to 95: it fills at the limit
    # 96; fee 0.001 x 96 = 0.096.
    filled = tb.get_order(order.id)
    assert (filled.status, filled.average_fill_price, filled.fee) == ("filled", D(96), D("0.096"))
    assert tb.get_portfolio(pid).cash_balance_usd == D("903.904")  # 1000 - 96 - 0.096
    trades = tb.trades(pid)
    assert trades["executed_at"].tolist() == [pd.Timestamp(BAR_TIME)]  # the bar's clock
    assert [(e.event_type, e.to_status) for e in tb.list_order_events(order.id)] == [
        ("created", "pending"),
        ("accepted", "open"),
        ("amended", "open"),
        ("filled", "filled"),
    ]
    # Marked to the bar's close 97: 97 - 96 - 0.096 = 0.904.
    position = tb.list_positions(pid)[0]
    assert (position.current_price, position.unrealized_pnl) == (D(97), D("0.904"))
    again = feed.post_bars(symbol, [bar])
    assert (again.stored, again.duplicates, again.fills) == (0, 1, 0)

    stop = tb.place_order(
        pid, symbol=symbol, side="sell", quantity=1, order_type="stop_loss", trigger_price=80
    )
    twap = tb.place_order(
        pid, symbol=symbol, side="buy", quantity=2, order_type="twap", slices=2, duration_seconds=60
    )
    assert (stop.status, stop.trigger_price, twap.status) == ("open", D(80), "open")
    assert tb.cancel_order(stop.id).status == "cancelled"
    tb.cancel_order(twap.id)
    with pytest.raises(InvalidOrderTransition):
        tb.cancel_order(stop.id)
    cancelled = tb.list_orders(portfolio_id=pid, status="cancelled")
    assert [o.id for o in cancelled] == [twap.id, stop.id]
    assert tb.reconcile(pid).ok


def test_snapshots_make_the_equity_curve(open_as: OpenAs) -> None:
    tb, feed = open_as(), open_as("admin")
    symbol = _symbol()
    pid = _funded(tb)
    _buy_two_sell_one(tb, pid, symbol)  # cash 909.69, one left at 110
    first = tb.take_snapshot(pid)  # 909.69 + 110 = 1019.69
    feed.post_bars(symbol, [_bar("120")])  # marks the position to 120
    second = tb.take_snapshot(pid)  # 909.69 + 120 = 1029.69
    tb.deposit(pid, 500)  # more value, the same P&L
    third = tb.take_snapshot(pid)  # 1409.69 + 120 = 1529.69
    assert (first.total_value_usd, second.total_value_usd, third.total_value_usd) == (
        D("1019.69"),
        D("1029.69"),
        D("1529.69"),
    )

    curve = tb.equity_curve(pid)
    assert isinstance(curve.index, pd.DatetimeIndex)
    assert (curve.index.name, str(curve.index.tz)) == ("timestamp", "UTC")
    assert curve.index.tolist() == [first.timestamp, second.timestamp, third.timestamp]
    assert list(curve.columns) == [
        "total_value",
        "cash",
        "net_deposits",
        "pnl",
        "pnl_24h",
        "pnl_7d",
        "pnl_30d",
    ]
    assert curve["total_value"].tolist() == [D("1019.69"), D("1029.69"), D("1529.69")]
    assert curve["cash"].tolist() == [D("909.69"), D("909.69"), D("1409.69")]
    assert curve["net_deposits"].tolist() == [D(1000), D(1000), D(1500)]
    assert curve["pnl"].tolist() == [D("19.69"), D("29.69"), D("29.69")]
    assert curve["pnl_24h"].tolist() == [None, None, None]  # no snapshot a day old yet
    assert curve.loc[pd.Timestamp(second.timestamp), "pnl"] == D("29.69")
    assert all(curve[c].dtype == object for c in curve.columns)

    portfolio = tb.get_portfolio(pid)
    assert (portfolio.total_value_usd, portfolio.total_pnl) == (D("1529.69"), D("29.69"))
    assert [s.id for s in tb.list_snapshots(pid)] == [first.id, second.id, third.id]


def test_frames_of_an_empty_portfolio_keep_their_columns_and_types(open_as: OpenAs) -> None:
    tb = open_as()
    pid = _funded(tb)
    trades = tb.trades(pid)
    assert trades.empty and list(trades.columns) == list(TradeRead.model_fields)
    assert trades["executed_at"].dtype == pd.DatetimeTZDtype(unit="us", tz="UTC")
    assert trades["price"].dtype == object
    assert trades["id"].dtype == "int64" and trades["order_id"].dtype == "Int64"
    curve = tb.equity_curve(pid)
    assert curve.empty and isinstance(curve.index, pd.DatetimeIndex)
    assert str(curve.index.tz) == "UTC" and "pnl" in curve.columns
    assert tb.positions(pid).empty and tb.orders(portfolio_id=pid).empty


def test_another_users_portfolio_is_not_found(open_as: OpenAs) -> None:
    alice, bob, admin = open_as(), open_as(), open_as("admin")
    symbol = _symbol()
    pid = _funded(alice)
    account_id = alice.get_portfolio(pid).account_id
    order = alice.place_order(pid, symbol=symbol, side="buy", quantity=1, price=10)
    for call in (
        lambda: bob.get_portfolio(pid),
        lambda: bob.deposit(pid, 1),
        lambda: bob.withdraw(pid, 1),
        lambda: bob.trades(pid),
        lambda: bob.positions(pid),
        lambda: bob.equity_curve(pid),
        lambda: bob.take_snapshot(pid),
        lambda: bob.reconcile(pid),
        lambda: bob.place_order(pid, symbol=symbol, side="buy", quantity=1, price=10),
    ):
        with pytest.raises(PortfolioNotFound):
            call()
    for call in (
        lambda: bob.get_order(order.id),
        lambda: bob.cancel_order(order.id),
        lambda: bob.list_order_events(order.id),
    ):
        with pytest.raises(OrderNotFound):
            call()
    with pytest.raises(AccountNotFound):
        bob.get_account(account_id)
    with pytest.raises(AccountNotFound):
        bob.create_portfolio(account_id, "mine now")
    assert (bob.list_accounts(), bob.list_portfolios(), bob.list_orders()) == ([], [], [])
    assert bob.reconcile() == Report()  # nothing of his to check
    assert [p.id for p in alice.list_portfolios()] == [pid]

    assert admin.get_portfolio(pid).user_id == alice.principal.user_id  # admins see all
    assert admin.get_order(order.id).id == order.id
    viewer = open_as("viewer")
    assert viewer.principal.role == "viewer"
    with pytest.raises(Forbidden, match="viewer cannot change anything"):
        viewer.create_account("read only")


def test_bad_input_raises_the_domain_errors(open_as: OpenAs) -> None:
    tb, feed = open_as(), open_as("admin")
    symbol = _symbol()
    pid = _funded(tb, cash="100", fee_rate="0")
    invalid: list[tuple[Callable[[], object], str]] = [
        (lambda: tb.place_order(pid, symbol=symbol, side="buy", quantity=0), "quantity:"),
        (lambda: tb.place_order(pid, symbol=symbol, side="hold", quantity=1), "side:"),
        (lambda: tb.place_order(pid, symbol="", side="buy", quantity=1), "symbol:"),
        (lambda: tb.create_account("xy"), "account_name:"),
        (lambda: tb.create_account("too dear", fee_rate=1), "fee_rate:"),
        (lambda: tb.create_portfolio(1, "x", position_mode="fifo"), "position_mode:"),
        (lambda: tb.deposit(pid, "-5"), "amount:"),
        (lambda: tb.deposit(pid, "ten"), "amount:"),
        (lambda: tb.get_portfolio(0), "portfolio_id:"),
        (lambda: tb.get_order(2**40), "order_id:"),
        (lambda: tb.list_orders(since=datetime(2026, 1, 1)), "since:"),  # naive
        (lambda: tb.list_orders(limit=5000), "limit:"),
        (lambda: feed.post_bars(symbol, [_bar("10") | {"timestamp": datetime(2026, 1, 1)}]), ""),
        (lambda: feed.post_bars(symbol, [_bar("10") | {"high": D(9)}]), "low <= open"),
        (lambda: feed.post_bars(symbol, []), "bars:"),
    ]
    for call, message in invalid:
        with pytest.raises(Unprocessable) as raised:
            call()
        assert raised.value.error_code == "validation_error"
        assert message in raised.value.message, raised.value.message
        assert raised.value.details["errors"]

    with pytest.raises(InsufficientCash):
        tb.withdraw(pid, 101)
    with pytest.raises(UnsupportedOrder, match="needs a price"):
        tb.place_order(pid, symbol=symbol, side="buy", quantity=1, order_type="limit")
    with pytest.raises(UnsupportedOrder, match="slices"):
        tb.place_order(pid, symbol=symbol, side="buy", quantity=1, order_type="twap")
    with pytest.raises(AccountNameTaken):
        tb.create_account("paper one")
    with pytest.raises(OrderRejected) as rejected:
        tb.place_order(pid, symbol=symbol, side="buy", quantity=2, price=60)  # 120 > 100
    assert rejected.value.details["cause"] == "insufficient_cash"
    with pytest.raises(OrderRejected, match="no price"):
        tb.place_order(pid, symbol=symbol, side="buy", quantity=1)  # no hint, no bar
    kept = tb.list_orders(portfolio_id=pid, status="rejected")  # kept, with the reason
    assert len(kept) == 2 and all(o.reject_reason for o in kept)
    assert tb.get_portfolio(pid).cash_balance_usd == D(100)
    assert tb.trades(pid).empty


def test_connect_migrates_and_acts_as_a_known_active_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no URL, connect opens (and creates) the SQLite files of ./tradebase-data."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "CREDENTIALS_DATABASE_URL", "DATA_DIR"):
        monkeypatch.delenv(f"TRADEBASE_{name}", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(UserNotFound):
            tradebase.connect(user="dana")  # migrated first, then refused
        settings = get_settings()
        for database in Database:
            head = migrate.head_revision(database)
            assert migrate.current_revision(database, settings=settings) == head
        assert (tmp_path / "tradebase-data" / "credentials.db").exists()
        engine = create_db_engine(settings.main_url, settings, pooled=False)
        with unit_of_work(factory=sessionmaker(bind=engine, expire_on_commit=False)) as session:
            dana = create_user(session, username="dana")
            create_user(session, username="gone").is_active = False
        engine.dispose()

        with tradebase.connect(user=dana.email) as tb:  # a username or an email
            assert (tb.principal.username, tb.principal.role) == ("dana", "trader")
            assert tb.list_portfolios() == []
            assert "tradebase.db as" in repr(tb)
        assert "closed" in repr(tb)
        with pytest.raises(RuntimeError, match="closed"):
            tb.list_portfolios()
        with pytest.raises(Unauthorized, match="disabled"):
            tradebase.connect(user="gone", migrate=False)
    finally:
        get_settings.cache_clear()


def test_importing_tradebase_does_not_import_pandas() -> None:
    code = "import sys, tradebase.cli; print('pandas' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
    assert tradebase.connect is tradebase.client.connect


def test_the_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "CREDENTIALS_DATABASE_URL", "DATA_DIR"):
        monkeypatch.delenv(f"TRADEBASE_{name}", raising=False)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        migrate.upgrade(Database.main, settings=settings)
        engine = create_db_engine(settings.main_url, settings, pooled=False)
        with unit_of_work(factory=sessionmaker(bind=engine, expire_on_commit=False)) as session:
            create_user(session, username="dana")
        engine.dispose()
        exec(compile(example, "README.md", "exec"), {})
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert out.startswith("909.69\n")
    assert re.search(r"1\s+sell\s+1\s+110\s+0\.11\s+9\.79\n", out)  # the trades frame
    assert re.search(r"\+00:00\s+1019\.69\s+909\.69\s+19\.69\n", out)  # the equity curve
