"""CNC settlement into holdings, worked out by hand, on every engine.

The clock: NSE trades 09:15-15:30 in Mumbai (UTC+5:30), so on Monday 2026-11-23 it opens
at 03:45 UTC and its trading day ends at 10:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D  # noqa: N817 - the hand-worked figures read better

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

import tradebase.orders.service as orders_module
from tests.factories import create_user
from tradebase.audit.models import AuditLog
from tradebase.core.auth import Principal
from tradebase.marketdata.models import PriceData
from tradebase.marketdata.schemas import BarIn
from tradebase.marketdata.service import price as price_service
from tradebase.orders.models import Order, Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.errors import (
    CncSellExceedsPosition,
    PortfolioNotFound,
    SettlementInFuture,
)
from tradebase.portfolios.models import Holding, Portfolio, Position
from tradebase.portfolios.reconcile import reconcile
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.portfolios.settlement import settle
from tradebase.portfolios.valuation import value

FEEDER = Principal(user_id=0, username="feeder", role="admin", via="cli")
MONDAY_CLOSE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # 15:30 in Mumbai


def _utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


class Clock:
    """Moves the order service's clock: market orders fill (and are stamped) at its time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = _utc(23, 4)
        monkeypatch.setattr(orders_module, "utc_now", lambda: self.now)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    yield Clock(monkeypatch)


def _trader(session: Session) -> Principal:
    user = create_user(session)
    return Principal(user_id=user.id, username=user.username, role="trader")


def _portfolio(session: Session, who: Principal, *, fee_rate: str = "0.001") -> Portfolio:
    account = account_service.create(
        session, who, account_name=f"delivery {who.user_id}", fee_rate=D(fee_rate)
    )
    portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
    portfolio_service.deposit(session, who, portfolio.id, D(10000))
    return portfolio


def _trade(
    session: Session,
    clock: Clock,
    who: Principal,
    portfolio: Portfolio,
    when: datetime,
    side: str,
    quantity: str,
    price: str,
    *,
    product: str = "CNC",
    symbol: str = "INFY",
) -> Order:
    clock.now = when
    return order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol=symbol,
        exchange="NSE",
        side=side,
        quantity=D(quantity),
        price=D(price),
        product=product,
    )


def _position(session: Session, position_id: int) -> Position:
    row = session.get(Position, position_id)
    assert row is not None
    session.refresh(row)
    return row


def _holdings(session: Session, portfolio: Portfolio) -> list[Holding]:
    return list(session.scalars(select(Holding).where(Holding.portfolio_id == portfolio.id)).all())


def _settled_audits(session: Session, position_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "position.settled", AuditLog.resource_id == str(position_id))
        )
        or 0
    )


def _open_position_id(session: Session, portfolio: Portfolio, product: str = "CNC") -> int:
    return session.scalars(
        select(Position.id).where(
            Position.portfolio_id == portfolio.id,
            Position.product == product,
            Position.status == "open",
        )
    ).one()


