"""A secret is not in plaintext anywhere in either SQLite database file."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.conftest import ScratchFactory
from tradebase.core import migrate
from tradebase.core.crypto import KeyStore
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.credentials.service import CredentialService


def _database_bytes(folder: Path) -> dict[str, bytes]:
    files = sorted(
        p for p in folder.iterdir() if p.name.startswith(("tradebase.db", "credentials.db"))
    )
    return {p.name: p.read_bytes() for p in files}


def test_a_secret_is_not_in_plaintext_in_either_database_file(
    scratch_factory: ScratchFactory, tmp_path: Path
) -> None:
    scratch = scratch_factory.new("sqlite", "atrest")
    folder = Path(str(scratch.credentials_url.database)).parent
    settings = scratch.settings()
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    engines = Engines(settings)
    service = CredentialService(KeyStore(key_file=tmp_path / "secret.key"))
    secret = f"TB-DISTINCTIVE-{secrets.token_hex(16)}-TAIL"
    factory = engines.session_factory(Database.credentials)
    try:
        with unit_of_work(Database.credentials, factory=factory) as session:
            row = service.set_secret(
                session,
                user_id=1,
                owner_type="account",
                owner_id=1,
                kind="broker_api_secret",
                value=secret,
            )
            ciphertext = row.ciphertext
        with unit_of_work(Database.credentials, factory=factory) as session:
            assert (
                service.read_secret(
                    session,
                    owner_type="account",
                    owner_id=1,
                    kind="broker_api_secret",
                    actor="test",
                    actor_user_id=1,
                    purpose="check",
                )
                == secret
            )
        # While the engines are open the rows sit in the -wal files; after they close,
        # in the main files. Look at both moments.
        snapshots = [_database_bytes(folder)]
        assert any(name.endswith("-wal") for name in snapshots[0])
    finally:
        engines.dispose()
    snapshots.append(_database_bytes(folder))
    for snapshot in snapshots:
        assert {"tradebase.db", "credentials.db"} <= set(snapshot)
        everything = b"".join(snapshot.values())
        assert ciphertext in everything  # we are looking at the right bytes
        for needle in (secret, secret[:-4], secret[4:20]):
            for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
                assert needle.encode(encoding) not in everything, (needle, encoding)
