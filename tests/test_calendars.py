"""Trading hours: the seeded calendars, worked out by hand, and market orders refused when
the market is closed."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.factories import create_user
from tradebase.calendars.service import is_open, trading_day_end
from tradebase.core.auth import Principal
from tradebase.orders.errors import OrderRejected
from tradebase.orders.models import Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service


@pytest.mark.parametrize(
    ("exchange", "moment", "open_", "says"),
    [
        # Monday 2026-11-23 15:00 UTC = 10:00 in New York (EST, UTC-5): open
        ("NYSE", datetime(2026, 11, 23, 15, 0, tzinfo=UTC), True, "NYSE is open"),
        ("NASDAQ", datetime(2026, 11, 23, 15, 0, tzinfo=UTC), True, "NYSE is open"),
        # 14:00 UTC = 09:00 New York: before the 09:30 open
        ("NYSE", datetime(2026, 11, 23, 14, 0, tzinfo=UTC), False, "outside its trading hours"),
        # Thanksgiving, Thursday 2026-11-26
        ("NYSE", datetime(2026, 11, 26, 16, 0, tzinfo=UTC), False, "Thanksgiving Day"),
        # Saturday
        ("NYSE", datetime(2026, 11, 28, 16, 0, tzinfo=UTC), False, "does not trade on Saturdays"),
        # 05:00 UTC = 10:30 in Mumbai (UTC+5:30), Monday: open; 10:30 UTC = 16:00: closed
        ("NSE", datetime(2026, 11, 23, 5, 0, tzinfo=UTC), True, "NSE is open"),
        ("NSE", datetime(2026, 11, 23, 10, 30, tzinfo=UTC), False, "outside its trading hours"),
        ("BINANCE", datetime(2026, 11, 28, 3, 0, tzinfo=UTC), True, "CRYPTO is open"),
        ("paper", datetime(2026, 11, 28, 3, 0, tzinfo=UTC), True, "always open"),
    ],
)
def test_seeded_calendars(
    session: Session, exchange: str, moment: datetime, open_: bool, says: str
) -> None:
    state = is_open(session, exchange, moment)
    assert state.open is open_
    assert says in state.reason


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("exchange", "moment", "ends"),
    [
        # NSE closes at 15:30 in Mumbai (UTC+5:30): 10:00 UTC
        ("NSE", _utc(2026, 11, 23, 5, 0), _utc(2026, 11, 23, 10, 0)),
        ("NSE", _utc(2026, 11, 23, 10, 0), _utc(2026, 11, 23, 10, 0)),  # the close itself
        # after the close: the next trading day's; Saturday: Monday's
        ("BSE", _utc(2026, 11, 23, 10, 30), _utc(2026, 11, 24, 10, 0)),
        ("NSE", _utc(2026, 11, 28, 6, 0), _utc(2026, 11, 30, 10, 0)),
        # NYSE: 16:00 in New York; Thanksgiving (Thursday) belongs to Friday; EST is UTC-5
        ("NYSE", _utc(2026, 11, 26, 16, 0), _utc(2026, 11, 27, 21, 0)),
        # in summer (EDT, UTC-4), after Thursday's close: Friday 3 July is a holiday
        ("NASDAQ", _utc(2026, 7, 2, 20, 30), _utc(2026, 7, 6, 20, 0)),
        # crypto trades to the end of each day: its day ends at 00:00 UTC
        ("BINANCE", _utc(2026, 11, 28, 3, 0), _utc(2026, 11, 29, 0, 0)),
        # no calendar: the day ends at 00:00 UTC
        ("paper", _utc(2026, 11, 28, 3, 0), _utc(2026, 11, 29, 0, 0)),
        ("paper", _utc(2026, 11, 28, 0, 0), _utc(2026, 11, 29, 0, 0)),
    ],
)
def test_where_a_trading_day_ends(
    session: Session, exchange: str, moment: datetime, ends: datetime
) -> None:
    assert trading_day_end(session, exchange, moment) == ends


def test_a_market_order_on_a_closed_market_is_rejected_and_moves_nothing(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = create_user(session)
    who = Principal(user_id=user.id, username=user.username, role="trader")
    account = account_service.create(session, who, account_name="nyse paper")
    portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
    portfolio_service.deposit(session, who, portfolio.id, Decimal(1000))
    when = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)  # a Saturday
    import tradebase.orders.service as service_module

    original = service_module.utc_now
    service_module.utc_now = lambda: when  # type: ignore[assignment]
    try:
        with pytest.raises(OrderRejected) as info:
            order_service.place(
                session,
                who,
                portfolio_id=portfolio.id,
                symbol="IBM",
                exchange="NYSE",
                side="buy",
                quantity=Decimal(1),
                price=Decimal(100),
            )
    finally:
        service_module.utc_now = original  # type: ignore[assignment]
    assert info.value.details["cause"] == "market_closed"
    assert "does not trade on Saturdays" in info.value.message
    assert (
        session.scalar(
            select(func.count()).select_from(Trade).where(Trade.portfolio_id == portfolio.id)
        )
        == 0
    )
    assert portfolio.cash_balance_usd == Decimal(1000)
