"""The signal inbox: every signal is stored first (raw body, sender's address, status
received) in a transaction of its own, and only then executed, in another:

    received -> processed | rejected | failed

Execution claims the signal (compare-and-set on its status, inside the transaction that
places its orders), so a signal is executed once however many processes try: the inline
path after the insert, or `SignalService.recover` after a crash. Its orders carry the
deterministic client_order_id ``signal-<signal>-<account>-<leg>``, so no retry can place a
second one. A refusal (bad field, unknown strategy, closed market, paused user, breached
risk limit, refused order) is kept as a rejected signal with the reason; its orders roll
back with it, so nothing is ever half placed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from starlette.concurrency import run_in_threadpool

from tradebase.accounts.models import User
from tradebase.accounts.security import sha256_hex
from tradebase.accounts.service import principal_for, require_writer
from tradebase.audit.service import audit as audit_service
from tradebase.brokers.errors import NoPrice
from tradebase.brokers.paper import PaperBroker
from tradebase.calendars.service import is_open
from tradebase.config import Settings
from tradebase.core.auth import Principal, scoped
from tradebase.core.db import unit_of_work
from tradebase.core.errors import TradebaseError
from tradebase.core.models import attach, load
from tradebase.core.money import canonical, quantize
from tradebase.core.prepared import Prepared
from tradebase.core.time import utc_now
from tradebase.credentials.models import CredentialKind, CredentialOwner
from tradebase.credentials.service import credential as credential_service
from tradebase.events.service import EventType, emit
from tradebase.orders.errors import OrderRejected
from tradebase.orders.models import Order, OrderSide, OrderType
from tradebase.orders.service import order as order_service
from tradebase.orders.state import RESTING
from tradebase.portfolios import pnl
from tradebase.portfolios.models import Portfolio, Position, PositionStatus, Product, TradingAccount
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.signals import batch, keys, payload
from tradebase.signals.copies import Copies, Flight, copies_for
from tradebase.signals.errors import (
    AccountUnknown,
    MarketClosed,
    OrderRefused,
    RiskLimitBreached,
    SignalFailed,
    SignalInvalid,
    SignalMalformed,
    SignalNotFound,
    SignalRefused,
    SignatureInvalid,
    StrategyInactive,
    StrategyUnknown,
    TradingPaused,
    stored_refusal,
)
from tradebase.signals.models import Signal, SignalStatus, TradeAction
from tradebase.signals.writer import WriterGone, writer_for
from tradebase.strategies.models import Strategy, StrategyDeployment
from tradebase.strategies.service import strategy as strategy_service

log = logging.getLogger("tradebase.signals")

FINAL = frozenset({SignalStatus.processed, SignalStatus.rejected, SignalStatus.failed})
PENDING = (SignalStatus.received, SignalStatus.processing)
DEFAULT_EXCHANGE = "paper"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Leg:
    """Where one order of a signal goes: a portfolio, and the deployment that put it there
    (a signal addressed to a strategy has one leg per active deployment)."""

    portfolio: Portfolio
    account: TradingAccount
    deployment: StrategyDeployment | None = None
    multiplier: Decimal = Decimal(1)


@dataclass(frozen=True)
class PlannedOrder:
    leg: Leg
    index: int
    side: str
    quantity: Decimal
    current: Decimal  # the net position before (long positive)
    reduce_only: bool = False  # a hedging close: only the opposite position shrinks

    @property
    def after(self) -> Decimal:
        """The net position once the order has filled."""
        return self.current + (self.quantity if self.side == OrderSide.buy else -self.quantity)


@dataclass(frozen=True)
class Limits:
    """A user's signal settings (``users.settings["signals"]``) over the server's."""

    paused: bool
    max_order_value: Decimal | None
    max_position_size: Decimal | None
    ip_allowlist: tuple[str, ...]
    signed: bool  # webhooks must carry an HMAC signature


TRADINGVIEW_IPS = ("52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7")


@dataclass(frozen=True)
class Sender:
    """The user a webhook key belongs to, as the webhook needs them (no ORM object)."""

    id: int
    username: str
    settings: dict[str, Any] | None


@dataclass(frozen=True)
class SignalRow:
    """A signal read from its body, not yet stored (`SignalService.prepare`)."""

    values: dict[str, Any]  # the signals row's columns
    fields: payload.SignalFields | None  # None: the body is not JSON
    refusal: TradebaseError | None  # stored as rejected, with this reason

    @property
    def keys(self) -> tuple[tuple[int, str], tuple[int, str]]:
        """The two unique keys of the row: a stored signal with either is its first copy."""
        user_id = self.values["user_id"]
        return (user_id, self.values["order_id"]), (user_id, "~" + self.values["order_id_shifted"])


def _read_sender(on: Session | Connection, digest: str) -> Sender | None:
    rows = _WEBHOOK_SENDER.rows(on, {"hash": digest})
    if not rows or not rows[0].is_active:
        return None
    return Sender(rows[0].id, rows[0].username, rows[0].settings)


_SENDERS: weakref.WeakKeyDictionary[Engine, dict[str, tuple[float, Sender]]] = (
    weakref.WeakKeyDictionary()
)
_SENDERS_LOCK = threading.Lock()
_SENDERS_GENERATION = [0]  # moved by every committed change of a user (`_forget_senders`)


_USERS_CHANGED = "tradebase.signals.users_changed"


@event.listens_for(Session, "after_flush")
def _note_user_changes(session: Session, context: Any) -> None:
    """A user changed (webhook key, settings, active, deleted): every sender is forgotten
    once it is committed (until then readers see the old row anyway)."""
    if any(isinstance(o, User) for o in (*session.dirty, *session.deleted)):
        session.info[_USERS_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _forget_senders(session: Session) -> None:
    """Forget every sender after a user's change is committed: the generation moves, so
    a read that began before the commit (and saw the old row) is not kept either."""
    if session.info.pop(_USERS_CHANGED, False):
        with _SENDERS_LOCK:
            _SENDERS_GENERATION[0] += 1
            _SENDERS.clear()


@event.listens_for(Session, "after_rollback")
def _no_user_changes(session: Session) -> None:
    session.info.pop(_USERS_CHANGED, None)


def limits_of(user: User | Sender, settings: Settings) -> Limits:
    own = dict((user.settings or {}).get("signals") or {})

    def number(name: str, default: Decimal | None) -> Decimal | None:
        value = own.get(name)
        return Decimal(str(value)) if value not in (None, "") else default

    allow: list[str] = []
    for entry in own.get("ip_allowlist") or []:
        allow.extend(TRADINGVIEW_IPS if entry == "tradingview" else [str(entry)])
    return Limits(
        paused=bool(own.get("paused", False)),  # accounts.service.trading_paused
        max_order_value=number("max_order_value", settings.signal_max_order_value),
        max_position_size=number("max_position_size", settings.signal_max_position_size),
        ip_allowlist=tuple(allow),
        signed=bool(own.get("signed", False)),
    )


SIGNATURE_HEADER = "X-Tradebase-Signature"
TIMESTAMP_HEADER = "X-Tradebase-Timestamp"


def sign(secret: str, timestamp: str, raw: bytes) -> str:
    """The signature of a webhook: ``sha256=`` and the hex HMAC-SHA256, under the secret,
    of the timestamp, a dot and the raw body."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _signing(user_id: int) -> dict[str, Any]:
    return {
        "owner_type": CredentialOwner.user,
        "owner_id": user_id,
        "kind": CredentialKind.webhook_signing_secret,
        "name": "signals",
    }