def test_two_cnc_buys_settle_after_the_close_at_their_average_cost(
    session: Session, clock: Clock
) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who)
    _trade(session, clock, who, portfolio, _utc(23, 4), "buy", "10", "100")  # 09:30 IST
    _trade(session, clock, who, portfolio, _utc(23, 5, 30), "buy", "5", "106")  # 11:00 IST
    position_id = _open_position_id(session, portfolio)
    # Cost 10 x 100 + 5 x 106 = 1530 for 15: 102 each; fees 1 + 0.53; cash 10000 - 1531.53
    assert portfolio.cash_balance_usd == D("8468.47")
    session.add(
        PriceData(
            symbol="INFY",
            exchange="NSE",
            timeframe="1m",
            timestamp=_utc(23, 9, 59),
            open=D(104),
            high=D(104),
            low=D(104),
            close=D(104),
            volume=D(100),
        )
    )
    session.flush()

    report = settle(session, portfolio_id=portfolio.id, at=MONDAY_CLOSE)

    assert [(s.position_id, s.quantity, s.cost) for s in report.settled] == [
        (position_id, D(15), D(1530))
    ]
    [holding] = _holdings(session, portfolio)
    assert (
        holding.symbol,
        holding.exchange,
        holding.quantity,
        holding.average_price,
        holding.invested_value,
    ) == ("INFY", "NSE", D(15), D(102), D(1530))
    # At the last close, 104: worth 1560, up 30, i.e. 30 x 100 / 1530 percent.
    assert (
        holding.current_price,
        holding.current_value,
        holding.pnl,
        holding.pnl_percent,
    ) == (D(104), D(1560), D(30), D("1.960784313725490196"))
    position = _position(session, position_id)
    # Closed as settled: it keeps what it moved; no realized P&L, no cash moved.
    assert (
        position.status,
        position.closed_at,
        position.settled,
        position.quantity,
        position.cost_basis,
        position.fees_paid,
        position.realized_pnl,
        position.unrealized_pnl,
    ) == ("closed", MONDAY_CLOSE, True, D(15), D(1530), D("1.53"), D(0), D(0))
    assert portfolio.cash_balance_usd == D("8468.47")
    assert value(session, portfolio).total == D("10028.47")  # 8468.47 + 15 x 104
    assert _settled_audits(session, position_id) == 1
    # Tuesday's bars move the holding: at 110, worth 1650, up 120; the snapshot counts it.
    price_service.ingest(
        session,
        FEEDER,
        symbol="INFY",
        exchange="NSE",
        timeframe="1m",
        bars=[
            BarIn(
                timestamp=_utc(24, 4),
                open=D(110),
                high=D(110),
                low=D(110),
                close=D(110),
                volume=D(1),
            )
        ],
    )
    assert (holding.current_price, holding.current_value, holding.pnl) == (
        D(110),
        D(1650),
        D(120),
    )
    snapshot = portfolio_service.take_snapshot(session, who, portfolio.id, at=_utc(24, 10))
    assert snapshot.total_value_usd == D("10118.47")  # 8468.47 + 1650
    assert snapshot.holdings["INFY:NSE:holding"] == {
        "quantity": "15",
        "price": "110",
        "value": "1650",
    }


def test_settling_twice_moves_nothing(session: Session, clock: Clock) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who, fee_rate="0")
    _trade(session, clock, who, portfolio, _utc(23, 4), "buy", "10", "100")
    _trade(session, clock, who, portfolio, _utc(23, 5), "buy", "30", "104")
    position_id = _open_position_id(session, portfolio)

    first = settle(session, portfolio_id=portfolio.id, at=_utc(23, 12))
    second = settle(session, portfolio_id=portfolio.id, at=_utc(23, 12))
    third = settle(session, at=_utc(24, 12))

    assert [s.quantity for s in first.settled] == [D(40)]
    assert second.settled == [] and second.portfolios == 0
    assert all(s.portfolio_id != portfolio.id for s in third.settled)
    [holding] = _holdings(session, portfolio)
    # (10 x 100 + 30 x 104) / 40 = 4120 / 40 = 103
    assert (holding.quantity, holding.average_price, holding.invested_value) == (
        D(40),
        D(103),
        D(4120),
    )
    assert _settled_audits(session, position_id) == 1


def test_a_buy_is_not_settled_before_the_close(session: Session, clock: Clock) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who)
    _trade(session, clock, who, portfolio, _utc(23, 5), "buy", "10", "100")
    position_id = _open_position_id(session, portfolio)

    early = settle(
        session, portfolio_id=portfolio.id, at=datetime(2026, 11, 23, 9, 59, 59, tzinfo=UTC)
    )

    assert (early.settled, early.waiting) == ([], 1)
    assert _position(session, position_id).status == "open"
    assert _holdings(session, portfolio) == []
    on_time = settle(session, portfolio_id=portfolio.id, at=MONDAY_CLOSE)
    assert [s.position_id for s in on_time.settled] == [position_id]


