"""The Python facade: open a Tradebase by URL and use its services as one user.

    import tradebase

    with tradebase.connect("postgresql://tb@db/tradebase", user="dana") as tb:
        account = tb.create_account("paper", fee_rate="0.001")
        portfolio = tb.create_portfolio(account.id, "main")
        tb.deposit(portfolio.id, 10_000)
        tb.place_order(portfolio.id, symbol="ACME", side="buy", quantity=2, price=100)
        tb.trades(portfolio.id)  # a DataFrame, one row per fill

Each call is one unit of work (one transaction) and is scoped and authorized like the
same call over the REST API: the role of the user decides what may be done, another
user's rows are not found, and input is validated by the API's own request schemas.

What comes back:

* one object: the API's pydantic ``…Read`` schema (plain data, safe to keep after the
  transaction has ended; a detached ORM object would raise on a relationship and
  silently ignore changes);
* ``list_…`` methods: a list of those schemas;
* ``trades``, ``equity_curve``, ``positions`` and ``orders``: a pandas DataFrame, with
  prices, quantities, fees and P&L as `Decimal` objects (dtype ``object``, nothing is
  rounded to a float), timestamps as ``datetime64[us, UTC]`` and optional ids as ``Int64``.

Errors are the domain errors the API renders (`tradebase.core.errors.TradebaseError` and
its subclasses: ``PortfolioNotFound``, ``OrderRejected``, ``InsufficientCash`` …); input
that the API would answer with 422 raises `Unprocessable` with the same message.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import pandas as pd
from pydantic import AwareDatetime, BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from tradebase.accounts.errors import UserNotFound
from tradebase.accounts.schemas import MAX_ID, Strict
from tradebase.accounts.service import principal_for
from tradebase.accounts.service import user as user_service
from tradebase.config import Settings, get_settings, normalize_database_url
from tradebase.core import migrate as migrations
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.errors import Unauthorized, Unprocessable
from tradebase.core.http import require
from tradebase.marketdata.schemas import BarIn, BarsIn, BarsResult
from tradebase.marketdata.service import price as price_service
from tradebase.orders.models import OrderSide, OrderStatus
from tradebase.orders.schemas import (
    OrderAmend,
    OrderCreate,
    OrderEventRead,
    OrderRead,
    TradeRead,
)
from tradebase.orders.service import order as order_service
from tradebase.portfolios.reconcile import Report
from tradebase.portfolios.reconcile import reconcile as reconcile_ledger
from tradebase.portfolios.schemas import (
    AccountCreate,
    AccountRead,
    CashChange,
    CashMovementRead,
    PortfolioCreate,
    PortfolioRead,
    PositionRead,
    SnapshotRead,
)
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.portfolios.valuation import EquityPoint

Number = Decimal | int | str  # exact: a str or int becomes a Decimal without rounding
M = TypeVar("M", bound=BaseModel)

_ID = TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=MAX_ID)])
_UTC = pd.DatetimeTZDtype(unit="us", tz="UTC")
_EQUITY_COLUMNS = (
    "total_value",
    "cash",
    "net_deposits",
    "pnl",
    "pnl_24h",
    "pnl_7d",
    "pnl_30d",
)


class _OrderFilter(Strict):
    """The query parameters of ``GET /api/v1/orders``, with the same limits."""

    portfolio_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    symbol: str | None = Field(default=None, max_length=50)
    status: OrderStatus | None = None
    side: OrderSide | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    after_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    limit: int = Field(default=100, ge=1, le=1000)


def _invalid(exc: ValidationError, field: str | None = None) -> Unprocessable:
    """The API's 422 for a request that fails its schema: the first problem, then all."""
    errors = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ())) or field or "",
            "message": err.get("msg"),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"field": field or "", "message": "invalid input"}
    message = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
    return Unprocessable(message, details={"errors": errors})


def _parse(model: type[M], **fields: Any) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _valid_id(name: str, value: int) -> int:
    try:
        return _ID.validate_python(value)
    except ValidationError as exc:
        raise _invalid(exc, name) from exc


def _column(annotation: Any, values: list[Any]) -> pd.Series:
    """A frame column of the type a schema field declares: exact and tz-aware."""
    args = get_args(annotation)
    union = get_origin(annotation) in (Union, types.UnionType)
    optional = union and type(None) in args
    base = next((a for a in args if a is not type(None)), Any) if union else annotation
    if base is datetime:
        return pd.Series(values, dtype=_UTC)
    if base is bool:
        return pd.Series(values, dtype="boolean" if optional else bool)
    if base is int:
        return pd.Series(values, dtype="Int64" if optional else "int64")
    if base is str:
        return pd.Series(values, dtype=None if values else object)
    return pd.Series(values, dtype=object)  # Decimal, dict: the Python objects themselves


