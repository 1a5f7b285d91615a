"""Fills across a user's portfolios: the trades ledger, read with filters and a cursor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradebase.core.auth import Principal, scoped
from tradebase.orders.models import Trade


class TradeService:
    def list(
        self,
        session: Session,
        principal: Principal,
        *,
        portfolio_id: int | None = None,
        symbol: str | None = None,
        side: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> Sequence[Trade]:
        """The caller's fills newest first, filtered (``since``/``until`` on the fill's
        time); ``after_id`` continues from a previous page."""
        statement = scoped(select(Trade), Trade.user_id, principal)
        for column, value in (
            (Trade.portfolio_id, portfolio_id),
            (Trade.symbol, symbol),
            (Trade.side, side),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if since is not None:
            statement = statement.where(Trade.executed_at >= since)
        if until is not None:
            statement = statement.where(Trade.executed_at < until)
        if after_id is not None:
            statement = statement.where(Trade.id < after_id)
        return session.scalars(statement.order_by(Trade.id.desc()).limit(limit)).all()


trade = TradeService()
