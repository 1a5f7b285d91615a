"""Outgoing webhook subscriptions (seed 002 ``webhooks``): create, read, change, delete,
re-enable. Their signing secrets live encrypted in the credentials database, written once
and never shown again; sending is `tradebase.alerts.delivery`."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradebase.accounts.service import require_writer
from tradebase.alerts.errors import WebhookEventsInvalid, WebhookNotFound, WebhookUrlInvalid
from tradebase.alerts.models import Webhook, WebhookDelivery
from tradebase.audit.service import audit as audit_service
from tradebase.config import Settings
from tradebase.core.auth import Principal, scoped
from tradebase.core.time import utc_now
from tradebase.credentials.models import CredentialKind, CredentialOwner
from tradebase.credentials.service import credential as credential_service
from tradebase.events.service import EventType

SUBSCRIBABLE = tuple(sorted(str(t) for t in EventType))
_PREFIXES = frozenset(t.split(".", 1)[0] for t in SUBSCRIBABLE if "." in t)


def secret_identity(webhook_id: int) -> dict[str, Any]:
    """Where a webhook's signing secret is in the credentials database."""
    return {
        "owner_type": CredentialOwner.webhook,
        "owner_id": webhook_id,
        "kind": CredentialKind.webhook_signing_secret,
    }


def matches(subscribed: Sequence[str], event_type: str) -> bool:
    """Whether a webhook subscribed to *subscribed* gets *event_type*."""
    prefix = event_type.split(".", 1)[0]
    return any(
        s == "*" or s == event_type or (s.endswith(".*") and s[:-2] == prefix) for s in subscribed
    )


def check_events(events: Sequence[str]) -> list[str]:
    """The subscription list without duplicates; refuse a type nobody emits."""
    unknown = [
        e
        for e in events
        if e != "*" and e not in SUBSCRIBABLE and not (e.endswith(".*") and e[:-2] in _PREFIXES)
    ]
    if unknown:
        raise WebhookEventsInvalid(
            f"unknown event type {unknown[0]!r}: subscribe to {', '.join(SUBSCRIBABLE)},"
            f" a prefix such as order.*, or *",
            details={"unknown": unknown, "known": list(SUBSCRIBABLE)},
        )
    return list(dict.fromkeys(events))


