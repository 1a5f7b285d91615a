"""``tradebase credentials …``: the master key of the encrypted credentials database."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tradebase.config import SettingsError, get_settings
from tradebase.core.crypto import KeyStore, MasterKey
from tradebase.core.db import Database, unit_of_work
from tradebase.core.errors import TradebaseError
from tradebase.credentials.service import CredentialService

app = typer.Typer(
    help="Manage the master key of the encrypted credentials database.",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _key_store() -> KeyStore:
    try:
        return KeyStore.from_settings(get_settings())
    except SettingsError as exc:
        raise _fail(str(exc), 2) from None


@app.command("generate-key")
def generate_key() -> None:
    """Print a new random master key (for TRADEBASE_SECRET_KEY or rotate-key --new-key)."""
    typer.echo(MasterKey.generate().encode())


@app.command()
def status() -> None:
    """Show where the master key comes from, its id, and how many secrets each key encrypts."""
    keys = _key_store()
    try:
        keyring = keys.keyring()
        with unit_of_work(Database.credentials, write=False) as session:
            usage = CredentialService(keys).key_usage(session)
    except SettingsError as exc:
        raise _fail(str(exc), 2) from None
    source = "TRADEBASE_SECRET_KEY" if keys.from_environment else f"key file {keys.key_file}"
    typer.echo(f"active key: {keyring.active.key_id} (from {source})")
    for key in keyring.previous:
        typer.echo(f"previous key (decrypt only): {key.key_id}")
    for key_id, count in sorted(usage.items()):
        known = "active" if key_id == keyring.active.key_id else "previous"
        if keyring.get(key_id) is None:
            known = "NOT CONFIGURED: these secrets cannot be read"
        typer.echo(f"  {count} secret(s) under key {key_id} ({known})")
    behind = sum(n for key_id, n in usage.items() if key_id != keyring.active.key_id)
    if behind:
        typer.echo(f"{behind} secret(s) are not under the active key: run rotate-key")


@app.command("rotate-key")
def rotate_key(
    new_key: Annotated[
        str | None,
        typer.Option(
            "--new-key",
            help=(
                "The new master key (base64 or hex; '-' reads it from standard input)."
                " Default: a new random key. Only with the key file: with"
                " TRADEBASE_SECRET_KEY set, set the new key there first (see docs/credentials.md)."
            ),
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Secrets re-encrypted per transaction.")
    ] = 500,
) -> None:
    """Re-encrypt every secret under a new master key, then retire the old key.

    Resumable: if interrupted, run it again to finish; until it finishes the old key
    still decrypts the secrets not yet re-encrypted.
    """
    keys = _key_store()
    target: MasterKey | None = None
    if new_key is not None:
        text = sys.stdin.readline() if new_key == "-" else new_key
        try:
            target = MasterKey.parse(text, source="--new-key")
        except SettingsError as exc:
            raise _fail(str(exc), 2) from None
    bar = Progress(
        TextColumn("re-encrypting secrets"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task("rotate", total=None)
    started: list[bool] = []

    def on_progress(done: int, total: int) -> None:
        if not started:  # shown once there is work, not before an early refusal
            started.append(True)
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        keys.keyring()  # an unusable key file stops here, before anything is written
        result = CredentialService(keys).rotate_key(
            new_key=target, batch_size=batch_size, progress=on_progress, actor="cli:rotate-key"
        )
    except SettingsError as exc:
        raise _fail(str(exc), 2) from None
    except TradebaseError as exc:
        raise _fail(exc.message) from None
    finally:
        bar.stop()
    typer.echo(
        f"re-encrypted {result.reencrypted} secret(s) under key {result.active_key_id}"
        + ("" if keys.from_environment else f" (key file {keys.key_file}: back it up now)")
    )
    if not result.finished:
        for credential_id, why in sorted(result.failed.items()):
            typer.echo(f"  credential {credential_id}: {why}", err=True)
        if not result.failed:
            raise _fail(
                f"{result.remaining} secret(s) were written under an old key while this ran"
                " (a process that has not picked up the new key?); run rotate-key again"
            )
        raise _fail(
            f"{len(result.failed)} secret(s) could not be re-encrypted, so the old key(s) stay"
            " configured; set those secrets again (or delete them), then run rotate-key again"
        )
    if result.retired_key_ids:
        typer.echo(f"retired key(s) {', '.join(result.retired_key_ids)}: removed from the key file")
    if result.keys_to_remove:
        typer.echo(
            f"no secret needs key(s) {', '.join(result.keys_to_remove)} any more: remove"
            " TRADEBASE_PREVIOUS_SECRET_KEYS and restart Tradebase to retire them"
        )
