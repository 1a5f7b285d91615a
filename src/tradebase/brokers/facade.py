"""An OpenAlgo-compatible API served by Tradebase, over its paper broker.

``POST /openalgo/api/v1/<endpoint>`` with a JSON body carrying ``apikey`` (a Tradebase API
key; its scopes apply: write:orders to place and cancel, read:orders for orders and
trades, read:portfolio for positions, holdings and funds). Answers have OpenAlgo's shapes:
``{"status": "success", "orderid": ...}`` / ``{"status": "success", "data": ...}``, and
errors ``{"status": "error", "message": ...}`` with a 4xx status (400 bad input, 403 a
wrong key or scope, 404 no such order, 409 a move the order cannot make, 422 refused).
Amounts are exact decimal strings.

Which portfolio: the body's optional ``portfolio_id``, else the first portfolio of the
key owner's first active account in failover order (the primary first, then by
priority); it must be on a paper account. Extra fields Tradebase reads: ``portfolio_id``
and ``client_order_id`` (idempotent: the same id again answers the same orderid and
places nothing; kept per key owner as ``oa<user id>:<id>``, echoed as sent). Unknown
fields are ignored, as OpenAlgo clients send a few of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tradebase.brokers.openalgo import ACTION_OF, ORDER_STATUS_OF, ORDER_TYPE_OF, PRICETYPE_OF
from tradebase.core.auth import Principal
from tradebase.core.errors import BadRequest, Forbidden, TradebaseError, Unauthorized
from tradebase.core.http import SessionDep, key_principal
from tradebase.core.money import canonical
from tradebase.orders.errors import OrderNotFound
from tradebase.orders.models import Order, OrderStatus, Trade
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Holding, Portfolio, Position, Product, TradingAccount
from tradebase.portfolios.service import portfolio as portfolio_service

ZERO = Decimal(0)


def _text(value: Decimal | None) -> str:
    return "0" if value is None else str(canonical(value))


def _fail(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message, **extra}, status_code=status)


class OpenAlgoRoute(APIRoute):
    """Renders every failure of a facade route in OpenAlgo's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                if first.get("type") == "json_invalid":
                    return _fail(400, "the request body is not valid JSON")
                field = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
                return _fail(400, f"{field}: {first.get('msg', 'invalid')}")
            except TradebaseError as exc:
                status = 403 if isinstance(exc, Unauthorized) else exc.status_code
                extra: dict[str, Any] = {}
                if isinstance(exc.details.get("order_id"), int):
                    extra["orderid"] = str(exc.details["order_id"])
                return _fail(status, exc.message, **extra)

        return route


router = APIRouter(prefix="/openalgo/api/v1", tags=["openalgo"], route_class=OpenAlgoRoute)


