"""Selling CNC holdings: the open CNC position first, then the holding at its average
price, worked out by hand, on every engine.

The story of most tests: deposit 10000, fee rate 0.1%. Monday 2026-11-23 buy 10 INFY
(NSE) @ 100 CNC: cost 1000, fee 1, cash 8999; Monday's close settles them into a holding
of 10 @ 100 (invested 1000), the settled row keeping the fee 1. The clock of test_settlement:
NSE's trading day ends at 10:00 UTC.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal as D  # noqa: N817 - the hand-worked figures read better

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tests.portfolios.test_settlement import (
    FEEDER,
    MONDAY_CLOSE,
    Clock,
    _holdings,
    _open_position_id,
    _portfolio,
    _position,
    _trade,
    _trader,
    _utc,
    clock,
)
from tradebase.core.auth import Principal
from tradebase.marketdata.schemas import BarIn
from tradebase.marketdata.service import price as price_service
from tradebase.orders.models import Order, Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.errors import CncSellExceedsPosition
from tradebase.portfolios.models import Holding, Portfolio, Position
from tradebase.portfolios.reconcile import reconcile
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.portfolios.settlement import settle
from tradebase.portfolios.settlement import settlement as settlement_service
from tradebase.portfolios.valuation import value

__all__ = ["clock"]  # the fixture, imported for these tests


def _monday(session: Session, clock: Clock) -> tuple[Principal, Portfolio]:
    who = _trader(session)
    portfolio = _portfolio(session, who)  # 10000, fee rate 0.1%
    _trade(session, clock, who, portfolio, _utc(23, 4), "buy", "10", "100")
    settle(session, portfolio_id=portfolio.id, at=MONDAY_CLOSE)
    return who, portfolio


def _holding(session: Session, portfolio: Portfolio) -> tuple[D, D | None, D]:
    [holding] = _holdings(session, portfolio)
    return holding.quantity, holding.invested_value, holding.average_price


def _trade_of(session: Session, order: Order) -> Trade:
    return session.scalars(select(Trade).where(Trade.order_id == order.id)).one()


def _count(session: Session, model: type[object]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def _tuesday(session: Session, clock: Clock) -> tuple[Principal, Portfolio]:
    """Monday's holding of 10; Tuesday sell 4 from it @ 110, then buy 3 @ 105 (open)."""
    who, portfolio = _monday(session, clock)
    _trade(session, clock, who, portfolio, _utc(24, 4), "sell", "4", "110")
    _trade(session, clock, who, portfolio, _utc(24, 4, 30), "buy", "3", "105")
    return who, portfolio


def test_a_cnc_sell_of_settled_shares_sells_the_holding_at_its_average(
    session: Session, clock: Clock
) -> None:
    who, portfolio = _monday(session, clock)
    [holding] = _holdings(session, portfolio)

    sell = _trade(session, clock, who, portfolio, _utc(24, 4), "sell", "4", "110")

    # Nothing open today: all 4 come from the holding, at its average 100 (cost 400).
    # 440 - 400 - fee 0.44 = 39.56, i.e. 39.56 x 100 / 400 = 9.89 percent; no opening
    # fee: Monday's fee 1 stays on the settled row.
    assert sell.status == "filled"
    trade = _trade_of(session, sell)
    assert (trade.quantity, trade.price, trade.fee, trade.pnl, trade.pnl_percent) == (
        D(4),
        D(110),
        D("0.44"),
        D("39.56"),
        D("9.89"),
    )
    assert trade.position_id is None  # no position moved
    assert trade.meta == {
        "holding": {"quantity": "4", "cost": "400", "fee": "0.44", "pnl": "39.56"}
    }
    # The holding keeps 6 at the same average; still marked at 100 (Monday's last fill).
    assert _holding(session, portfolio) == (D(6), D(600), D(100))
    assert (holding.current_price, holding.current_value, holding.pnl) == (D(100), D(600), D(0))
    # Cash as for any sell: 8999 + 440 - 0.44.
    assert portfolio.cash_balance_usd == D("9438.56")
    assert value(session, portfolio).total == D("10038.56")  # 9438.56 + 6 x 100
    assert (
        session.scalar(
            select(func.count())
            .select_from(Position)
            .where(Position.portfolio_id == portfolio.id, Position.status == "open")
        )
        == 0
    )


