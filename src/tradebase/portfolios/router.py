"""HTTP routes: trading accounts, portfolios, cash, positions, holdings, figures and trades."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import AwareDatetime

from tradebase.accounts.schemas import MAX_ID
from tradebase.brokers.service import broker as broker_service
from tradebase.core.auth import Principal
from tradebase.core.http import CredentialsSessionDep, SessionDep, require
from tradebase.orders.models import OrderSide
from tradebase.orders.schemas import TradeRead
from tradebase.orders.service import order as order_service
from tradebase.orders.trades import trade as trade_service
from tradebase.portfolios import schemas
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.portfolios.settlement import settlement as settlement_service

router = APIRouter(prefix="/api/v1")
ReadPortfolio = Annotated[Principal, Depends(require("read:portfolio"))]
WritePortfolio = Annotated[Principal, Depends(require("write:portfolio"))]
AccountId = Annotated[int, Path(ge=1, le=MAX_ID)]
PortfolioId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_BIG_ID = 2**63 - 1  # trades ids are 64-bit


@router.get("/accounts", tags=["accounts"], response_model=list[schemas.AccountRead])
def list_accounts(principal: ReadPortfolio, session: SessionDep) -> list[schemas.AccountRead]:
    return [schemas.AccountRead.model_validate(a) for a in account_service.list(session, principal)]


@router.post(
    "/accounts",
    tags=["accounts"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.AccountRead,
)
def create_account(
    body: schemas.AccountCreate,
    principal: WritePortfolio,
    session: SessionDep,
    credentials: CredentialsSessionDep,
) -> schemas.AccountRead:
    """Add a trading account; an openalgo one takes host_url and api_key (stored
    encrypted, never shown) and starts disconnected until its first health check."""
    fields = body.model_dump(exclude={"api_key"})
    account = account_service.create(session, principal, **fields)
    if body.api_key is not None:
        broker_service.set_api_key(credentials, principal, account, body.api_key)
    return schemas.AccountRead.model_validate(account)


@router.get("/accounts/{account_id}", tags=["accounts"], response_model=schemas.AccountRead)
def read_account(
    account_id: AccountId, principal: ReadPortfolio, session: SessionDep
) -> schemas.AccountRead:
    return schemas.AccountRead.model_validate(account_service.get(session, principal, account_id))


@router.get("/portfolios", tags=["portfolios"], response_model=list[schemas.PortfolioRead])
def list_portfolios(principal: ReadPortfolio, session: SessionDep) -> list[schemas.PortfolioRead]:
    return [
        schemas.PortfolioRead.model_validate(p) for p in portfolio_service.list(session, principal)
    ]


@router.post(
    "/portfolios",
    tags=["portfolios"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.PortfolioRead,
)
def create_portfolio(
    body: schemas.PortfolioCreate, principal: WritePortfolio, session: SessionDep
) -> schemas.PortfolioRead:
    portfolio = portfolio_service.create(session, principal, **body.model_dump())
    return schemas.PortfolioRead.model_validate(portfolio)


@router.get("/portfolios/{portfolio_id}", tags=["portfolios"], response_model=schemas.PortfolioRead)
def read_portfolio(
    portfolio_id: PortfolioId, principal: ReadPortfolio, session: SessionDep
) -> schemas.PortfolioRead:
    return schemas.PortfolioRead.model_validate(
        portfolio_service.get(session, principal, portfolio_id)
    )


@router.post(
    "/portfolios/{portfolio_id}/deposits",
    tags=["portfolios"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.CashMovementRead,
)
def deposit(
    portfolio_id: PortfolioId,
    body: schemas.CashChange,
    principal: WritePortfolio,
    session: SessionDep,
) -> schemas.CashMovementRead:
    movement = portfolio_service.deposit(
        session, principal, portfolio_id, body.amount, note=body.note
    )
    return schemas.CashMovementRead.model_validate(movement)


@router.post(
    "/portfolios/{portfolio_id}/withdrawals",
    tags=["portfolios"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.CashMovementRead,
)
def withdraw(
    portfolio_id: PortfolioId,
    body: schemas.CashChange,
    principal: WritePortfolio,
    session: SessionDep,
) -> schemas.CashMovementRead:
    movement = portfolio_service.deposit(
        session, principal, portfolio_id, body.amount, withdraw=True, note=body.note
    )
    return schemas.CashMovementRead.model_validate(movement)


@router.get(
    "/portfolios/{portfolio_id}/positions",
    tags=["portfolios"],
    response_model=list[schemas.PositionRead],
)
def list_positions(
    portfolio_id: PortfolioId,
    principal: ReadPortfolio,
    session: SessionDep,
    status: str | None = "open",
) -> list[schemas.PositionRead]:
    rows = portfolio_service.positions(session, principal, portfolio_id, status=status or None)
    return [schemas.PositionRead.model_validate(p) for p in rows]


@router.get(
    "/portfolios/{portfolio_id}/trades", tags=["portfolios"], response_model=list[TradeRead]
)
def list_trades(
    portfolio_id: PortfolioId, principal: ReadPortfolio, session: SessionDep
) -> list[TradeRead]:
    return [
        TradeRead.model_validate(t) for t in order_service.trades(session, principal, portfolio_id)
    ]


@router.post(
    "/portfolios/{portfolio_id}/snapshots",
    tags=["portfolios"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.SnapshotRead,
)
def take_snapshot(
    portfolio_id: PortfolioId, principal: WritePortfolio, session: SessionDep
) -> schemas.SnapshotRead:
    """Record the portfolio's value now and refresh its P&L, Sharpe, drawdown and win rate."""
    return schemas.SnapshotRead.model_validate(
        portfolio_service.take_snapshot(session, principal, portfolio_id)
    )


