"""HTTP routes: trading accounts, portfolios, cash, positions and trades."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from tradebase.accounts.schemas import MAX_ID
from tradebase.core.auth import Principal
from tradebase.core.http import SessionDep, require
from tradebase.orders.schemas import TradeRead
from tradebase.orders.service import order as order_service
from tradebase.portfolios import schemas
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service

router = APIRouter(prefix="/api/v1")
ReadPortfolio = Annotated[Principal, Depends(require("read:portfolio"))]
WritePortfolio = Annotated[Principal, Depends(require("write:portfolio"))]
AccountId = Annotated[int, Path(ge=1, le=MAX_ID)]
PortfolioId = Annotated[int, Path(ge=1, le=MAX_ID)]


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
    body: schemas.AccountCreate, principal: WritePortfolio, session: SessionDep
) -> schemas.AccountRead:
    account = account_service.create(session, principal, **body.model_dump())
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