def test_a_fill_after_the_close_settles_with_the_next_trading_day(session: Session) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who, fee_rate="0")
    order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="TCS",
        exchange="NSE",
        side="buy",
        quantity=D(2),
        order_type="limit",
        price=D(50),
        product="CNC",
    )
    # A bar stamped Friday 2026-11-27 11:00 UTC (16:30 in Mumbai, after the close) fills
    # it: that fill belongs to Monday 2026-11-30, whose day ends at 10:00 UTC.
    price_service.ingest(
        session,
        FEEDER,
        symbol="TCS",
        exchange="NSE",
        timeframe="1m",
        bars=[
            BarIn(
                timestamp=_utc(27, 11),
                open=D("50.5"),
                high=D(51),
                low=D(48),
                close=D(49),
                volume=D(10),
            )
        ],
    )
    assert settle(session, portfolio_id=portfolio.id, at=_utc(30, 9, 59)).waiting == 1
    report = settle(session, portfolio_id=portfolio.id, at=_utc(30, 10))
    assert [(s.symbol, s.quantity, s.cost) for s in report.settled] == [("TCS", D(2), D(100))]
    [holding] = _holdings(session, portfolio)
    assert (holding.average_price, holding.current_price, holding.pnl) == (D(50), D(49), D(-2))


def test_mis_and_nrml_positions_never_settle(session: Session, clock: Clock) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who)
    _trade(session, clock, who, portfolio, _utc(23, 5), "buy", "3", "100", product="MIS")
    _trade(session, clock, who, portfolio, _utc(23, 5), "buy", "4", "100", product="NRML")

    report = settle(session, portfolio_id=portfolio.id, at=_utc(27, 12))

    assert (report.settled, report.waiting, report.portfolios) == ([], 0, 0)
    assert _holdings(session, portfolio) == []
    assert _open_position_id(session, portfolio, "MIS") and _open_position_id(
        session, portfolio, "NRML"
    )


def test_reconcile_passes_after_settlement_and_names_a_hand_edit(
    session: Session, clock: Clock
) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who)
    _trade(session, clock, who, portfolio, _utc(23, 4), "buy", "10", "100")
    _trade(session, clock, who, portfolio, _utc(23, 5, 30), "buy", "5", "106")
    _trade(session, clock, who, portfolio, _utc(23, 6), "buy", "1", "100", product="NRML")
    settle(session, portfolio_id=portfolio.id, at=MONDAY_CLOSE)
    # Tuesday: buy 4 at 110, sell 2 at 120. The sell reduces Tuesday's position only, at
    # its own average (110): 240 - fee 0.24 - cost 220 - half the buy fee 0.22 = 19.54.
    _trade(session, clock, who, portfolio, _utc(24, 4), "buy", "4", "110")
    sell = _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "2", "120")
    assert session.scalars(select(Trade.pnl).where(Trade.order_id == sell.id)).one() == D("19.54")
    settle(session, portfolio_id=portfolio.id, at=_utc(24, 10))
    [holding] = _holdings(session, portfolio)
    # 15 for 1530 and 2 for 220: 17 for 1750, 102.94117647... each
    assert (holding.quantity, holding.invested_value, holding.average_price) == (
        D(17),
        D(1750),
        D("102.941176470588235294"),
    )

    report = reconcile(session, portfolio.id)

    assert report.ok, report.differences
    assert (report.fills, report.settlements) == (5, 2)
    session.execute(
        text("UPDATE holdings SET quantity = quantity + 1 WHERE id = :id"), {"id": holding.id}
    )
    session.expire_all()
    assert reconcile(session, portfolio.id).differences == [
        f"holdings row {holding.id} (INFY): quantity 18 stored, 17 from the settlements and sales"
    ]


