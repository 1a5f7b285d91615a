"""Market orders on the paper broker, worked out by hand, on every engine."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817 - the hand-worked figures read better

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import ScratchFactory
from tests.factories import create_user
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.marketdata.models import PriceData
from tradebase.orders.errors import OrderRejected
from tradebase.orders.models import Order, OrderEvent, Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import CashMovement, Portfolio, Position
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service


def _trader(session: Session) -> Principal:
    user = create_user(session)
    return Principal(user_id=user.id, username=user.username, role="trader")


def _funded_portfolio(session: Session, who: Principal, cash: str = "10000") -> Portfolio:
    account = account_service.create(
        session, who, account_name="paper one", fee_rate=D("0.001"), slippage_bps=D(10)
    )
    portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
    portfolio_service.deposit(session, who, portfolio.id, D(cash))
    return portfolio


def test_a_buy_then_a_partial_sell(session: Session) -> None:
    who = _trader(session)
    portfolio = _funded_portfolio(session, who)
    buy = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D(10),
        price=D(100),
    )
    # Hint 100 moved 10 bps against the buyer: 100.1; value 1001; fee 0.1% = 1.001.
    assert (buy.status, buy.filled_quantity, buy.average_fill_price, buy.fee) == (
        "filled",
        D(10),
        D("100.1"),
        D("1.001"),
    )
    assert portfolio.cash_balance_usd == D("8997.999")  # 10000 - 1001 - 1.001
    position = session.scalars(select(Position).where(Position.portfolio_id == portfolio.id)).one()
    assert (
        position.direction,
        position.quantity,
        position.cost_basis,
        position.entry_price,
        position.fees_paid,
    ) == ("long", D(10), D(1001), D("100.1"), D("1.001"))
    events = session.scalars(
        select(OrderEvent.to_status).where(OrderEvent.order_id == buy.id).order_by(OrderEvent.id)
    ).all()
    assert events == ["pending", "open", "filled"]

    # No hint: the latest close of ACME (110) moved 10 bps against the seller: 109.89.
    session.add(
        PriceData(
            symbol="ACME",
            exchange="paper",
            timeframe="1m",
            timestamp=datetime(2026, 11, 22, 9, 30, tzinfo=UTC),
            open=D(108),
            high=D(111),
            low=D(107),
            close=D(110),
            volume=D(500),
        )
    )
    session.flush()
    sell = order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="sell", quantity=D(4)
    )
    assert sell.average_fill_price == D("109.89")
    trade = session.scalars(select(Trade).where(Trade.order_id == sell.id)).one()
    # value 439.56, fee 0.43956; releases 4/10 of cost (400.4) and of fees (0.4004):
    # 439.56 - 400.4 - 0.43956 - 0.4004 = 38.32004
    assert (trade.value, trade.fee, trade.pnl) == (D("439.56"), D("0.43956"), D("38.32004"))
    assert portfolio.cash_balance_usd == D("9437.11944")  # 8997.999 + 439.56 - 0.43956
    session.refresh(position)
    assert (position.quantity, position.cost_basis, position.realized_pnl) == (
        D(6),
        D("600.6"),
        D("38.32004"),
    )
    ledger = session.scalars(
        select(CashMovement.amount)
        .where(CashMovement.portfolio_id == portfolio.id)
        .order_by(CashMovement.id)
    ).all()
    assert ledger == [D(10000), D("-1002.001"), D("439.12044")]


@pytest.mark.parametrize(
    ("symbol", "quantity", "hint", "cause"),
    [("NOPRICE", "1", None, "no_price"), ("ACME", "1000", "100", "insufficient_cash")],
)
def test_a_refused_order_moves_nothing(
    session: Session, symbol: str, quantity: str, hint: str | None, cause: str
) -> None:
    who = _trader(session)
    portfolio = _funded_portfolio(session, who)
    with pytest.raises(OrderRejected) as info:
        order_service.place(
            session,
            who,
            portfolio_id=portfolio.id,
            symbol=symbol,
            side="buy",
            quantity=D(quantity),
            price=D(hint) if hint else None,
        )
    assert info.value.details["cause"] == cause
    order = session.get(Order, info.value.details["order_id"])
    assert order is not None and order.status == "rejected" and order.reject_reason
    assert (
        session.scalar(
            select(func.count()).select_from(Trade).where(Trade.portfolio_id == portfolio.id)
        )
        == 0
    )
    assert (
        session.scalar(
            select(func.count()).select_from(Position).where(Position.portfolio_id == portfolio.id)
        )
        == 0
    )
    assert portfolio.cash_balance_usd == D(10000)
    assert (
        session.scalar(
            select(func.count())
            .select_from(CashMovement)
            .where(CashMovement.portfolio_id == portfolio.id)
        )
        == 1
    )  # the deposit


def test_a_client_order_id_places_one_order(session: Session) -> None:
    who = _trader(session)
    portfolio = _funded_portfolio(session, who)
    first = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D(1),
        price=D(50),
        client_order_id="sig-7-acct-1-leg-0",
    )
    again = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D(1),
        price=D(50),
        client_order_id="sig-7-acct-1-leg-0",
    )
    assert again.id == first.id
    assert (
        session.scalar(
            select(func.count()).select_from(Trade).where(Trade.portfolio_id == portfolio.id)
        )
        == 1
    )


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_client_order_id_inserted_by_another_process_after_the_check_returns_that_order(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window between the look-up under the portfolio lock and the INSERT: the unique
    # index refuses the second row, the savepoint takes only that INSERT back, and the
    # transaction goes on. (SQLite has no such window: the writer holds the write lock.)
    who = _trader(session)
    portfolio = _funded_portfolio(session, who)
    first = order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="buy",
        quantity=D(1), price=D(50), client_order_id="race-1",
    )  # fmt: skip
    real = order_service._by_client_id
    misses = iter([None, None])  # both look-ups before the INSERT miss it
    monkeypatch.setattr(order_service, "_by_client_id", lambda *a: next(misses, None) or real(*a))
    again = order_service.place(
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="buy",
        quantity=D(1), price=D(50), client_order_id="race-1",
    )  # fmt: skip
    assert again.id == first.id
    monkeypatch.undo()
    other = order_service.place(  # the transaction is still usable
        session, who, portfolio_id=portfolio.id, symbol="ACME", side="buy",
        quantity=D(1), price=D(50), client_order_id="race-2",
    )  # fmt: skip
    trades = session.scalars(
        select(Trade.order_id).where(Trade.portfolio_id == portfolio.id).order_by(Trade.id)
    ).all()
    assert trades == [first.id, other.id]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_client_order_id_replayed_from_8_threads_fills_once(
    scratch_factory: ScratchFactory, backend: str
) -> None:
    scratch = scratch_factory.new(backend, "replay")
    settings = scratch.settings().model_copy(update={"pool_size": 8})
    for database in Database:
        migrate.upgrade(database, settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    with unit_of_work(factory=factory) as session:
        who = _trader(session)
        portfolio_id = _funded_portfolio(session, who).id
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def replay() -> None:
        try:
            start.wait()
            for _ in range(50):
                with unit_of_work(factory=factory) as session:
                    order_service.place(
                        session,
                        who,
                        portfolio_id=portfolio_id,
                        symbol="ACME",
                        side="buy",
                        quantity=D(1),
                        price=D(50),
                        client_order_id="once",
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with unit_of_work(factory=factory, write=False) as session:
        orders = session.scalar(select(func.count()).select_from(Order))
        trades = session.scalar(select(func.count()).select_from(Trade))
        cash = session.scalar(
            select(Portfolio.cash_balance_usd).where(Portfolio.id == portfolio_id)
        )
    engines.dispose()
    assert errors == []
    assert (orders, trades) == (1, 1)
    assert cash == D("9949.89995")  # 10000 - 50.05 - 0.05005


REPLAY_SCRIPT = """
import sys, threading
from decimal import Decimal
from tradebase.config import Settings
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.orders.service import order as order_service