def _frame(schema: type[BaseModel], rows: Sequence[BaseModel]) -> pd.DataFrame:
    """One row per object, one column per schema field, in the schema's order."""
    return pd.DataFrame(
        {
            name: _column(info.annotation, [getattr(row, name) for row in rows])
            for name, info in schema.model_fields.items()
        }
    )


def _equity_frame(points: Sequence[EquityPoint]) -> pd.DataFrame:
    index = pd.DatetimeIndex([p.timestamp for p in points], dtype=_UTC, name="timestamp")
    return pd.DataFrame(
        {
            name: pd.Series([getattr(p, name) for p in points], index=index, dtype=object)
            for name in _EQUITY_COLUMNS
        },
        index=index,
    )


def _settings(
    url: str | URL | None, credentials_url: str | URL | None, base: Settings | None
) -> Settings:
    settings = base or get_settings()
    changes: dict[str, str] = {}
    for name, value in (("database_url", url), ("credentials_database_url", credentials_url)):
        if value is not None:
            normalize_database_url(value)  # a wrong URL fails here, saying why
            changes[name] = (
                value.render_as_string(hide_password=False) if isinstance(value, URL) else value
            )
    return settings.model_copy(update=changes) if changes else settings


class Tradebase:
    """A Tradebase, opened as one user. Use `connect` to make one; close it when done
    (or use it as a context manager), which disposes its connection pools.

    Not for sharing between threads that call it at once: open one per thread (each
    call is its own transaction, so several may work on one database).
    """

    def __init__(self, settings: Settings, *, user: str, migrate: bool = True) -> None:
        """Open the databases of *settings* as *user* (a username or email), migrating
        both databases to the latest revision first unless ``migrate`` is false."""
        self.settings = settings
        self._login = user
        self._engines = Engines(settings)
        self._closed = False
        try:
            if migrate:
                for database in Database:
                    migrations.upgrade(database, "head", settings=settings)
            with self._unit(write=False) as (_session, principal):
                self._principal = principal
        except BaseException:
            self.close()
            raise

    # --- plumbing -------------------------------------------------------------------------

    @property
    def principal(self) -> Principal:
        """Who this Tradebase acts as (the user's role as it was when it was opened)."""
        return self._principal

    def close(self) -> None:
        """Dispose the connection pools; later calls raise `RuntimeError`."""
        self._closed = True
        self._engines.dispose()

    def __enter__(self) -> Tradebase:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        url = self.settings.main_url.render_as_string(hide_password=True)
        state = "closed" if self._closed else "open"
        return f"<Tradebase {url} as {self._login!r} ({state})>"

    def _resolve(self, session: Session) -> Principal:
        # Looked up in every unit of work, like an API key on every request: a user
        # disabled or given another role meanwhile is treated as such at once.
        found = user_service.get_by_login(session, self._login)
        if found is None:
            raise UserNotFound(f"no user {self._login!r} (see: tradebase users list)")
        if not found.is_active:
            raise Unauthorized(f"user {found.username!r} is disabled")
        return principal_for(found)

    @contextmanager
    def _unit(
        self, scope: str | None = None, *, write: bool
    ) -> Iterator[tuple[Session, Principal]]:
        """One transaction as the user, who must be allowed *scope* (as on the API)."""
        if self._closed:
            raise RuntimeError("this Tradebase is closed")
        factory = self._engines.session_factory(Database.main)
        with unit_of_work(factory=factory, write=write) as session:
            principal = self._resolve(session)
            if scope is not None:
                require(scope)(principal)
            yield session, principal

    # --- trading accounts -----------------------------------------------------------------

    def create_account(
        self,
        account_name: str,
        *,
        fee_rate: Number = Decimal(0),
        slippage_bps: Number = Decimal(0),
        is_primary: bool = False,
        priority: int = 100,
        broker: str = "paper",
    ) -> AccountRead:
        """Create a paper trading account (fee = fee_rate x value; slippage in bps)."""
        body = _parse(
            AccountCreate,
            account_name=account_name,
            broker=broker,
            fee_rate=fee_rate,
            slippage_bps=slippage_bps,
            is_primary=is_primary,
            priority=priority,
        )
        with self._unit("write:portfolio", write=True) as (session, who):
            account = account_service.create(session, who, **body.model_dump(exclude={"api_key"}))
            return AccountRead.model_validate(account)

    def list_accounts(self) -> list[AccountRead]:
        """List the trading accounts you can see, oldest first."""
        with self._unit("read:portfolio", write=False) as (session, who):
            return [AccountRead.model_validate(a) for a in account_service.list(session, who)]

    def get_account(self, account_id: int) -> AccountRead:
        """Read one trading account; raise `AccountNotFound` if you cannot see it."""
        account_id = _valid_id("account_id", account_id)
        with self._unit("read:portfolio", write=False) as (session, who):
            return AccountRead.model_validate(account_service.get(session, who, account_id))

    # --- portfolios -----------------------------------------------------------------------

    def create_portfolio(
        self,
        account_id: int,
        name: str,
        *,
        base_currency: str = "USD",
        position_mode: str = "netting",
        allow_margin: bool = False,
        periods_per_year: int = 365,
    ) -> PortfolioRead:
        """Create a portfolio under a trading account (position_mode netting or hedging)."""
        body = _parse(
            PortfolioCreate,
            account_id=account_id,
            name=name,
            base_currency=base_currency,
            position_mode=position_mode,
            allow_margin=allow_margin,
            periods_per_year=periods_per_year,
        )
        with self._unit("write:portfolio", write=True) as (session, who):
            portfolio = portfolio_service.create(session, who, **body.model_dump())
            return PortfolioRead.model_validate(portfolio)

    def list_portfolios(self) -> list[PortfolioRead]:
        """List the portfolios you can see, oldest first."""
        with self._unit("read:portfolio", write=False) as (session, who):
            return [PortfolioRead.model_validate(p) for p in portfolio_service.list(session, who)]

    def get_portfolio(self, portfolio_id: int) -> PortfolioRead:
        """Read one portfolio (cash, value, P&L and metrics as of its last snapshot)."""
        portfolio_id = _valid_id("portfolio_id", portfolio_id)
        with self._unit("read:portfolio", write=False) as (session, who):
            return PortfolioRead.model_validate(portfolio_service.get(session, who, portfolio_id))

    def deposit(
        self, portfolio_id: int, amount: Number, *, note: str | None = None
    ) -> CashMovementRead:
        """Add cash to a portfolio; return the ledger row."""
        return self._move_cash(portfolio_id, amount, note, withdraw=False)

    def withdraw(
        self, portfolio_id: int, amount: Number, *, note: str | None = None
    ) -> CashMovementRead:
        """Take cash out of a portfolio (never below zero without margin)."""
        return self._move_cash(portfolio_id, amount, note, withdraw=True)

    def _move_cash(
        self, portfolio_id: int, amount: Number, note: str | None, *, withdraw: bool
    ) -> CashMovementRead:
        portfolio_id = _valid_id("portfolio_id", portfolio_id)
        body = _parse(CashChange, amount=amount, note=note)
        with self._unit("write:portfolio", write=True) as (session, who):
            movement = portfolio_service.deposit(
                session, who, portfolio_id, body.amount, withdraw=withdraw, note=body.note
            )
            return CashMovementRead.model_validate(movement)

    def list_positions(
        self, portfolio_id: int, *, status: str | None = "open"
    ) -> list[PositionRead]:
        """List a portfolio's positions: open ones, ``status="closed"``, or all with None."""
        portfolio_id = _valid_id("portfolio_id", portfolio_id)
        with self._unit("read:portfolio", write=False) as (session, who):
            rows = portfolio_service.positions(session, who, portfolio_id, status=status or None)
            return [PositionRead.model_validate(p) for p in rows]

    def positions(self, portfolio_id: int, *, status: str | None = "open") -> pd.DataFrame:
        """Return `list_positions` as a DataFrame, one row per position."""
        return _frame(PositionRead, self.list_positions(portfolio_id, status=status))

    def list_trades(self, portfolio_id: int) -> list[TradeRead]:
        """List a portfolio's fills in the order they happened."""
        portfolio_id = _valid_id("portfolio_id", portfolio_id)
        with self._unit("read:portfolio", write=False) as (session, who):
            rows = order_service.trades(session, who, portfolio_id)
            return [TradeRead.model_validate(t) for t in rows]

    def trades(self, portfolio_id: int) -> pd.DataFrame:
        """Return a portfolio's fills as a DataFrame, one row per fill in the order they
        happened: quantity, price, value, fee and realized pnl (None on an opening fill)
        as Decimals, executed_at in UTC."""
        return _frame(TradeRead, self.list_trades(portfolio_id))

    def take_snapshot(self, portfolio_id: int) -> SnapshotRead:
        """Record the portfolio's value now and refresh its P&L, Sharpe, drawdown and win
        rate."""
        portfolio_id = _valid_id("portfolio_id", portfolio_id)
        with self._unit("write:portfolio", write=True) as (session, who):
            return SnapshotRead.model_validate(
                portfolio_service.take_snapshot(session, who, portfolio_id)
            )

    def list_snapshots(self, portfolio_id: int) -> list[SnapshotRead]:
        """List a portfolio's snapshots in time order."""
        portfolio_id = _valid_id("portfolio_id", portfolio_id)
        with self._unit("read:portfolio", write=False) as (session, who):
            rows = portfolio_service.snapshots(session, who, portfolio_id)
            return [SnapshotRead.model_validate(r) for r in rows]

    def equity_curve(self, portfolio_id: int) -> pd.DataFrame:
        """Return the equity curve: one row per snapshot, indexed by its UTC timestamp,
        with total_value, cash, net_deposits (deposits less withdrawals by then), pnl
        (total_value - net_deposits) and the stored pnl_24h, pnl_7d, pnl_30d, as Decimals."""
        portfolio_id = _valid_id("portfolio_id", portfolio_id)
        with self._unit("read:portfolio", write=False) as (session, who):
            points = portfolio_service.equity_curve(session, who, portfolio_id)
        return _equity_frame(points)

    def reconcile(self, portfolio_id: int | None = None) -> Report:
        """Rebuild positions and cash from the fills ledger and compare them with the
        stored rows, for one portfolio or every one you can see; ``report.ok`` is True
        when they agree, else ``report.differences`` names each row."""
        if portfolio_id is not None:
            portfolio_id = _valid_id("portfolio_id", portfolio_id)
        with self._unit("read:portfolio", write=False) as (session, who):
            if who.is_admin:
                return reconcile_ledger(session, portfolio_id)
            ids = (
                [portfolio_service.get(session, who, portfolio_id).id]
                if portfolio_id is not None
                else [p.id for p in portfolio_service.list(session, who)]
            )
            total = Report()
            for one in ids:
                report = reconcile_ledger(session, one)
                total.portfolios += report.portfolios
                total.fills += report.fills
                total.differences += report.differences
            return total

    # --- orders ---------------------------------------------------------------------------

    def place_order(
        self,
        portfolio_id: int,
        *,
        symbol: str,
        side: str,
        quantity: Number,
        order_type: str = "market",
        exchange: str = "paper",
        price: Number | None = None,
        trigger_price: Number | None = None,
        product: str = "NRML",
        time_in_force: str = "GTC",
        client_order_id: str | None = None,
        tag: str | None = None,
        participation: Number | None = None,
        slices: int | None = None,
        duration_seconds: int | None = None,
        lookback_days: int | None = None,
        reduce_only: bool = False,
    ) -> OrderRead:
        """Place an order and return it.

        ``order_type`` is market (on paper it fills at once, at ``price`` as a hint or
        the latest bar's close), limit (``price``), stop_loss (``trigger_price``),
        stop_limit (both), or twap/vwap (``slices`` children over ``duration_seconds``;
        vwap sizes them by ``lookback_days`` of volume). Resting orders fill on posted
        bars, at most ``participation`` of each bar's volume if given. Placing a
        ``client_order_id`` again returns the first order. ``reduce_only`` only reduces
        the opposite position (in hedging mode, it is how a long or short closes). A
        refused order is kept as rejected and raises `OrderRejected` with the reason.
        """
        body = _parse(
            OrderCreate,
            portfolio_id=portfolio_id,
            symbol=symbol,
            exchange=exchange,
            side=side,
            quantity=quantity,
            order_type=order_type,
            price=price,
            trigger_price=trigger_price,
            product=product,
            time_in_force=time_in_force,
            client_order_id=client_order_id,
            tag=tag,
            slices=slices,
            duration_seconds=duration_seconds,
            lookback_days=lookback_days,
            participation=participation,
            reduce_only=reduce_only,
        )
        with self._unit("write:orders", write=True) as (session, who):
            return OrderRead.model_validate(order_service.place(session, who, **body.model_dump()))

    def get_order(self, order_id: int) -> OrderRead:
        """Read one order; raise `OrderNotFound` if you cannot see it."""
        order_id = _valid_id("order_id", order_id)
        with self._unit("read:orders", write=False) as (session, who):
            return OrderRead.model_validate(order_service.get(session, who, order_id))

    def list_orders(
        self,
        *,
        portfolio_id: int | None = None,
        symbol: str | None = None,
        status: str | None = None,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[OrderRead]:
        """List orders newest first, filtered (``since``/``until`` are tz-aware and bound
        the creation time); pass the last id you got as ``after_id`` for the next page."""
        query = _parse(
            _OrderFilter,
            portfolio_id=portfolio_id,
            symbol=symbol,
            status=status,
            side=side,
            since=since,
            until=until,
            after_id=after_id,
            limit=limit,
        )
        with self._unit("read:orders", write=False) as (session, who):
            rows = order_service.list(session, who, **query.model_dump())
            return [OrderRead.model_validate(o) for o in rows]

    def orders(
        self,
        *,
        portfolio_id: int | None = None,
        symbol: str | None = None,
        status: str | None = None,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> pd.DataFrame:
        """Return `list_orders` as a DataFrame, one row per order, newest first."""
        rows = self.list_orders(
            portfolio_id=portfolio_id,
            symbol=symbol,
            status=status,
            side=side,
            since=since,
            until=until,
            after_id=after_id,
            limit=limit,
        )
        return _frame(OrderRead, rows)

    def cancel_order(self, order_id: int) -> OrderRead:
        """Cancel a pending or resting order; raise `InvalidOrderTransition` if it is done."""
        order_id = _valid_id("order_id", order_id)
        with self._unit("write:orders", write=True) as (session, who):
            return OrderRead.model_validate(order_service.cancel(session, who, order_id))

    def amend_order(
        self,
        order_id: int,
        *,
        price: Number | None = None,
        trigger_price: Number | None = None,
        quantity: Number | None = None,
    ) -> OrderRead:
        """Change the limit price, stop or quantity of a resting order."""
        order_id = _valid_id("order_id", order_id)
        body = _parse(OrderAmend, price=price, trigger_price=trigger_price, quantity=quantity)
        with self._unit("write:orders", write=True) as (session, who):
            order = order_service.amend(session, who, order_id, **body.model_dump())
            return OrderRead.model_validate(order)

    def list_order_events(self, order_id: int) -> list[OrderEventRead]:
        """List an order's lifecycle events, oldest first."""
        order_id = _valid_id("order_id", order_id)
        with self._unit("read:orders", write=False) as (session, who):
            rows = order_service.events(session, who, order_id)
            return [OrderEventRead.model_validate(e) for e in rows]

    # --- prices ---------------------------------------------------------------------------

    def post_bars(
        self,
        symbol: str,
        bars: Sequence[BarIn | Mapping[str, Any]],
        *,
        exchange: str = "paper",
        timeframe: str = "1m",
    ) -> BarsResult:
        """Store OHLCV bars (each a `BarIn` or a mapping with timestamp, open, high, low,
        close and optionally volume, vwap, num_trades); each new bar, in time order,
        fills the resting paper orders it reaches. Needs an admin, as on the API."""
        body = _parse(
            BarsIn,
            symbol=symbol,
            exchange=exchange,
            timeframe=timeframe,
            bars=[bar.model_dump() if isinstance(bar, BarIn) else dict(bar) for bar in bars],
        )
        with self._unit("write:market", write=True) as (session, who):
            result = price_service.ingest(
                session,
                who,
                symbol=body.symbol,
                exchange=body.exchange,
                timeframe=body.timeframe,
                bars=body.bars,
            )
        return BarsResult(stored=result.stored, duplicates=result.duplicates, fills=result.fills)


def connect(
    url: str | URL | None = None,
    *,
    credentials_url: str | URL | None = None,
    user: str,
    migrate: bool = True,
    settings: Settings | None = None,
) -> Tradebase:
    """Open a Tradebase as *user* (a username or email).

    *url* and *credentials_url* are SQLAlchemy URLs of the main and the credentials
    database (``postgresql://…``, ``mysql://…``, ``sqlite:///path``); each one left out
    comes from the settings (``TRADEBASE_DATABASE_URL`` …, default SQLite files in
    ``./tradebase-data``), as do the pool settings. ``settings`` replaces the settings
    read from the environment. With ``migrate`` both databases are first migrated to the
    latest revision. Raise `UserNotFound` if there is no such user.
    """
    return Tradebase(_settings(url, credentials_url, settings), user=user, migrate=migrate)
