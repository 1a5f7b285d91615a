"""HTTP routes of outgoing webhooks: ``/api/v1/webhooks``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from tradebase.accounts.schemas import MAX_ID
from tradebase.alerts import delivery, schemas
from tradebase.alerts.models import DeliveryStatus
from tradebase.alerts.service import webhook as webhook_service
from tradebase.core.auth import Principal
from tradebase.core.http import CredentialsSessionDep, SessionDep, SettingsDep, engines_of, require

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])
ReadHooks = Annotated[Principal, Depends(require("read:webhooks"))]
WriteHooks = Annotated[Principal, Depends(require("write:webhooks"))]
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.WebhookCreated)
def create_webhook(
    body: schemas.WebhookCreate,
    principal: WriteHooks,
    session: SessionDep,
    credentials_session: CredentialsSessionDep,
    settings: SettingsDep,
) -> schemas.WebhookCreated:
    """Subscribe a URL to events. The signing secret is in this answer only."""
    hook, secret = webhook_service.create(
        session, credentials_session, principal, settings=settings, **body.model_dump()
    )
    return schemas.WebhookCreated(
        **schemas.WebhookRead.model_validate(hook).model_dump(),
        secret=secret,
        signature_header=delivery.SIGNATURE_HEADER,
        timestamp_header=delivery.TIMESTAMP_HEADER,
    )


@router.get("", response_model=list[schemas.WebhookRead])
def list_webhooks(principal: ReadHooks, session: SessionDep) -> list[schemas.WebhookRead]:
    return [schemas.WebhookRead.model_validate(h) for h in webhook_service.list(session, principal)]


@router.get("/{webhook_id}", response_model=schemas.WebhookRead)
def read_webhook(
    webhook_id: WebhookId, principal: ReadHooks, session: SessionDep
) -> schemas.WebhookRead:
    return schemas.WebhookRead.model_validate(webhook_service.get(session, principal, webhook_id))


@router.patch("/{webhook_id}", response_model=schemas.WebhookRead)
def update_webhook(
    webhook_id: WebhookId,
    body: schemas.WebhookUpdate,
    principal: WriteHooks,
    session: SessionDep,
    credentials_session: CredentialsSessionDep,
    settings: SettingsDep,
) -> schemas.WebhookRead:
    """Change the URL, events, description or secret; ``is_active`` pauses or enables."""
    hook = webhook_service.update(
        session,
        credentials_session,
        principal,
        webhook_id,
        settings=settings,
        changes=body.model_dump(exclude_unset=True),
    )
    return schemas.WebhookRead.model_validate(hook)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(
    webhook_id: WebhookId,
    principal: WriteHooks,
    session: SessionDep,
    credentials_session: CredentialsSessionDep,
) -> None:
    webhook_service.delete(session, credentials_session, principal, webhook_id)


@router.post("/{webhook_id}/enable", response_model=schemas.WebhookRead)
def enable_webhook(
    webhook_id: WebhookId, principal: WriteHooks, session: SessionDep
) -> schemas.WebhookRead:
    """Turn a disabled webhook back on; its failure count starts again from 0."""
    return schemas.WebhookRead.model_validate(
        webhook_service.enable(session, principal, webhook_id)
    )


@router.post("/{webhook_id}/test", response_model=schemas.DeliveryRead)
async def test_webhook(
    webhook_id: WebhookId, principal: WriteHooks, request: Request
) -> schemas.DeliveryRead:
    """Send a ``webhook.test`` event now and answer with the attempt (sent even when the
    webhook is disabled; it does not count as a failure)."""
    sent = await run_in_threadpool(delivery.send_test, engines_of(request), principal, webhook_id)
    return schemas.DeliveryRead.model_validate(sent)


@router.get("/{webhook_id}/deliveries", response_model=list[schemas.DeliveryRead])
def list_deliveries(
    webhook_id: WebhookId,
    principal: ReadHooks,
    session: SessionDep,
    status: DeliveryStatus | None = None,
    after_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[schemas.DeliveryRead]:
    """Every attempt, newest first; pass the last id you got as ``after_id`` to page."""
    found = webhook_service.deliveries(
        session, principal, webhook_id, after_id=after_id, status=status, limit=limit
    )
    return [schemas.DeliveryRead.model_validate(d) for d in found]
