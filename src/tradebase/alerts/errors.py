"""Errors of outgoing webhooks."""

from __future__ import annotations

from tradebase.core.errors import NotFound, Unprocessable


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class WebhookUrlInvalid(Unprocessable):
    code = "webhook_url_invalid"


class WebhookEventsInvalid(Unprocessable):
    code = "webhook_events_invalid"
