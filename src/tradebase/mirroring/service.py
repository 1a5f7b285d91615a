"""Mirroring: one order fanned out over every active account of its user (seed 003).

The user's accounts are in priority order: the primary first, then by ``priority``, then
by id. Each leg's quantity follows the user's allocation rule:

* ``multiplier`` (the default): the order's quantity times the account's
  ``mirror_multiplier``;
* ``equal``: the quantity split evenly; ``capital``: in proportion to each account's
  portfolio value (its cash while it holds nothing); ``custom``: by the user's weights per
  account. Shares are rounded down to a multiple of the user's ``step`` (default 1e-8)
  and the remainder goes to the first leg, so the legs add up to the quantity exactly.

``submit`` stores the parent and every leg first (one transaction: the fan-out is
durable), then places each leg in a transaction of its own, with the deterministic
``client_order_id`` ``mirror-<id>-<account>``: a refused leg is kept as rejected with the
reason while the others go on, and the parent says completed, partial or failed. A
process that dies midway leaves pending legs, which ``resume`` (run when the server
starts) places, once each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tradebase.accounts.models import User
from tradebase.accounts.service import principal_for, require_trading, require_writer
from tradebase.audit.service import audit as audit_service
from tradebase.core.auth import Principal, scoped
from tradebase.core.db import unit_of_work
from tradebase.core.errors import BadRequest, NotFound, TradebaseError
from tradebase.core.time import utc_now
from tradebase.mirroring.models import (
    AllocationRule,
    LegStatus,
    MirrorLeg,
    MirrorOrder,
    MirrorStatus,
)
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Portfolio, TradingAccount

log = logging.getLogger(__name__)
ZERO = Decimal(0)
DEFAULT_STEP = Decimal("0.00000001")
_EXACT = Decimal("1e-18")


class MirrorNotFound(NotFound):
    code = "mirror_order_not_found"


class MirrorInvalid(BadRequest):
    code = "mirror_invalid"


def leg_client_order_id(mirror_id: int, account_id: int) -> str:
    return f"mirror-{mirror_id}-{account_id}"


def _settings_of(user: User) -> dict[str, Any]:
    return dict((user.settings or {}).get("mirroring") or {})


def allocate(
    quantity: Decimal, weights: Sequence[Decimal], step: Decimal = DEFAULT_STEP
) -> list[Decimal]:
    """Split *quantity* in proportion to *weights*: each share rounded down to a multiple
    of *step*, the remainder to the first, so the shares add up to *quantity*."""
    total = sum(weights, ZERO)
    if total <= 0:
        raise MirrorInvalid("the allocation weights add up to zero: give an account a weight")
    shares = [(quantity * w / total / step).to_integral_value(ROUND_DOWN) * step for w in weights]
    shares[0] += quantity - sum(shares, ZERO)
    return shares


class MirrorService:
    # --- settings -----------------------------------------------------------------------

    def accounts(self, session: Session, user_id: int) -> list[TradingAccount]:
        """The user's accounts in mirroring (and failover) order."""
        return list(
            session.scalars(
                select(TradingAccount)
                .where(TradingAccount.user_id == user_id)
                .order_by(
                    TradingAccount.is_primary.desc(), TradingAccount.priority, TradingAccount.id
                )
            )
        )

    def settings(self, session: Session, principal: Principal) -> dict[str, Any]:
        user = session.get(User, principal.user_id)
        assert user is not None
        own = _settings_of(user)
        return {
            "rule": own.get("rule", AllocationRule.multiplier),
            "weights": {int(k): Decimal(v) for k, v in (own.get("weights") or {}).items()},
            "step": Decimal(own.get("step", str(DEFAULT_STEP))),
            "accounts": self.accounts(session, principal.user_id),
        }

    def update_settings(
        self,
        session: Session,
        principal: Principal,
        *,
        rule: str | None = None,
        weights: dict[int, Decimal] | None = None,
        step: Decimal | None = None,
        accounts: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """Change the rule, weights and step, and per account its multiplier, priority,
        primary flag and whether it takes part (is_active); one primary at most."""
        require_writer(principal)
        user = session.get(User, principal.user_id, with_for_update=True)
        assert user is not None
        own = {a.id: a for a in self.accounts(session, principal.user_id)}
        for change in accounts:
            account = own.get(int(change["id"]))
            if account is None:
                raise MirrorInvalid(f"account {change['id']} is not one of your accounts")
            for name in ("mirror_multiplier", "priority", "is_active"):
                if change.get(name) is not None:
                    setattr(account, name, change[name])
            if change.get("is_primary"):
                for other in own.values():
                    other.is_primary = other.id == account.id
            elif change.get("is_primary") is False:
                account.is_primary = False
        if weights is not None:
            unknown = sorted(set(weights) - set(own))
            if unknown:
                raise MirrorInvalid(f"weights name accounts that are not yours: {unknown}")
        current = _settings_of(user)
        if rule is not None:
            current["rule"] = str(rule)
        if weights is not None:
            current["weights"] = {str(k): str(v) for k, v in weights.items()}
        if step is not None:
            current["step"] = str(step)
        user.settings = {**(user.settings or {}), "mirroring": current}
        session.flush()
        audit_service.record_by(
            session,
            principal,
            action="mirroring.updated",
            resource_type="user",
            resource_id=principal.user_id,
            details={"rule": current.get("rule"), "accounts": [int(a["id"]) for a in accounts]},
        )
        return self.settings(session, principal)

    # --- the fan-out --------------------------------------------------------------------

    def plan(
        self,
        session: Session,
        principal: Principal,
        *,
        symbol: str,
        side: str,
        quantity: Decimal,
        exchange: str = "paper",
        order_type: str = "market",
        price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        product: str = "NRML",
        client_order_id: str | None = None,
    ) -> tuple[MirrorOrder, bool]:
        """Store the parent and its legs; (the stored order, False) when *client_order_id*
        was used already (nothing new is stored)."""
        require_writer(principal)
        require_trading(principal)
        if client_order_id is not None:
            existing = self._by_client_id(session, principal.user_id, client_order_id)
            if existing is not None:
                return existing, False
        mine = self.settings(session, principal)
        rule = mine["rule"]
        legs: list[tuple[TradingAccount, int]] = []
        for account in mine["accounts"]:
            if not account.is_active:
                continue
            portfolio_id = session.scalars(
                select(Portfolio.id)
                .where(Portfolio.account_id == account.id)
                .order_by(Portfolio.id)
                .limit(1)
            ).first()
            if portfolio_id is not None:
                legs.append((account, portfolio_id))
        if not legs:
            raise MirrorInvalid(
                "no active account with a portfolio to mirror to: create a portfolio first"
            )
        if rule == AllocationRule.multiplier:
            sizes = [(quantity * a.mirror_multiplier).quantize(_EXACT, ROUND_DOWN) for a, _ in legs]
        else:
            if rule == AllocationRule.equal:
                weights = [Decimal(1)] * len(legs)
            elif rule == AllocationRule.capital:
                weights = [self._capital(session, pid) for _, pid in legs]
            else:
                weights = [mine["weights"].get(a.id, ZERO) for a, _ in legs]
            sizes = allocate(quantity, weights, mine["step"])
        parent = MirrorOrder(
            user_id=principal.user_id,
            client_order_id=client_order_id,
            symbol=symbol,
            exchange=exchange,
            side=side,
            quantity=quantity,
            order_type=order_type,
            price=price,
            trigger_price=trigger_price,
            product=product,
            rule=rule,
            status=MirrorStatus.pending,
        )
        try:
            with session.begin_nested():
                session.add(parent)
                session.flush()
        except IntegrityError:  # the same client_order_id, a moment ago
            existing = self._by_client_id(session, principal.user_id, client_order_id or "")
            assert existing is not None
            return existing, False
        index = 0
        for (account, portfolio_id), size in zip(legs, sizes, strict=True):
            if size <= 0:
                continue
            session.add(
                MirrorLeg(
                    mirror_id=parent.id,
                    leg=index,
                    account_id=account.id,
                    portfolio_id=portfolio_id,
                    quantity=size,
                )
            )
            index += 1
        session.flush()
        audit_service.record_by(
            session,
            principal,
            action="mirror.created",
            resource_type="mirror_order",
            resource_id=parent.id,
            details={"rule": rule, "legs": index},
        )
        return parent, True

    def _capital(self, session: Session, portfolio_id: int) -> Decimal:
        portfolio = session.get(Portfolio, portfolio_id)
        assert portfolio is not None
        if portfolio.total_value_usd > 0:
            return portfolio.total_value_usd
        return portfolio.cash_balance_usd

    def _by_client_id(self, session: Session, user_id: int, key: str) -> MirrorOrder | None:
        return session.scalars(
            select(MirrorOrder).where(
                MirrorOrder.user_id == user_id, MirrorOrder.client_order_id == key
            )
        ).first()

    def place_leg(self, session: Session, leg_id: int) -> None:
        """Place one pending leg (in the caller's transaction, with its outcome)."""
        leg = session.get(MirrorLeg, leg_id, with_for_update=True)
        if leg is None or leg.status != LegStatus.pending:
            return  # placed by another process meanwhile
        parent = session.get(MirrorOrder, leg.mirror_id)
        assert parent is not None
        user = session.get(User, parent.user_id)
        assert user is not None
        principal = principal_for(user)
        try:
            placed = order_service.place(
                session,
                principal,
                portfolio_id=leg.portfolio_id,
                symbol=parent.symbol,
                side=parent.side,
                quantity=leg.quantity,
                order_type=parent.order_type,
                exchange=parent.exchange,
                price=parent.price,
                trigger_price=parent.trigger_price,
                product=parent.product,
                client_order_id=leg_client_order_id(parent.id, leg.account_id),
                tag=f"mirror {parent.id}",
            )
        except TradebaseError as exc:
            order_id = exc.details.get("order_id") if isinstance(exc.details, dict) else None
            leg.status, leg.error = LegStatus.rejected, exc.message
            leg.order_id = order_id if isinstance(order_id, int) else None
        else:
            if placed.status == "rejected":
                leg.status, leg.error = LegStatus.rejected, placed.reject_reason
            else:
                leg.status = LegStatus.placed
            leg.order_id = placed.id
        session.flush()

    def finish(self, session: Session, mirror_id: int) -> MirrorOrder:
        """Set the parent's status from its legs."""
        parent = session.get(MirrorOrder, mirror_id, with_for_update=True)
        assert parent is not None
        legs = self.legs(session, mirror_id)
        placed = sum(1 for leg in legs if leg.status == LegStatus.placed)
        rejected = sum(1 for leg in legs if leg.status == LegStatus.rejected)
        parent.legs_placed, parent.legs_rejected = placed, rejected
        if placed + rejected < len(legs):
            parent.status = MirrorStatus.pending
        else:
            parent.status = (
                MirrorStatus.completed
                if rejected == 0
                else MirrorStatus.failed
                if placed == 0
                else MirrorStatus.partial
            )
            parent.completed_at = parent.completed_at or utc_now()
        session.flush()
        return parent

    def legs(self, session: Session, mirror_id: int) -> list[MirrorLeg]:
        return list(
            session.scalars(
                select(MirrorLeg).where(MirrorLeg.mirror_id == mirror_id).order_by(MirrorLeg.leg)
            )
        )

    def get(self, session: Session, principal: Principal, mirror_id: int) -> MirrorOrder:
        found = session.scalars(
            scoped(select(MirrorOrder), MirrorOrder.user_id, principal).where(
                MirrorOrder.id == mirror_id
            )
        ).first()
        if found is None:
            raise MirrorNotFound(f"no mirrored order {mirror_id}")
        return found

    def list(self, session: Session, principal: Principal, limit: int = 100) -> list[MirrorOrder]:
        statement = scoped(select(MirrorOrder), MirrorOrder.user_id, principal)
        return list(session.scalars(statement.order_by(MirrorOrder.id.desc()).limit(limit)))


mirror = MirrorService()


def submit(factory: sessionmaker[Session], principal: Principal, **order: Any) -> tuple[int, bool]:
    """Store the fan-out, place every leg (each in its own transaction), set the parent's
    status; return (the parent's id, whether it is new)."""
    with unit_of_work(factory=factory) as session:
        parent, new = mirror.plan(session, principal, **order)
        mirror_id = parent.id
        pending = [leg.id for leg in mirror.legs(session, mirror_id) if leg.status == "pending"]
    _place_all(factory, mirror_id, pending)
    return mirror_id, new


def _place_all(factory: sessionmaker[Session], mirror_id: int, legs: Sequence[int]) -> None:
    for leg_id in legs:
        with unit_of_work(factory=factory) as session:
            mirror.place_leg(session, leg_id)
    with unit_of_work(factory=factory) as session:
        mirror.finish(session, mirror_id)


def resume(factory: sessionmaker[Session]) -> int:
    """Place the legs a dead process left pending and settle their parents; return how
    many parents were pending."""
    with unit_of_work(factory=factory, write=False) as session:
        parents = list(
            session.scalars(
                select(MirrorOrder.id)
                .where(MirrorOrder.status == MirrorStatus.pending)
                .order_by(MirrorOrder.id)
            )
        )
        work = {
            mirror_id: [
                leg.id for leg in mirror.legs(session, mirror_id) if leg.status == "pending"
            ]
            for mirror_id in parents
        }
    for mirror_id, legs in work.items():
        _place_all(factory, mirror_id, legs)
    if parents:
        log.info("resumed %d mirrored order(s)", len(parents))
    return len(parents)