@router.get(
    "/portfolios/{portfolio_id}/snapshots",
    tags=["portfolios"],
    response_model=list[schemas.SnapshotRead],
)
def list_snapshots(
    portfolio_id: PortfolioId, principal: ReadPortfolio, session: SessionDep
) -> list[schemas.SnapshotRead]:
    """The equity curve."""
    rows = portfolio_service.snapshots(session, principal, portfolio_id)
    return [schemas.SnapshotRead.model_validate(r) for r in rows]


@router.get(
    "/portfolios/{portfolio_id}/holdings",
    tags=["portfolios"],
    response_model=list[schemas.HoldingRead],
)
def list_holdings(
    portfolio_id: PortfolioId, principal: ReadPortfolio, session: SessionDep
) -> list[schemas.HoldingRead]:
    """Delivery (CNC) holdings: what settled from positions at the end of its trading day,
    less what CNC sells drew from them (a holding sold out is not listed)."""
    rows = settlement_service.holdings(session, principal, portfolio_id)
    return [schemas.HoldingRead.model_validate(h) for h in rows]


@router.post(
    "/portfolios/{portfolio_id}/settle",
    tags=["portfolios"],
    response_model=schemas.SettlementRead,
    responses={
        400: {"description": "`at` is in the future (settlement_in_future)"},
        404: {"description": "no such portfolio of yours (portfolio_not_found)"},
    },
)
def settle(
    portfolio_id: PortfolioId,
    principal: WritePortfolio,
    session: SessionDep,
    at: Annotated[
        AwareDatetime | None, Query(description="Settle as of this moment (default: now).")
    ] = None,
) -> schemas.SettlementRead:
    """Move the open CNC positions whose trading day has ended into holdings (again: no-op)."""
    report = settlement_service.settle(
        session, portfolio_id=portfolio_id, at=at, principal=principal
    )
    return schemas.SettlementRead.model_validate(report)


@router.get(
    "/portfolios/{portfolio_id}/metrics", tags=["portfolios"], response_model=schemas.MetricsRead
)
def read_metrics(
    portfolio_id: PortfolioId, principal: ReadPortfolio, session: SessionDep
) -> schemas.MetricsRead:
    """Cash, value, total and daily P&L, Sharpe, max drawdown and win rate, now."""
    return schemas.MetricsRead.model_validate(
        portfolio_service.figures(session, principal, portfolio_id)
    )


@router.get("/trades", tags=["trades"], response_model=list[TradeRead])
def list_all_trades(
    principal: ReadPortfolio,
    session: SessionDep,
    portfolio_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    symbol: Annotated[str | None, Query(max_length=50)] = None,
    side: OrderSide | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    after_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_BIG_ID, description="Cursor: the last id of the previous page."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TradeRead]:
    """Your fills across portfolios, newest first; pass the last id as ``after_id``."""
    rows = trade_service.list(
        session,
        principal,
        portfolio_id=portfolio_id,
        symbol=symbol,
        side=side,
        since=since,
        until=until,
        after_id=after_id,
        limit=limit,
    )
    return [TradeRead.model_validate(t) for t in rows]