def client_order_id(signal_id: int, account_id: int, leg: int) -> str:
    """The client_order_id of a signal's order: the same on every retry of the signal."""
    return f"signal-{signal_id}-{account_id}-{leg}"


def _plain(value: Any) -> Any:
    """A parsed payload made storable as JSON: exact numbers as text."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class SignalService:
    # --- who sends -------------------------------------------------------------------

    def webhook_sender(self, on: Session | Connection, webhook_key: str) -> Sender | None:
        """The active user whose webhook key this is (only its hash is stored): one
        prepared read of the columns the webhook needs."""
        return _read_sender(on, sha256_hex(webhook_key))

    def cached_sender(self, engine: Engine, webhook_key: str, seconds: float) -> Sender | None:
        """`webhook_sender`, kept for *seconds* in this process (an unknown key is not
        kept). Any change of a user committed through a session of this process empties
        what is kept (`_forget_senders`); another process's change is seen once it
        expires."""
        digest = sha256_hex(webhook_key)
        now = time.monotonic()
        kept = _SENDERS.get(engine)
        hit = kept.get(digest) if kept is not None else None
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = _SENDERS_GENERATION[0]
        with engine.connect() as connection:
            sender = _read_sender(connection, digest)
        if sender is not None and seconds > 0:
            with _SENDERS_LOCK:
                if generation == _SENDERS_GENERATION[0]:  # no change of a user meanwhile
                    kept = _SENDERS.setdefault(engine, {})
                    if len(kept) >= 10_000:
                        kept.clear()
                    kept[digest] = (now + seconds, sender)
        return sender

    def new_webhook_key(self, session: Session, principal: Principal) -> str:
        """Give the caller a new webhook key (shown once; the old one stops working)."""
        require_writer(principal)
        user = session.get(User, principal.user_id)
        assert user is not None
        key = "whk_" + secrets.token_urlsafe(24)
        user.webhook_key_hash = sha256_hex(key)
        session.flush()
        self._audit(session, principal, "signals.webhook_key_created", {})
        return key

    def new_signing_secret(
        self, session: Session, credentials_session: Session, principal: Principal
    ) -> str:
        """Give the caller a signing secret (shown once, kept encrypted in the credentials
        database); from now on their webhooks must be signed with it."""
        require_writer(principal)
        secret = secrets.token_hex(32)
        credential_service.set_secret(
            credentials_session,
            user_id=principal.user_id,
            **_signing(principal.user_id),
            value=secret,
            actor=principal.username,
            actor_user_id=principal.user_id,
            purpose="signals signing secret",
            ip_address=principal.ip_address,
        )
        self._set_own(session, principal.user_id, {"signed": True})
        self._audit(session, principal, "signals.signing_enabled", {})
        return secret

    def drop_signing_secret(
        self, session: Session, credentials_session: Session, principal: Principal
    ) -> None:
        """Stop requiring signed webhooks and forget the secret."""
        require_writer(principal)
        credential_service.delete_secret(
            credentials_session,
            **_signing(principal.user_id),
            actor=principal.username,
            actor_user_id=principal.user_id,
            purpose="signals signing secret",
            ip_address=principal.ip_address,
        )
        self._set_own(session, principal.user_id, {"signed": False})
        self._audit(session, principal, "signals.signing_disabled", {})

    def check_signature(
        self,
        credentials_session: Session,
        user: User | Sender,
        raw: bytes,
        *,
        timestamp: str | None,
        signature: str | None,
        settings: Settings,
        ip_address: str | None,
    ) -> None:
        """Refuse a webhook whose HMAC-SHA256 over ``<timestamp>.<body>`` is missing or
        wrong, or whose timestamp is outside the replay window."""
        if not timestamp or not signature:
            raise SignatureInvalid(
                f"your webhooks must be signed: send {TIMESTAMP_HEADER} (Unix seconds) and"
                f" {SIGNATURE_HEADER}: sha256=<HMAC-SHA256 of '<timestamp>.<body>'>"
            )
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise SignatureInvalid(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
        skew = abs(time.time() - sent_at)
        if skew > settings.signal_signature_window_seconds:
            raise SignatureInvalid(
                f"{TIMESTAMP_HEADER} is {int(skew)} s from the server's clock, more than"
                f" {settings.signal_signature_window_seconds} s: refused as a replay"
            )
        secret = credential_service.read_secret(
            credentials_session,
            **_signing(user.id),
            actor=user.username,
            actor_user_id=user.id,
            purpose="verify a signed webhook",
            ip_address=ip_address,
        )
        if not hmac.compare_digest(sign(secret, timestamp, raw), signature.strip()):
            raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match the body")

    def _set_own(self, session: Session, user_id: int, changes: dict[str, Any]) -> None:
        user = session.get(User, user_id)
        assert user is not None
        own = dict((user.settings or {}).get("signals") or {})
        own.update(_plain(changes))
        user.settings = {**(user.settings or {}), "signals": own}  # a new dict: flagged dirty
        session.flush()

    def own_settings(self, session: Session, principal: Principal) -> dict[str, Any]:
        """The caller's signal settings (``users.settings["signals"]``)."""
        user = session.get(User, principal.user_id)
        assert user is not None
        own = dict((user.settings or {}).get("signals") or {})
        return {
            "paused": bool(own.get("paused", False)),
            "ip_allowlist": list(own.get("ip_allowlist") or []),
            "max_order_value": own.get("max_order_value"),
            "max_position_size": own.get("max_position_size"),
            "webhook_key_set": user.webhook_key_hash is not None,
            "signed": bool(own.get("signed", False)),
        }

    def update_settings(
        self, session: Session, principal: Principal, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Change the caller's signal settings: the kill switch (``paused``), the IP
        allow-list (addresses, or ``tradingview`` for TradingView's), the risk limits."""
        require_writer(principal)
        self._set_own(session, principal.user_id, changes)
        action = "signals.settings_changed"
        if "paused" in changes:
            action = "signals.paused" if changes["paused"] else "signals.resumed"
        self._audit(session, principal, action, _plain(changes))
        return self.own_settings(session, principal)

    def _audit(
        self, session: Session, principal: Principal, action: str, details: dict[str, Any]
    ) -> None:
        audit_service.record_by(
            session,
            principal,
            action=action,
            resource_type="user",
            resource_id=principal.user_id,
            details=details,
        )

    # --- the inbox --------------------------------------------------------------------

    def receive(
        self,
        session: Session,
        *,
        user_id: int,
        raw: bytes,
        content_type: str | None,
        source_ip: str | None,
        source: str,
        settings: Settings,
        redact: str | None = None,
        at: datetime | None = None,
        window: int | None = None,
    ) -> Signal:
        """Store the signal as received (or, when its body is wrong, as rejected with the
        reason). Raise IntegrityError when the same signal is already in the inbox.

        *redact*: a secret in the body (the webhook key) kept out of what is stored;
        *window*: the idempotency window (default ``signal_dedup_window_seconds``)."""
        row = self.prepare(
            user_id=user_id,
            raw=raw,
            content_type=content_type,
            source_ip=source_ip,
            source=source,
            settings=settings,
            redact=redact,
            at=at,
            window=window,
        )
        return self.store(session, row)

    def prepare(
        self,
        *,
        user_id: int,
        raw: bytes,
        content_type: str | None,
        source_ip: str | None,
        source: str,
        settings: Settings,
        redact: str | None = None,
        at: datetime | None = None,
        window: int | None = None,
    ) -> SignalRow:
        """The row `receive` stores, read from the body (no database), with its
        idempotency keys: a writer that knows them can tell a copy without an INSERT
        (signals/batch.py)."""
        now = at or utc_now()
        text = raw.decode("utf-8", errors="replace")
        if redact:
            text = text.replace(redact, "[redacted]")
        values: dict[str, Any] = {
            "user_id": user_id,
            "source": source,
            "raw_payload": text,
            "content_type": (content_type or "")[:100] or None,
            "source_ip": source_ip,
            "received_at": now,
            "status": SignalStatus.received,
        }
        refusal: TradebaseError | None = None
        fields: payload.SignalFields | None = None
        try:
            body = payload.decode(raw)
        except payload.PayloadError as exc:
            refusal = SignalMalformed(str(exc))
        else:
            body = {k: v for k, v in body.items() if k.lower() not in payload.KEY_FIELDS}
            values["signal_data"] = _plain(body)
            fields = payload.parse(body)
            if fields.error is not None:
                refusal = SignalInvalid(fields.error, details={"field": fields.error_field or ""})
            values.update(_columns(fields))
        sender = fields.order_id if fields is not None else None
        plain, shifted = keys.window_keys(
            _base_key(fields, raw), now, window or settings.signal_dedup_window_seconds
        )
        values.update(order_id=plain, order_id_shifted=shifted, sender_order_id=sender)
        if refusal is not None:
            values.update(_rejection(refusal, now))
        values.update(created_at=now, updated_at=now)
        return SignalRow(values, fields, refusal)

    def store(self, session: Session, row: SignalRow) -> Signal:
        """INSERT a prepared row (IntegrityError: a copy is in the inbox already)."""
        values = row.values
        # A prepared INSERT and the row attached as loaded, rather than an ORM flush
        # (which costs more than the insert itself, bench/bench_signals.py).
        signal_id = _INSERT_SIGNAL.scalar(session, values)
        if row.refusal is not None:
            _emit_rejected(session, values["user_id"], signal_id, row.refusal, values)
        return attach(session, Signal, {**values, "id": signal_id})

    def first_copy(self, session: Session, row: SignalRow) -> Signal | None:
        """The signal stored first among those with either of *row*'s keys."""
        return session.scalars(
            select(Signal)
            .where(
                Signal.user_id == row.values["user_id"],
                or_(
                    Signal.order_id == row.values["order_id"],
                    Signal.order_id_shifted == row.values["order_id_shifted"],
                ),
            )
            .order_by(Signal.id)
            .limit(1)
        ).first()

    # --- execution --------------------------------------------------------------------

    def execute(
        self,
        session: Session,
        signal_id: int,
        settings: Settings,
        *,
        stored: Signal | None = None,
        fields: payload.SignalFields | None = None,
    ) -> Signal | None:
        """Execute a received signal: claim it, check it, place its orders, and record the
        outcome, all in the caller's transaction. None when another process has it.

        *stored*: the signal as this process just stored it (committed, not read back), so
        that it is not read again; *fields*: what `prepare` read from its body."""
        claimed_at = utc_now()
        if not _CLAIM.run(session, {"sid": signal_id, "now": claimed_at}):
            return None
        if stored is not None:
            session.add(stored)
            set_committed_value(stored, "status", SignalStatus.processing)
            set_committed_value(stored, "updated_at", claimed_at)
            signal = stored
        else:
            found = session.get(Signal, signal_id, populate_existing=True)
            assert found is not None
            signal = found
        user = _user(session, signal.user_id)
        principal = principal_for(user, ip_address=signal.source_ip)
        if fields is None or stored is None:
            fields = payload.parse(payload.decode((signal.raw_payload or "").encode()))
        now = utc_now()
        try:
            with session.begin_nested():
                orders, columns = self._run(session, principal, user, signal, fields, settings)
        except SignalRefused as refusal:
            changes = _rejection(refusal, now)
            _emit_rejected(
                session,
                signal.user_id,
                signal.id,
                refusal,
                {name: getattr(signal, name) for name in _SIGNAL_EVENT_FIELDS},
            )
        else:
            changes = {
                **columns,
                "status": SignalStatus.processed,
                "error": None,
                "outcome": {"orders": orders},
                "processed_at": now,
            }
        # One prepared UPDATE, the object told what it now holds: an ORM flush of the
        # signal costs several times the statement (bench/bench_signals.py).
        changes["updated_at"] = utc_now()
        _finish_statement(frozenset(changes)).run(session, {"sid": signal_id, **changes})
        for name, value in changes.items():
            set_committed_value(signal, name, value)
        return signal

    def _run(
        self,
        session: Session,
        principal: Principal,
        user: User,
        signal: Signal,
        fields: payload.SignalFields,
        settings: Settings,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The signal's orders placed, and the signal's columns to set when it succeeds."""
        limits = limits_of(user, settings)
        if limits.paused:
            raise TradingPaused(
                f"trading is paused for {user.username}: resume it to execute signals",
                details={"user": user.username},
            )
        if not user.is_active:
            raise TradingPaused(f"user {user.username} is deactivated")
        if principal.read_only:
            raise SignalInvalid("a viewer cannot trade", details={"role": user.role})
        if fields.trade_action == TradeAction.modify:
            return self._modify(session, principal, signal, fields), {}
        exchange = fields.exchange or DEFAULT_EXCHANGE
        symbol = fields.symbol
        assert symbol is not None  # parse() refuses a signal without one
        legs = self._legs(session, principal, signal, fields)
        market = is_open(session, exchange, utc_now())
        if not market.open:
            raise MarketClosed(market.reason, details={"exchange": exchange})
        product = fields.product or Product.NRML
        planned: list[PlannedOrder] = []
        for index, leg in enumerate(legs):
            order = self._plan(session, leg, index, fields, exchange, product)
            if order is not None:
                self._check_risk(session, order, fields, limits, exchange, product)
                self._check_deal(session, order, fields, exchange)
                planned.append(order)
        strategy_id = legs[0].deployment.strategy_id if legs[0].deployment else None
        placed = [
            self._place(session, principal, signal, order, fields, exchange, product, strategy_id)
            for order in planned
        ]
        # Only after the orders (execute sets them): the foreign key checks of these would
        # take a shared lock on the account before the portfolio's lock, and InnoDB would
        # deadlock two signals on it.
        columns: dict[str, Any] = {
            "strategy_id": strategy_id,
            "account_id": legs[0].account.id if strategy_id is None else None,
        }
        if strategy_id is not None:  # its performance follows its fills
            strategy_service.add_fills(session, strategy_id, [o["id"] for o in placed])
        if planned:  # seed 000's position_status and trade_direction: the first leg after it
            after = planned[0].after
            columns["position_status"] = "open" if after else "closed"
            columns["trade_direction"] = pnl.LONG if after > 0 else pnl.SHORT if after < 0 else None
        return placed, columns

    def _legs(
        self,
        session: Session,
        principal: Principal,
        signal: Signal,
        fields: payload.SignalFields,
    ) -> list[Leg]:
        """Where the signal's orders go: each active deployment of its strategy, else the
        account it names, else the user's primary (or first) active account; each through
        the deployment's portfolio or the account's first portfolio."""
        if fields.strategy is not None:
            if fields.portfolio is not None:
                raise SignalInvalid(
                    "portfolio: a strategy's signal goes to the portfolios of its"
                    " deployments; send strategy or portfolio, not both",
                    details={"field": "portfolio"},
                )
            strategy = self._strategy(session, principal, fields.strategy)
            strategy.last_signal_at = utc_now()
            deployments = strategy_service.active_deployments(session, strategy)
            if not deployments:
                raise StrategyInactive(
                    f"strategy: {strategy.name!r} has no active deployment",
                    details={"strategy_id": strategy.id},
                )
            legs = []
            for deployment in deployments:
                account = session.get(TradingAccount, deployment.account_id)
                assert account is not None
                legs.append(
                    Leg(
                        self._portfolio(session, account, deployment.portfolio_id),
                        account,
                        deployment,
                        deployment.multiplier,
                    )
                )
            return legs
        account = self._account(session, principal, fields.account)
        if fields.portfolio is not None:
            return [Leg(self._named_portfolio(session, account, fields.portfolio), account)]
        return [Leg(self._portfolio(session, account, None), account)]

    def _named_portfolio(self, session: Session, account: TradingAccount, name: str) -> Portfolio:
        """The account's active portfolio called *name* (or with that id), locked as
        ``_portfolio`` locks it."""
        statement = select(Portfolio).where(
            Portfolio.account_id == account.id, Portfolio.is_active.is_(True)
        )
        condition = Portfolio.name == name
        if name.isdigit():
            condition = or_(condition, Portfolio.id == int(name))
        statement = statement.where(condition).order_by(Portfolio.id).limit(1)
        if session.get_bind().dialect.name != "sqlite":
            statement = statement.with_for_update()
        portfolio = session.scalars(statement).first()
        if portfolio is None:
            raise AccountUnknown(
                f"portfolio: account {account.account_name!r} has no active portfolio {name!r}",
                details={"field": "portfolio", "account_id": account.id},
            )
        return portfolio

    def _strategy(self, session: Session, principal: Principal, name: str) -> Strategy:
        strategy = strategy_service.find(session, principal.user_id, name)
        if strategy is None:
            raise StrategyUnknown(
                f"strategy: you have no strategy {name!r}", details={"field": "strategy"}
            )
        if not strategy.is_active:
            raise StrategyInactive(
                f"strategy: {strategy.name!r} is inactive", details={"strategy_id": strategy.id}
            )
        return strategy

    def _account(self, session: Session, principal: Principal, name: str | None) -> TradingAccount:
        if name is None:  # the usual case, prepared: the user's primary (or first) account

            def read() -> TradingAccount:
                rows = _DEFAULT_ACCOUNT.rows(session, {"uid": principal.user_id})
                if not rows:
                    raise AccountUnknown("you have no active trading account: create one first")
                return load(session, TradingAccount, rows[0]._asdict())

            return _kept(session, ("account", principal.user_id), read)
        statement = select(TradingAccount).where(
            TradingAccount.user_id == principal.user_id, TradingAccount.is_active.is_(True)
        )
        if name is not None:
            condition = TradingAccount.account_name == name
            if name.isdigit():
                condition = or_(condition, TradingAccount.id == int(name))
            statement = statement.where(condition)
        account = session.scalars(
            statement.order_by(
                TradingAccount.is_primary.desc(), TradingAccount.priority, TradingAccount.id
            )
        ).first()
        if account is None:
            if name is not None:
                raise AccountUnknown(
                    f"account: you have no active trading account {name!r}",
                    details={"field": "account"},
                )
            raise AccountUnknown("you have no active trading account: create one first")
        return account

    def _portfolio(
        self, session: Session, account: TradingAccount, portfolio_id: int | None
    ) -> Portfolio:
        # The lock every change of cash or positions takes first (PortfolioService.get),
        # not on SQLite (its write lock is the transaction's): read unlocked, the cash loaded
        # here would be stale when the order books it, and the target position could move
        # under a concurrent signal.
        def read() -> Portfolio:
            locked = session.get_bind().dialect.name != "sqlite"
            statement = _PORTFOLIO[(portfolio_id is not None, locked)]
            params: dict[str, Any] = {"aid": account.id}
            if portfolio_id is not None:
                params["pid"] = portfolio_id
            rows = statement.rows(session, params)
            if not rows:
                raise AccountUnknown(
                    f"account {account.account_name!r} has no active portfolio: create one",
                    details={"account_id": account.id},
                )
            return load(session, Portfolio, rows[0]._asdict())

        # Kept locked (elsewhere) for the rest of the transaction, see `_kept`.
        return _kept(session, ("portfolio", account.id, portfolio_id), read)

    def _net(
        self, session: Session, portfolio: Portfolio, symbol: str, exchange: str, product: str
    ) -> Decimal:
        held = portfolio_service.net_quantity(
            session, portfolio.id, symbol=symbol, exchange=exchange, product=product
        )
        return held.get(pnl.LONG, ZERO) - held.get(pnl.SHORT, ZERO)

    def _plan(
        self,
        session: Session,
        leg: Leg,
        index: int,
        fields: payload.SignalFields,
        exchange: str,
        product: str,
    ) -> PlannedOrder | None:
        """The order of one leg: the difference to the target position (``position_size``,
        or 0 for a close) unless hedging, else the signal's direction and quantity; None
        when the leg is at its target already."""
        symbol = fields.symbol
        assert symbol is not None
        current = self._net(session, leg.portfolio, symbol, exchange, product)
        if fields.deal_id is not None and fields.trade_action == TradeAction.close:
            return self._deal_close(session, leg, index, fields, exchange, product, current)
        if fields.hedging_enabled and fields.trade_action == TradeAction.close:
            return self._hedged_close(session, leg, index, fields, exchange, product, current)
        target = fields.position_size
        if target is None and fields.trade_action == TradeAction.close:
            target = ZERO
        if target is not None and not fields.hedging_enabled:
            change = quantize(target * leg.multiplier) - current
            if change == 0:
                return None
            side = OrderSide.buy if change > 0 else OrderSide.sell
            return PlannedOrder(leg, index, side, abs(change), current)
        if fields.direction is None or fields.quantity is None:
            raise SignalInvalid(
                "with hedging_enabled a signal opens its own position: send direction and quantity",
                details={"field": "quantity"},
            )
        return PlannedOrder(
            leg, index, fields.direction, quantize(fields.quantity * leg.multiplier), current
        )

    def _deal_close(
        self,
        session: Session,
        leg: Leg,
        index: int,
        fields: payload.SignalFields,
        exchange: str,
        product: str,
        current: Decimal,
    ) -> PlannedOrder:
        """Close (part of) the open position labelled ``deal_id``: a reduce-only sell of a
        long, a buy of a short; all of it unless a quantity is given."""
        position = _open_deal(session, leg.portfolio.id, fields.deal_id)
        if position is None or (position.symbol, position.exchange, position.product) != (
            fields.symbol,
            exchange,
            product,
        ):
            raise SignalInvalid(
                f"deal_id: no open {fields.symbol} position {fields.deal_id!r} in portfolio"
                f" {leg.portfolio.name!r}",
                details={"field": "deal_id", "portfolio_id": leg.portfolio.id},
            )
        side = OrderSide.sell if position.direction == pnl.LONG else OrderSide.buy
        if fields.direction is not None and fields.direction != side:
            raise SignalInvalid(
                f"direction: deal {fields.deal_id!r} is {position.direction}, so it closes"
                f" with a {side}",
                details={"field": "direction"},
            )
        quantity = position.quantity
        if fields.quantity is not None:
            quantity = min(quantity, quantize(fields.quantity * leg.multiplier))
        return PlannedOrder(leg, index, side, quantity, current, reduce_only=True)

    def _check_deal(
        self, session: Session, order: PlannedOrder, fields: payload.SignalFields, exchange: str
    ) -> None:
        """An opening order with a deal_id: the label must be free in the portfolio, or
        name the open position the fill adds to."""
        label = fields.deal_id
        if label is None or order.reduce_only:
            return
        direction = pnl.LONG if order.side == OrderSide.buy else pnl.SHORT
        joins = session.scalars(
            select(Position).where(
                Position.portfolio_id == order.leg.portfolio.id,
                Position.symbol == fields.symbol,
                Position.exchange == exchange,
                Position.product == (fields.product or Product.NRML),
                Position.direction == direction,
                Position.status == PositionStatus.open,
            )
        ).first()
        labelled = _open_deal(session, order.leg.portfolio.id, label)
        if labelled is not None and labelled is not joins:
            raise SignalInvalid(
                f"deal_id: {label!r} is open already, on a {labelled.direction}"
                f" {labelled.symbol} position: close it or use another label",
                details={"field": "deal_id"},
            )
        if joins is not None and joins.deal_id != label:
            held = f"deal {joins.deal_id!r}" if joins.deal_id else "without a deal_id"
            raise SignalInvalid(
                f"deal_id: the open {direction} {fields.symbol} position is {held}; a fill"
                f" adds to it, so send its deal_id or close it first",
                details={"field": "deal_id"},
            )

    def _modify(
        self,
        session: Session,
        principal: Principal,
        signal: Signal,
        fields: payload.SignalFields,
    ) -> list[dict[str, Any]]:
        """Amend the resting orders that earlier signals with this ``order_id`` placed:
        limit price, stop price, quantity (times each deployment's multiplier)."""
        if fields.order_id is None:
            raise SignalInvalid(
                "order_id: trade_action modify names the order to change by its order_id",
                details={"field": "order_id"},
            )
        if (
            fields.quantity is None
            and fields.stop_price is None
            and not (fields.limit_price or fields.price)
        ):
            raise SignalInvalid(
                "trade_action modify: send the new limit_price, stop_price or quantity",
                details={"field": "trade_action"},
            )
        targets = session.scalars(
            select(Order)
            .join(Signal, Signal.id == Order.signal_id)
            .where(
                Signal.user_id == principal.user_id,
                Signal.sender_order_id == fields.order_id,
                Signal.id != signal.id,
                Order.status.in_(RESTING),
            )
            .order_by(Order.id)
        ).all()
        if not targets:
            raise SignalInvalid(
                f"order_id: no resting order was placed by a signal with order_id"
                f" {fields.order_id!r}",
                details={"field": "order_id"},
            )
        amended = []
        for target in targets:
            multiplier = Decimal(1)
            if target.deployment_id is not None:
                deployment = session.get(StrategyDeployment, target.deployment_id)
                multiplier = deployment.multiplier if deployment is not None else multiplier
            limit = fields.limit_price or fields.price
            try:
                order = order_service.amend(
                    session,
                    principal,
                    target.id,
                    price=limit if target.order_type in _LIMITED else None,
                    trigger_price=fields.stop_price,
                    quantity=None
                    if fields.quantity is None
                    else quantize(fields.quantity * multiplier),
                )
            except TradebaseError as exc:
                raise OrderRefused(
                    exc.message, details={"order_id": target.id, **exc.details}
                ) from None
            amended.append(
                {
                    "id": order.id,
                    "client_order_id": order.client_order_id,
                    "account_id": order.account_id,
                    "portfolio_id": order.portfolio_id,
                    "side": order.side,
                    "quantity": str(canonical(order.quantity)),
                    "status": order.status,
                    "price": None if order.price is None else str(canonical(order.price)),
                    "trigger_price": None
                    if order.trigger_price is None
                    else str(canonical(order.trigger_price)),
                    "amended": True,
                }
            )
        return amended

    def _hedged_close(
        self,
        session: Session,
        leg: Leg,
        index: int,
        fields: payload.SignalFields,
        exchange: str,
        product: str,
        current: Decimal,
    ) -> PlannedOrder | None:
        """Close (part of) one side of a hedged book: a reduce-only sell closes the long, a
        buy the short; the whole side unless a quantity is given; None when it is flat."""
        if fields.direction is None:
            raise SignalInvalid(
                "direction: a hedging close names the side to trade (sell closes the long,"
                " buy the short)",
                details={"field": "direction"},
            )
        symbol = fields.symbol
        assert symbol is not None
        held = portfolio_service.open_quantity(
            session, leg.portfolio.id, symbol=symbol, exchange=exchange, product=product,
            direction=pnl.LONG if fields.direction == OrderSide.sell else pnl.SHORT,
        )  # fmt: skip
        quantity = held
        if fields.quantity is not None:
            quantity = min(held, quantize(fields.quantity * leg.multiplier))
        if quantity == 0:
            return None
        return PlannedOrder(leg, index, fields.direction, quantity, current, reduce_only=True)

    def _check_risk(
        self,
        session: Session,
        order: PlannedOrder,
        fields: payload.SignalFields,
        limits: Limits,
        exchange: str,
        product: str,
    ) -> None:
        """Refuse an order over the value limit, a position over the size limit, a new
        position beyond the deployment's max_positions, or exposure beyond its capital."""
        symbol = fields.symbol
        assert symbol is not None
        after = order.after
        grows = abs(after) > abs(order.current)
        leg = order.leg
        if limits.max_position_size is not None and grows and abs(after) > limits.max_position_size:
            raise RiskLimitBreached(
                f"max position size: {symbol} would be {canonical(after)}, over the limit of"
                f" {canonical(limits.max_position_size)}",
                details={"limit": "max_position_size", "position": str(canonical(after))},
            )
        deployment = leg.deployment
        if deployment is not None and order.current == 0 and after != 0:
            held = session.scalar(
                select(func.count(Position.id)).where(
                    Position.portfolio_id == leg.portfolio.id,
                    Position.status == PositionStatus.open,
                )
            )
            if (held or 0) >= deployment.max_positions:
                raise RiskLimitBreached(
                    f"max open positions: the deployment holds {held} of at most"
                    f" {deployment.max_positions}",
                    details={"limit": "max_positions", "open": held},
                )
        capital = deployment.capital_allocated if deployment is not None else None
        if limits.max_order_value is None and (capital is None or not grows):
            return
        value = order.quantity * self._reference(session, leg, fields, exchange)
        if limits.max_order_value is not None and value > limits.max_order_value:
            raise RiskLimitBreached(
                f"max order value: {canonical(order.quantity)} {symbol} is worth"
                f" {canonical(value)}, over the limit of {canonical(limits.max_order_value)}",
                details={"limit": "max_order_value", "value": str(canonical(value))},
            )
        if capital is not None and grows:
            used = session.scalar(
                select(func.coalesce(func.sum(Position.cost_basis), 0)).where(
                    Position.portfolio_id == leg.portfolio.id,
                    Position.status == PositionStatus.open,
                )
            )
            total = Decimal(str(used or 0)) + value
            if total > capital:
                raise RiskLimitBreached(
                    f"capital allocated: positions of {canonical(total)} would exceed the"
                    f" deployment's {canonical(capital)}",
                    details={"limit": "capital_allocated", "exposure": str(canonical(total))},
                )

    def _reference(
        self, session: Session, leg: Leg, fields: payload.SignalFields, exchange: str
    ) -> Decimal:
        hint = fields.limit_price or fields.price
        broker = PaperBroker(session, fee_rate=leg.account.fee_rate, slippage_bps=ZERO)
        symbol = fields.symbol
        assert symbol is not None
        try:
            return broker.reference_price(symbol, exchange, hint)
        except NoPrice as exc:
            raise OrderRefused(exc.message, details=exc.details) from None

    def _place(
        self,
        session: Session,
        principal: Principal,
        signal: Signal,
        order: PlannedOrder,
        fields: payload.SignalFields,
        exchange: str,
        product: str,
        strategy_id: int | None,
    ) -> dict[str, Any]:
        symbol = fields.symbol
        assert symbol is not None
        kind = fields.order_type or OrderType.market
        limit = fields.limit_price or fields.price
        leg = order.leg
        try:
            placed = order_service.place(
                session,
                principal,
                portfolio_id=leg.portfolio.id,
                symbol=symbol,
                side=order.side,
                quantity=order.quantity,
                order_type=kind,
                exchange=exchange,
                price=fields.price if kind == OrderType.market else limit,
                trigger_price=fields.stop_price,
                product=product,
                client_order_id=client_order_id(signal.id, leg.account.id, order.index),
                tag=(fields.comment or "")[:100] or None,
                signal_id=signal.id,
                strategy_id=strategy_id,
                deployment_id=leg.deployment.id if leg.deployment is not None else None,
                reduce_only=order.reduce_only,
                deal_id=None if order.reduce_only else fields.deal_id,
                venue=(leg.portfolio, leg.account),
            )
        except OrderRejected as exc:
            raise OrderRefused(
                exc.message,
                details={"account_id": leg.account.id, "cause": exc.details.get("cause")},
            ) from None
        return {
            "id": placed.id,
            "client_order_id": placed.client_order_id,
            "account_id": leg.account.id,
            "portfolio_id": leg.portfolio.id,
            "side": placed.side,
            "quantity": str(canonical(placed.quantity)),
            "status": placed.status,
            "average_fill_price": None
            if placed.average_fill_price is None
            else str(canonical(placed.average_fill_price)),
        }

    def mark_failed(self, session: Session, signal_id: int, error: str) -> None:
        """Record that executing the signal broke (a bug or an outage), if still pending."""
        session.execute(
            update(Signal)
            .where(Signal.id == signal_id, Signal.status.in_(PENDING))
            .values(
                status=SignalStatus.failed,
                error=error[:2000],
                processed_at=utc_now(),
                outcome={"code": SignalFailed.code, "status_code": 500},
            )
            .execution_options(synchronize_session=False)
        )

    # --- reading --------------------------------------------------------------------------

    def get(self, session: Session, principal: Principal, signal_id: int) -> Signal:
        signal = session.scalars(
            scoped(select(Signal), Signal.user_id, principal).where(Signal.id == signal_id)
        ).first()
        if signal is None:
            raise SignalNotFound(f"no signal {signal_id}")
        return signal

    def list(
        self,
        session: Session,
        principal: Principal,
        *,
        status: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
        symbol: str | None = None,
        strategy_id: int | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[Signal]:
        """Signals newest first; ``after_id`` continues from a previous page; received
        in ``[since, until)`` when given."""
        statement = scoped(select(Signal), Signal.user_id, principal)
        if status is not None:
            statement = statement.where(Signal.status == status)
        if symbol is not None:
            statement = statement.where(Signal.symbol == symbol)
        if strategy_id is not None:
            statement = statement.where(Signal.strategy_id == strategy_id)
        if source is not None:
            statement = statement.where(Signal.source == source)
        if since is not None:
            statement = statement.where(Signal.received_at >= since)
        if until is not None:
            statement = statement.where(Signal.received_at < until)
        if after_id is not None:
            statement = statement.where(Signal.id < after_id)
        return session.scalars(statement.order_by(Signal.id.desc()).limit(limit)).all()

    def pending_ids(self, session: Session) -> Sequence[int]:
        """Signals stored but not finished, oldest first."""
        statement = select(Signal.id).where(Signal.status.in_(PENDING)).order_by(Signal.id)
        return session.scalars(statement).all()


# The inbox's insert and the claim, built once and run prepared (core/prepared.py): an ORM
# flush, or building the statement per signal, cost more than running it.
_signals = cast(Table, Signal.__table__)
_CLAIM = Prepared(
    update(_signals)
    .where(
        _signals.c.id == bindparam("sid"),
        or_(*(_signals.c.status == status for status in PENDING)),
    )
    .values(status=SignalStatus.processing, updated_at=bindparam("now"))
)
_INSERT_SIGNAL = Prepared(insert(_signals).returning(_signals.c.id))


@functools.cache
def _finish_statement(names: frozenset[str]) -> Prepared:
    """The UPDATE that records a signal's outcome, for one set of columns."""
    return Prepared(
        update(_signals)
        .where(_signals.c.id == bindparam("sid"))
        .values({name: bindparam(name) for name in sorted(names)})
    )


# The reads of every signal, prepared too; rows loaded as objects (core/models.py: load).
_users = cast(Table, User.__table__)
_WEBHOOK_SENDER = Prepared(
    select(_users.c.id, _users.c.username, _users.c.settings, _users.c.is_active)
    .where(_users.c.webhook_key_hash == bindparam("hash"))
    .limit(1)
)
_accounts = cast(Table, TradingAccount.__table__)
_DEFAULT_ACCOUNT = Prepared(
    select(_accounts)
    .where(_accounts.c.user_id == bindparam("uid"), _accounts.c.is_active.is_(True))
    .order_by(_accounts.c.is_primary.desc(), _accounts.c.priority, _accounts.c.id)
    .limit(1)
)


def _portfolio_statement(by_id: bool, locked: bool) -> Prepared:
    table = cast(Table, Portfolio.__table__)
    statement = select(table).where(
        table.c.account_id == bindparam("aid"), table.c.is_active.is_(True)
    )
    if by_id:
        statement = statement.where(table.c.id == bindparam("pid"))
    statement = statement.order_by(table.c.id).limit(1)
    return Prepared(statement.with_for_update() if locked else statement)


_PORTFOLIO = {(i, lk): _portfolio_statement(i, lk) for i in (False, True) for lk in (False, True)}

signal = SignalService()


# --- the inbox's transactions ----------------------------------------------------------


def _user(session: Session, user_id: int) -> User:
    """The signal's user, read once per transaction (see `_kept`)."""

    def read() -> User:
        found = session.get(User, user_id)
        assert found is not None
        return found

    return _kept(session, ("user", user_id), read)


_M = TypeVar("_M")


def _kept(session: Session, key: tuple[Any, ...], read: Callable[[], _M]) -> _M:
    """What *read* gives, kept for the rest of the session's transaction.

    The session's identity map holds objects weakly, so each signal of a group
    (signals/batch.py) would read its user, account and portfolio again. Kept until the
    transaction ends or anything in it rolls back: a savepoint rolled back releases the
    row locks taken in it (PostgreSQL), and may undo what was read. A kept portfolio
    stays right because every Core write of its row tells the object what it wrote
    (`PortfolioService.move_cash` calls `core.models.written`); ORM writes do anyway.
    """
    transaction = session.get_transaction()
    kept: tuple[Any, dict[tuple[Any, ...], Any]] | None = session.info.get(_KEPT)
    if kept is None or kept[0] is not transaction:
        kept = session.info[_KEPT] = (transaction, {})
    found = kept[1].get(key)
    if found is None or found not in session:
        found = kept[1][key] = read()
    return cast(_M, found)


_KEPT = "tradebase.signals.kept"


@event.listens_for(Session, "after_soft_rollback")
def _forget_kept(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_KEPT, None)


@dataclass(frozen=True)
class Answer:
    signal: Signal
    duplicate: bool

    def raise_refusal(self) -> None:
        """Raise what a rejected or failed signal answers with (stored with it)."""
        row = self.signal
        if row.status not in (SignalStatus.rejected, SignalStatus.failed):
            return
        outcome = row.outcome or {}
        message = row.error or "the signal was refused"
        if row.status == SignalStatus.failed:  # a bug or an outage: the details are logged
            message = "executing the signal failed; the server log has the details"
        raise stored_refusal(
            message,
            status_code=int(outcome.get("status_code", 422)),
            code=str(outcome.get("code", "signal_rejected")),
            details={
                **(outcome.get("details") or {}),
                "signal_id": row.id,
                "status": row.status,
                "duplicate": self.duplicate,
            },
        )


def submit(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    user_id: int,
    raw: bytes,
    content_type: str | None,
    source_ip: str | None,
    source: str,
    redact: str | None = None,
    window: int | None = None,
) -> Answer:
    """Store the signal (its own transaction: once this returns, it is durable), execute it
    (another), and return it; a repeat returns the first copy once that one is finished."""
    incoming = _incoming(factory, settings, user_id, raw, content_type, source_ip, source,
                         redact, window)  # fmt: skip
    writer = batch.batcher_for(factory, settings)
    if writer is not None:  # stored and executed with the signals arriving with it
        item = writer.submit(incoming)
        if not item.alone:
            return _grouped(item) or _after_group(factory, item)
    return _alone(factory, incoming)


async def submit_async(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    user_id: int,
    raw: bytes,
    content_type: str | None,
    source_ip: str | None,
    source: str,
    redact: str | None = None,
    window: int | None = None,
) -> Answer:
    """`submit` for the event loop: with group commit, the request waits for its group
    without holding a thread of the pool (the usual answer needs no database read); any
    other way goes to the thread pool."""
    incoming = _incoming(factory, settings, user_id, raw, content_type, source_ip, source,
                         redact, window)  # fmt: skip
    process = writer_for(factory)
    if process is not None:  # the server's writer process (signals/writer.py)
        prepared(incoming)  # read here: the writer's time is every signal's
        with suppress(WriterGone):  # gone: the writer thread does it (a copy of a signal
            return await process.submit(incoming)  # it committed is told by its keys)
    writer = batch.batcher_for(factory, settings)
    if writer is not None:
        # Read in the request, not in the writer thread: every signal takes turns there.
        prepared(incoming)
        item = await writer.submit_async(incoming)
        if not item.alone:
            answer = _grouped(item)
            if answer is not None:
                return answer
            return await run_in_threadpool(_after_group, factory, item)
    return await run_in_threadpool(_alone, factory, incoming)


def _incoming(
    factory: sessionmaker[Session],
    settings: Settings,
    user_id: int,
    raw: bytes,
    content_type: str | None,
    source_ip: str | None,
    source: str,
    redact: str | None,
    window: int | None,
) -> batch.Incoming:
    return batch.Incoming(
        user_id,
        raw,
        content_type,
        source_ip,
        source,
        redact,
        window or settings.signal_dedup_window_seconds,
        utc_now(),
        settings,
    )


def _grouped(item: batch.Incoming) -> Answer | None:
    """The answer to a signal its group stored and executed, or to a copy of one this
    process executed, when no read is needed."""
    if item.stored is not None and item.done is not None:
        return Answer(item.done, False)
    if item.stored is not None and item.refused:
        return Answer(item.stored, False)  # refused as it was stored
    done = item.copy_of.answer() if item.copy_of is not None else None
    return Answer(done, True) if done is not None else None


def _after_group(factory: sessionmaker[Session], item: batch.Incoming) -> Answer:
    """The answer to a signal of a group that `_grouped` could not give: a copy's (the
    first one's, once it is done), or one read back."""
    settings = item.settings
    if item.copy_of is not None:
        # The first copy is this process's: stored by this writer or in the thread of
        # another request, which may still be at it; when that one did not store it
        # after all, this copy goes its own way.
        return _follow(factory, item.copy_of, settings) or _alone(factory, item)
    if item.stored is None:
        return _repeat(factory, settings, prepared(item))
    return _grouped(item) or Answer(
        _wait(factory, item.stored.id, settings.signal_wait_seconds), False
    )


def _follow(factory: sessionmaker[Session], flight: Flight, settings: Settings) -> Answer | None:
    """A copy's answer: the outcome of the first copy, which this process stores and
    executes (*flight*); None when it turned out not to store it."""
    deadline = time.monotonic() + settings.signal_wait_seconds
    flight.landed.wait(settings.signal_wait_seconds)
    done = flight.answer()
    if done is not None:
        return Answer(done, True)
    if flight.signal_id is None:
        return None
    return Answer(_wait(factory, flight.signal_id, max(0.0, deadline - time.monotonic())), True)


def prepared(item: batch.Incoming) -> SignalRow:
    """*item*'s row, read from its body once (`SignalService.prepare`)."""
    if item.row is None:
        item.row = signal.prepare(
            user_id=item.user_id,
            raw=item.raw,
            content_type=item.content_type,
            source_ip=item.source_ip,
            source=item.source,
            settings=item.settings,
            redact=item.redact,
            at=item.at,
            window=item.window,
        )
    return item.row


def _alone(factory: sessionmaker[Session], item: batch.Incoming) -> Answer:
    """Store and execute one signal in transactions of its own (no group commit)."""
    settings, row = item.settings, prepared(item)
    copies = copies_for(factory.kw["bind"].engine)
    flight: Flight | None
    flight, mine = copies.join(row.keys)
    if not mine:  # the first copy is in this process: wait for it there
        followed = _follow(factory, flight, settings)
        if followed is not None:
            return followed
        flight = None  # it was not stored after all: store this one
    answer: Answer | None = None
    try:
        answer = _store_and_run(factory, settings, row, flight, copies)
        return answer
    finally:
        if flight is not None:
            if flight.signal_id is None:  # not stored: an error
                copies.forget(flight)
            else:
                copies.land(flight, answer.signal if answer is not None else None)


def _store_and_run(
    factory: sessionmaker[Session],
    settings: Settings,
    row: SignalRow,
    flight: Flight | None,
    copies: Copies,
) -> Answer:
    stored: Signal | None = None
    for attempt in range(5):
        try:
            with unit_of_work(factory=factory) as session:
                stored = signal.store(session, row)
            break
        except IntegrityError:
            break  # the same signal is in the inbox already
        except OperationalError as exc:  # a deadlock among concurrent copies (MariaDB)
            if attempt == 4 or not _deadlock(exc):
                raise
            time.sleep(0.01 * (attempt + 1))
    if stored is None:
        if flight is not None:  # its copies read, as this one does
            copies.forget(flight)
        return _repeat(factory, settings, row)
    if flight is not None:
        flight.signal_id = stored.id
    if stored.status == SignalStatus.received:
        done = run(factory, settings, stored.id)
        # Executed here and committed, every column loaded: that is the outcome, no need
        # to read it back (a transaction less per signal, bench/bench_signals.py).
        if done is not None and done.status in FINAL and not inspect(done).unloaded:
            return Answer(done, False)
        return Answer(_wait(factory, stored.id, settings.signal_wait_seconds), False)
    return Answer(stored, False)


def _repeat(factory: sessionmaker[Session], settings: Settings, row: SignalRow) -> Answer:
    """The answer to a copy of a signal in the inbox: the first copy's, once it is done."""
    with unit_of_work(factory=factory, write=False) as session:
        first = signal.first_copy(session, row)
    if first is None:  # the copy that won was refused a moment ago: should not happen
        raise SignalFailed("the signal collided with another that cannot be read")
    return Answer(_wait(factory, first.id, settings.signal_wait_seconds), True)


def run(factory: sessionmaker[Session], settings: Settings, signal_id: int) -> Signal | None:
    """Execute one pending signal in its own transaction; record a crash as failed.
    Return the signal when this call executed it and committed the outcome, as the
    database gives it back; else None."""
    try:
        with unit_of_work(factory=factory) as session:
            if session.get_bind().dialect.name in ("mysql", "mariadb"):
                # Read committed, as on PostgreSQL: under InnoDB's repeatable read the
                # reads before the portfolio lock would fix a snapshot in which a position
                # that a concurrent signal opened meanwhile does not exist yet.
                session.connection(execution_options={"isolation_level": "READ COMMITTED"})
            return signal.execute(session, signal_id, settings)
    except Exception as exc:
        log.exception("signal %s failed", signal_id)
        with unit_of_work(factory=factory) as session:
            signal.mark_failed(session, signal_id, f"{type(exc).__name__}: {exc}")
        return None


def recover(factory: sessionmaker[Session], settings: Settings) -> int:
    """Execute every signal left received or processing (a process died between storing
    and finishing it); return how many were pending. Safe to run in several processes."""
    with unit_of_work(factory=factory, write=False) as session:
        pending = signal.pending_ids(session)
    for signal_id in pending:
        run(factory, settings, signal_id)
    if pending:
        log.info("recovered %d pending signal(s)", len(pending))
    return len(pending)


def _wait(factory: sessionmaker[Session], signal_id: int, seconds: float) -> Signal:
    deadline = time.monotonic() + seconds
    delay = 0.005
    while True:
        with unit_of_work(factory=factory, write=False) as session:
            row = session.get(Signal, signal_id)
            assert row is not None
        if row.status in FINAL or time.monotonic() >= deadline:
            return row
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _deadlock(exc: OperationalError) -> bool:
    code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
    return code in (1213, 1205)


_LIMITED = (OrderType.limit, OrderType.stop_limit)


def _open_deal(session: Session, portfolio_id: int, label: str | None) -> Position | None:
    return session.scalars(
        select(Position).where(
            Position.portfolio_id == portfolio_id,
            Position.deal_id == label,
            Position.status == PositionStatus.open,
        )
    ).first()


def _base_key(fields: payload.SignalFields | None, raw: bytes) -> str:
    """The signal's idempotency key before windowing: the sender's order_id, except for a
    modify, whose order_id names the order to change (so the body identifies it)."""
    if fields is None or fields.trade_action == TradeAction.modify:
        return keys.base_key(None, raw)
    return keys.base_key(fields.order_id, raw)


def _columns(fields: payload.SignalFields) -> dict[str, Any]:
    names = (
        "symbol", "exchange", "direction", "quantity", "price", "order_type", "limit_price",
        "stop_price", "product", "trade_action", "position_size", "hedging_enabled", "deal_id",
        "comment", "timestamp",
    )  # fmt: skip
    return {name: getattr(fields, name) for name in names}


_SIGNAL_EVENT_FIELDS = ("source", "sender_order_id", "symbol", "exchange", "direction", "quantity")


def _emit_rejected(
    session: Session,
    user_id: int,
    signal_id: int,
    refusal: TradebaseError,
    values: dict[str, Any],
) -> None:
    emit(
        session,
        user_id,
        EventType.signal_rejected,
        {
            "signal_id": signal_id,
            **{name: values.get(name) for name in _SIGNAL_EVENT_FIELDS},
            "reason": refusal.message,
            "code": refusal.error_code,
            "details": _plain(refusal.details),
        },
    )


def _rejection(refusal: TradebaseError, at: Any) -> dict[str, Any]:
    return {
        "status": SignalStatus.rejected,
        "error": refusal.message,
        "processed_at": at,
        "outcome": {
            "code": refusal.error_code,
            "status_code": refusal.status_code,
            "details": _plain(refusal.details),
        },
    }
