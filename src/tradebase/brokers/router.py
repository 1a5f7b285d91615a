"""HTTP routes: broker health of an account, its broker key and postback secret, broker
postbacks, and the failover log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tradebase.accounts.schemas import MAX_ID, Strict
from tradebase.brokers.service import SIGNATURE_HEADER, TIMESTAMP_HEADER, HealthReport
from tradebase.brokers.service import broker as broker_service
from tradebase.core.auth import Principal
from tradebase.core.http import CredentialsSessionDep, SessionDep, engines_of, require
from tradebase.portfolios.service import account as account_service

router = APIRouter(prefix="/api/v1", tags=["brokers"])
ReadAccount = Annotated[Principal, Depends(require("read:portfolio"))]
WriteAccount = Annotated[Principal, Depends(require("write:portfolio"))]
AccountId = Annotated[int, Path(ge=1, le=MAX_ID)]


class HealthRead(BaseModel):
    account_id: int
    broker: str
    connection_status: str
    last_connected: datetime | None
    detail: str | None = None


class BrokerKey(Strict):
    api_key: str = Field(min_length=1, max_length=500)


class PostbackSecret(BaseModel):
    secret: str = Field(description="Shown once: sign postbacks with it (HMAC-SHA256).")
    signature_header: str = SIGNATURE_HEADER
    timestamp_header: str = TIMESTAMP_HEADER


class FailoverRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    from_account_id: int | None
    to_account_id: int | None
    order_id: int | None
    reason: str | None
    success: bool
    error_message: str | None
    timestamp: datetime


def _read(report: HealthReport) -> HealthRead:
    return HealthRead(
        account_id=report.account_id,
        broker=report.broker,
        connection_status=report.connection_status,
        last_connected=report.last_connected,
        detail=report.detail,
    )


@router.get("/accounts/{account_id}/health", response_model=HealthRead)
def read_health(account_id: AccountId, principal: ReadAccount, session: SessionDep) -> HealthRead:
    """The account's last known connection status (the broker-health job keeps it)."""
    account = account_service.get(session, principal, account_id)
    return HealthRead(
        account_id=account.id,
        broker=account.broker,
        connection_status=account.connection_status,
        last_connected=account.last_connected,
    )


@router.post("/accounts/{account_id}/health/check", response_model=HealthRead)
async def check_health(
    account_id: AccountId, principal: WriteAccount, request: Request
) -> HealthRead:
    """Check the account's broker now; when it answers, its orders left pending by an
    outage are settled too."""
    engines = engines_of(request)
    report = await run_in_threadpool(broker_service.check_account, engines, principal, account_id)
    return _read(report)


@router.put("/accounts/{account_id}/broker-key", status_code=204)
def set_broker_key(
    account_id: AccountId,
    body: BrokerKey,
    principal: WriteAccount,
    session: SessionDep,
    credentials: CredentialsSessionDep,
) -> None:
    """Set (replace) the account's broker API key; it is stored encrypted, never shown."""
    account = account_service.get(session, principal, account_id)
    broker_service.set_api_key(credentials, principal, account, body.api_key)


@router.post("/accounts/{account_id}/postback-secret", response_model=PostbackSecret)
def new_postback_secret(
    account_id: AccountId,
    principal: WriteAccount,
    session: SessionDep,
    credentials: CredentialsSessionDep,
) -> PostbackSecret:
    """A new postback signing secret for the account (the old one stops working)."""
    secret = broker_service.new_postback_secret(session, credentials, principal, account_id)
    return PostbackSecret(secret=secret)


@router.post("/brokers/postbacks/{account_id}")
async def postback(account_id: AccountId, request: Request) -> dict[str, Any]:
    """A broker's order-update postback, signed with the account's postback secret:
    ``X-Tradebase-Timestamp`` (Unix seconds, within TRADEBASE_POSTBACK_WINDOW_SECONDS) and
    ``X-Tradebase-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``. Forged or
    stale: 401; the same postback id again: 409; either way nothing changes."""
    body = await request.body()
    return await run_in_threadpool(
        broker_service.postback,
        engines_of(request),
        account_id,
        body=body,
        timestamp=request.headers.get(TIMESTAMP_HEADER),
        signature=request.headers.get(SIGNATURE_HEADER),
    )


@router.get("/failover-events", response_model=list[FailoverRead])
def list_failovers(
    principal: ReadAccount,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[FailoverRead]:
    """Failovers of your accounts, newest first."""
    return [
        FailoverRead.model_validate(e) for e in broker_service.failovers(session, principal, limit)
    ]
