"""Trading accounts, portfolios, their cash ledger and the positions fills move."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradebase.accounts.service import require_writer
from tradebase.audit.service import audit as audit_service
from tradebase.core.auth import Principal, scoped
from tradebase.core.errors import BadRequest
from tradebase.core.models import load, written
from tradebase.core.money import divide, quantize
from tradebase.core.prepared import Prepared, connection_of
from tradebase.core.time import utc_now
from tradebase.events.service import EventType, emit
from tradebase.portfolios import pnl
from tradebase.portfolios.errors import (
    AccountNameTaken,
    AccountNotFound,
    CncSellExceedsPosition,
    InsufficientCash,
    PortfolioNotFound,
)
from tradebase.portfolios.models import (
    CashMovement,
    CashMovementKind,
    Holding,
    Portfolio,
    PortfolioSnapshot,
    Position,
    PositionDirection,
    PositionMode,
    PositionStatus,
    Product,
    TradingAccount,
    holding_marks,
)

if TYPE_CHECKING:
    from tradebase.portfolios.valuation import EquityPoint, Figures

ZERO = Decimal(0)


class AccountService:
    def create(
        self,
        session: Session,
        principal: Principal,
        *,
        account_name: str,
        broker: str = "paper",
        fee_rate: Decimal = ZERO,
        slippage_bps: Decimal = ZERO,
        is_primary: bool = False,
        priority: int = 100,
        host_url: str | None = None,
    ) -> TradingAccount:
        require_writer(principal)
        account = TradingAccount(
            user_id=principal.user_id,
            account_name=account_name,
            broker=broker,
            host_url=host_url or "http://127.0.0.1:5000",
            fee_rate=fee_rate,
            slippage_bps=slippage_bps,
            is_primary=is_primary,
            priority=priority,
            is_paper=broker == "paper",
            connection_status="connected" if broker == "paper" else "disconnected",
        )
        try:
            with session.begin_nested():
                session.add(account)
                session.flush()
        except IntegrityError:
            raise AccountNameTaken(f"you already have an account named {account_name!r}") from None
        audit_service.record_by(
            session,
            principal,
            action="account.created",
            resource_type="trading_account",
            resource_id=account.id,
        )
        return account

    def list(self, session: Session, principal: Principal) -> list[TradingAccount]:
        statement = scoped(select(TradingAccount), TradingAccount.user_id, principal)
        return list(session.scalars(statement.order_by(TradingAccount.id)))

    def get(self, session: Session, principal: Principal, account_id: int) -> TradingAccount:
        account = session.scalars(
            scoped(select(TradingAccount), TradingAccount.user_id, principal).where(
                TradingAccount.id == account_id
            )
        ).first()
        if account is None:
            raise AccountNotFound(f"no trading account {account_id}")
        return account


@dataclass(frozen=True)
class FillEffect:
    """What a fill did to a portfolio: the position row (None: a CNC sell that only a
    holding delivered), the realized P&L and cost released (of the position and the
    holding parts together), the cash, and the holding part of a CNC sell."""

    position_id: int | None
    realized: Decimal | None
    released_cost: Decimal
    cash_change: Decimal
    holding: pnl.HoldingSale | None = None


class PortfolioService:
    def create(
        self,
        session: Session,
        principal: Principal,
        *,
        account_id: int,
        name: str,
        base_currency: str = "USD",
        position_mode: str = PositionMode.netting,
        allow_margin: bool = False,
        periods_per_year: int = 365,
    ) -> Portfolio:
        require_writer(principal)
        account = AccountService().get(session, principal, account_id)
        portfolio = Portfolio(
            user_id=account.user_id,
            account_id=account.id,
            name=name,
            base_currency=base_currency.upper(),
            position_mode=position_mode,
            allow_margin=allow_margin,
            periods_per_year=periods_per_year,
            is_paper=account.is_paper,
        )
        try:
            with session.begin_nested():
                session.add(portfolio)
                session.flush()
        except IntegrityError:
            raise AccountNameTaken(
                f"account {account.id} already has a portfolio named {name!r}"
            ) from None
        return portfolio

    def list(self, session: Session, principal: Principal) -> list[Portfolio]:
        statement = scoped(select(Portfolio), Portfolio.user_id, principal)
        return list(session.scalars(statement.order_by(Portfolio.id)))

    def get(
        self, session: Session, principal: Principal, portfolio_id: int, *, lock: bool = False
    ) -> Portfolio:
        """A portfolio the caller may see; ``lock`` holds its row until the transaction
        ends (every change of cash or positions takes this lock first)."""
        statement = scoped(select(Portfolio), Portfolio.user_id, principal).where(
            Portfolio.id == portfolio_id
        )
        if lock and session.get_bind().dialect.name != "sqlite":
            statement = statement.with_for_update()
        portfolio = session.scalars(statement).first()
        if portfolio is None:
            raise PortfolioNotFound(f"no portfolio {portfolio_id}")
        return portfolio

    def venue(
        self, session: Session, principal: Principal, portfolio_id: int
    ) -> tuple[Portfolio, TradingAccount]:
        """A portfolio the caller may see, locked as ``get(lock=True)`` locks it, and its
        trading account, in one read (the order path needs both)."""
        connection = connection_of(session)
        dialect = connection.dialect.name
        statement = _VENUE[dialect if dialect in _VENUE else "default"][principal.is_admin]
        rows = statement.rows(connection, {"pid": portfolio_id, "uid": principal.user_id})
        if not rows:
            raise PortfolioNotFound(f"no portfolio {portfolio_id}")
        split: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        for label, value in rows[0]._asdict().items():
            table, name = label.split("__", 1)
            split[table == "a"][name] = value
        return load(session, Portfolio, split[0]), load(session, TradingAccount, split[1])

    def move_cash(
        self,
        session: Session,
        portfolio: Portfolio,
        amount: Decimal,
        kind: str,
        *,
        trade_id: int | None = None,
        note: str | None = None,
    ) -> int:
        """Add *amount* (signed) to the cash and the ledger; never below zero without margin.
        Returns the ledger row's id. (Two Core statements: no ORM flush on the fill path.)"""
        self.check_cash(portfolio, amount)
        balance = portfolio.cash_balance_usd + amount
        connection = connection_of(session)
        now = utc_now()
        _SET_CASH.run(connection, {"pid": portfolio.id, "cash": balance, "now": now})
        written(session, portfolio, cash_balance_usd=balance)
        movement_id: int | None = _INSERT_MOVEMENT.scalar(
            connection,
            {
                "created_at": now,
                "portfolio_id": portfolio.id,
                "user_id": portfolio.user_id,
                "kind": kind,
                "amount": amount,
                "balance_after": balance,
                "trade_id": trade_id,
                "note": note,
            },
        )
        assert movement_id is not None
        return movement_id

    def check_cash(self, portfolio: Portfolio, amount: Decimal) -> None:
        """Raise unless the cash can move by *amount* (signed)."""
        if portfolio.cash_balance_usd + amount < 0 and not portfolio.allow_margin:
            raise InsufficientCash(
                f"not enough cash: needs {-amount}, has {portfolio.cash_balance_usd}",
                details={"needed": str(-amount), "cash": str(portfolio.cash_balance_usd)},
            )

    def deposit(
        self,
        session: Session,
        principal: Principal,
        portfolio_id: int,
        amount: Decimal,
        *,
        withdraw: bool = False,
        note: str | None = None,
    ) -> CashMovement:
        require_writer(principal)
        if amount <= 0:
            raise BadRequest("the amount must be positive", details={"field": "amount"})
        portfolio = self.get(session, principal, portfolio_id, lock=True)
        kind = CashMovementKind.withdrawal if withdraw else CashMovementKind.deposit
        movement_id = self.move_cash(
            session, portfolio, -amount if withdraw else amount, kind, note=note
        )
        movement = session.get(CashMovement, movement_id)
        assert movement is not None
        audit_service.record_by(
            session,
            principal,
            action=f"cash.{kind}",
            resource_type="portfolio",
            resource_id=portfolio.id,
            details={"amount": str(amount)},
        )
        return movement

    def positions(
        self,
        session: Session,
        principal: Principal,
        portfolio_id: int,
        *,
        status: str | None = "open",
    ) -> Sequence[Position]:
        portfolio = self.get(session, principal, portfolio_id)
        statement = select(Position).where(Position.portfolio_id == portfolio.id)
        if status:
            statement = statement.where(Position.status == status)
        return session.scalars(statement.order_by(Position.symbol, Position.id)).all()

    def snapshots(
        self, session: Session, principal: Principal, portfolio_id: int
    ) -> Sequence[PortfolioSnapshot]:
        portfolio = self.get(session, principal, portfolio_id)
        return session.scalars(
            select(PortfolioSnapshot)
            .where(PortfolioSnapshot.portfolio_id == portfolio.id)
            .order_by(PortfolioSnapshot.timestamp)
        ).all()

    def equity_curve(
        self, session: Session, principal: Principal, portfolio_id: int
    ) -> Sequence[EquityPoint]:
        """The snapshots in time order, each with its P&L against the net deposits by then."""
        from tradebase.portfolios.valuation import equity_curve

        return equity_curve(session, self.get(session, principal, portfolio_id))

    def take_snapshot(
        self, session: Session, principal: Principal, portfolio_id: int, at: datetime | None = None
    ) -> PortfolioSnapshot:
        """Record the portfolio's value now (or at *at*) and refresh its P&L and metrics."""
        from tradebase.portfolios.valuation import snapshot

        require_writer(principal)
        portfolio = self.get(session, principal, portfolio_id, lock=True)
        return snapshot(session, portfolio, at or utc_now())

    def figures(self, session: Session, principal: Principal, portfolio_id: int) -> Figures:
        """The portfolio's figures now, computed as a snapshot would, recording nothing."""
        from tradebase.portfolios.valuation import figures

        return figures(session, self.get(session, principal, portfolio_id), utc_now())

    def open_quantity(
        self,
        session: Session,
        portfolio_id: int,
        *,
        symbol: str,
        exchange: str,
        product: str,
        direction: str,
    ) -> Decimal:
        """The quantity of the open position of that side (0 when there is none)."""
        held = self.net_quantity(
            session, portfolio_id, symbol=symbol, exchange=exchange, product=product
        )
        return held.get(direction, ZERO)

    def net_quantity(
        self, session: Session, portfolio_id: int, *, symbol: str, exchange: str, product: str
    ) -> dict[str, Decimal]:
        """The open quantity of each side (long, short) that has an open position."""
        rows = _OPEN_POSITIONS.rows(
            session,
            {"pid": portfolio_id, "symbol": symbol, "exchange": exchange, "product": product},
        )
        held: dict[str, Decimal] = {}
        for row in rows:
            held[row.direction] = held.get(row.direction, ZERO) + row.quantity
        return held

    def apply_fill(
        self,
        session: Session,
        portfolio: Portfolio,
        *,
        symbol: str,
        exchange: str,
        product: str,
        fill: pnl.Fill,
        signal_id: int | None = None,
        deal_id: str | None = None,
        at: datetime | None = None,
    ) -> FillEffect:
        """Move the position(s) of *symbol* by *fill* (the caller holds the portfolio lock).

        A CNC sell first reduces the open CNC long position and then draws on the holding
        of (portfolio, symbol, exchange), at its average price; a holding sold out is
        deleted (portfolios/settlement.py). In a hedging portfolio a CNC sell draws on the
        holding only, and never while a CNC long is open. A sell that the two do not cover
        raises `CncSellExceedsPosition` (the order path checks before it fills).

        Core statements on purpose: this runs for every fill, and ORM flushes cost more
        than the database work (bench/bench_orders.py).
        """
        at = at or utc_now()
        connection = connection_of(session)
        rows = _OPEN_POSITIONS.rows(
            connection,
            {"pid": portfolio.id, "symbol": symbol, "exchange": exchange, "product": product},
        )
        sale: pnl.HoldingSale | None = None
        if product == Product.CNC and fill.side == pnl.SELL and not fill.closes:
            from_position, from_holding = self._split_cnc_sell(portfolio, rows, fill)
            if from_holding is not None:
                sale = self._sell_holding(session, portfolio, symbol, exchange, from_holding, at)
            if from_position is None:
                assert sale is not None
                return FillEffect(None, sale.realized, sale.cost, sale.cash_change, sale)
            fill = from_position
        by_direction = {row.direction: row for row in rows}
        lots = {
            row.direction: pnl.Lot(row.direction, row.quantity, row.cost_basis, row.fees_paid)
            for row in rows
        }
        if portfolio.position_mode == PositionMode.hedging:
            _, outcome = pnl.apply_hedging(lots, fill)
        else:
            outcome = pnl.apply_netting(next(iter(lots.values()), None), fill)
        position_id: int | None = None
        released_cost = ZERO
        closed_direction: str | None = None
        pending_close: dict[str, object] = {}  # a partial close, written with the update below
        if outcome.closed is not None:
            row = by_direction[outcome.closed.direction]
            before = lots[row.direction]
            after_same = outcome.after is not None and outcome.after.direction == row.direction
            released_cost = before.cost - (outcome.after.cost if after_same else ZERO)  # type: ignore[union-attr]
            values: dict[str, object] = {
                "realized_pnl": row.realized_pnl + outcome.closed.realized,
                "exit_price": fill.price,
            }
            if outcome.closed.flat:
                closed_direction = row.direction
                values.update(
                    quantity=ZERO,
                    cost_basis=ZERO,
                    fees_paid=ZERO,
                    status=PositionStatus.closed,
                    open_slot=None,
                    closed_at=at,
                    unrealized_pnl=ZERO,
                    unrealized_pnl_percent=ZERO,
                )
            if not after_same:
                _UPDATE_POSITION.run(connection, {"pos_id": row.id, "updated_at": at, **values})
                position_id = row.id
            else:
                pending_close = values
            if outcome.closed.flat:
                emit(
                    session,
                    portfolio.user_id,
                    EventType.position_closed,
                    {
                        "position_id": row.id,
                        "portfolio_id": portfolio.id,
                        "symbol": symbol,
                        "exchange": exchange,
                        "product": product,
                        "direction": row.direction,
                        "quantity": before.quantity,
                        "exit_price": fill.price,
                        "realized_pnl": values["realized_pnl"],
                        "closed_at": at,
                    },
                )
        after = outcome.after
        if after is not None:
            unrealized = after.unrealized(fill.price)
            values = {
                "quantity": after.quantity,
                "cost_basis": after.cost,
                "fees_paid": after.open_fees,
                "entry_price": after.entry_price,
                "current_price": fill.price,
                "unrealized_pnl": quantize(unrealized),
                "unrealized_pnl_percent": quantize(unrealized * 100 / after.cost),
            }
            existing = by_direction.get(after.direction)
            if existing is not None and closed_direction != after.direction:
                if outcome.closed is not None and outcome.closed.direction == after.direction:
                    values.update(pending_close)
                _UPDATE_POSITION.run(
                    connection, {"pos_id": existing.id, "updated_at": at, **values}
                )
                position_id = existing.id
            else:
                position_id = _INSERT_POSITION.scalar(
                    connection,
                    {
                        "portfolio_id": portfolio.id,
                        "signal_id": signal_id,
                        "deal_id": deal_id,
                        "symbol": symbol,
                        "exchange": exchange,
                        "product": product,
                        "direction": after.direction,
                        "opened_at": at,
                        "created_at": at,
                        "updated_at": at,
                        "status": PositionStatus.open,
                        "open_slot": 1,
                        **values,
                    },
                )
        assert position_id is not None
        realized = outcome.closed.realized if outcome.closed else None
        if sale is None:
            return FillEffect(position_id, realized, released_cost, outcome.cash_change)
        return FillEffect(
            position_id,
            (realized or ZERO) + sale.realized,
            released_cost + sale.cost,
            outcome.cash_change + sale.cash_change,
            sale,
        )

    def _split_cnc_sell(
        self, portfolio: Portfolio, rows: Sequence[Any], fill: pnl.Fill
    ) -> tuple[pnl.Fill | None, pnl.Fill | None]:
        long = next((row for row in rows if row.direction == PositionDirection.long), None)
        if portfolio.position_mode != PositionMode.hedging:
            return pnl.split_cnc_sell(long.quantity if long is not None else ZERO, fill)
        if long is not None:  # a reduce_only sell closes it (fill.closes, above)
            raise CncSellExceedsPosition(
                f"a CNC sell in a hedging portfolio draws on the holding only, and not while"
                f" a CNC long of {long.quantity} is open: close that with reduce_only",
                details={"open": str(long.quantity), "requested": str(fill.quantity)},
            )
        return None, fill

    def _sell_holding(
        self,
        session: Session,
        portfolio: Portfolio,
        symbol: str,
        exchange: str,
        fill: pnl.Fill,
        at: datetime,
    ) -> pnl.HoldingSale:
        # A Core read, no autoflush: the order path's CNC checks (settlement.check_order,
        # check_fill) queried through the ORM just before, which flushed the session.
        connection = connection_of(session)
        found = _HOLDING.rows(
            connection, {"pid": portfolio.id, "symbol": symbol, "exchange": exchange}
        )
        if not found:
            raise CncSellExceedsPosition(
                f"a CNC sell of {fill.quantity} {symbol} needs a holding, and there is none",
                details={"holding": "0", "requested": str(fill.quantity)},
            )
        row = found[0]
        invested = row.invested_value
        if invested is None:  # a row from elsewhere (an import) may carry only the average
            invested = row.quantity * row.average_price
        sale, left = pnl.sell_holding(pnl.Held(row.quantity, invested), fill)
        values: dict[str, Any] | None = None
        if left is None:
            _DELETE_HOLDING.run(connection, {"hid": row.id})
        else:
            current_value, gain, gain_percent = holding_marks(
                left.quantity, left.invested, row.current_price
            )
            values = {
                "quantity": left.quantity,
                "invested_value": left.invested,
                "average_price": divide(left.invested, left.quantity),
                "current_value": current_value,
                "pnl": gain,
                "pnl_percent": gain_percent,
                "updated_at": at,
            }
            _UPDATE_HOLDING.run(connection, {"hid": row.id, **values})
        # A Holding the session has loaded must not go stale (or be flushed back).
        loaded = session.identity_map.get(
            Holding.__mapper__.identity_key_from_primary_key((row.id,))
        )
        if loaded is not None:
            if values is None:
                session.expunge(loaded)
            else:
                written(session, loaded, **values)
        return sale