def test_a_cnc_sell_beyond_the_position_and_the_holding_is_refused(
    session: Session, clock: Clock
) -> None:
    who, portfolio = _tuesday(session, clock)
    # 8999 + 439.56 - 315 - 0.315
    assert portfolio.cash_balance_usd == D("9123.245")
    before = (_count(session, Order), _count(session, Trade))

    with pytest.raises(CncSellExceedsPosition) as refused:
        _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "12", "112")

    assert refused.value.status_code == 409
    assert refused.value.error_code == "cnc_sell_exceeds_position"
    assert refused.value.message == (
        "a CNC sell of 12 INFY is more than the open CNC position (3) and the holding (6)"
        " together: CNC sells cannot go short"
    )
    assert refused.value.details == {
        "product": "CNC",
        "symbol": "INFY",
        "requested": "12",
        "open": "3",
        "holding": "6",
    }
    # Nothing written: no order, no trade, the cash, the position and the holding as they were.
    assert (_count(session, Order), _count(session, Trade)) == before
    assert portfolio.cash_balance_usd == D("9123.245")
    assert _position(session, _open_position_id(session, portfolio)).quantity == D(3)
    assert _holding(session, portfolio) == (D(6), D(600), D(100))
    # A resting order for as much is refused when it is placed, too.
    with pytest.raises(CncSellExceedsPosition):
        order_service.place(
            session,
            who,
            portfolio_id=portfolio.id,
            symbol="INFY",
            exchange="NSE",
            side="sell",
            quantity=D(10),
            order_type="limit",
            price=D(120),
            product="CNC",
        )


def test_a_cnc_sell_takes_the_open_position_first_then_the_holding(
    session: Session, clock: Clock
) -> None:
    who, portfolio = _tuesday(session, clock)
    position_id = _open_position_id(session, portfolio)

    sell = _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "8", "112")

    # 8 @ 112 = 896, fee 0.896, split 3:5 by quantity: 0.336 and 0.56.
    # Position (3 bought today @ 105, fee 0.315): 336 - 315 - 0.336 - 0.315 = 20.349.
    position = _position(session, position_id)
    assert (position.status, position.quantity, position.realized_pnl, position.exit_price) == (
        "closed",
        D(0),
        D("20.349"),
        D(112),
    )
    # Holding (5 @ 100 of the 6): 560 - 500 - 0.56 = 59.44.
    trade = _trade_of(session, sell)
    assert trade.meta == {
        "holding": {"quantity": "5", "cost": "500", "fee": "0.56", "pnl": "59.44"}
    }
    # The trade: 20.349 + 59.44 = 79.789 on a cost of 315 + 500 = 815,
    # 7978.9 / 815 = 9.790061349693251533742... percent.
    assert (trade.position_id, trade.pnl, trade.pnl_percent) == (
        position_id,
        D("79.789"),
        D("9.790061349693251534"),
    )
    assert _holding(session, portfolio) == (D(1), D(100), D(100))
    assert portfolio.cash_balance_usd == D("10018.349")  # 9123.245 + 896 - 0.896


def test_a_holding_sold_out_is_deleted_and_the_next_settlement_starts_a_new_one(
    session: Session, clock: Clock
) -> None:
    who, portfolio = _monday(session, clock)
    [first] = _holdings(session, portfolio)

    sell = _trade(session, clock, who, portfolio, _utc(24, 4), "sell", "10", "90")

    # 900 - 1000 - 0.9 = -100.9, i.e. -10.09 percent of 1000.
    trade = _trade_of(session, sell)
    assert (trade.pnl, trade.pnl_percent) == (D("-100.9"), D("-10.09"))
    assert _holdings(session, portfolio) == []
    assert list(settlement_service.holdings(session, who, portfolio.id)) == []
    assert session.get(Holding, first.id) is None
    assert portfolio.cash_balance_usd == D("9898.1")  # 8999 + 900 - 0.9
    # Nothing left to sell: another sell is refused.
    with pytest.raises(CncSellExceedsPosition, match=r"\(0\) and the holding \(0\)"):
        _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "1", "90")
    # Wednesday's buy settles into a new holding row (SQLite may reuse the id).
    _trade(session, clock, who, portfolio, _utc(25, 4), "buy", "2", "95")
    settle(session, portfolio_id=portfolio.id, at=_utc(25, 10))
    [second] = _holdings(session, portfolio)
    assert second is not first
    assert (second.quantity, second.invested_value, second.average_price) == (
        D(2),
        D(190),
        D(95),
    )
    report = reconcile(session, portfolio.id)
    assert report.ok, report.differences
    assert (report.fills, report.settlements, report.holding_sales) == (3, 2, 1)


