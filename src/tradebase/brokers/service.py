"""Live broker accounts: sending their orders, failover, health and postbacks.

Sending an order (`dispatch`). `OrderService.place` stores an order for a live account as
``pending`` under its deterministic ``client_order_id`` and the caller commits; then,
outside any transaction, the order goes to the account's adapter, and what the broker
answers is recorded in a transaction of its own: accepted, filled at the broker's average
price, or rejected with the broker's message.

Failover. When the broker cannot be reached the account is marked ``disconnected``. If the
request may have reached it (a timeout, a broken answer) the broker's orderbook is searched
for the ``client_order_id`` first: found, the order is recorded as the broker has it, never
placed twice; not there, or the connection was never made, the order is rejected on this
account and placed again on the user's next healthy active account in failover order (the
primary first, then by priority, then id; healthy: a paper account, or a live one whose
last check said connected), under the id ``<client_order_id>~fo<account>``, and a
failover_events row records from, to, why, whether it worked and the error. When even the
search cannot reach the broker the order stays ``pending``: `resolve_pending` settles it
once the broker answers again (found: recorded; not found: rejected, never sent late).

Health. `check` asks the adapter (OpenAlgo: funds) and sets ``connection_status`` and, on
success, ``last_connected``; the worker's ``broker-health`` job checks every active live
account, then resolves its pending orders and syncs its open ones (`sync_open`: a resting
order that filled or was cancelled at the broker).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradebase.accounts.models import User
from tradebase.accounts.service import principal_for, require_writer
from tradebase.audit.service import audit as audit_service
from tradebase.brokers.base import BrokerOrder, Health, OrderRequest
from tradebase.brokers.errors import BrokerNotConfigured, BrokerRefused, BrokerUnreachable
from tradebase.brokers.models import BrokerPostback
from tradebase.brokers.openalgo import STATUS_OF, OpenAlgoBroker, number
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.errors import BadRequest, Conflict, Unauthorized
from tradebase.core.time import utc_now
from tradebase.credentials.errors import CredentialNotFound
from tradebase.credentials.models import CredentialKind, CredentialOwner
from tradebase.credentials.service import credential as credential_service
from tradebase.events.service import EventType, emit
from tradebase.orders.errors import OrderRejected
from tradebase.orders.models import Order, OrderStatus
from tradebase.orders.service import order as order_service
from tradebase.portfolios.errors import AccountNotFound
from tradebase.portfolios.models import ConnectionStatus, Portfolio, TradingAccount
from tradebase.portfolios.service import account as account_service
from tradebase.strategies.models import FailoverEvent

log = logging.getLogger(__name__)

LIVE_BROKERS = frozenset({"openalgo"})
# The credential name of an account's postback signing secret (not a secret itself).
POSTBACK_SECRET = "postback"  # noqa: S105
SIGNATURE_HEADER = "X-Tradebase-Signature"
RESEND_WINDOW = timedelta(seconds=60)
TIMESTAMP_HEADER = "X-Tradebase-Timestamp"


class PostbackRefused(Unauthorized):
    code = "postback_refused"


class PostbackReplayed(Conflict):
    code = "postback_replayed"


class OrderBeingSent(Conflict):
    code = "order_being_sent"


class PostbackInvalid(BadRequest):
    code = "postback_invalid"


@dataclass(frozen=True)
class HealthReport:
    account_id: int
    broker: str
    connection_status: str
    last_connected: datetime | None
    detail: str


def on_failover(event: FailoverEvent) -> None:
    """Called after each failover_events row is committed (its ``failover`` event was
    emitted in the same transaction, for webhooks and the live stream): logs it."""
    log.warning(
        "failover: account %s -> %s (%s) success=%s",
        event.from_account_id,
        event.to_account_id,
        event.reason,
        event.success,
    )


class BrokerService:
    # --- credentials --------------------------------------------------------------------

    def set_api_key(
        self, credentials: Session, principal: Principal, account: TradingAccount, api_key: str
    ) -> None:
        """Store the account's broker API key (OpenAlgo ``apikey``) in the credentials
        database, encrypted; it is never returned over the API."""
        require_writer(principal)
        credential_service.set_secret(
            credentials,
            user_id=account.user_id,
            owner_type=CredentialOwner.account,
            owner_id=account.id,
            kind=CredentialKind.broker_api_key,
            value=api_key,
            actor=principal.username,
            actor_user_id=principal.user_id,
            purpose="broker api key set",
            ip_address=principal.ip_address,
        )

    def new_postback_secret(
        self, session: Session, credentials: Session, principal: Principal, account_id: int
    ) -> str:
        """A new signing secret for the account's postbacks (shown once; the old one stops
        working)."""
        require_writer(principal)
        account = account_service.get(session, principal, account_id)
        secret = secrets.token_urlsafe(32)
        credential_service.set_secret(
            credentials,
            user_id=account.user_id,
            owner_type=CredentialOwner.account,
            owner_id=account.id,
            kind=CredentialKind.webhook_signing_secret,
            name=POSTBACK_SECRET,
            value=secret,
            actor=principal.username,
            actor_user_id=principal.user_id,
            purpose="postback secret set",
            ip_address=principal.ip_address,
        )
        audit_service.record_by(
            session,
            principal,
            action="account.postback_secret",
            resource_type="trading_account",
            resource_id=account.id,
        )
        return secret

    def adapter(self, engines: Engines, account: TradingAccount, purpose: str) -> OpenAlgoBroker:
        """The account's adapter, with its API key read (and the read logged)."""
        if account.broker not in LIVE_BROKERS:
            raise BrokerNotConfigured(f"account {account.id} is on the {account.broker} broker")
        try:
            with unit_of_work(
                Database.credentials, factory=engines.session_factory(Database.credentials)
            ) as credentials:
                apikey = credential_service.read_secret(
                    credentials,
                    owner_type=CredentialOwner.account,
                    owner_id=account.id,
                    kind=CredentialKind.broker_api_key,
                    actor="tradebase",
                    actor_user_id=None,
                    purpose=purpose,
                )
        except CredentialNotFound:
            raise BrokerNotConfigured(
                f"account {account.id} has no broker API key: set api_key on the account"
            ) from None
        return OpenAlgoBroker(
            account.host_url or "http://127.0.0.1:5000",
            apikey,
            timeout=engines.settings.broker_timeout_seconds,
        )

    # --- sending orders -----------------------------------------------------------------

    def dispatch(
        self, engines: Engines, order_id: int, *, tried: frozenset[int] = frozenset()
    ) -> int:
        """Send a pending live order and record the outcome (module docstring); return the
        id of the order that carries it: this one, or the one it failed over to."""
        factory = engines.session_factory(Database.main)
        with unit_of_work(factory=factory, write=False) as session:
            order = session.get(Order, order_id)
            if order is None or order.status != OrderStatus.pending:
                return order_id
            account = session.get(TradingAccount, order.account_id)
            assert account is not None
            if account.broker not in LIVE_BROKERS:
                return order_id
            request = _request(order)
        try:
            broker = self.adapter(engines, account, f"send order {order_id}")
        except BrokerNotConfigured as exc:
            self._record(engines, order_id, status=OrderStatus.rejected, reason=exc.message)
            return order_id
        with broker:
            try:
                sent = broker.place_order(request)
            except BrokerRefused as exc:
                self._record(engines, order_id, status=OrderStatus.rejected, reason=exc.message)
                self._mark(engines, account.id, ConnectionStatus.connected)
                return order_id
            except BrokerUnreachable as exc:
                found: BrokerOrder | None = None
                if exc.maybe_sent:
                    assert request.client_order_id is not None
                    try:
                        found = broker.find_by_client_order_id(request.client_order_id)
                    except (BrokerUnreachable, BrokerRefused) as again:
                        self._mark(engines, account.id, ConnectionStatus.disconnected)
                        self._note_unknown(engines, order_id, f"{exc.message}; {again.message}")
                        return order_id
                if found is None:
                    return self.fail_over(engines, order_id, exc.message, tried | {account.id})
                sent = found.order_id
            self._mark(engines, account.id, ConnectionStatus.connected)
            try:
                status = broker.order_status(sent)
            except (BrokerUnreachable, BrokerRefused):
                # It reached the broker: accepted; its fill comes by postback or the job.
                self._record(engines, order_id, status=OrderStatus.open, exchange_order_id=sent)
                return order_id
        self._record_status(engines, order_id, status)
        return order_id

    def cancel(self, engines: Engines, principal: Principal, order_id: int) -> Order:
        """Cancel an order. On a live account the broker cancels it first (outside any
        transaction) and the order is recorded as the broker then reports it (cancelled, or
        filled if it filled first); an order still being sent cannot be cancelled yet."""
        factory = engines.session_factory(Database.main)
        with unit_of_work(factory=factory) as session:
            order = order_service.get(session, principal, order_id)
            account = session.get(TradingAccount, order.account_id)
            assert account is not None
            if account.broker not in LIVE_BROKERS or order.status not in (
                OrderStatus.pending,
                OrderStatus.open,
                OrderStatus.partially_filled,
            ):
                return order_service.cancel(session, principal, order_id)
            require_writer(principal)
            if order.exchange_order_id is None:
                raise OrderBeingSent(
                    f"order {order_id} is being sent to the broker: cancel it once it is open",
                    details={"order_id": order_id, "status": order.status},
                )
            exchange_order_id = order.exchange_order_id
        with self.adapter(engines, account, f"cancel order {order_id}") as broker:
            with contextlib.suppress(BrokerRefused):  # e.g. it filled first: the status says
                broker.cancel_order(exchange_order_id)
            status = broker.order_status(exchange_order_id)
        self._record_status(engines, order_id, status)
        with unit_of_work(factory=factory, write=False) as session:
            return order_service.get(session, principal, order_id)

    def _record_status(self, engines: Engines, order_id: int, status: BrokerOrder) -> None:
        self._record(
            engines,
            order_id,
            status=status.status,
            exchange_order_id=status.order_id,
            filled_quantity=status.quantity if status.status == OrderStatus.filled else None,
            average_price=status.average_price,
            reason=status.message,
        )

    def _record(self, engines: Engines, order_id: int, **outcome: Any) -> None:
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            order_service.record_broker_outcome(session, order_id, **outcome)

    def _note_unknown(self, engines: Engines, order_id: int, why: str) -> None:
        log.warning("order %s: outcome unknown, left pending: %s", order_id, why)

    def _mark(
        self, engines: Engines, account_id: int, status: str, *, at: datetime | None = None
    ) -> None:
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            mark(session, account_id, status, at=at)

    def fail_over(self, engines: Engines, order_id: int, reason: str, tried: frozenset[int]) -> int:
        """Reject *order_id* on its unreachable account, place it on the next healthy
        account and record the failover; return the id of the order now carrying it."""
        factory = engines.session_factory(Database.main)
        with unit_of_work(factory=factory) as session:
            order = session.get(Order, order_id)
            assert order is not None
            if order.status != OrderStatus.pending:
                return order_id
            mark(session, order.account_id, ConnectionStatus.disconnected)
            target = self._next_account(session, order.user_id, tried | {order.account_id})
            event = FailoverEvent(
                user_id=order.user_id,
                from_account_id=order.account_id,
                to_account_id=target[0].id if target else None,
                order_id=order.id,
                reason=f"broker unreachable: {reason}"[:500],
            )
            carried = order_id
            if target is None:
                event.success = False
                event.error_message = "no healthy active account with a portfolio to fail over to"
                order_service.record_broker_outcome(
                    session,
                    order_id,
                    status=OrderStatus.rejected,
                    reason=f"broker unreachable ({reason}) and no account to fail over to",
                    source="failover",
                )
            else:
                account, portfolio_id = target
                user = session.get(User, order.user_id)
                assert user is not None
                order_service.record_broker_outcome(
                    session,
                    order_id,
                    status=OrderStatus.rejected,
                    reason=f"broker unreachable ({reason}): failed over to account {account.id}",
                    source="failover",
                )
                try:
                    moved = order_service.place(
                        session,
                        principal_for(user),
                        portfolio_id=portfolio_id,
                        symbol=order.symbol,
                        side=order.side,
                        quantity=order.quantity,
                        order_type=order.order_type,
                        exchange=order.exchange,
                        price=order.price,
                        trigger_price=order.trigger_price,
                        product=order.product,
                        time_in_force=order.time_in_force,
                        client_order_id=f"{order.client_order_id}~fo{account.id}"[:100],
                        tag=f"failover of order {order.id}",
                        signal_id=order.signal_id,
                        strategy_id=order.strategy_id,
                        deployment_id=order.deployment_id,
                    )
                except OrderRejected as refused:
                    event.success = False
                    event.error_message = refused.message  # kept as rejected on the target
                else:
                    carried = moved.id
                    event.success = moved.status != OrderStatus.rejected
            session.add(event)
            session.flush()
            audit_service.record(
                session,
                action="account.failover",
                user_id=order.user_id,
                actor="tradebase",
                resource_type="trading_account",
                resource_id=order.account_id,
                details={"to": event.to_account_id, "order_id": order.id, "new": carried},
            )
            emit(
                session,
                order.user_id,
                EventType.failover,
                {
                    "from_account_id": event.from_account_id,
                    "to_account_id": event.to_account_id,
                    "order_id": order.id,
                    "new_order_id": None if carried == order_id else carried,
                    "reason": event.reason,
                    "success": event.success,
                    "error": event.error_message,
                },
            )
            pending_live = carried != order_id and self._is_live_pending(session, carried)
        on_failover(event)  # event: failover
        if pending_live:
            return self.dispatch(engines, carried, tried=tried | {order.account_id})
        return carried

    def _is_live_pending(self, session: Session, order_id: int) -> bool:
        order = session.get(Order, order_id)
        return order is not None and order.status == OrderStatus.pending

    def _next_account(
        self, session: Session, user_id: int, exclude: frozenset[int]
    ) -> tuple[TradingAccount, int] | None:
        """The first healthy active account of the user, in failover order, with its
        first portfolio."""
        rows = session.execute(
            select(TradingAccount, Portfolio.id)
            .join(Portfolio, Portfolio.account_id == TradingAccount.id)
            .where(
                TradingAccount.user_id == user_id,
                TradingAccount.is_active,
                TradingAccount.id.not_in(exclude),
            )
            .order_by(
                TradingAccount.is_primary.desc(),
                TradingAccount.priority,
                TradingAccount.id,
                Portfolio.id,
            )
        ).all()
        for account, portfolio_id in rows:
            if account.broker == "paper" or account.connection_status == ConnectionStatus.connected:
                return account, portfolio_id
        return None

    # --- health ---------------------------------------------------------------------------

    def check(self, engines: Engines, account_id: int) -> HealthReport:
        """Check one account's broker now and record the answer."""
        with unit_of_work(factory=engines.session_factory(Database.main), write=False) as s:
            account = s.get(TradingAccount, account_id)
            if account is None:
                raise AccountNotFound(f"no trading account {account_id}")
        health: Health
        if account.broker == "paper":
            health = Health(True, "the paper broker is always up")
        else:
            try:
                with self.adapter(engines, account, "health check") as broker:
                    health = broker.health()
            except BrokerNotConfigured as exc:
                health = Health(False, exc.message)
        now = utc_now()
        status = ConnectionStatus.connected if health.ok else ConnectionStatus.disconnected
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            mark(session, account_id, status, at=now)
            fresh = session.get(TradingAccount, account_id)
            assert fresh is not None
            return HealthReport(
                account_id,
                fresh.broker,
                fresh.connection_status,
                fresh.last_connected,
                health.detail,
            )

    def exists(self, engines: Engines, account_id: int) -> bool:
        with unit_of_work(factory=engines.session_factory(Database.main), write=False) as s:
            return s.get(TradingAccount, account_id) is not None

    def check_account(
        self, engines: Engines, principal: Principal, account_id: int
    ) -> HealthReport:
        with unit_of_work(factory=engines.session_factory(Database.main), write=False) as s:
            account_service.get(s, principal, account_id)  # yours, or 404
        report = self.check(engines, account_id)
        if report.connection_status == ConnectionStatus.connected:
            self.resolve_pending(engines, account_id=account_id)
            self.sync_open(engines, account_id=account_id)
        return report

    def check_all(self, engines: Engines) -> list[HealthReport]:
        """Check every active live account; then resolve the pending orders of those
        that answered."""
        with unit_of_work(factory=engines.session_factory(Database.main), write=False) as s:
            ids = list(
                s.scalars(
                    select(TradingAccount.id)
                    .where(TradingAccount.is_active, TradingAccount.broker.in_(LIVE_BROKERS))
                    .order_by(TradingAccount.id)
                )
            )
        reports = [self.check(engines, account_id) for account_id in ids]
        for report in reports:
            if report.connection_status == ConnectionStatus.connected:
                self.resolve_pending(engines, account_id=report.account_id)
                self.sync_open(engines, account_id=report.account_id)
        return reports

    def sync_open(self, engines: Engines, *, account_id: int) -> int:
        """Ask the broker about the account's open live orders (a resting limit or stop
        fills or is cancelled there) and record what changed; return how many changed."""
        with unit_of_work(factory=engines.session_factory(Database.main), write=False) as s:
            account = s.get(TradingAccount, account_id)
            assert account is not None
            open_orders = list(
                s.execute(
                    select(Order.id, Order.exchange_order_id)
                    .where(
                        Order.account_id == account_id,
                        Order.status.in_([OrderStatus.open, OrderStatus.partially_filled]),
                        Order.exchange_order_id.is_not(None),
                    )
                    .order_by(Order.id)
                )
            )
        if not open_orders or account.broker not in LIVE_BROKERS:
            return 0
        changed = 0
        with self.adapter(engines, account, "sync open orders") as broker:
            for order_id, exchange_order_id in open_orders:
                try:
                    status = broker.order_status(str(exchange_order_id))
                except BrokerRefused as exc:
                    log.warning("order %s: the broker does not report it: %s", order_id, exc)
                    continue
                except BrokerUnreachable:
                    break
                if status.status not in (OrderStatus.open, OrderStatus.pending):
                    self._record_status(engines, order_id, status)
                    changed += 1
        return changed

    def resolve_pending(
        self, engines: Engines, *, account_id: int, older_than: timedelta | None = None
    ) -> int:
        """Settle the account's live orders left pending (by an outage, or by a process
        that stored them and did not send them): found at the broker under their
        client_order_id, recorded as it has them; not found, sent now if they are fresh
        (younger than the grace plus RESEND_WINDOW: a process died before sending, or a
        short outage), else rejected as never received, never sent late. Orders younger
        than the grace (three broker timeouts) may still be in flight and are left.
        Return how many were settled."""
        settings = engines.settings
        grace = older_than or timedelta(seconds=3 * settings.broker_timeout_seconds + 1)
        fresh = grace + RESEND_WINDOW
        now = utc_now()
        with unit_of_work(factory=engines.session_factory(Database.main), write=False) as s:
            account = s.get(TradingAccount, account_id)
            assert account is not None
            pending = list(
                s.scalars(
                    select(Order)
                    .where(Order.account_id == account_id, Order.status == OrderStatus.pending)
                    .order_by(Order.id)
                )
            )
        pending = [o for o in pending if _aware(o.created_at) <= now - grace]
        if not pending or account.broker not in LIVE_BROKERS:
            return 0
        settled = 0
        with self.adapter(engines, account, "resolve pending orders") as broker:
            for order in pending:
                assert order.client_order_id is not None
                try:
                    found = broker.find_by_client_order_id(order.client_order_id)
                    if found is not None:
                        self._record_status(engines, order.id, broker.order_status(found.order_id))
                    elif _aware(order.created_at) > now - fresh:
                        self.dispatch(engines, order.id)
                    else:
                        self._record(
                            engines,
                            order.id,
                            status=OrderStatus.rejected,
                            reason="the broker never received it (an outage); not sent late",
                            source="resolve",
                        )
                except (BrokerUnreachable, BrokerRefused) as exc:
                    log.warning("order %s still unresolved: %s", order.id, exc.message)
                    break
                settled += 1
        return settled

    # --- postbacks ------------------------------------------------------------------------

    def postback(
        self,
        engines: Engines,
        account_id: int,
        *,
        body: bytes,
        timestamp: str | None,
        signature: str | None,
    ) -> dict[str, Any]:
        """Apply a broker's order-update postback, once.

        Authenticated by ``X-Tradebase-Signature: sha256=<hex HMAC-SHA256 of
        "<timestamp>.<body>">`` under the account's postback secret, with
        ``X-Tradebase-Timestamp`` (Unix seconds) within the replay window; the body's
        ``id`` is stored, so the same postback again is refused (409) and changes nothing.
        Body: ``{"id", "orderid" (the broker's), "order_status" (OpenAlgo's: complete,
        open, cancelled, rejected), "average_price", "quantity", "message"}``.
        """
        window = engines.settings.postback_window_seconds
        if not timestamp or not signature:
            raise PostbackRefused(
                f"postbacks must be signed: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"
            )
        try:
            sent_at = datetime.fromtimestamp(int(timestamp), UTC)
        except (ValueError, OverflowError, OSError):
            raise PostbackRefused(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
        now = utc_now()
        try:
            with unit_of_work(
                Database.credentials, factory=engines.session_factory(Database.credentials)
            ) as credentials:
                secret = credential_service.read_secret(
                    credentials,
                    owner_type=CredentialOwner.account,
                    owner_id=account_id,
                    kind=CredentialKind.webhook_signing_secret,
                    name=POSTBACK_SECRET,
                    actor="postback",
                    actor_user_id=None,
                    purpose="verify postback",
                )
        except CredentialNotFound:
            raise PostbackRefused("this account takes no postbacks (no secret set)") from None
        expected = "sha256=" + sign(secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise PostbackRefused("postback signature does not match")
        if abs((now - sent_at).total_seconds()) > window:
            raise PostbackRefused(
                f"postback timestamp is more than {window} s from now: refused as a replay"
            )
        try:
            update_ = json.loads(body)
        except ValueError:
            raise PostbackInvalid("the postback body is not JSON") from None
        if not isinstance(update_, dict) or not update_.get("id") or not update_.get("orderid"):
            raise PostbackInvalid("a postback needs id and orderid")
        status_text = str(update_.get("order_status", "")).lower()
        if status_text not in STATUS_OF:
            raise PostbackInvalid(f"unknown order_status {status_text!r}")
        postback_id = str(update_["id"])[:100]
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            order = session.scalars(
                select(Order).where(
                    Order.account_id == account_id,
                    Order.exchange_order_id == str(update_["orderid"]),
                )
            ).first()
            if order is None:
                raise PostbackInvalid(f"no order {update_['orderid']} on account {account_id}")
            try:
                with session.begin_nested():
                    session.add(
                        BrokerPostback(
                            account_id=account_id,
                            postback_id=postback_id,
                            order_id=order.id,
                            sent_at=sent_at,
                            payload=update_,
                        )
                    )
                    session.flush()
            except IntegrityError:
                raise PostbackReplayed(f"postback {postback_id} was applied already") from None
            status = STATUS_OF[status_text]
            changed = order_service.record_broker_outcome(
                session,
                order.id,
                status=status,
                exchange_order_id=str(update_["orderid"]),
                filled_quantity=number(update_.get("quantity")) or None,
                average_price=number(update_.get("average_price")) or None,
                reason=update_.get("message"),
                source="postback",
            )
            return {"order_id": order.id, "status": order.status, "changed": changed}

    def failovers(
        self, session: Session, principal: Principal, limit: int = 100
    ) -> Sequence[FailoverEvent]:
        statement = select(FailoverEvent)
        if not principal.is_admin:
            statement = statement.where(FailoverEvent.user_id == principal.user_id)
        return session.scalars(statement.order_by(FailoverEvent.id.desc()).limit(limit)).all()


def send_pending(engines: Engines, order_ids: Sequence[int]) -> None:
    """Send those of *order_ids* that are live orders still pending, each as the order
    router does (outside any transaction, failing over when the broker is unreachable):
    the orders signals and mirror orders place, after their units of work, off the
    request path. An order this leaves pending is settled by the broker-health job."""
    for order_id in order_ids:
        try:
            broker.dispatch(engines, order_id)
        except Exception:  # one broken send must not keep the others back
            log.exception("order %s: sending it to its broker failed", order_id)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under *secret*."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def mark(session: Session, account_id: int, status: str, *, at: datetime | None = None) -> None:
    """Set the account's connection_status (and last_connected when it answered); a change
    of status is an ``account.connected`` or ``account.disconnected`` event."""
    before = session.execute(
        select(TradingAccount.user_id, TradingAccount.connection_status).where(
            TradingAccount.id == account_id
        )
    ).first()
    values: dict[str, Any] = {"connection_status": status}
    if status == ConnectionStatus.connected:
        values["last_connected"] = at or utc_now()
    session.execute(update(TradingAccount).where(TradingAccount.id == account_id).values(**values))
    if before is not None and before.connection_status != status:
        kind = (
            EventType.account_connected
            if status == ConnectionStatus.connected
            else EventType.account_disconnected
        )
        emit(
            session,
            before.user_id,
            kind,
            {"account_id": account_id, "from": before.connection_status, "to": status},
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _request(order: Order) -> OrderRequest:
    return OrderRequest(
        symbol=order.symbol,
        exchange=order.exchange,
        side=order.side,
        quantity=order.quantity,
        order_type=order.order_type,
        product=order.product,
        price=order.price,
        trigger_price=order.trigger_price,
        disclosed_quantity=order.disclosed_quantity,
        client_order_id=order.client_order_id,
        strategy=(order.tag or "Tradebase")[:100],
    )


broker = BrokerService()
ZERO = Decimal(0)
