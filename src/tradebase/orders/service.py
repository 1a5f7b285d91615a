"""Placing, reading and cancelling orders; a market order on the paper broker fills in the
same transaction: order, events, trade, position and cash together, or none of them."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    CompoundSelect,
    CursorResult,
    Table,
    and_,
    bindparam,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradebase.accounts.service import require_trading, require_writer
from tradebase.audit.service import audit as audit_service
from tradebase.brokers.base import Execution
from tradebase.brokers.errors import NoPrice
from tradebase.brokers.paper import PaperBroker
from tradebase.calendars.service import is_open, trading_day_close
from tradebase.core.auth import Principal, scoped
from tradebase.core.errors import TradebaseError
from tradebase.core.models import attach
from tradebase.core.money import at_least, at_most, canonical, check_fits, key_params, quantize
from tradebase.core.prepared import Prepared, connection_of
from tradebase.core.time import UTCDateTime, utc_now
from tradebase.events.service import EventType, emit
from tradebase.marketdata.models import PriceData
from tradebase.orders.errors import (
    AmendRefused,
    ClientOrderIdTaken,
    FillTooPrecise,
    MarketClosed,
    OrderNotFound,
    OrderRejected,
    ReduceOnlyRefused,
    UnsupportedOrder,
)
from tradebase.orders.matching import Bar, match
from tradebase.orders.models import (
    Order,
    OrderEvent,
    OrderEventType,
    OrderStatus,
    OrderType,
    TimeInForce,
    Trade,
)
from tradebase.orders.state import CANCELLABLE, RESTING, check_move
from tradebase.portfolios import pnl
from tradebase.portfolios.models import (
    CashMovementKind,
    Portfolio,
    PositionMode,
    Product,
    TradingAccount,
)
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.portfolios.settlement import settlement as settlement_service


def _event(
    session: Session,
    order: Order,
    event: str,
    to: OrderStatus,
    *,
    quantity: Decimal | None = None,
    price: Decimal | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Move *order* to *to* (checked against the state table) and record the move."""
    before = order.status
    if event != OrderEventType.created:
        check_move(before, to)
    order.status = to
    session.add(
        OrderEvent(
            order_id=order.id,
            event_type=event,
            from_status=None if event == OrderEventType.created else before,
            to_status=to,
            quantity=quantity,
            price=price,
            details=details,
            occurred_at=at or utc_now(),
        )
    )


_EVENT_FIELDS = (
    "client_order_id", "portfolio_id", "account_id", "symbol", "exchange", "side", "order_type",
    "product", "quantity", "price", "trigger_price", "filled_quantity", "average_fill_price",
    "fee", "fee_currency", "status", "reject_reason", "tag", "signal_id", "strategy_id",
    "parent_order_id",
)  # fmt: skip


def _emit_order(
    session: Session, event_type: str, order: Order | dict[str, Any], **extra: Any
) -> None:
    """The outbox event of an order's move, from the values in hand (no read)."""
    if isinstance(order, dict):
        fields = {name: order.get(name) for name in _EVENT_FIELDS}
        user_id, order_id = order["user_id"], order["id"]
    else:
        fields = {name: getattr(order, name) for name in _EVENT_FIELDS}
        user_id, order_id = order.user_id, order.id
    emit(session, user_id, event_type, {"order_id": order_id, **fields, **extra})