def _bar(when: datetime, o: str, h: str, low: str, c: str) -> list[BarIn]:
    return [BarIn(timestamp=when, open=D(o), high=D(h), low=D(low), close=D(c), volume=D(100))]


def test_a_resting_cnc_sell_fills_from_the_position_and_the_holding(
    session: Session, clock: Clock
) -> None:
    who, portfolio = _monday(session, clock)
    _trade(session, clock, who, portfolio, _utc(24, 4, 30), "buy", "3", "105")
    position_id = _open_position_id(session, portfolio)
    # 12 is more than the 3 open, but the 10 held cover the rest.
    limit = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="INFY",
        exchange="NSE",
        side="sell",
        quantity=D(12),
        order_type="limit",
        price=D(112),
        product="CNC",
    )
    assert limit.status == "open"

    price_service.ingest(
        session,
        FEEDER,
        symbol="INFY",
        exchange="NSE",
        timeframe="1m",
        bars=_bar(_utc(24, 5, 30), "111", "113", "110", "112.5"),
    )

    session.refresh(limit)
    assert (limit.status, limit.filled_quantity, limit.average_fill_price) == (
        "filled",
        D(12),
        D(112),
    )
    # 12 @ 112 = 1344, fee 1.344, split 3:9: 0.336 and 1.008.
    # Position: 336 - 315 - 0.336 - 0.315 = 20.349; holding: 1008 - 900 - 1.008 = 106.992.
    trade = _trade_of(session, limit)
    assert (trade.position_id, trade.pnl) == (position_id, D("127.341"))
    assert trade.meta["holding"] == {
        "quantity": "9",
        "cost": "900",
        "fee": "1.008",
        "pnl": "106.992",
    }
    assert _position(session, position_id).realized_pnl == D("20.349")
    # 1 left, marked at the bar's close: worth 112.5, up 12.5.
    [holding] = _holdings(session, portfolio)
    assert (holding.quantity, holding.invested_value, holding.current_value, holding.pnl) == (
        D(1),
        D(100),
        D("112.5"),
        D("12.5"),
    )
    # 8999 - 315.315 + 1344 - 1.344
    assert portfolio.cash_balance_usd == D("10026.341")
    assert reconcile(session, portfolio.id).ok


def test_a_twap_cnc_sell_draws_on_the_holding_child_by_child(
    session: Session, clock: Clock
) -> None:
    who, portfolio = _monday(session, clock)
    _trade(session, clock, who, portfolio, _utc(24, 4, 30), "buy", "3", "105")
    position_id = _open_position_id(session, portfolio)
    parent = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="INFY",
        exchange="NSE",
        side="sell",
        quantity=D(8),
        order_type="twap",
        slices=2,
        duration_seconds=3600,
        product="CNC",
    )
    # Two bars half an hour apart release the two children of 4 at their closes.
    for when, close in ((_utc(24, 5), "110"), (_utc(24, 5, 30), "111")):
        price_service.ingest(
            session,
            FEEDER,
            symbol="INFY",
            exchange="NSE",
            timeframe="1m",
            bars=_bar(when, close, close, close, close),
        )

    session.refresh(parent)
    assert (parent.status, parent.filled_quantity) == ("filled", D(8))
    trades = session.scalars(
        select(Trade)
        .where(Trade.portfolio_id == portfolio.id, Trade.side == "sell")
        .order_by(Trade.id)
    ).all()
    # Child 1: 4 @ 110, fee 0.44 split 3:1 (0.33, 0.11): the position's 3,
    # 330 - 315 - 0.33 - 0.315 = 14.355, and 1 of the holding, 110 - 100 - 0.11 = 9.89.
    # Child 2: 4 @ 111, fee 0.444, all from the holding: 444 - 400 - 0.444 = 43.556.
    assert [(t.position_id, t.pnl, t.meta) for t in trades] == [
        (
            position_id,
            D("24.245"),
            {"holding": {"quantity": "1", "cost": "100", "fee": "0.11", "pnl": "9.89"}},
        ),
        (
            None,
            D("43.556"),
            {"holding": {"quantity": "4", "cost": "400", "fee": "0.444", "pnl": "43.556"}},
        ),
    ]
    assert _position(session, position_id).realized_pnl == D("14.355")
    assert _holding(session, portfolio) == (D(5), D(500), D(100))
    assert reconcile(session, portfolio.id).ok


