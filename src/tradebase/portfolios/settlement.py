"""CNC (delivery) settlement: open CNC long positions move into holdings once the trading
day of their fills has ended (DESIGN.md §4). ``tradebase settle`` and
``POST /api/v1/portfolios/{id}/settle`` run it; a nightly job can call `settle` as it is.

What settles
    Every open long CNC position whose last fill (``trades.executed_at``) lies in a trading
    day that has ended by *at*. A trading day ends at its exchange's regular close
    (`calendars.service.Calendar.day_end`; a fill after the close, or on a day without
    trading, belongs to the next trading day); on an exchange without a calendar it ends at
    00:00 UTC. Settling runs at the end of every day, so a position normally holds one
    day's fills; one that was added to again today waits for today's close and then
    settles whole. MIS and NRML positions and shorts never settle. In a netting
    portfolio, a position that a working CNC sell order (pending, open or partially
    filled) is selling waits until that order is done, so that the order's fills reduce
    the position it was placed against (with its opening fees) before they reach the
    holding. In a hedging portfolio a CNC sell only ever sells the holding, so it holds
    nothing back.

How it moves
    The holding of (portfolio, symbol, exchange) takes the position's quantity and cost:
    ``invested_value`` adds up the exact cost (sum of quantity x price, like
    ``positions.cost_basis``) and ``average_price`` is invested_value / quantity rounded
    to 18 places: the weighted average cost, so invested_value = quantity x
    average_price up to that rounding (exactly whenever the average terminates). Buy fees
    stay out of the average, as they stay out of a position's entry price: they left the
    cash at the fill, and the settled row keeps them (``fees_paid``). The holding is
    valued at the latest ``price_data`` close at or before *at* (else the position's own
    last mark, so that equity does not move): current_value = quantity x current_price,
    pnl = current_value - invested_value, pnl_percent = pnl x 100 / invested_value.

    The position is closed as settled: status closed, ``closed_at`` = *at*, unrealized
    P&L 0, realized P&L unchanged (settling is not a sale: no trade, no cash). The row
    keeps the quantity, cost_basis and fees_paid it moved, as the record of the
    movement; a fill that closes a position always leaves quantity 0, so "closed with a
    quantity" is what marks a settled row (`Position.settled`). One audit entry
    (``position.settled``) per settled position. Settling twice moves nothing the
    second time: a settled position is no longer open.

Reconcile
    Settlement is a movement of the ledger that ``tradebase reconcile`` replays: it
    replays the trades in order and, right after the last fill of each settled row, moves
    the replayed CNC lot out of the position book into a replayed holding. So it checks
    each settled row (quantity, cost, fees) and each holding (quantity, invested value)
    as exactly as the open positions, and it replays the sales from holdings (below), so
    a holding edited by hand is named. Comparing holdings + positions by their sums would
    not do: a sell after a settlement reduces the new position first, at that position's
    own average cost, so a replay of all the fills in one book disagrees on realized P&L.

CNC sells: selling holdings
    As a delivery trader expects (Zerodha, AlgoMirror), a CNC sell first reduces the open
    CNC long position of its symbol (bought since the last settlement, not settled yet),
    then draws on the holding of (portfolio, symbol, exchange) at the holding's average
    price (`PortfolioService.apply_fill`, `pnl.split_cnc_sell`, `pnl.sell_holding`):

    * The sell fee is split between the two parts pro rata by quantity, the holding's
      part taking the exact remainder. The position part closes as any sell does
      (realized net of its fee share and the closed share of the opening fees).
    * The holding part releases its cost at the average: the pro-rata share of
      invested_value (quantity x the exact average, rounded to 18 places; selling the
      last unit releases what is left, so the shares add up exactly). Its realized P&L is
      (sell price - average) x quantity - its fee share, and nothing else: a holding
      carries no opening fees, since the buy fees stayed on the settled position row
      (``fees_paid``) and were never charged to a realized P&L. The holding's quantity
      and invested_value drop, its average stays (recomputed as invested_value /
      quantity), and it is revalued at its current price.
    * A holding sold to zero is deleted: the holdings API lists what is held (as a
      broker's holdings page does), a row at quantity 0 would need an average price for
      nothing (``average_price > 0`` is checked), and the unique (portfolio, symbol,
      exchange) key lets the next settlement start a new row.
    * The trade row records the realized P&L of both parts in ``pnl`` (``pnl_percent`` on
      both parts' cost), and the holding part in its metadata, ``{"holding":
      {"quantity", "cost", "fee", "pnl"}}``; its ``position_id`` is the position it
      closed, or NULL when the holding delivered it all. Cash moves as for any sell.
      Realized P&L over a buy, its settlement and its sale is therefore short of the cash
      by the buy fee, which settlement left on the settled row.

    A CNC sell for more than the position and the holding together is refused with
    ``cnc_sell_exceeds_position`` (409, naming both quantities): no CNC short selling.
    A market order is refused when it is placed, and nothing is written; a resting or
    twap/vwap order when it is placed and, if position + holding no longer cover what is
    left of it when a bar would fill it, it is cancelled with the reason.

    In a hedging portfolio an order never reduces a position (it would open a CNC short;
    orders cannot close a hedging position yet), so a CNC sell sells the holding only,
    and is refused while a CNC long of the symbol is open: sell it once it has settled.
    That also keeps the replay exact, since a holding part then never happens while a
    lot that settles later is open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tradebase.accounts.service import require_writer
from tradebase.audit.service import audit as audit_service
from tradebase.calendars.service import Calendar, calendar_for, midnight_after
from tradebase.core.auth import Principal, scoped
from tradebase.core.time import ensure_utc, utc_now
from tradebase.marketdata.models import PriceData
from tradebase.orders.models import Order, OrderSide, OrderStatus, Trade
from tradebase.portfolios.errors import CncSellExceedsPosition, SettlementInFuture
from tradebase.portfolios.models import (
    Holding,
    Portfolio,
    Position,
    PositionDirection,
    PositionMode,
    PositionStatus,
    Product,
)
from tradebase.portfolios.service import portfolio as portfolio_service

ZERO = Decimal(0)
# Orders that may still fill: a position they sell from waits for them.
WORKING = (OrderStatus.pending, OrderStatus.open, OrderStatus.partially_filled)


@dataclass(frozen=True)
class Settled:
    """One position moved into a holding: what moved, and the holding afterwards."""

    portfolio_id: int
    position_id: int
    holding_id: int
    symbol: str
    exchange: str
    quantity: Decimal
    cost: Decimal
    holding_quantity: Decimal
    average_price: Decimal


@dataclass
class SettlementReport:
    at: datetime
    portfolios: int = 0  # portfolios with an open CNC long position
    settled: list[Settled] = field(default_factory=list)
    waiting: int = 0  # open CNC longs whose trading day had not ended by *at*
    held: int = 0  # open CNC longs that a working CNC sell order is selling


def _open_cnc_long() -> Any:
    return (
        Position.status == PositionStatus.open,
        Position.direction == PositionDirection.long,
        Position.product == Product.CNC,
    )


class SettlementService:
    def settle(
        self,
        session: Session,
        *,
        portfolio_id: int | None = None,
        at: datetime | None = None,
        principal: Principal | None = None,
    ) -> SettlementReport:
        """Settle every open CNC long position whose trading day has ended by *at* (default
        now) into holdings, in the caller's transaction; see the module's docstring.

        Without *principal* (the CLI, a job) every portfolio is settled, or the one of
        *portfolio_id*; with it, only the caller's (another user's portfolio is not found).
        """
        now = utc_now()
        at = now if at is None else ensure_utc(at)
        if at > now:
            raise SettlementInFuture(
                f"cannot settle as of {at.isoformat()}: that is in the future",
                details={"field": "at", "at": at.isoformat()},
            )
        candidates = select(Position.portfolio_id).where(*_open_cnc_long()).distinct()
        if principal is not None:
            require_writer(principal)
            if portfolio_id is not None:
                portfolio_service.get(session, principal, portfolio_id)  # 404 if not theirs
            else:
                candidates = candidates.where(
                    Position.portfolio_id.in_(
                        scoped(select(Portfolio.id), Portfolio.user_id, principal)
                    )
                )
        if portfolio_id is not None:
            candidates = candidates.where(Position.portfolio_id == portfolio_id)
        report = SettlementReport(at)
        calendars: dict[str, Calendar | None] = {}
        for pid in session.scalars(candidates.order_by(Position.portfolio_id)).all():
            portfolio = self._lock(session, pid)
            report.portfolios += 1
            self._settle_portfolio(session, portfolio, at, report, calendars)
        # Audit last: an append holds the chain head until the transaction ends.
        for item in report.settled:
            audit_service.record(
                session,
                action="position.settled",
                user_id=principal.user_id if principal and principal.via != "cli" else None,
                actor=principal.username if principal else "settlement",
                resource_type="position",
                resource_id=item.position_id,
                ip_address=principal.ip_address if principal else None,
                details={
                    "portfolio_id": item.portfolio_id,
                    "holding_id": item.holding_id,
                    "symbol": item.symbol,
                    "exchange": item.exchange,
                    "quantity": str(item.quantity),
                    "cost": str(item.cost),
                    "average_price": str(item.average_price),
                    "at": at.isoformat(),
                },
            )
        return report

    def holdings(
        self, session: Session, principal: Principal, portfolio_id: int
    ) -> Sequence[Holding]:
        """The holdings of a portfolio the caller may see, by symbol."""
        portfolio = portfolio_service.get(session, principal, portfolio_id)
        return session.scalars(
            select(Holding)
            .where(Holding.portfolio_id == portfolio.id)
            .order_by(Holding.symbol, Holding.exchange)
        ).all()

    def check_order(self, session: Session, order: Mapping[str, Any]) -> None:
        """Refuse placing a CNC sell for more than the open CNC long position and the
        holding cover (an order being inserted, as column values). Other orders pass
        without a query."""
        if (
            order.get("product") != Product.CNC
            or order.get("side") != OrderSide.sell
            or order.get("status") == OrderStatus.rejected
        ):
            return
        self._check_sell(
            session,
            order["portfolio_id"],
            order["symbol"],
            order["exchange"],
            order["quantity"],
            reduce_only=bool((order.get("algo_params") or {}).get("reduce_only")),
        )

    def check_fill(self, session: Session, order: Order) -> None:
        """Refuse filling a resting or twap/vwap CNC sell when the open CNC long position and
        the holding no longer cover what is left of the order."""
        if order.product != Product.CNC or order.side != OrderSide.sell:
            return
        assert order.portfolio_id is not None
        self._check_sell(
            session,
            order.portfolio_id,
            order.symbol,
            order.exchange,
            order.quantity - order.filled_quantity,
            reduce_only=bool((order.algo_params or {}).get("reduce_only")),
        )

    def _check_sell(
        self,
        session: Session,
        portfolio_id: int,
        symbol: str,
        exchange: str,
        quantity: Decimal,
        *,
        reduce_only: bool = False,
    ) -> None:
        mode = session.scalar(select(Portfolio.position_mode).where(Portfolio.id == portfolio_id))
        hedging = mode == PositionMode.hedging
        if hedging and reduce_only:
            return  # it closes the CNC long, within it (the order's reduce_only check)
        have = (
            session.scalar(
                select(Position.quantity).where(
                    Position.portfolio_id == portfolio_id,
                    Position.symbol == symbol,
                    Position.exchange == exchange,
                    *_open_cnc_long(),
                )
            )
            or ZERO
        )
        if not hedging and quantity <= have:
            return  # the position covers it: the holding is not read
        held = (
            session.scalar(
                select(Holding.quantity).where(
                    Holding.portfolio_id == portfolio_id,
                    Holding.symbol == symbol,
                    Holding.exchange == exchange,
                )
            )
            or ZERO
        )
        details = {
            "product": Product.CNC.value,
            "symbol": symbol,
            "requested": str(quantity),
            "open": str(have),
            "holding": str(held),
        }
        if hedging and have:
            raise CncSellExceedsPosition(
                f"a CNC sell in a hedging portfolio sells from the holding only, and not while"
                f" a CNC long of {symbol} is open ({have}): close that with reduce_only, or"
                " sell once it has settled",
                details=details,
            )
        if quantity <= have + held:  # in a hedging portfolio, have is 0 here
            return
        if hedging:
            raise CncSellExceedsPosition(
                f"a CNC sell of {quantity} {symbol} in a hedging portfolio sells from the"
                f" holding only, which holds {held}: CNC sells cannot go short",
                details=details,
            )
        raise CncSellExceedsPosition(
            f"a CNC sell of {quantity} {symbol} is more than the open CNC position ({have})"
            f" and the holding ({held}) together: CNC sells cannot go short",
            details=details,
        )

    def _lock(self, session: Session, portfolio_id: int) -> Portfolio:
        # The portfolio lock, as every change of cash or positions takes it first.
        statement = select(Portfolio).where(Portfolio.id == portfolio_id)
        if session.get_bind().dialect.name != "sqlite":
            statement = statement.with_for_update()
        return session.scalars(statement).one()

    def _settle_portfolio(
        self,
        session: Session,
        portfolio: Portfolio,
        at: datetime,
        report: SettlementReport,
        calendars: dict[str, Calendar | None],
    ) -> None:
        rows = session.scalars(
            select(Position)
            .where(Position.portfolio_id == portfolio.id, *_open_cnc_long())
            .order_by(Position.id)
        ).all()
        if not rows:  # settled by someone else before we got the lock
            return
        last_fills: dict[int, datetime] = {
            position_id: moment
            for position_id, moment in session.execute(
                select(Trade.position_id, func.max(Trade.executed_at))
                .where(Trade.position_id.in_([row.id for row in rows]))
                .group_by(Trade.position_id)
            )
            if position_id is not None and moment is not None
        }
        # A working CNC sell holds back the position it sells; in a hedging portfolio it
        # sells the holding only, so it holds nothing back.
        selling = (
            set()
            if portfolio.position_mode == PositionMode.hedging
            else {
                (symbol, exchange)
                for symbol, exchange in session.execute(
                    select(Order.symbol, Order.exchange).where(
                        Order.portfolio_id == portfolio.id,
                        Order.product == Product.CNC,
                        Order.side == OrderSide.sell,
                        Order.status.in_(WORKING),
                    )
                )
            }
        )
        for row in rows:
            last = last_fills.get(row.id, row.opened_at)
            if row.exchange not in calendars:
                calendars[row.exchange] = calendar_for(session, row.exchange)
            calendar = calendars[row.exchange]
            end = midnight_after(last) if calendar is None else calendar.day_end(last)
            if end is None or end > at:
                report.waiting += 1
            elif (row.symbol, row.exchange) in selling:
                report.held += 1
            else:
                report.settled.append(self._move(session, portfolio, row, at))

    def _move(self, session: Session, portfolio: Portfolio, row: Position, at: datetime) -> Settled:
        holding = session.scalars(
            select(Holding).where(
                Holding.portfolio_id == portfolio.id,
                Holding.symbol == row.symbol,
                Holding.exchange == row.exchange,
            )
        ).first()
        price = session.scalar(
            select(PriceData.close)
            .where(
                PriceData.symbol == row.symbol,
                PriceData.exchange == row.exchange,
                PriceData.timestamp <= at,
            )
            .order_by(PriceData.timestamp.desc(), PriceData.id.desc())
            .limit(1)
        )
        if holding is None:
            holding = Holding(portfolio_id=portfolio.id, symbol=row.symbol, exchange=row.exchange)
            session.add(holding)
        holding.add(row.quantity, row.cost_basis)
        holding.mark(price or row.current_price or holding.current_price)
        row.status = PositionStatus.closed
        row.closed_at = at
        row.unrealized_pnl = ZERO
        row.unrealized_pnl_percent = ZERO
        session.flush()
        return Settled(
            portfolio_id=portfolio.id,
            position_id=row.id,
            holding_id=holding.id,
            symbol=row.symbol,
            exchange=row.exchange,
            quantity=row.quantity,
            cost=row.cost_basis,
            holding_quantity=holding.quantity,
            average_price=holding.average_price,
        )


settlement = SettlementService()


def settle(
    session: Session,
    *,
    portfolio_id: int | None = None,
    at: datetime | None = None,
    principal: Principal | None = None,
) -> SettlementReport:
    """Settle CNC positions into holdings (`SettlementService.settle`)."""
    return settlement.settle(session, portfolio_id=portfolio_id, at=at, principal=principal)
