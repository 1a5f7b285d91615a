"""Strategies and their deployments to trading accounts (seeds 003, 004).

A strategy belongs to a user; a deployment runs it on one of that user's accounts, into
one portfolio of that account, with the capital allocated to it, the most positions it
may hold, and a quantity multiplier for mirrored signals. A signal addressed to a
strategy is executed on every *active* deployment of an *active* strategy.

Performance follows the fills: ``refresh_performance`` recomputes a strategy's and its
deployments' ``total_pnl``, ``num_trades``, ``win_rate`` and ``sharpe_ratio`` from the
trades of the orders that carry the strategy (``orders.strategy_id`` /
``orders.deployment_id``). The Sharpe ratio is of daily realized P&L over the capital
allocated (annualized by √365), None without capital or with fewer than two days.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradebase.accounts.service import require_writer
from tradebase.audit.service import audit as audit_service
from tradebase.core.auth import Principal, scoped
from tradebase.core.errors import BadRequest, Conflict, NotFound
from tradebase.core.money import quantize
from tradebase.core.time import utc_now
from tradebase.orders.models import Order, Trade
from tradebase.portfolios import metrics
from tradebase.portfolios.models import Portfolio, TradingAccount
from tradebase.strategies.models import DeploymentStatus, Strategy, StrategyDeployment

ZERO = Decimal(0)


class StrategyNotFound(NotFound):
    code = "strategy_not_found"


class StrategyNameTaken(Conflict):
    code = "strategy_name_taken"


class DeploymentNotFound(NotFound):
    code = "deployment_not_found"


class DeploymentExists(Conflict):
    code = "deployment_exists"


class DeploymentInvalid(BadRequest):
    code = "deployment_invalid"


_STRATEGY_FIELDS = ("name", "description", "strategy_type", "config", "is_active", "is_backtest")
_DEPLOYMENT_FIELDS = ("capital_allocated", "max_positions", "multiplier", "status", "portfolio_id")


class StrategyService:
    # --- strategies ---------------------------------------------------------------------

    def create(
        self,
        session: Session,
        principal: Principal,
        *,
        name: str,
        strategy_type: str = "custom",
        description: str | None = None,
        config: dict[str, Any] | None = None,
        is_active: bool = True,
        is_backtest: bool = False,
    ) -> Strategy:
        require_writer(principal)
        strategy = Strategy(
            user_id=principal.user_id,
            name=name,
            strategy_type=strategy_type,
            description=description,
            config=config or {},
            is_active=is_active,
            is_backtest=is_backtest,
        )
        try:
            with session.begin_nested():
                session.add(strategy)
                session.flush()
        except IntegrityError:
            raise StrategyNameTaken(f"you already have a strategy named {name!r}") from None
        self._audit(session, principal, "strategy.created", "strategy", strategy.id, name=name)
        return strategy

    def list(
        self,
        session: Session,
        principal: Principal,
        *,
        is_active: bool | None = None,
        strategy_type: str | None = None,
    ) -> list[Strategy]:
        statement = scoped(select(Strategy), Strategy.user_id, principal)
        if is_active is not None:
            statement = statement.where(Strategy.is_active == is_active)
        if strategy_type is not None:
            statement = statement.where(Strategy.strategy_type == strategy_type)
        return list(session.scalars(statement.order_by(Strategy.id)))

    def get(self, session: Session, principal: Principal, strategy_id: int) -> Strategy:
        strategy = session.scalars(
            scoped(select(Strategy), Strategy.user_id, principal).where(Strategy.id == strategy_id)
        ).first()
        if strategy is None:
            raise StrategyNotFound(f"no strategy {strategy_id}")
        return strategy

    def find(self, session: Session, user_id: int, key: str | int) -> Strategy | None:
        """The user's strategy by id or by name (how a signal names it)."""
        statement = select(Strategy).where(Strategy.user_id == user_id)
        text = str(key).strip()
        if text.isdigit():
            found = session.scalars(statement.where(Strategy.id == int(text))).first()
            if found is not None:
                return found
        return session.scalars(statement.where(Strategy.name == text)).first()

    def update(
        self, session: Session, principal: Principal, strategy_id: int, **changes: Any
    ) -> Strategy:
        require_writer(principal)
        strategy = self.get(session, principal, strategy_id)
        unknown = set(changes) - set(_STRATEGY_FIELDS)
        if unknown:
            raise BadRequest(f"cannot change {', '.join(sorted(unknown))} of a strategy")
        for name, value in changes.items():
            setattr(strategy, name, value)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:
            raise StrategyNameTaken(
                f"you already have a strategy named {changes.get('name')!r}"
            ) from None
        self._audit(
            session,
            principal,
            "strategy.updated",
            "strategy",
            strategy.id,
            changed=sorted(changes),
        )
        return strategy

    def delete(self, session: Session, principal: Principal, strategy_id: int) -> None:
        require_writer(principal)
        strategy = self.get(session, principal, strategy_id)
        name = strategy.name
        session.delete(strategy)
        session.flush()
        self._audit(session, principal, "strategy.deleted", "strategy", strategy_id, name=name)

    # --- deployments --------------------------------------------------------------------

    def deploy(
        self,
        session: Session,
        principal: Principal,
        strategy_id: int,
        *,
        account_id: int,
        portfolio_id: int | None = None,
        capital_allocated: Decimal | None = None,
        max_positions: int = 5,
        multiplier: Decimal = Decimal(1),
        status: str = DeploymentStatus.active,
    ) -> StrategyDeployment:
        require_writer(principal)
        strategy = self.get(session, principal, strategy_id)
        portfolio_id = self._portfolio_for(session, strategy, account_id, portfolio_id)
        now = utc_now()
        deployment = StrategyDeployment(
            strategy_id=strategy.id,
            account_id=account_id,
            portfolio_id=portfolio_id,
            capital_allocated=capital_allocated,
            max_positions=max_positions,
            multiplier=multiplier,
            status=status,
            started_at=now if status == DeploymentStatus.active else None,
        )
        try:
            with session.begin_nested():
                session.add(deployment)
                session.flush()
        except IntegrityError:
            raise DeploymentExists(
                f"strategy {strategy.id} is already deployed to account {account_id}:"
                " change that deployment instead"
            ) from None
        self._audit(
            session,
            principal,
            "deployment.created",
            "strategy_deployment",
            deployment.id,
            strategy_id=strategy.id,
            account_id=account_id,
        )
        return deployment

    def _portfolio_for(
        self, session: Session, strategy: Strategy, account_id: int, portfolio_id: int | None
    ) -> int:
        account = session.get(TradingAccount, account_id)
        if account is None or account.user_id != strategy.user_id:
            raise DeploymentInvalid(
                f"account {account_id} is not an account of the strategy's owner"
            )
        portfolios = list(
            session.scalars(
                select(Portfolio.id)
                .where(Portfolio.account_id == account_id)
                .order_by(Portfolio.id)
            )
        )
        if portfolio_id is None:
            if len(portfolios) != 1:
                raise DeploymentInvalid(
                    f"account {account_id} has {len(portfolios) or 'no'} portfolios:"
                    + (" name one with portfolio_id" if portfolios else " create one first")
                )
            return portfolios[0]
        if portfolio_id not in portfolios:
            raise DeploymentInvalid(f"portfolio {portfolio_id} is not on account {account_id}")
        return portfolio_id

    def deployments(
        self, session: Session, principal: Principal, strategy_id: int
    ) -> builtins.list[StrategyDeployment]:
        strategy = self.get(session, principal, strategy_id)
        return list(
            session.scalars(
                select(StrategyDeployment)
                .where(StrategyDeployment.strategy_id == strategy.id)
                .order_by(StrategyDeployment.id)
            )
        )

    def deployment(
        self, session: Session, principal: Principal, strategy_id: int, deployment_id: int
    ) -> StrategyDeployment:
        strategy = self.get(session, principal, strategy_id)
        found = session.scalars(
            select(StrategyDeployment).where(
                StrategyDeployment.id == deployment_id,
                StrategyDeployment.strategy_id == strategy.id,
            )
        ).first()
        if found is None:
            raise DeploymentNotFound(f"strategy {strategy_id} has no deployment {deployment_id}")
        return found

    def update_deployment(
        self,
        session: Session,
        principal: Principal,
        strategy_id: int,
        deployment_id: int,
        **changes: Any,
    ) -> StrategyDeployment:
        require_writer(principal)
        deployment = self.deployment(session, principal, strategy_id, deployment_id)
        unknown = set(changes) - set(_DEPLOYMENT_FIELDS)
        if unknown:
            raise BadRequest(f"cannot change {', '.join(sorted(unknown))} of a deployment")
        if "portfolio_id" in changes:
            strategy = self.get(session, principal, strategy_id)
            changes["portfolio_id"] = self._portfolio_for(
                session, strategy, deployment.account_id, changes["portfolio_id"]
            )
        status = changes.get("status")
        if status is not None and status != deployment.status:
            now = utc_now()
            if status == DeploymentStatus.active:
                deployment.started_at, deployment.stopped_at = now, None
            elif deployment.status == DeploymentStatus.active:
                deployment.stopped_at = now
        for name, value in changes.items():
            setattr(deployment, name, value)
        session.flush()
        self._audit(
            session,
            principal,
            "deployment.updated",
            "strategy_deployment",
            deployment.id,
            changed=sorted(changes),
            status=deployment.status,
        )
        return deployment

    def undeploy(
        self, session: Session, principal: Principal, strategy_id: int, deployment_id: int
    ) -> None:
        require_writer(principal)
        deployment = self.deployment(session, principal, strategy_id, deployment_id)
        session.delete(deployment)
        session.flush()
        self._audit(session, principal, "deployment.deleted", "strategy_deployment", deployment_id)

    def active_deployments(
        self, session: Session, strategy: Strategy
    ) -> builtins.list[StrategyDeployment]:
        """Where a signal to *strategy* goes: its active deployments on active accounts,
        in the accounts' priority order (primary first)."""
        return list(
            session.scalars(
                select(StrategyDeployment)
                .join(TradingAccount, TradingAccount.id == StrategyDeployment.account_id)
                .where(
                    StrategyDeployment.strategy_id == strategy.id,
                    StrategyDeployment.status == DeploymentStatus.active,
                    TradingAccount.is_active.is_(True),
                )
                .order_by(
                    TradingAccount.is_primary.desc(),
                    TradingAccount.priority,
                    TradingAccount.id,
                )
            )
        )

    # --- performance --------------------------------------------------------------------

    def refresh_performance(self, session: Session, strategy_id: int) -> Strategy:
        """Recompute the strategy's and its deployments' figures from their fills."""
        strategy = session.get(Strategy, strategy_id)
        if strategy is None:
            raise StrategyNotFound(f"no strategy {strategy_id}")
        deployments = list(
            session.scalars(
                select(StrategyDeployment).where(StrategyDeployment.strategy_id == strategy_id)
            )
        )
        fills = session.execute(
            select(Order.deployment_id, Trade.pnl, Trade.executed_at)
            .join(Order, Order.id == Trade.order_id)
            .where(Order.strategy_id == strategy_id)
            .order_by(Trade.executed_at, Trade.id)
        ).all()
        figures = _figures(
            [(f.pnl, f.executed_at) for f in fills],
            sum((d.capital_allocated or ZERO for d in deployments), ZERO),
        )
        strategy.total_pnl, strategy.num_trades = figures.total_pnl, figures.num_trades
        strategy.win_rate, strategy.sharpe_ratio = figures.win_rate, figures.sharpe_ratio
        by_deployment: dict[int, Decimal] = defaultdict(lambda: ZERO)
        for fill in fills:
            if fill.deployment_id is not None and fill.pnl is not None:
                by_deployment[fill.deployment_id] += fill.pnl
        for deployment in deployments:
            deployment.total_pnl = quantize(by_deployment[deployment.id])
        session.flush()
        return strategy

    def add_fills(self, session: Session, strategy_id: int, order_ids: Sequence[int]) -> None:
        """Add the fills of *order_ids* (orders of the strategy just placed) to its and its
        deployments' running totals: ``num_trades`` and ``total_pnl``, without reading the
        strategy's history on the signal path. ``refresh_performance`` (the snapshot job,
        ``POST …/refresh``) recomputes everything, win rate and Sharpe too."""
        if not order_ids:
            return
        fills = session.execute(
            select(Order.deployment_id, Trade.pnl)
            .join(Order, Order.id == Trade.order_id)
            .where(Trade.order_id.in_(order_ids))
        ).all()
        strategy = session.get(Strategy, strategy_id)
        if strategy is None or not fills:
            return
        strategy.num_trades += len(fills)
        realized = [f.pnl for f in fills if f.pnl is not None]
        strategy.total_pnl = quantize(strategy.total_pnl + sum(realized, ZERO))
        by_deployment: dict[int, Decimal] = defaultdict(lambda: ZERO)
        for fill in fills:
            if fill.deployment_id is not None and fill.pnl is not None:
                by_deployment[fill.deployment_id] += fill.pnl
        for deployment_id, amount in by_deployment.items():
            deployment = session.get(StrategyDeployment, deployment_id)
            if deployment is not None:
                deployment.total_pnl = quantize(deployment.total_pnl + amount)
        session.flush()

    def _audit(
        self,
        session: Session,
        principal: Principal,
        action: str,
        resource_type: str,
        resource_id: int,
        **details: Any,
    ) -> None:
        audit_service.record_by(
            session,
            principal,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            details=details or None,
        )


@dataclass(frozen=True)
class Figures:
    total_pnl: Decimal
    num_trades: int
    win_rate: Decimal | None
    sharpe_ratio: Decimal | None


def _figures(fills: list[tuple[Decimal | None, datetime]], capital: Decimal) -> Figures:
    """Figures of fills ``(realized pnl or None for an opening fill, executed_at)``."""
    closing = [pnl for pnl, _ in fills if pnl is not None]
    total = quantize(sum(closing, ZERO))
    sharpe = None
    if capital > 0:
        daily: dict[date, Decimal] = defaultdict(lambda: ZERO)
        for pnl, at in fills:
            if pnl is not None:
                daily[at.date()] += pnl
        if len(daily) >= 2:
            # an equity curve of the capital plus the cumulative daily realized P&L
            equity = [capital]
            for day in sorted(daily):
                equity.append(equity[-1] + daily[day])
            sharpe = metrics.sharpe_ratio(equity, 365)
    return Figures(total, len(fills), metrics.win_rate(closing), sharpe)


strategy = StrategyService()