def test_a_hedging_portfolio_sells_the_holding_only(session: Session, clock: Clock) -> None:
    who = _trader(session)
    account = account_service.create(session, who, account_name="hedged delivery")  # no fee
    portfolio = portfolio_service.create(
        session, who, account_id=account.id, name="hedged", position_mode="hedging"
    )
    portfolio_service.deposit(session, who, portfolio.id, D(1000))
    _trade(session, clock, who, portfolio, _utc(23, 4), "buy", "2", "100")
    # An order cannot reduce a hedging position: while today's long is open, no CNC sell.
    with pytest.raises(CncSellExceedsPosition, match="sells from the holding only, and not while"):
        _trade(session, clock, who, portfolio, _utc(23, 5), "sell", "1", "100")
    settle(session, portfolio_id=portfolio.id, at=MONDAY_CLOSE)

    sell = _trade(session, clock, who, portfolio, _utc(24, 4), "sell", "1", "110")

    trade = _trade_of(session, sell)
    assert (trade.position_id, trade.pnl) == (None, D(10))  # 110 - 100
    assert _holding(session, portfolio) == (D(1), D(100), D(100))
    with pytest.raises(CncSellExceedsPosition, match="which holds 1: CNC sells cannot go short"):
        _trade(session, clock, who, portfolio, _utc(24, 4), "sell", "2", "110")
    # A working CNC sell does not hold back the settlement of a hedging long: it sells
    # the holding only.
    limit = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="INFY",
        exchange="NSE",
        side="sell",
        quantity=D(1),
        order_type="limit",
        price=D(150),
        product="CNC",
    )
    _trade(session, clock, who, portfolio, _utc(24, 5), "buy", "1", "104")
    report = settle(session, portfolio_id=portfolio.id, at=_utc(24, 10))
    assert ([s.quantity for s in report.settled], report.held) == ([D(1)], 0)
    assert _holding(session, portfolio) == (D(2), D(204), D(102))
    assert limit.status == "open"
    assert portfolio.cash_balance_usd == D(806)  # 1000 - 200 + 110 - 104
    report = reconcile(session, portfolio.id)
    assert report.ok, report.differences
    assert (report.settlements, report.holding_sales) == (2, 1)


def test_reconcile_replays_the_holding_sales_and_names_a_hand_edit(
    session: Session, clock: Clock
) -> None:
    who, portfolio = _tuesday(session, clock)  # sold 4 of the 10 held, 3 open today
    with pytest.raises(CncSellExceedsPosition):
        _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "12", "112")
    sell = _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "8", "112")
    [holding] = _holdings(session, portfolio)
    trade = _trade_of(session, sell)

    report = reconcile(session, portfolio.id)

    assert report.ok, report.differences
    # buy 10, sell 4, buy 3, sell 8 (the refused sell wrote nothing); one settlement
    assert (report.fills, report.settlements, report.holding_sales) == (4, 1, 2)
    for table, change, undo, named in (
        (
            "holdings",
            "quantity = quantity + 1",
            "quantity = quantity - 1",
            f"holdings row {holding.id} (INFY): quantity 2 stored, 1 from the settlements"
            " and sales",
        ),
        (
            "holdings",
            "invested_value = invested_value - 10",
            "invested_value = invested_value + 10",
            f"holdings row {holding.id} (INFY): invested_value 90 stored, 100 from the"
            " settlements and sales",
        ),
        (
            "trades",
            "pnl = pnl + 1",
            "pnl = pnl - 1",
            f"trades row {trade.id} (INFY sell): pnl 80.789 stored, 79.789 from the replay",
        ),
    ):
        row_id = holding.id if table == "holdings" else trade.id
        session.execute(text(f"UPDATE {table} SET {change} WHERE id = :id"), {"id": row_id})
        session.expire_all()
        assert reconcile(session, portfolio.id).differences == [named]
        session.execute(text(f"UPDATE {table} SET {undo} WHERE id = :id"), {"id": row_id})
        session.expire_all()
    assert reconcile(session, portfolio.id).ok
    # A sold-out holding put back by hand is named too.
    _trade(session, clock, who, portfolio, _utc(24, 6), "sell", "1", "100")
    assert _holdings(session, portfolio) == []
    assert reconcile(session, portfolio.id).ok
    session.add(
        Holding(
            portfolio_id=portfolio.id,
            symbol="INFY",
            exchange="NSE",
            quantity=D(1),
            average_price=D(100),
            invested_value=D(100),
        )
    )
    session.flush()
    [restored] = _holdings(session, portfolio)
    assert reconcile(session, portfolio.id).differences == [
        f"holdings row {restored.id} (INFY): holds 1, but the sales sold it out"
    ]