# Built once: constructing statements per fill costs more than running them.
_positions = cast(Table, Position.__table__)
_OPEN_POSITIONS = Prepared(
    select(
        _positions.c.id,
        _positions.c.direction,
        _positions.c.quantity,
        _positions.c.cost_basis,
        _positions.c.fees_paid,
        _positions.c.realized_pnl,
    ).where(
        _positions.c.portfolio_id == bindparam("pid"),
        _positions.c.symbol == bindparam("symbol"),
        _positions.c.exchange == bindparam("exchange"),
        _positions.c.product == bindparam("product"),
        _positions.c.status == PositionStatus.open,
    )
)
_INSERT_POSITION = Prepared(insert(_positions).returning(_positions.c.id))
_holdings = cast(Table, Holding.__table__)
_HOLDING = Prepared(  # CNC sells beyond the open position only
    select(
        _holdings.c.id,
        _holdings.c.quantity,
        _holdings.c.average_price,
        _holdings.c.invested_value,
        _holdings.c.current_price,
    ).where(
        _holdings.c.portfolio_id == bindparam("pid"),
        _holdings.c.symbol == bindparam("symbol"),
        _holdings.c.exchange == bindparam("exchange"),
    )
)
_UPDATE_HOLDING = Prepared(update(_holdings).where(_holdings.c.id == bindparam("hid")))
_DELETE_HOLDING = Prepared(delete(_holdings).where(_holdings.c.id == bindparam("hid")))
_UPDATE_POSITION = Prepared(update(_positions).where(_positions.c.id == bindparam("pos_id")))
_portfolios = cast(Table, Portfolio.__table__)
_accounts = cast(Table, TradingAccount.__table__)
_SET_CASH = Prepared(
    update(_portfolios)
    .where(_portfolios.c.id == bindparam("pid"))
    .values(cash_balance_usd=bindparam("cash"), updated_at=bindparam("now"))
)
_INSERT_MOVEMENT = Prepared(insert(cast(Table, CashMovement.__table__)).returning(CashMovement.id))


def _venue_statements() -> dict[str, tuple[Prepared, Prepared]]:
    base = (
        select(
            *(c.label(f"p__{c.key}") for c in _portfolios.c),
            *(c.label(f"a__{c.key}") for c in _accounts.c),
        )
        .join_from(_portfolios, _accounts, _accounts.c.id == _portfolios.c.account_id)
        .where(_portfolios.c.id == bindparam("pid"))
    )
    owned = base.where(_portfolios.c.user_id == bindparam("uid"))
    return {  # [dialect][is_admin]
        "sqlite": (Prepared(owned), Prepared(base)),  # the unit of work holds the write lock
        "postgresql": (
            Prepared(owned.with_for_update(of=_portfolios)),
            Prepared(base.with_for_update(of=_portfolios)),
        ),
        "default": (  # MariaDB has no FOR UPDATE OF
            Prepared(owned.with_for_update()),
            Prepared(base.with_for_update()),
        ),
    }


_VENUE = _venue_statements()

account = AccountService()
portfolio = PortfolioService()
