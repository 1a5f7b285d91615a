"""Key rotation: every secret still decrypts, an interrupted run resumes, old keys retire."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.conftest import ScratchFactory
from tests.credentials import CredentialsDb, env_keys, new_credentials_db, read_all, set_many
from tradebase.core.crypto import (
    DecryptionFailed,
    KeyRotationRefused,
    KeyStore,
    MasterKey,
    decrypt,
    read_key_file,
)
from tradebase.credentials.errors import CredentialDecryptionFailed
from tradebase.credentials.models import Credential, CredentialAccessLog
from tradebase.credentials.service import CredentialService

COUNT = 7  # three batches of 3: 3 + 3 + 1


@pytest.fixture
def db(scratch_factory: ScratchFactory, backend: str) -> Iterator[CredentialsDb]:
    db = new_credentials_db(scratch_factory, backend, "rotate")
    yield db
    db.engine.dispose()


def _key_ids(db: CredentialsDb) -> dict[str, int]:
    with db.session(write=False) as session:
        return CredentialService().key_usage(session)


def _rows(db: CredentialsDb) -> list[Credential]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Credential).order_by(Credential.id)))


def _nothing_decrypts_with(
    key: MasterKey, db: CredentialsDb, tmp_path: Path, *, but: MasterKey
) -> None:
    alone = CredentialService(env_keys(tmp_path, key))
    for row in _rows(db):
        with pytest.raises(CredentialDecryptionFailed), db.session() as session:
            alone.read_secret(
                session,
                owner_type=row.owner_type,
                owner_id=row.owner_id,
                kind=row.kind,
                actor="test",
                actor_user_id=None,
                purpose="old key alone",
            )
        # Not only is the key id unknown: the bytes themselves do not open under the old key.
        identity = f'["{row.owner_type}",{row.owner_id},"{row.kind}","{row.name}"]'
        data = b"tradebase/credential/v1\0" + identity.encode()
        with pytest.raises(DecryptionFailed):
            decrypt(key, row.ciphertext, data)
        assert decrypt(but, row.ciphertext, data)  # the same call opens it under the new key


def test_rotation_with_the_key_file_re_encrypts_everything_and_retires_the_old_key(
    db: CredentialsDb, tmp_path: Path
) -> None:
    keys = KeyStore(key_file=tmp_path / "secret.key")
    service = CredentialService(keys)
    values = set_many(service, db, COUNT)
    old = keys.keyring().active
    seen: list[tuple[int, int]] = []

    result = service.rotate_key(
        factory=db.factory, batch_size=3, progress=lambda d, t: seen.append((d, t))
    )

    new = keys.keyring().active
    assert new != old
    assert result.finished and result.failed == {} and result.remaining == 0
    assert (result.total, result.reencrypted) == (COUNT, COUNT)
    assert result.active_key_id == new.key_id
    assert result.retired_key_ids == (old.key_id,) and result.keys_to_remove == ()
    assert seen == [(0, 7), (3, 7), (6, 7), (7, 7)]
    assert read_key_file(tmp_path / "secret.key") == [new]
    assert _key_ids(db) == {new.key_id: COUNT}
    assert all(row.rotated_at is not None for row in _rows(db))
    assert read_all(service, db, list(values)) == values
    _nothing_decrypts_with(old, db, tmp_path, but=new)
    with db.session(write=False) as session:
        rotations = session.scalars(
            select(CredentialAccessLog).where(CredentialAccessLog.action == "rotate")
        ).all()
    assert len(rotations) == COUNT + 1  # one per secret, and the retirement
    assert all(log.success and log.actor == "rotate-key" for log in rotations)
    assert rotations[-1].credential_id is None and old.key_id in rotations[-1].purpose


def test_an_interrupted_rotation_resumes_and_the_old_key_reads_meanwhile(
    db: CredentialsDb, tmp_path: Path
) -> None:
    path = tmp_path / "secret.key"
    keys = KeyStore(key_file=path)
    service = CredentialService(keys)
    values = set_many(service, db, COUNT)
    old = keys.keyring().active
    server = CredentialService(KeyStore(key_file=path))  # a running server, loaded earlier
    assert read_all(server, db, list(values)) == values

    def crash_after_first_batch(done: int, total: int) -> None:
        if done:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        service.rotate_key(factory=db.factory, batch_size=3, progress=crash_after_first_batch)

    new = read_key_file(path)[0]
    assert read_key_file(path) == [new, old]  # the old key is still there, decrypt-only
    assert _key_ids(db) == {new.key_id: 3, old.key_id: COUNT - 3}
    assert read_all(server, db, list(values)) == values  # both halves still read
    with pytest.raises(KeyRotationRefused, match="unfinished"):
        CredentialService(KeyStore(key_file=path)).rotate_key(
            factory=db.factory, new_key=MasterKey.generate()
        )

    # Running it again (a new process) finishes the job under the same new key.
    result = CredentialService(KeyStore(key_file=path)).rotate_key(factory=db.factory, batch_size=3)
    assert result.finished
    assert (result.active_key_id, result.total, result.reencrypted) == (new.key_id, 4, 4)
    assert result.retired_key_ids == (old.key_id,)
    assert read_key_file(path) == [new]
    assert _key_ids(db) == {new.key_id: COUNT}
    assert read_all(server, db, list(values)) == values
    _nothing_decrypts_with(old, db, tmp_path, but=new)


def test_rotation_takes_the_new_key_it_is_given(db: CredentialsDb, tmp_path: Path) -> None:
    keys = KeyStore(key_file=tmp_path / "secret.key")
    service = CredentialService(keys)
    values = set_many(service, db, 2)
    chosen = MasterKey.generate()
    result = service.rotate_key(factory=db.factory, new_key=chosen)
    assert result.active_key_id == chosen.key_id and result.finished
    assert read_all(CredentialService(env_keys(tmp_path, chosen)), db, list(values)) == values


def test_rotation_with_environment_keys(db: CredentialsDb, tmp_path: Path) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    values = set_many(CredentialService(env_keys(tmp_path, old)), db, COUNT)
    # The operator sets TRADEBASE_SECRET_KEY=new, TRADEBASE_PREVIOUS_SECRET_KEYS=old.
    during = CredentialService(env_keys(tmp_path, new, old))
    assert read_all(during, db, list(values)) == values

    result = during.rotate_key(factory=db.factory, batch_size=2)

    assert result.finished and result.reencrypted == COUNT
    assert result.retired_key_ids == () and result.keys_to_remove == (old.key_id,)
    assert _key_ids(db) == {new.key_id: COUNT}
    assert read_all(CredentialService(env_keys(tmp_path, new)), db, list(values)) == values
    _nothing_decrypts_with(old, db, tmp_path, but=new)
    with pytest.raises(KeyRotationRefused, match="already under key"):
        CredentialService(env_keys(tmp_path, new)).rotate_key(factory=db.factory)


def test_a_row_that_does_not_decrypt_keeps_the_old_key_until_it_is_fixed(
    db: CredentialsDb, tmp_path: Path
) -> None:
    path = tmp_path / "secret.key"
    service = CredentialService(KeyStore(key_file=path))
    values = set_many(service, db, 3)
    old = read_key_file(path)[0]
    with db.session() as session:
        broken = session.scalars(select(Credential).where(Credential.owner_id == 2)).one()
        session.execute(
            update(Credential)
            .where(Credential.id == broken.id)
            .values(ciphertext=broken.ciphertext[:-1] + b"\0")
        )

    result = service.rotate_key(factory=db.factory, batch_size=2)

    assert not result.finished and list(result.failed) == [broken.id]
    assert result.remaining == 1
    assert result.reencrypted == 2 and result.retired_key_ids == ()
    assert read_key_file(path)[1:] == [old]
    with db.session(write=False) as session:
        failure = session.scalars(
            select(CredentialAccessLog).where(CredentialAccessLog.success.is_(False))
        ).one()
    assert (failure.credential_id, failure.action) == (broken.id, "rotate")
    # Setting the secret again repairs the row; the next run finishes and retires.
    with db.session() as session:
        service.set_secret(
            session,
            user_id=1,
            owner_type="account",
            owner_id=2,
            kind="broker_api_secret",
            value=values[2],
        )
    result = service.rotate_key(factory=db.factory)
    assert result.finished and result.reencrypted == 0
    assert result.retired_key_ids == (old.key_id,)
    assert read_all(service, db, list(values)) == values