url, user_id, username, portfolio_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
engines = Engines(Settings(database_url=url, pool_size=4))
factory = engines.session_factory(Database.main)
who = Principal(user_id=user_id, username=username, role="trader")
errors = []

def replay():
    try:
        for _ in range(50):
            with unit_of_work(factory=factory) as session:
                order_service.place(session, who, portfolio_id=portfolio_id, symbol="ACME",
                                    side="buy", quantity=Decimal(1), price=Decimal(50),
                                    client_order_id="across-processes")
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=replay) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("errors:", errors)
sys.exit(1 if errors else 0)
"""


def test_a_client_order_id_replayed_from_two_processes_fills_once(
    scratch_factory: ScratchFactory,
) -> None:
    import subprocess
    import sys

    scratch = scratch_factory.new("postgresql", "procs")
    settings = scratch.settings()
    for database in Database:
        migrate.upgrade(database, settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    with unit_of_work(factory=factory) as session:
        who = _trader(session)
        portfolio_id = _funded_portfolio(session, who).id
    url = scratch.main_url.render_as_string(hide_password=False)
    args = [
        sys.executable,
        "-c",
        REPLAY_SCRIPT,
        url,
        str(who.user_id),
        who.username,
        str(portfolio_id),
    ]
    processes = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    with unit_of_work(factory=factory, write=False) as session:
        orders = session.scalar(select(func.count()).select_from(Order))
        trades = session.scalar(select(func.count()).select_from(Trade))
    engines.dispose()
    assert (orders, trades) == (1, 1)


def test_a_reversal_through_zero_closes_one_row_and_opens_another(session: Session) -> None:
    who = _trader(session)
    account = account_service.create(session, who, account_name="reversals", fee_rate=D("0.001"))
    portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
    portfolio_service.deposit(session, who, portfolio.id, D(10000))
    order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D(10),
        price=D(100),
    )  # cost 1000, fee 1
    sell = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="sell",
        quantity=D(15),
        price=D(110),
    )
    # value 1650, fee 1.65 split 10:5 -> 1.1 closes, 0.55 opens the short.
    # close: 1100 - 1000 - 1.1 - 1 = 97.9
    trade = session.scalars(select(Trade).where(Trade.order_id == sell.id)).one()
    assert (trade.fee, trade.pnl) == (D("1.65"), D("97.9"))
    rows = session.scalars(
        select(Position).where(Position.portfolio_id == portfolio.id).order_by(Position.id)
    ).all()
    for row in rows:
        session.refresh(row)
    closed, short = rows
    assert (
        closed.direction,
        closed.status,
        closed.quantity,
        closed.realized_pnl,
        closed.exit_price,
    ) == ("long", "closed", D(0), D("97.9"), D(110))
    assert (short.direction, short.status, short.quantity, short.cost_basis, short.fees_paid) == (
        "short",
        "open",
        D(5),
        D(550),
        D("0.55"),
    )
    assert trade.position_id == short.id
    session.refresh(portfolio)
    assert portfolio.cash_balance_usd == D("10647.35")  # 10000 - 1001 + 1650 - 1.65
