"""Factories: functions with keyword defaults that add rows and flush."""

from __future__ import annotations

import itertools
from decimal import Decimal

from sqlalchemy.orm import Session

from tradebase.accounts.models import User
from tradebase.orders.models import Order
from tradebase.portfolios.models import Portfolio, TradingAccount

_seq = itertools.count(1)


def create_user(session: Session, *, username: str | None = None, role: str = "trader") -> User:
    n = next(_seq)
    user = User(
        username=username or f"user{n}",
        email=f"user{n}@example.com",
        password_hash="argon2-placeholder",
        role=role,
    )
    session.add(user)
    session.flush()
    return user


def create_account(
    session: Session, *, user: User, account_name: str | None = None, broker: str = "paper"
) -> TradingAccount:
    account = TradingAccount(
        user_id=user.id, account_name=account_name or f"account{next(_seq)}", broker=broker
    )
    session.add(account)
    session.flush()
    return account


def create_portfolio(
    session: Session, *, account: TradingAccount, name: str = "Main", cash: str = "10000"
) -> Portfolio:
    portfolio = Portfolio(
        user_id=account.user_id, account_id=account.id, name=name, cash_balance_usd=Decimal(cash)
    )
    session.add(portfolio)
    session.flush()
    return portfolio


def create_order(
    session: Session,
    *,
    portfolio: Portfolio,
    quantity: Decimal = Decimal("1"),
    client_order_id: str | None = None,
    side: str = "buy",
    order_type: str = "market",
    symbol: str = "BTC/USDT",
) -> Order:
    order = Order(
        user_id=portfolio.user_id,
        account_id=portfolio.account_id,
        portfolio_id=portfolio.id,
        client_order_id=client_order_id,
        symbol=symbol,
        exchange="paper",
        side=side,
        order_type=order_type,
        quantity=quantity,
    )
    session.add(order)
    session.flush()
    return order
