"""`emit`: write an event into the outbox, in the caller's transaction; reading it back.

An event is one INSERT in the unit of work of the change that causes it (no reads), so it
exists if and only if that change committed; a savepoint that rolls back takes its events
with it. On PostgreSQL the same statement NOTIFYs ``tradebase_events`` with the event id
(a data-modifying CTE: still one round trip), which PostgreSQL delivers on commit, to the
listening server processes only. Every engine also wakes this process's readers after the
commit (`tradebase.events.fanout`), which publish to Redis when ``REDIS_URL`` is set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any, cast

from sqlalchemy import Table, Text, bindparam, func, insert, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from tradebase.core.auth import Principal, scoped
from tradebase.core.errors import Unprocessable
from tradebase.core.money import canonical
from tradebase.core.prepared import Prepared, connection_of
from tradebase.core.time import UTCDateTime, utc_now
from tradebase.events.bus import EMITTED
from tradebase.events.models import Event

NOTIFY_CHANNEL = "tradebase_events"


class EventType(StrEnum):
    """The event types Tradebase emits; webhooks subscribe to these (or ``*``, ``order.*``).

    Callers may emit other dotted names; add them here to make them subscribable."""

    signal_rejected = "signal.rejected"
    order_filled = "order.filled"
    order_partially_filled = "order.partially_filled"
    order_rejected = "order.rejected"
    order_cancelled = "order.cancelled"
    order_expired = "order.expired"
    position_closed = "position.closed"
    failover = "failover"
    account_disconnected = "account.disconnected"
    account_connected = "account.connected"
    webhook_disabled = "webhook.disabled"


WEBHOOK_TEST = "webhook.test"  # test-sends only: never in the outbox
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


class EventTypeInvalid(Unprocessable):
    code = "event_type_invalid"


_AS_IS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """*value* as JSON: decimals as exact text, times as ISO 8601, enums by value."""
    kind = type(value)
    if kind in _AS_IS:  # exact types first: this runs for every field of every event
        return value
    if kind is Decimal:
        return str(canonical(value))
    if kind is dict:
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return str(canonical(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def emit(session: Session, user_id: int, event_type: str, payload: Mapping[str, Any]) -> None:
    """Record that *event_type* happened to *user_id*'s data, in *session*'s transaction.

    *payload* is what webhooks and stream clients receive as ``data``: decimals become
    exact strings, datetimes ISO 8601. Call it after the change, in the same unit of work.
    """
    if not _NAME.match(event_type) or len(event_type) > 50:
        raise EventTypeInvalid(
            f"event type {event_type!r}: use dotted lowercase names such as order.filled",
            details={"event_type": event_type},
        )
    connection = connection_of(session)
    values = {
        "user_id": user_id,
        "event_type": event_type,
        "payload": plain(payload),
        "created_at": utc_now(),
    }
    if connection.dialect.name == "postgresql":
        connection.execute(_NOTIFYING_INSERT, values)
    else:
        _INSERT.run(connection, values)
    session.info[EMITTED] = True


class EventService:
    def list(
        self,
        session: Session,
        principal: Principal,
        *,
        after_id: int | None = None,
        event_type: str | None = None,
        limit: int = 100,
    ) -> Sequence[Event]:
        """The caller's events in the order they were written (ascending id), after
        ``after_id``: pass the last id you got to continue (or to resume a stream)."""
        statement = scoped(select(Event), Event.user_id, principal)
        if after_id is not None:
            statement = statement.where(Event.id > after_id)
        if event_type is not None:
            statement = statement.where(Event.event_type == event_type)
        return session.scalars(statement.order_by(Event.id).limit(limit)).all()

    def of_user(
        self, session: Session, user_id: int, *, after_id: int, up_to: int, limit: int = 1000
    ) -> Sequence[Event]:
        """*user_id*'s events with ``after_id < id <= up_to``, ascending (a stream's replay)."""
        return session.scalars(
            select(Event)
            .where(Event.user_id == user_id, Event.id > after_id, Event.id <= up_to)
            .order_by(Event.id)
            .limit(limit)
        ).all()

    def last_id(self, session: Session) -> int:
        """The highest event id committed so far (0 when there is none)."""
        return int(session.scalar(select(func.max(Event.id))) or 0)


def body(event: Event) -> dict[str, Any]:
    """What webhooks and stream clients get for *event*."""
    return {
        "id": event.id,
        "type": event.event_type,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),  # as the API
        "data": event.payload,
    }


_events = cast(Table, Event.__table__)
_INSERT = Prepared(insert(_events))
_inserted = (
    insert(_events)
    .values(
        user_id=bindparam("user_id"),
        event_type=bindparam("event_type"),
        payload=bindparam("payload", type_=_events.c.payload.type),
        created_at=bindparam("created_at", type_=UTCDateTime()),
    )
    .returning(_events.c.id)
    .cte("emitted")
)
# Only the id travels (NOTIFY payloads stop at 8000 bytes): listeners read the rows.
_NOTIFYING_INSERT = select(
    func.pg_notify(NOTIFY_CHANNEL, sql_cast(_inserted.c.id, Text))
).select_from(_inserted)

event = EventService()
