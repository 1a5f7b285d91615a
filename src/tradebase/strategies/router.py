"""HTTP routes: strategies and their deployments to accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from tradebase.accounts.schemas import MAX_ID
from tradebase.core.auth import Principal
from tradebase.core.http import SessionDep, require
from tradebase.strategies import schemas
from tradebase.strategies.models import StrategyType
from tradebase.strategies.service import strategy as strategy_service

router = APIRouter(prefix="/api/v1", tags=["strategies"])
ReadStrategies = Annotated[Principal, Depends(require("read:strategies"))]
WriteStrategies = Annotated[Principal, Depends(require("write:strategies"))]
StrategyId = Annotated[int, Path(ge=1, le=MAX_ID)]
DeploymentId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("/strategies", response_model=list[schemas.StrategyRead])
def list_strategies(
    principal: ReadStrategies,
    session: SessionDep,
    is_active: Annotated[bool | None, Query()] = None,
    strategy_type: Annotated[StrategyType | None, Query()] = None,
) -> list[schemas.StrategyRead]:
    rows = strategy_service.list(
        session, principal, is_active=is_active, strategy_type=strategy_type
    )
    return [schemas.StrategyRead.model_validate(s) for s in rows]


@router.post(
    "/strategies", status_code=status.HTTP_201_CREATED, response_model=schemas.StrategyRead
)
def create_strategy(
    body: schemas.StrategyCreate, principal: WriteStrategies, session: SessionDep
) -> schemas.StrategyRead:
    created = strategy_service.create(session, principal, **body.model_dump())
    return schemas.StrategyRead.model_validate(created)


@router.get("/strategies/{strategy_id}", response_model=schemas.StrategyRead)
def read_strategy(
    strategy_id: StrategyId, principal: ReadStrategies, session: SessionDep
) -> schemas.StrategyRead:
    return schemas.StrategyRead.model_validate(
        strategy_service.get(session, principal, strategy_id)
    )


@router.patch("/strategies/{strategy_id}", response_model=schemas.StrategyRead)
def update_strategy(
    strategy_id: StrategyId,
    body: schemas.StrategyUpdate,
    principal: WriteStrategies,
    session: SessionDep,
) -> schemas.StrategyRead:
    changes = body.model_dump(exclude_unset=True)
    updated = strategy_service.update(session, principal, strategy_id, **changes)
    return schemas.StrategyRead.model_validate(updated)


@router.delete("/strategies/{strategy_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_strategy(
    strategy_id: StrategyId, principal: WriteStrategies, session: SessionDep
) -> Response:
    strategy_service.delete(session, principal, strategy_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/strategies/{strategy_id}/refresh", response_model=schemas.StrategyRead)
def refresh_strategy(
    strategy_id: StrategyId, principal: WriteStrategies, session: SessionDep
) -> schemas.StrategyRead:
    """Recompute total P&L, trades, win rate and Sharpe from the strategy's fills."""
    strategy_service.get(session, principal, strategy_id)
    refreshed = strategy_service.refresh_performance(session, strategy_id)
    return schemas.StrategyRead.model_validate(refreshed)


@router.get("/strategies/{strategy_id}/deployments", response_model=list[schemas.DeploymentRead])
def list_deployments(
    strategy_id: StrategyId, principal: ReadStrategies, session: SessionDep
) -> list[schemas.DeploymentRead]:
    rows = strategy_service.deployments(session, principal, strategy_id)
    return [schemas.DeploymentRead.model_validate(d) for d in rows]


@router.post(
    "/strategies/{strategy_id}/deployments",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.DeploymentRead,
)
def deploy(
    strategy_id: StrategyId,
    body: schemas.DeploymentCreate,
    principal: WriteStrategies,
    session: SessionDep,
) -> schemas.DeploymentRead:
    created = strategy_service.deploy(session, principal, strategy_id, **body.model_dump())
    return schemas.DeploymentRead.model_validate(created)


@router.get(
    "/strategies/{strategy_id}/deployments/{deployment_id}",
    response_model=schemas.DeploymentRead,
)
def read_deployment(
    strategy_id: StrategyId,
    deployment_id: DeploymentId,
    principal: ReadStrategies,
    session: SessionDep,
) -> schemas.DeploymentRead:
    found = strategy_service.deployment(session, principal, strategy_id, deployment_id)
    return schemas.DeploymentRead.model_validate(found)


@router.patch(
    "/strategies/{strategy_id}/deployments/{deployment_id}",
    response_model=schemas.DeploymentRead,
)
def update_deployment(
    strategy_id: StrategyId,
    deployment_id: DeploymentId,
    body: schemas.DeploymentUpdate,
    principal: WriteStrategies,
    session: SessionDep,
) -> schemas.DeploymentRead:
    changes = body.model_dump(exclude_unset=True)
    updated = strategy_service.update_deployment(
        session, principal, strategy_id, deployment_id, **changes
    )
    return schemas.DeploymentRead.model_validate(updated)


@router.delete(
    "/strategies/{strategy_id}/deployments/{deployment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
)
def delete_deployment(
    strategy_id: StrategyId,
    deployment_id: DeploymentId,
    principal: WriteStrategies,
    session: SessionDep,
) -> Response:
    strategy_service.undeploy(session, principal, strategy_id, deployment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