class OrderService:
    def place(
        self,
        session: Session,
        principal: Principal,
        *,
        portfolio_id: int,
        symbol: str,
        side: str,
        quantity: Decimal,
        order_type: str = OrderType.market,
        exchange: str = "paper",
        price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        product: str = Product.NRML,
        time_in_force: str = TimeInForce.GTC,
        client_order_id: str | None = None,
        tag: str | None = None,
        signal_id: int | None = None,
        strategy_id: int | None = None,
        deployment_id: int | None = None,
        participation: Decimal | None = None,
        slices: int | None = None,
        duration_seconds: int | None = None,
        lookback_days: int | None = None,
        reduce_only: bool = False,
        deal_id: str | None = None,
        venue: tuple[Portfolio, TradingAccount] | None = None,
    ) -> Order:
        """Place an order. Placing a ``client_order_id`` again returns the first order.

        ``deal_id``: the label of the position the fill opens (kept in ``algo_params``;
        unique among the portfolio's open positions, which the caller checks).

        ``venue``: the portfolio (locked, as ``PortfolioService.venue`` locks it) and its
        account, when the caller has read them for the principal already (signals).

        ``reduce_only``: the fill only reduces the opposite open position (a sell the long,
        a buy the short) and is refused beyond it; in hedging mode it is the closing fill.

        A refused order is kept as ``rejected`` with the reason, and nothing else moves:
        no fill, no cash, no position.
        """
        require_writer(principal)
        require_trading(principal)
        # On SQLite the unit of work holds the write lock from its start, so one look before
        # the portfolio lock is enough; elsewhere look again under it.
        sqlite = connection_of(session).dialect.name == "sqlite"
        if client_order_id is not None:
            existing = self._by_client_id(session, principal, client_order_id)
            if existing is not None:
                return existing
        if venue is not None and venue[0].id == portfolio_id:
            portfolio, account = venue
        else:
            portfolio, account = portfolio_service.venue(session, principal, portfolio_id)
        if client_order_id is not None and not sqlite:  # again, under the portfolio lock
            existing = self._by_client_id(session, principal, client_order_id)
            if existing is not None:
                return existing
        if account.broker != "paper":
            return self._place_live(
                session,
                principal,
                portfolio,
                client_order_id=client_order_id or f"tb-{uuid.uuid4().hex}",
                symbol=symbol,
                exchange=exchange,
                side=side,
                quantity=quantity,
                order_type=order_type,
                price=price,
                trigger_price=trigger_price,
                product=product,
                time_in_force=time_in_force,
                tag=tag,
                signal_id=signal_id,
                strategy_id=strategy_id,
                deployment_id=deployment_id,
            )
        if order_type in RESTING_TYPES:
            return self._place_resting(
                session,
                principal,
                portfolio,
                client_order_id=client_order_id,
                symbol=symbol,
                exchange=exchange,
                side=side,
                quantity=quantity,
                order_type=order_type,
                price=price,
                trigger_price=trigger_price,
                product=product,
                time_in_force=time_in_force,
                tag=tag,
                signal_id=signal_id,
                strategy_id=strategy_id,
                deployment_id=deployment_id,
                algo_params=_options(
                    participation=participation, reduce_only=reduce_only, deal_id=deal_id
                ),
            )
        if order_type in ALGO_TYPES:
            if not slices or not duration_seconds:
                raise UnsupportedOrder(
                    f"a {order_type} order needs slices (children) and duration_seconds",
                    details={"fields": ["slices", "duration_seconds"]},
                )
            params: dict[str, Any] = {"slices": slices, "duration": duration_seconds, "released": 0}
            if order_type == OrderType.vwap:
                params["lookback_days"] = lookback_days or 5
            return self._place_resting(
                session,
                principal,
                portfolio,
                client_order_id=client_order_id,
                symbol=symbol,
                exchange=exchange,
                side=side,
                quantity=quantity,
                order_type=order_type,
                price=None,
                trigger_price=None,
                product=product,
                time_in_force=TimeInForce.GTC,
                tag=tag,
                signal_id=signal_id,
                strategy_id=strategy_id,
                deployment_id=deployment_id,
                algo_params=params,
            )
        if order_type != OrderType.market:
            raise UnsupportedOrder(
                f"{order_type} orders are not supported yet",
                details={"order_type": order_type},
            )
        broker = PaperBroker(
            session,
            fee_rate=account.fee_rate,
            slippage_bps=account.slippage_bps,
            currency=portfolio.base_currency,
        )
        # Decide before writing: a refused order must move nothing but its own record.
        execution: Execution | None = None
        refusal: TradebaseError | None = None
        try:
            market = is_open(session, exchange, utc_now())
            if not market.open:
                raise MarketClosed(
                    f"{market.reason}; market orders wait for the open",
                    details={"exchange": exchange},
                )
            execution = broker.execute_market(
                symbol=symbol, exchange=exchange, side=side, quantity=quantity, price_hint=price
            )
            fill = pnl.Fill(side, execution.quantity, execution.price, execution.fee)
            check_storable(fill)
            if reduce_only:
                self._check_reduces(session, portfolio, symbol, exchange, product, fill)
            portfolio_service.check_cash(portfolio, fill.cash_change)
        except TradebaseError as exc:
            refusal = exc
        values: dict[str, Any] = {
            "user_id": portfolio.user_id,
            "account_id": portfolio.account_id,
            "portfolio_id": portfolio.id,
            "client_order_id": client_order_id,
            "symbol": symbol,
            "exchange": exchange,
            "side": side,
            "order_type": order_type,
            "product": product,
            "time_in_force": time_in_force,
            "quantity": quantity,
            "price": price,
            "trigger_price": trigger_price,
            "tag": tag,
            "signal_id": signal_id,
            "strategy_id": strategy_id,
            "deployment_id": deployment_id,
            "algo_params": _options(reduce_only=reduce_only, deal_id=deal_id),
        }
        now = utc_now()
        if refusal is not None or execution is None:
            assert refusal is not None
            return self._reject(session, principal, values, refusal, now)
        moves: list[tuple[str, Any, Any, dict[str, Any]]] = [
            (OrderEventType.created, None, OrderStatus.pending, {}),
            (OrderEventType.accepted, OrderStatus.pending, OrderStatus.open, {}),
            (OrderEventType.filled, OrderStatus.open, OrderStatus.filled, {}),
        ]
        values.update(
            status=OrderStatus.filled,
            filled_quantity=execution.quantity,
            average_fill_price=execution.price,
            fee=execution.fee,
            fee_currency=execution.fee_currency,
            placed_at=now,
            filled_at=now,
        )
        for _event_type, before, after, _details in moves[1:]:
            check_move(before, after)  # the state table, even when the moves are written at once
        placed, created = self._insert_order(session, principal, values)
        if not created:  # the same client_order_id won a race
            return placed
        order_id = placed.id
        trade_id = self._book(session, portfolio, values | {"id": order_id}, execution, now)
        moves[2] = (
            OrderEventType.filled,
            OrderStatus.open,
            OrderStatus.filled,
            {"trade_id": trade_id, "fee": str(execution.fee)},
        )
        self._write_events(
            session, order_id, moves, now, quantity=execution.quantity, price=execution.price
        )
        _emit_order(
            session,
            EventType.order_filled,
            values | {"id": order_id},
            trade_id=trade_id,
            fill_quantity=execution.quantity,
            fill_price=execution.price,
            filled_at=now,
        )
        audit_service.record_by(
            session,
            principal,
            action="order.placed",
            resource_type="order",
            resource_id=order_id,
            details={
                "symbol": symbol,
                "side": side,
                "quantity": str(quantity),
                "status": OrderStatus.filled,
            },
        )
        return placed

    def _place_live(
        self, session: Session, principal: Principal, portfolio: Portfolio, **fields: Any
    ) -> Order:
        """An order for a live broker account: stored ``pending`` under its deterministic
        ``client_order_id``; `tradebase.brokers.service.dispatch` sends it after the
        commit, outside any transaction, and records what the broker says. Refused here
        (kept as rejected) when it cannot be sent: an algo type, a missing price, a buy
        whose known value exceeds the cash."""
        order_type = fields["order_type"]
        values = {
            **fields,
            "user_id": portfolio.user_id,
            "account_id": portfolio.account_id,
            "portfolio_id": portfolio.id,
            "status": OrderStatus.pending,
            "algo_params": None,
        }
        now = utc_now()
        try:
            if order_type in ALGO_TYPES:
                raise UnsupportedOrder(
                    f"{order_type} orders run on the paper broker only; a live broker account"
                    " takes market, limit, stop_loss and stop_limit orders",
                    details={"order_type": order_type},
                )
            if order_type in (OrderType.limit, OrderType.stop_limit) and fields["price"] is None:
                raise UnsupportedOrder(
                    f"a {order_type} order needs a price (its limit)", details={"field": "price"}
                )
            if order_type in (OrderType.stop_loss, OrderType.stop_limit) and (
                fields["trigger_price"] is None
            ):
                raise UnsupportedOrder(
                    f"a {order_type} order needs a trigger_price (its stop)",
                    details={"field": "trigger_price"},
                )
            if fields["price"] is not None:
                fill = pnl.Fill(fields["side"], fields["quantity"], fields["price"], Decimal(0))
                check_storable(fill)
                portfolio_service.check_cash(portfolio, fill.cash_change)
        except TradebaseError as refusal:
            return self._reject(session, principal, values, refusal, now)
        placed, created = self._insert_order(session, principal, values)
        if not created:
            return placed
        self._write_events(
            session, placed.id, [(OrderEventType.created, None, OrderStatus.pending, {})], now
        )
        audit_service.record_by(
            session,
            principal,
            action="order.placed",
            resource_type="order",
            resource_id=placed.id,
            details={
                "symbol": fields["symbol"],
                "side": fields["side"],
                "type": order_type,
                "quantity": str(fields["quantity"]),
                "status": OrderStatus.pending,
                "broker": "live",
            },
        )
        return placed

    def record_broker_outcome(
        self,
        session: Session,
        order_id: int,
        *,
        status: str,
        exchange_order_id: str | None = None,
        filled_quantity: Decimal | None = None,
        average_price: Decimal | None = None,
        fee: Decimal = Decimal(0),
        reason: str | None = None,
        source: str = "broker",
    ) -> bool:
        """Record what a live broker says of an order: accepted (open), filled (position,
        trade and cash booked at its average price), cancelled or rejected. Idempotent: a
        move the order has made already, or cannot make from where it is, changes nothing
        (False). The order's row is locked first, so a postback and the sender's own answer
        cannot both book the fill."""
        statement = select(Order).where(Order.id == order_id)
        if session.get_bind().dialect.name != "sqlite":
            statement = statement.with_for_update()
        order = session.scalars(statement.execution_options(populate_existing=True)).one()
        now = utc_now()
        changed = False
        if exchange_order_id and order.exchange_order_id is None:
            order.exchange_order_id = exchange_order_id
            changed = True
        details = {"source": source}
        if status == OrderStatus.rejected:
            if order.status != OrderStatus.pending:
                return changed
            order.reject_reason = reason or "refused by the broker"
            self._write_events(
                session,
                order.id,
                [
                    (
                        OrderEventType.rejected,
                        OrderStatus.pending,
                        check_move(OrderStatus.pending, OrderStatus.rejected),
                        {**details, "reason": order.reject_reason},
                    )
                ],
                now,
            )
            order.status = OrderStatus.rejected
            session.flush()
            _emit_order(session, EventType.order_rejected, order, reason=order.reject_reason)
            return True
        if order.status == OrderStatus.pending:
            self._write_events(
                session,
                order.id,
                [(OrderEventType.accepted, OrderStatus.pending, OrderStatus.open, details)],
                now,
            )
            order.status = OrderStatus.open
            order.placed_at = now
            changed = True
        if status == OrderStatus.filled and order.status in RESTING:
            quantity = (filled_quantity or order.quantity) - order.filled_quantity
            if quantity > 0 and average_price is not None:
                portfolio, _account = self._venue(session, order)
                execution = Execution(quantity, average_price, fee, portfolio.base_currency)
                order_values = {
                    "id": order.id,
                    "user_id": order.user_id,
                    "side": order.side,
                    "symbol": order.symbol,
                    "exchange": order.exchange,
                    "product": order.product,
                    "signal_id": order.signal_id,
                    "algo_params": order.algo_params,
                }
                trade_id = self._book(session, portfolio, order_values, execution, now)
                self._add_fill(
                    session, order, quantity, execution, now, {**details, "trade_id": trade_id}
                )
                changed = True
        elif status == OrderStatus.cancelled and order.status in CANCELLABLE:
            self._cancel_with_reason(session, order, reason or "cancelled at the broker", now)
            changed = True
        session.flush()
        return changed

    def _place_resting(
        self, session: Session, principal: Principal, portfolio: Portfolio, **fields: Any
    ) -> Order:
        """A limit or stop order rests (status open) until a price bar fills it.

        Time in force: GTC rests until it fills or is cancelled; DAY also expires at the
        close of its exchange's trading day (``expires_at``, fixed now); IOC is matched at
        once against the latest bar of its symbol, and what does not fill is cancelled.
        """
        order_type, price, trigger = fields["order_type"], fields["price"], fields["trigger_price"]
        if order_type in (OrderType.limit, OrderType.stop_limit) and price is None:
            raise UnsupportedOrder(
                f"a {order_type} order needs a price (its limit)", details={"field": "price"}
            )
        if order_type in (OrderType.stop_loss, OrderType.stop_limit) and trigger is None:
            raise UnsupportedOrder(
                f"a {order_type} order needs a trigger_price (its stop)",
                details={"field": "trigger_price"},
            )
        now = utc_now()
        time_in_force = fields["time_in_force"]
        values = {
            **fields,
            "user_id": portfolio.user_id,
            "account_id": portfolio.account_id,
            "portfolio_id": portfolio.id,
            "status": OrderStatus.open,
            "placed_at": now,
        }
        reference: Bar | None = None
        if time_in_force == TimeInForce.DAY:
            values["expires_at"] = day_end(session, fields["exchange"], now)
        elif time_in_force == TimeInForce.IOC:
            try:
                reference = self._ioc_reference(session, fields["symbol"], fields["exchange"], now)
            except TradebaseError as refusal:
                return self._reject(session, principal, values, refusal, now)
        moves: list[tuple[str, Any, Any, dict[str, Any]]] = [
            (OrderEventType.created, None, OrderStatus.pending, {}),
            (OrderEventType.accepted, OrderStatus.pending, OrderStatus.open, {}),
        ]
        check_move(OrderStatus.pending, OrderStatus.open)
        placed, created = self._insert_order(session, principal, values)
        if not created:
            return placed
        self._write_events(session, placed.id, moves, now)
        if reference is not None:
            self._match_order(session, placed, reference, now)
            if placed.status in RESTING:
                self._cancel_with_reason(session, placed, "IOC: not filled immediately", now)
            session.flush()
        audit_service.record_by(
            session,
            principal,
            action="order.placed",
            resource_type="order",
            resource_id=placed.id,
            details={
                "symbol": fields["symbol"],
                "side": fields["side"],
                "type": order_type,
                "quantity": str(fields["quantity"]),
                "time_in_force": time_in_force,
                "status": placed.status,
            },
        )
        return placed

    def _ioc_reference(self, session: Session, symbol: str, exchange: str, now: datetime) -> Bar:
        """What an IOC order is matched against: the latest bar of its symbol as a single
        price, its close (a limit order's price is its limit, never a hint), with that
        bar's volume for a participation cap."""
        market = is_open(session, exchange, now)
        if not market.open:
            raise MarketClosed(
                f"{market.reason}; an IOC order needs an open market",
                details={"exchange": exchange},
            )
        latest = session.execute(
            select(PriceData.close, PriceData.volume)
            .where(PriceData.symbol == symbol, PriceData.exchange == exchange)
            .order_by(PriceData.timestamp.desc(), PriceData.id.desc())
            .limit(1)
        ).first()
        if latest is None:
            raise NoPrice(
                f"no price for {symbol}: an IOC order is matched against the latest bar;"
                " post bars to /api/v1/prices",
                details={"symbol": symbol, "exchange": exchange},
            )
        close, volume = latest
        return Bar(close, close, close, close, volume)

    def _reject(
        self,
        session: Session,
        principal: Principal,
        values: dict[str, Any],
        refusal: TradebaseError,
        now: datetime,
    ) -> Order:
        """Keep the refused order (market or resting) as rejected, with the reason and its
        events and audit entry, and raise `OrderRejected`; nothing else moves."""
        values = values | {
            "status": OrderStatus.rejected,
            "reject_reason": refusal.message,
            "placed_at": None,
        }
        check_move(OrderStatus.pending, OrderStatus.rejected)
        rejected, created = self._insert_order(session, principal, values)
        if not created:
            return rejected
        order_id = rejected.id
        moves: list[tuple[str, Any, Any, dict[str, Any]]] = [
            (OrderEventType.created, None, OrderStatus.pending, {}),
            (
                OrderEventType.rejected,
                OrderStatus.pending,
                OrderStatus.rejected,
                {"reason": refusal.message},
            ),
        ]
        self._write_events(session, order_id, moves, now)
        _emit_order(
            session, EventType.order_rejected, values | {"id": order_id}, reason=refusal.message
        )
        audit_service.record_by(
            session,
            principal,
            action="order.rejected",
            resource_type="order",
            resource_id=order_id,
            details={"reason": refusal.message},
        )
        raise OrderRejected(
            f"order rejected: {refusal.message}",
            details={
                "order_id": order_id,
                "reason": refusal.message,
                "cause": refusal.error_code,
                **refusal.details,
            },
        ) from refusal

    def match_bar(
        self, session: Session, *, symbol: str, exchange: str, bar: Bar, at: datetime
    ) -> int:
        """Fill the resting orders of *symbol* that *bar* reaches; return the fills made.

        The bar's time *at* is the paper clock: fills, positions and cash are stamped with
        it, so replaying the same bars gives the same book. Orders whose day is over by *at*
        (DAY orders past their close) expire first, so that bar cannot fill them; then the
        twap/vwap parents release their children; then the book fills, by order id.
        """
        found = self._bar_orders(session, symbol=symbol, exchange=exchange, bar=bar, at=at)
        # A live broker's order (it has the broker's id) fills and expires there, not here.
        found = [o for o in found if o.exchange_order_id is None]
        due = [o for o in found if o.expires_at is not None and o.expires_at <= at]
        self._expire(session, due)
        fills = self._release_children(
            session, [o for o in found if o.order_type in ALGO_TYPES and o not in due], bar, at
        )
        for order in found:
            book = order.order_type in RESTING_TYPES and order not in due
            if book and self._match_order(session, order, bar, at):
                fills += 1
        session.flush()
        return fills

    def _bar_orders(
        self, session: Session, *, symbol: str, exchange: str, bar: Bar, at: datetime
    ) -> list[Order]:
        """What *bar* at *at* can move among the resting orders of *symbol*, by id, in one
        query (`bar_query`): the orders it can fill or trigger (a buy limit at or above the
        low, a sell limit at or below the high, a buy stop at or below the high, a sell stop
        at or above the low; a triggered stop_limit is a limit), those due to expire, and
        the algo parents. Exactly the orders for which `match` does not answer None: each
        branch is a range on a book index, not a scan of the book."""
        sqlite = session.get_bind().dialect.name == "sqlite"
        params = {
            "symbol": symbol,
            "exchange": exchange,
            "at": at,
            **key_params("low", bar.low),
            **key_params("high", bar.high),
        }
        found = {order.id: order for order in session.scalars(_bar_statement(sqlite), params)}
        return [found[key] for key in sorted(found)]

    def _match_order(self, session: Session, order: Order, bar: Bar, at: datetime) -> bool:
        """Let *bar* trigger and/or fill one resting order; True if it filled."""
        found = match(
            order.order_type,
            order.side,
            bar,
            price=order.price,
            trigger=order.trigger_price,
            triggered=order.triggered_at is not None,
        )
        if found is None:
            return False
        if found.triggered:
            order.triggered_at = at
            self._write_events(
                session,
                order.id,
                [(OrderEventType.triggered, order.status, order.status, {"at": str(found.price)})],
                at,
            )
        return found.price is not None and self._fill_resting(session, order, found.price, bar, at)

    def _expire(self, session: Session, orders: Sequence[Order]) -> int:
        """Expire *orders* at their ``expires_at``; an order that another transaction moved
        meanwhile is left to it (compare-and-set on the status)."""
        expired = 0
        for order in orders:
            before = order.status
            target = check_move(before, OrderStatus.expired)
            moved = session.execute(
                update(Order)
                .where(Order.id == order.id, Order.status == before)
                .values(status=target)
                .execution_options(synchronize_session="evaluate")
            )
            if not cast(CursorResult[Any], moved).rowcount:
                continue
            assert order.expires_at is not None
            reason = f"DAY order: its trading day closed at {order.expires_at.isoformat()}"
            self._write_events(
                session,
                order.id,
                [(OrderEventType.expired, before, target, {"reason": reason})],
                order.expires_at,
            )
            _emit_order(session, EventType.order_expired, order, reason=reason)
            expired += 1
        return expired

    def expire_day_orders(self, session: Session, at: datetime | None = None) -> int:
        """Expire every resting order whose trading day closed by *at* (default: now), as
        the first bar after the close would; return how many expired. For a job or
        ``tradebase orders expire``."""
        due = session.scalars(due_query(at or utc_now()).order_by(Order.id)).all()
        return self._expire(session, [o for o in due if o.exchange_order_id is None])

    def _release_children(
        self, session: Session, parents: Sequence[Order], bar: Bar, at: datetime
    ) -> int:
        """twap/vwap *parents*: release the children that are due by *at* as market orders
        filled at the bar's close. The first bar after placement starts the schedule: child
        i is due at start + i x duration / slices."""
        fills = 0
        for parent in parents:
            params = dict(parent.algo_params or {})
            if "start" not in params:
                params["start"] = at.isoformat()
                params["plan"] = [str(q) for q in self._plan(session, parent, params, at)]
            start = datetime.fromisoformat(params["start"])
            step = timedelta(seconds=int(params["duration"]) / int(params["slices"]))
            while params["released"] < int(params["slices"]):
                index = int(params["released"])
                if start + step * index > at:
                    break
                quantity = Decimal(params["plan"][index])
                params["released"] = index + 1
                if quantity > 0:
                    if not self._fill_child(session, parent, index, quantity, bar.close, at):
                        break
                    fills += 1
            parent.algo_params = params
        return fills

    def _plan(
        self, session: Session, parent: Order, params: dict[str, Any], start: datetime
    ) -> list[Decimal]:
        """Child quantities: equal for twap; for vwap in proportion to the average volume of
        each child's time of day over the last lookback_days of bars. The last child takes
        the exact remainder, so the children add up to the parent."""
        slices = int(params["slices"])
        weights = [Decimal(1)] * slices
        if parent.order_type == OrderType.vwap:
            step = timedelta(seconds=int(params["duration"]) / slices)
            since = start - timedelta(days=int(params["lookback_days"]))
            history = session.execute(
                select(PriceData.timestamp, PriceData.volume).where(
                    PriceData.symbol == parent.symbol,
                    PriceData.exchange == parent.exchange,
                    PriceData.timestamp >= since,
                    PriceData.timestamp < start,
                )
            ).all()
            by_slot: dict[tuple[int, int], list[Decimal]] = {}
            for moment, volume in history:
                by_slot.setdefault((moment.hour, moment.minute), []).append(volume)
            profile = []
            for i in range(slices):
                due = start + step * i
                volumes = by_slot.get((due.hour, due.minute), [])
                profile.append(sum(volumes, Decimal(0)) / len(volumes) if volumes else Decimal(0))
            if sum(profile) > 0:
                weights = profile
        total = sum(weights, Decimal(0))
        plan = [quantize(parent.quantity * w / total) for w in weights[:-1]]
        plan.append(parent.quantity - sum(plan, Decimal(0)))
        return plan

    def _fill_child(
        self,
        session: Session,
        parent: Order,
        index: int,
        quantity: Decimal,
        reference: Decimal,
        at: datetime,
    ) -> bool:
        """Fill one child of an algo parent as a market order; False if the cash is not
        there (the parent is then cancelled with the reason)."""
        portfolio, account = self._venue(session, parent)
        broker = PaperBroker(
            session,
            fee_rate=account.fee_rate,
            slippage_bps=account.slippage_bps,
            currency=portfolio.base_currency,
        )
        price = broker.fill_price(reference, parent.side)
        execution = Execution(
            quantity, price, broker.fee(quantity * price), portfolio.base_currency
        )
        if not self._cash_or_cancel(
            session, parent, portfolio, pnl.Fill(parent.side, quantity, price, execution.fee), at
        ):
            return False
        child_values: dict[str, Any] = {
            "user_id": parent.user_id,
            "account_id": parent.account_id,
            "portfolio_id": parent.portfolio_id,
            "parent_order_id": parent.id,
            "client_order_id": f"{parent.client_order_id}-{index}"
            if parent.client_order_id
            else None,
            "symbol": parent.symbol,
            "exchange": parent.exchange,
            "side": parent.side,
            "order_type": OrderType.market,
            "product": parent.product,
            "time_in_force": TimeInForce.GTC,
            "quantity": quantity,
            "status": OrderStatus.filled,
            "filled_quantity": quantity,
            "average_fill_price": price,
            "fee": execution.fee,
            "fee_currency": execution.fee_currency,
            "placed_at": at,
            "filled_at": at,
            "signal_id": parent.signal_id,
            "strategy_id": parent.strategy_id,
            "deployment_id": parent.deployment_id,
            "tag": f"{parent.order_type} child {index + 1}",
        }
        child_id = session.connection().execute(_INSERT_ORDER.statement, child_values).scalar()
        assert child_id is not None
        trade_id = self._book(session, portfolio, child_values | {"id": child_id}, execution, at)
        self._write_events(
            session,
            child_id,
            [
                (OrderEventType.created, None, OrderStatus.pending, {}),
                (OrderEventType.accepted, OrderStatus.pending, OrderStatus.open, {}),
                (
                    OrderEventType.filled,
                    OrderStatus.open,
                    OrderStatus.filled,
                    {"trade_id": trade_id, "parent_order_id": parent.id},
                ),
            ],
            at,
            quantity=quantity,
            price=price,
        )
        _emit_order(
            session,
            EventType.order_filled,
            child_values | {"id": child_id},
            trade_id=trade_id,
            fill_quantity=quantity,
            fill_price=price,
            filled_at=at,
        )
        self._add_fill(
            session,
            parent,
            quantity,
            execution,
            at,
            {"child_order_id": child_id, "trade_id": trade_id},
        )
        return True

    def _venue(self, session: Session, order: Order) -> tuple[Portfolio, TradingAccount]:
        """The order's portfolio, locked for the fill, and its trading account."""
        from tradebase.portfolios.models import Portfolio as PortfolioModel

        assert order.portfolio_id is not None
        statement = select(PortfolioModel).where(PortfolioModel.id == order.portfolio_id)
        if session.get_bind().dialect.name != "sqlite":
            statement = statement.with_for_update()
        portfolio = session.scalars(statement).one()
        account = session.get(TradingAccount, order.account_id)
        assert account is not None
        return portfolio, account

    def _cash_or_cancel(
        self,
        session: Session,
        order: Order,
        portfolio: Portfolio,
        fill: pnl.Fill,
        at: datetime,
    ) -> bool:
        """True if the fill may happen (its value fits the ledger, the cash can move, a CNC
        sell stays within its position and holding, a reduce-only order within the opposite
        position); otherwise cancel the order, saying why, and False."""
        try:
            check_storable(fill)
            portfolio_service.check_cash(portfolio, fill.cash_change)
            settlement_service.check_fill(session, order)
            if (order.algo_params or {}).get("reduce_only"):
                self._check_reduces(
                    session, portfolio, order.symbol, order.exchange, order.product, fill
                )
        except TradebaseError as exc:
            self._cancel_with_reason(session, order, exc.message, at)
            return False
        return True

    def _cancel_with_reason(
        self, session: Session, order: Order, reason: str, at: datetime
    ) -> None:
        target = check_move(order.status, OrderStatus.cancelled)
        self._write_events(
            session,
            order.id,
            [(OrderEventType.cancelled, order.status, target, {"reason": reason})],
            at,
        )
        order.status = target
        order.cancelled_at = at
        order.reject_reason = reason
        _emit_order(session, EventType.order_cancelled, order, reason=reason)

    def _add_fill(
        self,
        session: Session,
        order: Order,
        quantity: Decimal,
        execution: Execution,
        at: datetime,
        details: dict[str, Any],
    ) -> None:
        """Add a fill to an order already placed: filled quantity, average price, fee,
        status (partially_filled or filled) and the event."""
        filled = order.filled_quantity + quantity
        order.average_fill_price = quantize(
            (
                (order.average_fill_price or Decimal(0)) * order.filled_quantity
                + execution.price * quantity
            )
            / filled
        )
        order.filled_quantity = filled
        order.fee = order.fee + execution.fee
        order.fee_currency = execution.fee_currency
        target = OrderStatus.filled if filled == order.quantity else OrderStatus.partially_filled
        event = (
            OrderEventType.filled
            if target == OrderStatus.filled
            else OrderEventType.partially_filled
        )
        self._write_events(
            session,
            order.id,
            [(event, order.status, check_move(order.status, target), details)],
            at,
            quantity=quantity,
            price=execution.price,
        )
        order.status = target
        if target == OrderStatus.filled:
            order.filled_at = at
        _emit_order(
            session,
            EventType.order_filled
            if target == OrderStatus.filled
            else EventType.order_partially_filled,
            order,
            trade_id=details.get("trade_id"),
            fill_quantity=quantity,
            fill_price=execution.price,
            filled_at=at,
        )

    def _fill_resting(
        self, session: Session, order: Order, price: Decimal, bar: Bar, at: datetime
    ) -> bool:
        portfolio, account = self._venue(session, order)
        remaining = order.quantity - order.filled_quantity
        cap = (order.algo_params or {}).get("participation")
        quantity = min(remaining, quantize(bar.volume * Decimal(str(cap)))) if cap else remaining
        if quantity <= 0:
            return False
        broker = PaperBroker(
            session,
            fee_rate=account.fee_rate,
            slippage_bps=Decimal(0),
            currency=portfolio.base_currency,
        )
        execution = Execution(
            quantity, price, broker.fee(quantity * price), portfolio.base_currency
        )
        fill = pnl.Fill(order.side, quantity, price, execution.fee)
        if not self._cash_or_cancel(session, order, portfolio, fill, at):
            return False
        order_values = {
            "id": order.id,
            "user_id": order.user_id,
            "side": order.side,
            "symbol": order.symbol,
            "exchange": order.exchange,
            "product": order.product,
            "signal_id": order.signal_id,
            "algo_params": order.algo_params,
        }
        trade_id = self._book(session, portfolio, order_values, execution, at)
        self._add_fill(
            session,
            order,
            quantity,
            execution,
            at,
            {"trade_id": trade_id, "fee": str(execution.fee)},
        )
        return True

    def _insert_order(
        self, session: Session, principal: Principal, values: dict[str, Any]
    ) -> tuple[Order, bool]:
        """Insert the order row; return it (loaded, not read back) and True, or the order
        that holds the same ``client_order_id`` and False."""
        settlement_service.check_order(session, values)  # CNC sells: portfolios/settlement.py
        connection = connection_of(session)
        stamp = utc_now()
        values = {"created_at": stamp, "updated_at": stamp, **values}
        # Another process may insert the same client_order_id now (not on SQLite: the
        # unit of work holds the write lock and the id was looked up under it).
        race = values["client_order_id"] is not None and connection.dialect.name != "sqlite"
        try:
            if race:
                with session.begin_nested():  # the session, so that it emits the SAVEPOINT
                    order_id = _INSERT_ORDER.scalar(session, values)
            else:
                order_id = _INSERT_ORDER.scalar(connection, values)
        except IntegrityError:
            if not race:
                raise
            existing = self._by_client_id(session, principal, values["client_order_id"])
            if existing is not None:
                return existing, False
            raise ClientOrderIdTaken(
                f"client_order_id {values['client_order_id']!r} is in use"
            ) from None
        return attach(session, Order, {**values, "id": order_id}), True

    def _write_events(
        self,
        session: Session,
        order_id: int,
        moves: list[tuple[str, Any, Any, dict[str, Any]]],
        at: datetime,
        *,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
    ) -> None:
        created = utc_now()
        _INSERT_EVENT.run_many(
            session,
            [
                {
                    "created_at": created,
                    "order_id": order_id,
                    "event_type": event,
                    "from_status": before,
                    "to_status": after,
                    "quantity": quantity if after == OrderStatus.filled else None,
                    "price": price if after == OrderStatus.filled else None,
                    "details": details or None,
                    "occurred_at": at,
                }
                for event, before, after, details in moves
            ],
        )

    def _book(
        self,
        session: Session,
        portfolio: Portfolio,
        order: dict[str, Any],
        execution: Execution,
        now: datetime,
    ) -> int:
        """Book an execution of a new order: position, trade and cash (Core statements).

        A CNC sell that drew on a holding records that part in the trade's metadata,
        ``{"holding": {"quantity", "cost", "fee", "pnl"}}``; the trade's ``pnl`` is the
        realized P&L of both parts (`tradebase reconcile` replays it from there)."""
        options = order.get("algo_params") or {}
        closes = portfolio.position_mode == PositionMode.hedging and bool(
            options.get("reduce_only")
        )
        fill = pnl.Fill(
            order["side"], execution.quantity, execution.price, execution.fee, closes=closes
        )
        metadata: dict[str, Any] = {"closes": True} if closes else {}
        effect = portfolio_service.apply_fill(
            session,
            portfolio,
            symbol=order["symbol"],
            exchange=order["exchange"],
            product=order["product"],
            fill=fill,
            signal_id=order["signal_id"],
            deal_id=options.get("deal_id"),
            at=now,
        )
        created = utc_now()
        trade_id: int | None = _INSERT_TRADE.scalar(
            session,
            {
                "created_at": created,
                "updated_at": created,
                "metadata": metadata
                if effect.holding is None
                else {**metadata, "holding": _sold(effect.holding)},
                "user_id": order["user_id"],
                "portfolio_id": portfolio.id,
                "order_id": order["id"],
                "position_id": effect.position_id,
                "symbol": order["symbol"],
                "exchange": order["exchange"],
                "side": order["side"],
                "quantity": execution.quantity,
                "price": execution.price,
                "value": fill.value,
                "fee": execution.fee,
                "fee_currency": execution.fee_currency,
                "pnl": effect.realized,
                "pnl_percent": quantize(effect.realized * 100 / effect.released_cost)
                if effect.realized is not None and effect.released_cost
                else None,
                "executed_at": now,
            },
        )
        assert trade_id is not None
        portfolio_service.move_cash(
            session,
            portfolio,
            fill.cash_change,
            CashMovementKind.trade,
            trade_id=trade_id,
            note=f"order {order['id']}",
        )
        return trade_id

    def _check_reduces(
        self,
        session: Session,
        portfolio: Portfolio,
        symbol: str,
        exchange: str,
        product: str,
        fill: pnl.Fill,
    ) -> None:
        """Refuse a reduce-only fill larger than the opposite open position."""
        direction = pnl.SHORT if fill.side == pnl.BUY else pnl.LONG
        held = portfolio_service.open_quantity(
            session, portfolio.id, symbol=symbol, exchange=exchange, product=product,
            direction=direction,
        )  # fmt: skip
        if fill.quantity > held:
            raise ReduceOnlyRefused(
                f"reduce_only: a {fill.side} of {fill.quantity} would exceed the open"
                f" {direction} of {held} {symbol}",
                details={"direction": direction, "open": str(held), "quantity": str(fill.quantity)},
            )

    def _by_client_id(
        self, session: Session, principal: Principal, client_order_id: str
    ) -> Order | None:
        # A prepared look for the id first: almost always there is none, and an ORM query
        # costs several times the lookup (bench/bench_signals.py).
        found = _ORDER_BY_CLIENT_ID.rows(session, {"cid": client_order_id})
        if not found:
            return None
        if found[0].user_id != principal.user_id and not principal.is_admin:
            raise ClientOrderIdTaken(f"client_order_id {client_order_id!r} is in use")
        return session.get(Order, found[0].id)

    def get(self, session: Session, principal: Principal, order_id: int) -> Order:
        order = session.scalars(
            scoped(select(Order), Order.user_id, principal).where(Order.id == order_id)
        ).first()
        if order is None:
            raise OrderNotFound(f"no order {order_id}")
        return order

    def list(
        self,
        session: Session,
        principal: Principal,
        *,
        portfolio_id: int | None = None,
        symbol: str | None = None,
        status: str | None = None,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> Sequence[Order]:
        """Orders newest first, filtered; ``after_id`` continues from a previous page."""
        statement = scoped(select(Order), Order.user_id, principal)
        for column, value in (
            (Order.portfolio_id, portfolio_id),
            (Order.symbol, symbol),
            (Order.status, status),
            (Order.side, side),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if since is not None:
            statement = statement.where(Order.created_at >= since)
        if until is not None:
            statement = statement.where(Order.created_at < until)
        if after_id is not None:
            statement = statement.where(Order.id < after_id)
        return session.scalars(statement.order_by(Order.id.desc()).limit(limit)).all()

    def cancel(self, session: Session, principal: Principal, order_id: int) -> Order:
        require_writer(principal)
        order = self.get(session, principal, order_id)
        if order.status not in CANCELLABLE:
            check_move(order.status, OrderStatus.cancelled)  # raises, naming both statuses
        order.cancelled_at = utc_now()
        _event(session, order, OrderEventType.cancelled, OrderStatus.cancelled)
        session.flush()
        _emit_order(session, EventType.order_cancelled, order, reason="cancelled by the user")
        audit_service.record_by(
            session,
            principal,
            action="order.cancelled",
            resource_type="order",
            resource_id=order.id,
        )
        return order

    def amend(
        self,
        session: Session,
        principal: Principal,
        order_id: int,
        *,
        price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        quantity: Decimal | None = None,
    ) -> Order:
        """Change the price, stop or quantity of a resting order (not below what is filled)."""
        require_writer(principal)
        order = self.get(session, principal, order_id)
        if order.exchange_order_id is not None:
            raise AmendRefused(
                "this order rests at a live broker: cancel it and place a new one",
                details={"exchange_order_id": order.exchange_order_id},
            )
        if order.order_type not in RESTING_TYPES or order.status not in RESTING:
            raise AmendRefused(
                f"only a resting limit or stop order can be amended; this one is"
                f" {order.order_type}, {order.status}",
                details={"status": order.status, "order_type": order.order_type},
            )
        if quantity is not None and quantity <= order.filled_quantity:
            raise AmendRefused(
                f"the quantity must stay above what is filled ({order.filled_quantity})",
                details={"field": "quantity", "filled": str(order.filled_quantity)},
            )
        if price is not None and order.order_type == OrderType.stop_loss:
            raise AmendRefused(
                "a stop_loss order has no limit price: amend trigger_price",
                details={"field": "price"},
            )
        if trigger_price is not None and order.order_type == OrderType.limit:
            raise AmendRefused(
                "a limit order has no trigger_price: amend price",
                details={"field": "trigger_price"},
            )
        changes: dict[str, Any] = {}
        for name, value in (
            ("price", price),
            ("trigger_price", trigger_price),
            ("quantity", quantity),
        ):
            if value is not None and value != getattr(order, name):
                changes[name] = {"from": str(getattr(order, name)), "to": str(value)}
                setattr(order, name, value)
        if changes:
            self._write_events(
                session,
                order.id,
                [(OrderEventType.amended, order.status, order.status, changes)],
                utc_now(),
            )
            session.flush()
            audit_service.record_by(
                session,
                principal,
                action="order.amended",
                resource_type="order",
                resource_id=order.id,
                details=changes,
            )
        return order

    def events(self, session: Session, principal: Principal, order_id: int) -> Sequence[OrderEvent]:
        order = self.get(session, principal, order_id)
        return session.scalars(
            select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
        ).all()

    def trades(self, session: Session, principal: Principal, portfolio_id: int) -> Sequence[Trade]:
        portfolio = portfolio_service.get(session, principal, portfolio_id)
        return session.scalars(
            select(Trade).where(Trade.portfolio_id == portfolio.id).order_by(Trade.id)
        ).all()


def _options(
    *, participation: Decimal | None = None, reduce_only: bool = False, deal_id: str | None = None
) -> dict[str, Any] | None:
    """The order options kept in ``algo_params`` (None when there are none)."""
    options: dict[str, Any] = {}
    if deal_id:
        options["deal_id"] = deal_id
    if participation:
        options["participation"] = str(participation)
    if reduce_only:
        options["reduce_only"] = True
    return options or None


def check_storable(fill: pnl.Fill) -> None:
    """Refuse a fill whose value the ledger cannot hold exactly (18 decimal places): the
    paper broker's slipped price times a many-decimal quantity can need more."""
    try:
        check_fits(fill.value)
    except ValueError as exc:
        raise FillTooPrecise(
            f"the fill's value {fill.quantity} x {fill.price} = {fill.value} {exc}: use fewer"
            " decimal places in the quantity or the price",
            details={"quantity": str(fill.quantity), "price": str(fill.price)},
        ) from None


def _sold(sale: pnl.HoldingSale) -> dict[str, str]:
    return {
        name: str(canonical(value))
        for name, value in (
            ("quantity", sale.quantity),
            ("cost", sale.cost),
            ("fee", sale.fee),
            ("pnl", sale.realized),
        )
    }


RESTING_TYPES = frozenset({OrderType.limit, OrderType.stop_loss, OrderType.stop_limit})
ALGO_TYPES = frozenset({OrderType.twap, OrderType.vwap})
_FILLED = frozenset({OrderStatus.filled, OrderStatus.partially_filled})


def day_end(session: Session, exchange: str, placed: datetime) -> datetime:
    """When a DAY order placed at *placed* expires: the close of its exchange's trading
    day, or for an exchange without a calendar 00:00 UTC after the day it was placed."""
    close = trading_day_close(session, exchange, placed)
    if close is not None:
        return close
    midnight = placed.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=1)


@functools.cache
def bar_query(sqlite: bool) -> CompoundSelect[Any]:
    """`OrderService._bar_orders` as one statement, UNION ALL of ranges (one round trip;
    each branch keeps its own index, which one WHERE with ORs would not on every engine).
    Parameters: symbol, exchange, at, and `key_params` low and high. An order may come
    twice (a DAY limit the bar reaches), and the rows are unordered: an ORDER BY id leads
    SQLite to walk every order of the symbol by rowid instead."""
    resting = and_(
        Order.symbol == bindparam("symbol"),
        Order.exchange == bindparam("exchange"),
        Order.status.in_([OrderStatus.open, OrderStatus.partially_filled]),
    )
    as_limit = and_(
        Order.order_type.in_([OrderType.limit, OrderType.stop_limit]),
        or_(Order.order_type == OrderType.limit, Order.triggered_at.is_not(None)),
    )
    as_stop = and_(
        Order.order_type.in_([OrderType.stop_loss, OrderType.stop_limit]),
        Order.triggered_at.is_(None),
    )
    return union_all(
        # idx_orders_book_price
        select(Order).where(
            resting, as_limit, Order.side == "buy", at_least(Order.price, "low", sqlite=sqlite)
        ),
        select(Order).where(
            resting, as_limit, Order.side == "sell", at_most(Order.price, "high", sqlite=sqlite)
        ),
        # idx_orders_book_trigger
        select(Order).where(
            resting,
            as_stop,
            Order.side == "buy",
            at_most(Order.trigger_price, "high", sqlite=sqlite),
        ),
        select(Order).where(
            resting,
            as_stop,
            Order.side == "sell",
            at_least(Order.trigger_price, "low", sqlite=sqlite),
        ),
        # idx_orders_book_expiry
        select(Order).where(resting, Order.expires_at <= bindparam("at", type_=UTCDateTime())),
        # the leading columns of a book index
        select(Order).where(resting, Order.order_type.in_([OrderType.twap, OrderType.vwap])),
    )


@functools.cache
def _bar_statement(sqlite: bool) -> Any:
    return select(Order).from_statement(bar_query(sqlite))


def due_query(at: datetime) -> Any:
    """Resting orders, of any symbol, whose ``expires_at`` has come by *at*."""
    return select(Order).where(Order.status.in_(list(RESTING)), Order.expires_at <= at)


# Built once: constructing statements per order costs more than running them.
_orders = cast(Table, Order.__table__)
_INSERT_ORDER = Prepared(insert(_orders).returning(_orders.c.id))
_INSERT_EVENT = Prepared(insert(cast(Table, OrderEvent.__table__)))
_ORDER_BY_CLIENT_ID = Prepared(
    select(_orders.c.id, _orders.c.user_id)
    .where(_orders.c.client_order_id == bindparam("cid"))
    .limit(1)
)
_trades = cast(Table, Trade.__table__)
_INSERT_TRADE = Prepared(insert(_trades).returning(_trades.c.id))

order = OrderService()