async def facade_principal(request: Request) -> Principal:
    """The owner of the body's ``apikey`` (read before the session opens: authentication
    writes in its own transaction)."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    apikey = body.get("apikey") if isinstance(body, dict) else None
    if not isinstance(apikey, str) or not apikey:
        raise BadRequest("apikey: required (a Tradebase API key)")
    return await run_in_threadpool(key_principal, request, apikey)


FacadePrincipal = Annotated[Principal, Depends(facade_principal)]


def _allow(principal: Principal, scope: str) -> None:
    if not principal.allows(scope):
        raise Forbidden(f"this API key lacks the {scope!r} scope")


# --- request bodies ---------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    apikey: str = Field(min_length=1)
    portfolio_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError("must be a number")
    try:
        amount = Decimal(str(value).strip())
    except ArithmeticError:
        raise ValueError("must be a number") from None
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    return amount


class PlaceOrder(_Body):
    strategy: str = Field(default="OpenAlgo", max_length=100)
    exchange: str = Field(min_length=1, max_length=50)
    symbol: str = Field(min_length=1, max_length=50)
    action: str
    quantity: Decimal
    pricetype: str = "MARKET"
    product: str = "MIS"
    price: Decimal = ZERO
    trigger_price: Decimal = ZERO
    disclosed_quantity: Decimal = ZERO
    client_order_id: str | None = Field(default=None, min_length=1, max_length=80)

    @field_validator("quantity", "price", "trigger_price", "disclosed_quantity", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Decimal:
        return _amount(value)

    @field_validator("action")
    @classmethod
    def _action(cls, value: str) -> str:
        if value.upper() not in ("BUY", "SELL"):
            raise ValueError("must be BUY or SELL")
        return value.upper()

    @field_validator("pricetype")
    @classmethod
    def _pricetype(cls, value: str) -> str:
        if value.upper() not in ORDER_TYPE_OF:
            raise ValueError("must be MARKET, LIMIT, SL or SL-M")
        return value.upper()

    @field_validator("product")
    @classmethod
    def _product(cls, value: str) -> str:
        if value.upper() not in set(Product):
            raise ValueError("must be MIS, NRML or CNC")
        return value.upper()

    @field_validator("quantity")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("price", "trigger_price", "disclosed_quantity")
    @classmethod
    def _not_negative(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("must not be negative")
        return value


class PlaceSmartOrder(PlaceOrder):
    position_size: Decimal

    @field_validator("position_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Decimal:
        return _amount(value)

    @field_validator("quantity")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:  # 0 is allowed: the size decides
        if value < 0:
            raise ValueError("must not be negative")
        return value


class OrderRef(_Body):
    orderid: str = Field(min_length=1, max_length=40)
    strategy: str | None = None


class Plain(_Body):
    pass


# --- helpers ----------------------------------------------------------------------------


def _portfolio(session: Session, principal: Principal, portfolio_id: int | None) -> Portfolio:
    """The portfolio the facade trades (module docstring): a paper one."""
    if portfolio_id is not None:
        portfolio = portfolio_service.get(session, principal, portfolio_id)
    else:
        found = session.scalars(
            select(Portfolio)
            .join(TradingAccount, TradingAccount.id == Portfolio.account_id)
            .where(TradingAccount.user_id == principal.user_id, TradingAccount.is_active)
            .order_by(
                TradingAccount.is_primary.desc(),
                TradingAccount.priority,
                TradingAccount.id,
                Portfolio.id,
            )
            .limit(1)
        ).first()
        if found is None:
            raise BadRequest("this API key's user has no portfolio on an active account")
        portfolio = found
    account = session.get(TradingAccount, portfolio.account_id)
    assert account is not None
    if account.broker != "paper":
        raise BadRequest(
            f"portfolio {portfolio.id} is on a {account.broker} account: the OpenAlgo facade"
            " trades paper accounts; pass portfolio_id of a paper one"
        )
    return portfolio


def _order_id(orderid: str) -> int:
    if not orderid.isdigit() or int(orderid) > 2**63 - 1:
        raise OrderNotFound(f"no order {orderid}")
    return int(orderid)


def _owned(session: Session, principal: Principal, portfolio: Portfolio, orderid: str) -> Order:
    order = order_service.get(session, principal, _order_id(orderid))
    if order.portfolio_id != portfolio.id:
        raise OrderNotFound(f"no order {orderid} in portfolio {portfolio.id}")
    return order


def stored_client_id(user_id: int, client_order_id: str) -> str:
    """How the facade keeps a client's ``client_order_id``: under the key owner's
    namespace, so that two clients (or a Tradebase that is its own broker) never collide
    on the unique orders.client_order_id."""
    return f"oa{user_id}:{client_order_id}"


def _client_id(order: Order) -> str | None:
    prefix = f"oa{order.user_id}:"
    coid = order.client_order_id
    return coid[len(prefix) :] if coid and coid.startswith(prefix) else coid


def _stamp(order: Order) -> str:
    return order.created_at.strftime("%d-%b-%Y %H:%M:%S")


def _order_row(order: Order) -> dict[str, Any]:
    return {
        "action": ACTION_OF[order.side],
        "symbol": order.symbol,
        "exchange": order.exchange,
        "orderid": str(order.id),
        "product": order.product,
        "quantity": _text(order.quantity),
        "price": _text(order.price),
        "pricetype": PRICETYPE_OF.get(order.order_type, order.order_type.upper()),
        "order_status": ORDER_STATUS_OF[order.status],
        "trigger_price": _text(order.trigger_price),
        "average_price": _text(order.average_fill_price),
        "timestamp": _stamp(order),
        # Tradebase's additions: what a client needs to find an order it lost track of.
        "client_order_id": _client_id(order),
        "filled_quantity": _text(order.filled_quantity),
        "message": order.reject_reason,
    }


def _place(
    session: Session, principal: Principal, body: PlaceOrder, side: str, quantity: Decimal
) -> Order:
    portfolio = _portfolio(session, principal, body.portfolio_id)
    order = order_service.place(
        session,
        principal,
        portfolio_id=portfolio.id,
        symbol=body.symbol,
        side=side,
        quantity=quantity,
        order_type=ORDER_TYPE_OF[body.pricetype],
        exchange=body.exchange,
        price=body.price or None,
        trigger_price=body.trigger_price or None,
        product=body.product,
        client_order_id=None
        if body.client_order_id is None
        else stored_client_id(principal.user_id, body.client_order_id),
        tag=body.strategy or None,
    )
    if body.disclosed_quantity and order.disclosed_quantity is None:
        order.disclosed_quantity = body.disclosed_quantity
        session.flush()
    return order


def _placed(order: Order) -> dict[str, Any] | JSONResponse:
    if order.status == OrderStatus.rejected:  # a client_order_id that was refused before
        return _fail(422, f"order rejected: {order.reject_reason}", orderid=str(order.id))
    return {"status": "success", "orderid": str(order.id)}


# --- the endpoints ----------------------------------------------------------------------


@router.post("/placeorder", response_model=None)
def placeorder(
    body: PlaceOrder, principal: FacadePrincipal, session: SessionDep
) -> dict[str, Any] | JSONResponse:
    """Place an order: ``{"status": "success", "orderid": "..."}``."""
    _allow(principal, "write:orders")
    order = _place(session, principal, body, body.action.lower(), body.quantity)
    return _placed(order)


@router.post("/placesmartorder", response_model=None)
def placesmartorder(
    body: PlaceSmartOrder, principal: FacadePrincipal, session: SessionDep
) -> dict[str, Any] | JSONResponse:
    """Trade to reach ``position_size`` (signed): the order is the difference from the
    current net position of the symbol and product; with ``position_size`` 0 and no
    position, ``quantity`` is traded as ``action`` says (OpenAlgo's rule)."""
    _allow(principal, "write:orders")
    portfolio = _portfolio(session, principal, body.portfolio_id)
    held = {
        direction: portfolio_service.open_quantity(
            session,
            portfolio.id,
            symbol=body.symbol,
            exchange=body.exchange,
            product=body.product,
            direction=direction,
        )
        for direction in ("long", "short")
    }
    current = held["long"] - held["short"]
    if body.position_size == 0 and current == 0:
        if body.quantity == 0:
            return {"status": "success", "message": "No action needed: quantity is 0"}
        side, quantity = body.action.lower(), body.quantity
    else:
        delta = body.position_size - current
        if delta == 0:
            return {
                "status": "success",
                "message": f"No action needed: the position is already {_text(current)}",
            }
        side, quantity = ("buy", delta) if delta > 0 else ("sell", -delta)
    body = body.model_copy(update={"portfolio_id": portfolio.id})
    return _placed(_place(session, principal, body, side, quantity))


@router.post("/cancelorder")
def cancelorder(body: OrderRef, principal: FacadePrincipal, session: SessionDep) -> dict[str, Any]:
    _allow(principal, "write:orders")
    portfolio = _portfolio(session, principal, body.portfolio_id)
    order = _owned(session, principal, portfolio, body.orderid)
    if order.status != OrderStatus.cancelled:  # cancelling twice answers success (OpenAlgo)
        order_service.cancel(session, principal, order.id)
    return {"status": "success", "orderid": str(order.id)}


@router.post("/orderstatus")
def orderstatus(body: OrderRef, principal: FacadePrincipal, session: SessionDep) -> dict[str, Any]:
    _allow(principal, "read:orders")
    portfolio = _portfolio(session, principal, body.portfolio_id)
    return {
        "status": "success",
        "data": _order_row(_owned(session, principal, portfolio, body.orderid)),
    }


@router.post("/orderbook")
def orderbook(body: Plain, principal: FacadePrincipal, session: SessionDep) -> dict[str, Any]:
    """Every order of the portfolio, oldest first, with OpenAlgo's statistics."""
    _allow(principal, "read:orders")
    portfolio = _portfolio(session, principal, body.portfolio_id)
    orders = session.scalars(
        select(Order).where(Order.portfolio_id == portfolio.id).order_by(Order.id)
    ).all()
    rows = [_order_row(o) for o in orders]
    return {
        "status": "success",
        "data": {
            "orders": rows,
            "statistics": {
                "total_buy_orders": sum(1 for r in rows if r["action"] == "BUY"),
                "total_sell_orders": sum(1 for r in rows if r["action"] == "SELL"),
                "total_completed_orders": sum(1 for r in rows if r["order_status"] == "complete"),
                "total_open_orders": sum(
                    1 for r in rows if r["order_status"] in ("open", "pending")
                ),
                "total_rejected_orders": sum(1 for r in rows if r["order_status"] == "rejected"),
            },
        },
    }


@router.post("/tradebook")
def tradebook(body: Plain, principal: FacadePrincipal, session: SessionDep) -> dict[str, Any]:
    """One row per fill, in execution order."""
    _allow(principal, "read:orders")
    portfolio = _portfolio(session, principal, body.portfolio_id)
    trades = session.scalars(
        select(Trade).where(Trade.portfolio_id == portfolio.id).order_by(Trade.id)
    ).all()
    products: dict[int, str] = {
        row[0]: row[1]
        for row in session.execute(
            select(Order.id, Order.product).where(
                Order.id.in_({t.order_id for t in trades if t.order_id is not None})
            )
        )
    }
    return {
        "status": "success",
        "data": [
            {
                "action": ACTION_OF[t.side],
                "symbol": t.symbol,
                "exchange": t.exchange,
                "orderid": str(t.order_id),
                "product": products.get(t.order_id or 0, Product.NRML),
                "quantity": _text(t.quantity),
                "average_price": _text(t.price),
                "timestamp": t.executed_at.strftime("%H:%M:%S"),
                "trade_value": _text(t.value),
            }
            for t in trades
        ],
    }


@router.post("/positionbook")
def positionbook(body: Plain, principal: FacadePrincipal, session: SessionDep) -> dict[str, Any]:
    """Open positions, quantity signed (short is negative); ``ltp`` is the last mark (the
    entry price before any), ``pnl`` realized plus unrealized."""
    _allow(principal, "read:portfolio")
    portfolio = _portfolio(session, principal, body.portfolio_id)
    positions = session.scalars(
        select(Position)
        .where(Position.portfolio_id == portfolio.id, Position.status == "open")
        .order_by(Position.symbol, Position.id)
    ).all()
    return {
        "status": "success",
        "data": [
            {
                "symbol": p.symbol,
                "exchange": p.exchange,
                "product": p.product,
                "quantity": _text(p.quantity if p.direction == "long" else -p.quantity),
                "average_price": _text(p.entry_price),
                "ltp": _text(p.current_price or p.entry_price),
                "pnl": _text(p.realized_pnl + p.unrealized_pnl),
            }
            for p in positions
        ],
    }


@router.post("/holdings")
def holdings(body: Plain, principal: FacadePrincipal, session: SessionDep) -> dict[str, Any]:
    """Settled CNC holdings with OpenAlgo's statistics; value at the last mark, else cost."""
    _allow(principal, "read:portfolio")
    portfolio = _portfolio(session, principal, body.portfolio_id)
    rows = session.scalars(
        select(Holding)
        .where(Holding.portfolio_id == portfolio.id)
        .order_by(Holding.symbol, Holding.exchange)
    ).all()
    invested = sum((h.invested_value or h.quantity * h.average_price for h in rows), ZERO)
    value = sum(
        (h.current_value or h.quantity * (h.current_price or h.average_price) for h in rows),
        ZERO,
    )
    pnl = sum((h.pnl or ZERO for h in rows), ZERO)
    return {
        "status": "success",
        "data": {
            "holdings": [
                {
                    "symbol": h.symbol,
                    "exchange": h.exchange,
                    "product": Product.CNC,
                    "quantity": _text(h.quantity),
                    "pnl": _text(h.pnl or ZERO),
                    "pnlpercent": _text(h.pnl_percent or ZERO),
                }
                for h in rows
            ],
            "statistics": {
                "totalholdingvalue": _text(value),
                "totalinvvalue": _text(invested),
                "totalprofitandloss": _text(pnl),
                "totalpnlpercentage": _text(
                    (pnl * 100 / invested).quantize(Decimal("0.01")) if invested else ZERO
                ),
            },
        },
    }


@router.post("/funds")
def funds(body: Plain, principal: FacadePrincipal, session: SessionDep) -> dict[str, Any]:
    """``availablecash`` the portfolio's cash; ``m2mrealized`` the realized P&L of its
    fills, ``m2munrealized`` that of its open positions; ``utiliseddebits`` the cost of
    its open positions; ``collateral`` 0 (paper has none)."""
    _allow(principal, "read:portfolio")
    portfolio = _portfolio(session, principal, body.portfolio_id)
    pnls = session.scalars(
        select(Trade.pnl).where(Trade.portfolio_id == portfolio.id, Trade.pnl.is_not(None))
    ).all()
    open_rows = session.execute(
        select(Position.unrealized_pnl, Position.cost_basis).where(
            Position.portfolio_id == portfolio.id, Position.status == "open"
        )
    ).all()
    return {
        "status": "success",
        "data": {
            "availablecash": _text(portfolio.cash_balance_usd),
            "collateral": "0",
            "m2mrealized": _text(sum((p for p in pnls if p is not None), ZERO)),
            "m2munrealized": _text(sum((row[0] for row in open_rows), ZERO)),
            "utiliseddebits": _text(sum((row[1] for row in open_rows), ZERO)),
        },
    }


@router.post("/ping")
def ping(body: Plain, principal: FacadePrincipal, session: SessionDep) -> dict[str, Any]:
    """OpenAlgo's authenticated ping: the key works and names a tradable portfolio."""
    portfolio = _portfolio(session, principal, body.portfolio_id)
    return {
        "status": "success",
        "data": {"message": "pong", "broker": "tradebase-paper", "portfolio_id": portfolio.id},
    }