def check_url(url: str, settings: Settings) -> str:
    """Refuse what is not an http(s) URL with a host; with WEBHOOK_ALLOW_PRIVATE false,
    also one whose host is (or resolves to) a loopback, private or link-local address."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlInvalid(
            f"url: webhooks are sent over http:// or https:// only (got {parts.scheme or 'no'}"
            " scheme)",
            details={"field": "url", "scheme": parts.scheme},
        )
    if not parts.hostname:
        raise WebhookUrlInvalid("url: no host name", details={"field": "url"})
    if not settings.webhook_allow_private:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, None)}
        except OSError:
            raise WebhookUrlInvalid(
                f"url: the host {parts.hostname!r} does not resolve", details={"field": "url"}
            ) from None
        for address in addresses:
            ip = ipaddress.ip_address(str(address).split("%", 1)[0])
            if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved:
                raise WebhookUrlInvalid(
                    f"url: {parts.hostname} is a private address ({ip}); this server sends"
                    " webhooks to public addresses only",
                    details={"field": "url"},
                )
    return url.strip()


class WebhookService:
    def create(
        self,
        session: Session,
        credentials_session: Session,
        principal: Principal,
        *,
        url: str,
        events: Sequence[str],
        settings: Settings,
        description: str | None = None,
        secret: str | None = None,
    ) -> tuple[Webhook, str | None]:
        """Subscribe *url* to *events*; return the webhook and the generated secret (None
        when the caller gave one), which is shown this once."""
        require_writer(principal)
        generated = None if secret is not None else "whsec_" + secrets.token_hex(24)
        value = secret if secret is not None else generated
        assert value is not None
        webhook = Webhook(
            user_id=principal.user_id,
            url=check_url(url, settings),
            description=description,
            events=check_events(events),
            secret_last4=value[-4:],
        )
        session.add(webhook)
        session.flush()
        self._set_secret(credentials_session, principal, webhook, value)
        self._audit(session, principal, "webhook.created", webhook, {"url": webhook.url})
        return webhook, generated

    def list(self, session: Session, principal: Principal) -> Sequence[Webhook]:
        return session.scalars(
            scoped(select(Webhook), Webhook.user_id, principal).order_by(Webhook.id)
        ).all()

    def get(self, session: Session, principal: Principal, webhook_id: int) -> Webhook:
        webhook = session.scalars(
            scoped(select(Webhook), Webhook.user_id, principal).where(Webhook.id == webhook_id)
        ).first()
        if webhook is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")
        return webhook

    def update(
        self,
        session: Session,
        credentials_session: Session,
        principal: Principal,
        webhook_id: int,
        *,
        settings: Settings,
        changes: dict[str, Any],
    ) -> Webhook:
        """Change the fields given in *changes* (url, events, description, is_active,
        secret)."""
        require_writer(principal)
        webhook = self.get(session, principal, webhook_id)
        if changes.get("url") is not None:
            webhook.url = check_url(changes["url"], settings)
        if changes.get("events") is not None:
            webhook.events = check_events(changes["events"])
        if "description" in changes:
            webhook.description = changes["description"]
        if changes.get("secret") is not None:
            self._set_secret(credentials_session, principal, webhook, changes["secret"])
            webhook.secret_last4 = changes["secret"][-4:]
        if changes.get("is_active") is True:
            self._enable(webhook)
        elif changes.get("is_active") is False and webhook.is_active:
            webhook.is_active = False
            webhook.disabled_at = utc_now()
            webhook.disabled_reason = "paused by the user"
        session.flush()
        shown = sorted(k for k in changes if k != "secret") + (
            ["secret"] if "secret" in changes else []
        )
        self._audit(session, principal, "webhook.updated", webhook, {"changed": shown})
        return webhook

    def delete(
        self, session: Session, credentials_session: Session, principal: Principal, webhook_id: int
    ) -> None:
        """Delete the webhook, its deliveries and its secret."""
        require_writer(principal)
        webhook = self.get(session, principal, webhook_id)
        self._audit(session, principal, "webhook.deleted", webhook, {"url": webhook.url})
        session.delete(webhook)
        session.flush()
        credential_service.delete_secret(
            credentials_session,
            **secret_identity(webhook_id),
            actor=principal.username,
            actor_user_id=principal.user_id,
            purpose="webhook deleted",
            ip_address=principal.ip_address,
        )

    def enable(self, session: Session, principal: Principal, webhook_id: int) -> Webhook:
        """Turn a disabled webhook back on, its failure count back to 0 (what failed stays
        failed; new events are sent)."""
        require_writer(principal)
        webhook = self.get(session, principal, webhook_id)
        self._enable(webhook)
        session.flush()
        self._audit(session, principal, "webhook.enabled", webhook, {})
        return webhook

    def deliveries(
        self,
        session: Session,
        principal: Principal,
        webhook_id: int,
        *,
        after_id: int | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> Sequence[WebhookDelivery]:
        """The webhook's delivery attempts, newest first; ``after_id`` continues a page."""
        webhook = self.get(session, principal, webhook_id)
        statement = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
        if after_id is not None:
            statement = statement.where(WebhookDelivery.id < after_id)
        if status is not None:
            statement = statement.where(WebhookDelivery.status == status)
        return session.scalars(statement.order_by(WebhookDelivery.id.desc()).limit(limit)).all()

    @staticmethod
    def _enable(webhook: Webhook) -> None:
        webhook.is_active = True
        webhook.failure_count = 0
        webhook.disabled_at = None
        webhook.disabled_reason = None

    @staticmethod
    def _set_secret(
        credentials_session: Session, principal: Principal, webhook: Webhook, value: str
    ) -> None:
        credential_service.set_secret(
            credentials_session,
            user_id=webhook.user_id,
            **secret_identity(webhook.id),
            value=value,
            actor=principal.username,
            actor_user_id=principal.user_id,
            purpose="webhook signing secret",
            ip_address=principal.ip_address,
        )

    @staticmethod
    def _audit(
        session: Session,
        principal: Principal,
        action: str,
        webhook: Webhook,
        details: dict[str, Any],
    ) -> None:
        audit_service.record_by(
            session,
            principal,
            action=action,
            resource_type="webhook",
            resource_id=webhook.id,
            details=details,
        )


webhook = WebhookService()
