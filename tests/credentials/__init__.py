"""Helpers for the credentials tests: key stores and migrated scratch databases."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Scratch, ScratchFactory
from tradebase.core import migrate
from tradebase.core.crypto import KeyStore, MasterKey
from tradebase.core.db import Database, create_db_engine, unit_of_work
from tradebase.credentials.service import CredentialService


def env_keys(tmp_path: Path, active: MasterKey, *previous: MasterKey) -> KeyStore:
    """A key store as TRADEBASE_SECRET_KEY (and PREVIOUS_SECRET_KEYS) would configure it."""
    return KeyStore(
        key_file=tmp_path / "unused.key",
        secret_key=active.encode(),
        previous_keys=",".join(key.encode() for key in previous) or None,
    )


@dataclass
class CredentialsDb:
    """A freshly migrated credentials database of its own (for code that commits)."""

    scratch: Scratch
    engine: Engine
    factory: sessionmaker[Session]

    def session(self, write: bool = True) -> AbstractContextManager[Session]:
        return unit_of_work(Database.credentials, write=write, factory=self.factory)


def new_credentials_db(scratch_factory: ScratchFactory, backend: str, label: str) -> CredentialsDb:
    scratch = scratch_factory.new(backend, label)
    settings = scratch.settings()
    migrate.upgrade(Database.credentials, "head", settings=settings)
    engine = create_db_engine(scratch.credentials_url, settings)
    return CredentialsDb(scratch, engine, sessionmaker(bind=engine, expire_on_commit=False))


def set_many(service: CredentialService, db: CredentialsDb, count: int) -> dict[int, str]:
    """Store *count* secrets on distinct accounts; return owner_id -> secret."""
    values = {owner_id: f"secret-{owner_id}-{'x' * owner_id}" for owner_id in range(1, count + 1)}
    with db.session() as session:
        for owner_id, value in values.items():
            service.set_secret(
                session,
                user_id=1,
                owner_type="account",
                owner_id=owner_id,
                kind="broker_api_secret",
                value=value,
            )
    return values


def read_all(service: CredentialService, db: CredentialsDb, owner_ids: list[int]) -> dict[int, str]:
    with db.session() as session:
        return {
            owner_id: service.read_secret(
                session,
                owner_type="account",
                owner_id=owner_id,
                kind="broker_api_secret",
                actor="test",
                actor_user_id=None,
                purpose="check",
            )
            for owner_id in owner_ids
        }
