"""``tradebase users …`` and ``tradebase keys …``: manage accounts from the server's shell."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from tradebase.accounts.models import ApiKey, User, UserRole
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.core.auth import Principal
from tradebase.core.db import unit_of_work
from tradebase.core.errors import TradebaseError
from tradebase.core.time import utc_now

users_app = typer.Typer(
    help="Create and manage users (admin, trader, viewer).", no_args_is_help=True
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

# Commands run by whoever has the server's shell: an administrator.
CLI = Principal(user_id=0, username="cli", role=UserRole.admin, via="cli")


def _fail(exc: TradebaseError) -> typer.Exit:
    typer.echo(f"error: {exc.message}", err=True)
    return typer.Exit(1)


def _user(session: object, username: str) -> User:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    user = user_service.get_by_login(session, username)
    if user is None:
        typer.echo(f"error: no user {username!r} (see: tradebase users list)", err=True)
        raise typer.Exit(1)
    return user


@users_app.command("create")
def create_user(
    username: Annotated[str, typer.Argument(help="Login name (3+ characters).")],
    email: Annotated[str, typer.Option(help="Email address.")],
    role: Annotated[UserRole, typer.Option(help="admin, trader or viewer.")] = UserRole.trader,
    password: Annotated[
        bool, typer.Option("--password", help="Prompt for a password instead of a one-time one.")
    ] = False,
) -> None:
    """Create a user; prints a one-time password unless --password asks for one."""
    chosen = (
        typer.prompt("Password", hide_input=True, confirmation_prompt=True) if password else None
    )
    try:
        with unit_of_work() as session:
            user, one_time = user_service.create(
                session, username=username, email=email, role=role, password=chosen, actor=CLI
            )
    except TradebaseError as exc:
        raise _fail(exc) from None
    typer.echo(f"created {role.value} {user.username} (id {user.id})")
    if one_time:
        typer.echo(f"one-time password (shown once): {one_time}")


@users_app.command("list")
def list_users() -> None:
    """List users."""
    with unit_of_work(write=False) as session:
        users = session.scalars(select(User).order_by(User.id)).all()
        table = Table("id", "username", "email", "role", "active", "2fa", "last login")
        for u in users:
            table.add_row(
                str(u.id),
                u.username,
                u.email,
                u.role,
                "yes" if u.is_active else "no",
                "yes" if u.two_factor_enabled else "no",
                u.last_login.isoformat(timespec="seconds") if u.last_login else "-",
            )
    Console().print(table)  # made here, so it sizes itself to the terminal of this call


@users_app.command("set-role")
def set_role(
    username: str, role: Annotated[UserRole, typer.Argument(help="admin, trader or viewer.")]
) -> None:
    """Change a user's role."""
    with unit_of_work() as session:
        user = _user(session, username)
        user_service.admin_update(session, CLI, user.id, role=role)
    typer.echo(f"{username} is now {role.value}")


@users_app.command("disable")
def disable(username: str) -> None:
    """Disable a user: their logins, sessions and keys stop working."""
    with unit_of_work() as session:
        user = _user(session, username)
        user_service.admin_update(session, CLI, user.id, is_active=False)
    typer.echo(f"{username} is disabled")


@users_app.command("enable")
def enable(username: str) -> None:
    """Enable a disabled user."""
    with unit_of_work() as session:
        user = _user(session, username)
        user_service.admin_update(session, CLI, user.id, is_active=True)
    typer.echo(f"{username} is enabled")


@users_app.command("reset-password")
def reset_password(username: str) -> None:
    """Give a user a new one-time password (and unlock them)."""
    with unit_of_work() as session:
        user = _user(session, username)
        password = user_service.reset_password(session, CLI, user.id)
    typer.echo(f"one-time password for {username} (shown once): {password}")


@keys_app.command("create")
def create_key(
    user: Annotated[str, typer.Option("--user", help="Owner's username.")],
    name: Annotated[str, typer.Option(help="A label for the key.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="A scope, e.g. read:portfolio (repeat). Default: the role's."),
    ] = None,
    expires_days: Annotated[int | None, typer.Option(help="Expire after this many days.")] = None,
    rate_limit: Annotated[int, typer.Option(help="Requests per minute.")] = 60,
) -> None:
    """Create an API key and print it (once: it cannot be shown again)."""
    try:
        with unit_of_work() as session:
            owner = _user(session, user)
            key, plaintext = api_key_service.create(
                session,
                CLI,
                name=name,
                scopes=scope or None,
                owner=owner,
                expires_at=utc_now() + timedelta(days=expires_days) if expires_days else None,
                rate_limit_per_minute=rate_limit,
            )
    except TradebaseError as exc:
        raise _fail(exc) from None
    typer.echo(f"key {key.id} for {user} ({', '.join(key.scopes)}); shown once:")
    typer.echo(plaintext)


@keys_app.command("list")
def list_keys(user: Annotated[str | None, typer.Option("--user")] = None) -> None:
    """List API keys (their prefixes; the keys themselves are not stored)."""
    with unit_of_work(write=False) as session:
        statement = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id)
        if user:
            statement = statement.where(User.username == user)
        table = Table(
            "id", "user", "name", "prefix", "scopes", "active", "expires", "last used", "requests"
        )
        for key, username in session.execute(statement.order_by(ApiKey.id)):
            table.add_row(
                str(key.id),
                username,
                key.name or "",
                key.key_prefix,
                " ".join(key.scopes),
                "yes" if key.is_active else "no",
                key.expires_at.date().isoformat() if key.expires_at else "-",
                key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "-",
                str(key.total_requests),
            )
    Console().print(table)  # made here, so it sizes itself to the terminal of this call


@keys_app.command("revoke")
def revoke_key(key_id: int) -> None:
    """Revoke an API key: it stops working at once."""
    try:
        with unit_of_work() as session:
            api_key_service.revoke(session, CLI, key_id)
    except TradebaseError as exc:
        raise _fail(exc) from None
    typer.echo(f"key {key_id} revoked")