def test_a_cnc_sell_beyond_the_open_position_and_the_holding_is_refused(
    session: Session, clock: Clock
) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who, fee_rate="0")
    _trade(session, clock, who, portfolio, _utc(23, 4), "buy", "10", "100")
    settle(session, portfolio_id=portfolio.id, at=MONDAY_CLOSE)
    _trade(session, clock, who, portfolio, _utc(24, 4), "buy", "4", "101")
    orders_before = session.scalar(select(func.count()).select_from(Order))

    with pytest.raises(CncSellExceedsPosition) as refused:
        _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "15", "102")

    assert refused.value.status_code == 409
    assert refused.value.message == (
        "a CNC sell of 15 INFY is more than the open CNC position (4) and the holding (10)"
        " together: CNC sells cannot go short"
    )
    assert refused.value.details == {
        "product": "CNC",
        "symbol": "INFY",
        "requested": "15",
        "open": "4",
        "holding": "10",
    }
    assert session.scalar(select(func.count()).select_from(Order)) == orders_before
    assert portfolio.cash_balance_usd == D(8596)  # 10000 - 1000 - 404: nothing moved
    # Within the position it sells as before; an NRML sell is not concerned.
    _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "4", "102")
    _trade(session, clock, who, portfolio, _utc(24, 5), "sell", "1", "102", product="NRML")
    assert portfolio.cash_balance_usd == D(9106)  # + 408 + 102 (a short NRML position)
    assert reconcile(session, portfolio.id).ok


def test_a_resting_cnc_sell_holds_settlement_and_is_cancelled_once_uncovered(
    session: Session, clock: Clock
) -> None:
    who = _trader(session)
    portfolio = _portfolio(session, who, fee_rate="0")
    _trade(session, clock, who, portfolio, _utc(23, 4), "buy", "6", "100")
    limit = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="INFY",
        exchange="NSE",
        side="sell",
        quantity=D(6),
        order_type="limit",
        price=D(120),
        product="CNC",
    )
    # The working sell keeps its position out of the holdings, so that it can still fill.
    held = settle(session, portfolio_id=portfolio.id, at=MONDAY_CLOSE)
    assert (held.settled, held.held) == ([], 1)
    # A market sell takes 4 of the 6 first; the limit then covers more than is left.
    _trade(session, clock, who, portfolio, _utc(24, 4), "sell", "4", "110")
    price_service.ingest(
        session,
        FEEDER,
        symbol="INFY",
        exchange="NSE",
        timeframe="1m",
        bars=[
            BarIn(
                timestamp=_utc(24, 5),
                open=D(119),
                high=D(121),
                low=D(118),
                close=D(120),
                volume=D(50),
            )
        ],
    )
    session.refresh(limit)
    assert (limit.status, limit.filled_quantity) == ("cancelled", D(0))
    assert limit.reject_reason == (
        "a CNC sell of 6 INFY is more than the open CNC position (2) and the holding (0)"
        " together: CNC sells cannot go short"
    )
    # With the order done, the rest settles at the next close.
    report = settle(session, portfolio_id=portfolio.id, at=_utc(24, 10))
    assert [(s.quantity, s.cost) for s in report.settled] == [(D(2), D(200))]
    assert reconcile(session, portfolio.id).ok


def test_settling_is_scoped_to_the_caller_and_never_in_the_future(session: Session) -> None:
    owner, other = _trader(session), _trader(session)
    portfolio = _portfolio(session, owner)
    with pytest.raises(PortfolioNotFound):
        settle(session, portfolio_id=portfolio.id, principal=other)
    with pytest.raises(SettlementInFuture):
        settle(session, at=datetime(2100, 1, 1, tzinfo=UTC))


def test_a_cnc_sell_in_a_hedging_portfolio_is_refused_while_a_cnc_long_is_open(
    session: Session, clock: Clock
) -> None:
    who = _trader(session)
    account = account_service.create(session, who, account_name="hedged delivery")
    portfolio = portfolio_service.create(
        session, who, account_id=account.id, name="hedged", position_mode="hedging"
    )
    portfolio_service.deposit(session, who, portfolio.id, D(1000))
    _trade(session, clock, who, portfolio, _utc(23, 4), "buy", "2", "100")
    with pytest.raises(CncSellExceedsPosition, match="close that with reduce_only"):
        _trade(session, clock, who, portfolio, _utc(23, 5), "sell", "1", "100")
