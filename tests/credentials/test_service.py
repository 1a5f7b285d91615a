"""Setting, reading, describing and deleting secrets, on every engine."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.conftest import ScratchFactory
from tests.credentials import env_keys, new_credentials_db
from tradebase.core.crypto import KeyStore, MasterKey
from tradebase.credentials.errors import (
    CredentialDecryptionFailed,
    CredentialInvalid,
    CredentialNotFound,
    CredentialOwnerMismatch,
)
from tradebase.credentials.models import Credential, CredentialAccessLog
from tradebase.credentials.service import CredentialService

ACCOUNT = {"owner_type": "account", "owner_id": 7, "kind": "broker_api_key"}


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def keys(tmp_path: Path, key: MasterKey) -> KeyStore:
    return env_keys(tmp_path, key)


@pytest.fixture
def service(keys: KeyStore) -> CredentialService:
    return CredentialService(keys)


def _set(service: CredentialService, session: Session, value: str, **kw: Any) -> Credential:
    args: dict[str, Any] = {"user_id": 1, **ACCOUNT, "actor": "alice", "actor_user_id": 1, **kw}
    return service.set_secret(session, value=value, **args)


def _read(service: CredentialService, session: Session, **kw: Any) -> str:
    args: dict[str, Any] = {**ACCOUNT, "actor": "orders", "actor_user_id": 1, "purpose": "test"}
    return service.read_secret(session, **{**args, **kw})


def _logs(session: Session) -> list[tuple[Any, ...]]:
    rows = session.scalars(select(CredentialAccessLog).order_by(CredentialAccessLog.id)).all()
    return [(r.credential_id, r.action, r.purpose, r.success, r.user_id, r.actor) for r in rows]


def test_a_secret_round_trips(credentials_session: Session, service: CredentialService) -> None:
    value = "pk_live_Ünïcødé-" + secrets.token_urlsafe(24)
    row = _set(service, credentials_session, value)
    credentials_session.expire_all()
    stored = credentials_session.get(Credential, row.id)
    assert stored is not None
    assert value.encode() not in stored.ciphertext
    assert stored.key_id == service.keys.keyring().active.key_id
    assert stored.last4 == value[-4:]
    assert _read(service, credentials_session) == value


def test_setting_again_replaces_the_secret(
    credentials_session: Session, service: CredentialService
) -> None:
    first = _set(service, credentials_session, "first-value-0001")
    second = _set(service, credentials_session, "second-value-0002")
    assert second.id == first.id
    assert _read(service, credentials_session) == "second-value-0002"
    assert [log[1] for log in _logs(credentials_session)] == ["create", "update", "read"]


@pytest.mark.parametrize(
    "target",
    [
        {"owner_id": 8},
        {"kind": "broker_api_secret"},
        {"name": "backup"},
        {"owner_type": "webhook"},
    ],
    ids=["other owner", "other kind", "other name", "other owner type"],
)
def test_a_ciphertext_moved_to_another_row_does_not_decrypt(
    credentials_session: Session, service: CredentialService, target: dict[str, Any]
) -> None:
    source = _set(service, credentials_session, "the-real-secret-AAAA")
    victim = _set(service, credentials_session, "the-other-secret-BBBB", **target)
    credentials_session.execute(
        update(Credential)
        .where(Credential.id == victim.id)
        .values(ciphertext=source.ciphertext, key_id=source.key_id)
    )
    credentials_session.expire_all()
    with pytest.raises(CredentialDecryptionFailed, match="does not decrypt"):
        _read(service, credentials_session, **target)
    assert _read(service, credentials_session) == "the-real-secret-AAAA"


def test_a_wrong_key_gives_the_decryption_error_not_garbage(
    credentials_session: Session, service: CredentialService, tmp_path: Path
) -> None:
    _set(service, credentials_session, "my-broker-secret-1234")
    stranger = CredentialService(env_keys(tmp_path, MasterKey.generate()))
    with pytest.raises(CredentialDecryptionFailed, match="which is not configured") as info:
        _read(stranger, credentials_session)
    assert info.value.status_code == 500
    assert info.value.error_code == "credential_decryption_failed"
    assert "my-broker-secret" not in str(info.value.to_dict())


def test_an_altered_ciphertext_gives_the_decryption_error(
    credentials_session: Session, service: CredentialService
) -> None:
    row = _set(service, credentials_session, "my-broker-secret-1234")
    altered = row.ciphertext[:-1] + bytes([row.ciphertext[-1] ^ 0x80])
    credentials_session.execute(
        update(Credential).where(Credential.id == row.id).values(ciphertext=altered)
    )
    credentials_session.expire_all()
    with pytest.raises(CredentialDecryptionFailed, match="authentication failed"):
        _read(service, credentials_session)


def test_every_access_is_logged_with_who_and_why(
    credentials_session: Session, service: CredentialService
) -> None:
    row = _set(service, credentials_session, "secret-one-1111", purpose="connect account")
    credential_id = row.id
    _set(service, credentials_session, "secret-two-2222", actor="bob", actor_user_id=2)
    assert (
        _read(
            service,
            credentials_session,
            actor="order-router",
            actor_user_id=3,
            purpose="place order 42",
            ip_address="203.0.113.9",
        )
        == "secret-two-2222"
    )
    assert service.delete_secret(
        credentials_session, **ACCOUNT, actor="alice", actor_user_id=1, purpose="account closed"
    )
    credentials_session.expire_all()
    assert _logs(credentials_session) == [
        (None, "create", "connect account", True, 1, "alice"),
        (None, "update", "set", True, 2, "bob"),
        (None, "read", "place order 42", True, 3, "order-router"),
        (None, "delete", "account closed [account/7/broker_api_key/default]", True, 1, "alice"),
    ]  # the credential is gone, so every log row's credential_id was set to NULL
    read_log = credentials_session.scalars(
        select(CredentialAccessLog).where(CredentialAccessLog.action == "read")
    ).one()
    assert read_log.ip_address == "203.0.113.9"
    assert read_log.accessed_at is not None and read_log.accessed_at.tzinfo is not None
    assert credentials_session.get(Credential, credential_id) is None
    assert not service.delete_secret(credentials_session, **ACCOUNT, actor="alice", actor_user_id=1)


def test_failed_reads_are_logged_with_success_false(
    credentials_session: Session, service: CredentialService, tmp_path: Path
) -> None:
    row = _set(service, credentials_session, "secret-one-1111")
    with pytest.raises(CredentialNotFound):
        _read(service, credentials_session, owner_id=99, purpose="probe")
    stranger = CredentialService(env_keys(tmp_path, MasterKey.generate()))
    with pytest.raises(CredentialDecryptionFailed):
        _read(stranger, credentials_session, purpose="wrong key")
    failures = credentials_session.scalars(
        select(CredentialAccessLog).where(CredentialAccessLog.success.is_(False))
    ).all()
    assert [(f.credential_id, f.action, f.purpose) for f in failures] == [
        (None, "read", "probe"),
        (row.id, "read", "wrong key"),
    ]
    assert failures[0].error == "no credential account/99/broker_api_key/default"
    assert failures[1].error is not None and "not configured" in failures[1].error


def test_describe_shows_only_whether_it_is_set_and_the_last_4(
    credentials_session: Session, service: CredentialService
) -> None:
    info = service.describe(credentials_session, **ACCOUNT)
    assert info.model_dump() == {"is_set": False, "last4": None, "updated_at": None}
    _set(service, credentials_session, "AKIA-very-long-key-9xQz")
    logs_before = len(_logs(credentials_session))
    info = service.describe(credentials_session, **ACCOUNT)
    assert info.is_set and info.last4 == "9xQz" and info.updated_at is not None
    assert set(info.model_dump()) == {"is_set", "last4", "updated_at"}
    assert len(_logs(credentials_session)) == logs_before  # describing is not a read
    # Passwords, TOTP secrets and short secrets show no characters at all.
    for kind, value in [
        ("broker_password", "correct-horse-battery"),
        ("totp_secret", "JBSWY3DPEHPK3PXPJBSWY3DP"),
        ("broker_api_secret", "short-1234"),
    ]:
        _set(service, credentials_session, value, kind=kind)
        assert service.describe(credentials_session, **{**ACCOUNT, "kind": kind}).last4 is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "ssh_key"}, "kind must be one of"),
        ({"owner_type": "team"}, "owner_type must be one of"),
        ({"owner_id": "7"}, "owner_id must be an integer"),
        ({"name": ""}, "name must be"),
        ({"value": ""}, "non-empty"),
        ({"value": "x" * 16_385}, "longer than 16384 bytes"),
        ({"value": "€" * 5462}, "longer than 16384 bytes"),  # 16386 bytes in UTF-8
        ({"purpose": ""}, "purpose must be"),
        ({"purpose": "p" * 201}, "purpose must be"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    credentials_session: Session,
    service: CredentialService,
    overrides: dict[str, Any],
    message: str,
) -> None:
    args: dict[str, Any] = {"value": "valid-secret-0000", **overrides}
    with pytest.raises(CredentialInvalid, match=message) as info:
        _set(service, credentials_session, **args)
    assert info.value.status_code == 422
    assert _logs(credentials_session) == []


def test_a_secret_of_another_user_is_not_overwritten(
    credentials_session: Session, service: CredentialService
) -> None:
    _set(service, credentials_session, "owned-by-user-1-0000")
    with pytest.raises(CredentialOwnerMismatch):
        _set(service, credentials_session, "from-user-2-0000", user_id=2)
    assert _read(service, credentials_session) == "owned-by-user-1-0000"


def test_a_failed_read_stays_logged_when_the_callers_transaction_rolls_back(
    scratch_factory: ScratchFactory, backend: str, tmp_path: Path
) -> None:
    db = new_credentials_db(scratch_factory, backend, "failread")
    service = CredentialService(env_keys(tmp_path, MasterKey.generate()))
    try:
        with db.session() as session:
            _set(service, session, "stored-secret-0000")
        with pytest.raises(CredentialNotFound), db.session() as session:
            _read(service, session, owner_id=99, purpose="probe")
        stranger = CredentialService(env_keys(tmp_path, MasterKey.generate()))
        with pytest.raises(CredentialDecryptionFailed), db.session() as session:
            _read(stranger, session, purpose="wrong key")
        # A caller that handles the error and commits keeps exactly one log row.
        with db.session() as session, pytest.raises(CredentialNotFound):
            _read(service, session, owner_id=98, purpose="handled")
        with db.session(write=False) as session:
            logs = session.scalars(
                select(CredentialAccessLog).where(CredentialAccessLog.success.is_(False))
            ).all()
            assert sorted(log.purpose for log in logs) == ["handled", "probe", "wrong key"]
            assert all(log.action == "read" and log.error for log in logs)
    finally:
        db.engine.dispose()


def test_the_largest_secret_fits_on_every_engine(
    credentials_session: Session, service: CredentialService
) -> None:
    value = "€" * 5461 + "x"  # 16384 bytes in UTF-8
    _set(service, credentials_session, value)
    credentials_session.expire_all()
    assert _read(service, credentials_session) == value


def test_concurrent_first_sets_of_one_secret_leave_one_row(
    scratch_factory: ScratchFactory, backend: str, tmp_path: Path
) -> None:
    db = new_credentials_db(scratch_factory, backend, "race")
    service = CredentialService(env_keys(tmp_path, MasterKey.generate()))
    workers, rounds = 6, 5
    errors: list[BaseException] = []

    def worker(barrier: threading.Barrier, owner_id: int, n: int) -> None:
        try:
            barrier.wait()
            with db.session() as session:
                _set(service, session, f"value-from-worker-{n}", owner_id=owner_id)
        except BaseException as exc:
            errors.append(exc)

    try:
        for owner_id in range(1, rounds + 1):
            barrier = threading.Barrier(workers)
            threads = [
                threading.Thread(target=worker, args=(barrier, owner_id, n)) for n in range(workers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert errors == []
        with db.session() as session:
            assert len(session.scalars(select(Credential)).all()) == rounds
            for owner_id in range(1, rounds + 1):
                value = _read(service, session, owner_id=owner_id)
                assert value in {f"value-from-worker-{n}" for n in range(workers)}
            actions = [log[1] for log in _logs(session)]
        assert sorted(set(actions)) == ["create", "read", "update"]
        counts = {action: actions.count(action) for action in set(actions)}
        assert counts == {"create": rounds, "update": rounds * (workers - 1), "read": rounds}
    finally:
        db.engine.dispose()


def test_secrets_are_under_the_key_of_the_engines_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bare_env: Path
) -> None:
    """An app's secrets go under the key of the settings its engines were made with,
    whatever the process's environment says meanwhile (a test, or a command run under an
    environment of its own, in the same process as a live server's threads)."""
    from tradebase.config import Settings, get_settings
    from tradebase.core import migrate
    from tradebase.core.crypto import default_key_file
    from tradebase.core.db import Database, Engines, unit_of_work

    mine = Settings(data_dir=tmp_path / "mine")
    for database in Database:
        migrate.upgrade(database, "head", settings=mine)
    engines = Engines(mine)
    monkeypatch.setenv("TRADEBASE_DATA_DIR", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    service = CredentialService()  # no key store given: the one of the settings
    factory = engines.session_factory(Database.credentials)
    try:
        with unit_of_work(Database.credentials, factory=factory) as session:
            _set(service, session, "sk-mine")
        with unit_of_work(Database.credentials, factory=factory) as session:
            assert _read(service, session) == "sk-mine"
    finally:
        engines.dispose()
        get_settings.cache_clear()
    assert default_key_file(mine).exists()
    assert not (tmp_path / "elsewhere").exists()
    # The key file of the settings decrypts it: another process with them reads it.
    other = Engines(mine)
    try:
        factory = other.session_factory(Database.credentials)
        with unit_of_work(Database.credentials, factory=factory) as session:
            assert _read(CredentialService(KeyStore.from_settings(mine)), session) == "sk-mine"
    finally:
        other.dispose()
