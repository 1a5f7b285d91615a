"""Secrets at rest: set, read (logged), describe, delete, and re-encrypt under a new key.

Each secret is encrypted with AES-256-GCM under the active master key (`tradebase.core.crypto`)
with its row's identity ``[owner_type, owner_id, kind, name]`` as associated data, so a
ciphertext copied onto another row does not decrypt. Every read, successful or not, and
every set, delete and re-encryption writes a ``credential_access_log`` row.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Executable, event, func, insert, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from tradebase.config import Settings, get_settings
from tradebase.core.crypto import (
    DecryptionFailed,
    Keyring,
    KeyRotationRefused,
    KeyStore,
    MasterKey,
    decrypt,
    encrypt,
)
from tradebase.core.db import Database, settings_of_engine, unit_of_work
from tradebase.core.time import utc_now
from tradebase.credentials.errors import (
    CredentialDecryptionFailed,
    CredentialInvalid,
    CredentialNotFound,
    CredentialOwnerMismatch,
)
from tradebase.credentials.models import (
    Credential,
    CredentialAccessLog,
    CredentialAction,
    CredentialKind,
    CredentialOwner,
)
from tradebase.credentials.schemas import RotationResult, SecretInfo

logger = logging.getLogger(__name__)

MAX_SECRET_BYTES = 16_384  # UTF-8; the ciphertext must fit a 64 KiB MySQL BLOB
# Kinds whose last characters are worth nothing to show and too much to leak.
_NO_LAST4_KINDS = frozenset({CredentialKind.broker_password, CredentialKind.totp_secret})
_LAST4_MIN_CHARS = 12  # shorter secrets would give away too large a share

ProgressCallback = Callable[[int, int], None]
"""Called after each committed rotation batch with (rows handled so far, total)."""


@dataclass(frozen=True)
class _Identity:
    owner_type: str
    owner_id: int
    kind: str
    name: str

    @classmethod
    def of(cls, row: Credential) -> _Identity:
        return cls(row.owner_type, row.owner_id, row.kind, row.name)

    @property
    def associated_data(self) -> bytes:
        # JSON of a list is unambiguous: no choice of fields can spell another row's identity.
        fields = [self.owner_type, self.owner_id, self.kind, self.name]
        return b"tradebase/credential/v1\0" + json.dumps(fields, separators=(",", ":")).encode()

    def __str__(self) -> str:
        return f"{self.owner_type}/{self.owner_id}/{self.kind}/{self.name}"


def _identity(owner_type: str, owner_id: int, kind: str, name: str) -> _Identity:
    if owner_type not in set(CredentialOwner):
        raise CredentialInvalid(
            f"owner_type must be one of {', '.join(CredentialOwner)}, not {owner_type!r}"
        )
    if kind not in set(CredentialKind):
        raise CredentialInvalid(f"kind must be one of {', '.join(CredentialKind)}, not {kind!r}")
    if isinstance(owner_id, bool) or not isinstance(owner_id, int):
        raise CredentialInvalid(f"owner_id must be an integer, not {owner_id!r}")
    if not name or len(name) > 100 or name != name.strip():
        raise CredentialInvalid("name must be 1 to 100 characters without surrounding spaces")
    return _Identity(str(owner_type), owner_id, str(kind), name)


def _check_log_fields(actor: str | None, purpose: str, ip_address: str | None) -> None:
    if not purpose or len(purpose) > 200:
        raise CredentialInvalid("purpose must be 1 to 200 characters: say why the secret is used")
    if actor is not None and len(actor) > 100:
        raise CredentialInvalid("actor must be at most 100 characters")
    if ip_address is not None and len(ip_address) > 45:
        raise CredentialInvalid("ip_address must be at most 45 characters")


def _last4(kind: str, value: str) -> str | None:
    if kind in _NO_LAST4_KINDS or len(value) < _LAST4_MIN_CHARS:
        return None
    return value[-4:]


def _find(session: Session, identity: _Identity, *, lock: bool = False) -> Credential | None:
    statement = select(Credential).where(
        Credential.owner_type == identity.owner_type,
        Credential.owner_id == identity.owner_id,
        Credential.kind == identity.kind,
        Credential.name == identity.name,
    )
    if lock:  # and fresh: another transaction may have changed the row since we loaded it
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return session.scalars(statement).one_or_none()


def _insert_if_absent(
    session: Session,
    identity: _Identity,
    user_id: int,
    ciphertext: bytes,
    key_id: str,
    last4: str | None,
) -> None:
    """Insert the row unless one with this identity exists, without a unique-key error.

    Racing first writes of one secret then queue on the row instead of failing: a plain
    INSERT that hits the unique key takes a shared lock on MariaDB/MySQL, and two such
    transactions deadlock when both go on to update the row.
    """
    values = {
        "user_id": user_id,
        "owner_type": identity.owner_type,
        "owner_id": identity.owner_id,
        "kind": identity.kind,
        "name": identity.name,
        "ciphertext": ciphertext,
        "key_id": key_id,
        "last4": last4,
    }
    dialect = session.get_bind(Credential).dialect.name
    statement: Executable
    if dialect == "postgresql":
        statement = postgresql.insert(Credential).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(Credential).values(values).on_conflict_do_nothing()
    else:  # MariaDB/MySQL: a no-op update takes the row's exclusive lock
        insert_stmt = mysql.insert(Credential).values(values)
        statement = insert_stmt.on_duplicate_key_update(key_id=Credential.__table__.c.key_id)
    session.execute(statement)


def _decrypt_row(row: Credential, keyring: Keyring) -> str:
    key = keyring.get(row.key_id)
    if key is None:
        raise CredentialDecryptionFailed(
            f"credential {row.id} is encrypted under key {row.key_id}, which is not configured"
            f" (active key {keyring.active.key_id}); restore that key, e.g. in"
            " TRADEBASE_PREVIOUS_SECRET_KEYS, or set the secret again",
            details={"credential_id": row.id, "key_id": row.key_id},
        )
    try:
        plaintext = decrypt(key, row.ciphertext, _Identity.of(row).associated_data)
    except DecryptionFailed as exc:
        raise CredentialDecryptionFailed(
            f"credential {row.id} does not decrypt under key {row.key_id}: {exc}",
            details={"credential_id": row.id, "key_id": row.key_id},
        ) from None
    return plaintext.decode("utf-8")


# -- failed reads are recorded even when the caller's transaction rolls back -------------------

_PENDING = "tradebase.credentials.pending_failures"


def _forget_pending(session: Session) -> None:
    if not session.in_nested_transaction():  # the outermost commit kept the log rows
        session.info[_PENDING].clear()


def _persist_pending(session: Session, transaction: SessionTransaction) -> None:
    pending: list[dict[str, Any]] = session.info[_PENDING]
    if transaction.parent is not None or transaction.nested or not pending:
        return
    rows = list(pending)
    pending.clear()
    try:
        bind = session.get_bind(CredentialAccessLog)
        statement = insert(CredentialAccessLog)
        if isinstance(bind, Connection):  # a session joined to an outer transaction
            with bind.begin_nested() if bind.in_transaction() else bind.begin():
                bind.execute(statement, rows)
        else:
            with bind.begin() as connection:
                connection.execute(statement, rows)
    except Exception:
        logger.exception("could not record %d failed credential access(es)", len(rows))


def _record_failure(session: Session, values: dict[str, Any]) -> None:
    """Log a failed access in the caller's transaction, and again on its own if that rolls back.

    The caller usually lets the error roll its unit of work back; the failure must still
    be on record. The second write happens after the transaction has ended (and on SQLite
    released its write lock), in a transaction of its own.
    """
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        event.listen(session, "after_commit", _forget_pending)
        event.listen(session, "after_transaction_end", _persist_pending)
    values = {**values, "success": False, "accessed_at": utc_now()}
    pending.append(values)
    session.add(CredentialAccessLog(**values))
    session.flush()


class CredentialService:
    """Encrypted secrets of users, trading accounts and webhooks.

    Methods take the credentials database's session first and never commit: the caller's
    unit of work does (`rotate_key`, which commits batch by batch, takes a factory).
    """

    def __init__(self, keys: KeyStore | None = None) -> None:
        self._keys = keys
        self._default: tuple[Settings, KeyStore] | None = None
        self._of_engine: weakref.WeakKeyDictionary[Engine, KeyStore] = weakref.WeakKeyDictionary()

    @property
    def keys(self) -> KeyStore:
        """The key store given, or the one the current settings describe."""
        if self._keys is not None:
            return self._keys
        settings = get_settings()
        if self._default is None or self._default[0] is not settings:
            self._default = (settings, KeyStore.from_settings(settings))
        return self._default[1]

    def keys_for(self, bind: Session | Engine | Connection) -> KeyStore:
        """The key store given, or the one of the settings the credentials database's
        engine was made with (an app's own, whatever the process's environment says
        meanwhile); `keys` for an engine made otherwise."""
        if self._keys is not None:
            return self._keys
        engine = (bind.get_bind() if isinstance(bind, Session) else bind).engine
        settings = settings_of_engine(engine)
        if settings is None:
            return self.keys
        found = self._of_engine.get(engine)
        if found is None:
            found = self._of_engine[engine] = KeyStore.from_settings(settings)
        return found

    def set_secret(
        self,
        session: Session,
        *,
        user_id: int,
        owner_type: str,
        owner_id: int,
        kind: str,
        value: str,
        name: str = "default",
        actor: str | None = None,
        actor_user_id: int | None = None,
        purpose: str = "set",
        ip_address: str | None = None,
    ) -> Credential:
        """Encrypt *value* under the active key into the row for this identity, and log it.

        Creates the row or replaces its secret (whatever key the old one was under);
        concurrent first writes of one secret leave one row, the last write winning.
        """
        identity = _identity(owner_type, owner_id, kind, name)
        _check_log_fields(actor, purpose, ip_address)
        if not isinstance(value, str) or not value:
            raise CredentialInvalid("the secret must be a non-empty string")
        plaintext = value.encode("utf-8")
        if len(plaintext) > MAX_SECRET_BYTES:
            raise CredentialInvalid(f"the secret is longer than {MAX_SECRET_BYTES} bytes (UTF-8)")
        keyring = self.keys_for(session).keyring()
        ciphertext = encrypt(keyring.active, plaintext, identity.associated_data)
        key_id = keyring.active.key_id
        _insert_if_absent(session, identity, user_id, ciphertext, key_id, _last4(kind, value))
        row = _find(session, identity, lock=True)
        if row is None:  # pragma: no cover - the row was just inserted or found
            raise CredentialNotFound(f"no credential {identity}")
        # Our ciphertext (fresh nonce) is in the row only if this call inserted it.
        created = row.ciphertext == ciphertext
        action = CredentialAction.create if created else CredentialAction.update
        if row.user_id != user_id:
            raise CredentialOwnerMismatch(
                f"credential {identity} belongs to another user",
                details={"owner_type": owner_type, "owner_id": owner_id, "kind": kind},
            )
        if not created:
            row.ciphertext = ciphertext
            row.key_id = key_id
            row.last4 = _last4(kind, value)
        session.flush()
        session.add(
            CredentialAccessLog(
                credential_id=row.id,
                user_id=actor_user_id,
                actor=actor,
                action=action,
                purpose=purpose,
                success=True,
                ip_address=ip_address,
            )
        )
        session.flush()
        return row

    def read_secret(
        self,
        session: Session,
        *,
        owner_type: str,
        owner_id: int,
        kind: str,
        name: str = "default",
        actor: str | None,
        actor_user_id: int | None,
        purpose: str,
        ip_address: str | None = None,
    ) -> str:
        """Decrypt and return the secret, writing an access-log row in the same transaction.

        A failed read (no such secret, or it does not decrypt) is logged with success
        false, and stays logged even when the caller's transaction rolls back.
        """
        identity = _identity(owner_type, owner_id, kind, name)
        _check_log_fields(actor, purpose, ip_address)
        log = {
            "user_id": actor_user_id,
            "actor": actor,
            "action": CredentialAction.read.value,
            "purpose": purpose,
            "ip_address": ip_address,
        }
        row = _find(session, identity)
        if row is None:
            message = f"no credential {identity}"
            _record_failure(session, {**log, "credential_id": None, "error": message})
            raise CredentialNotFound(message)
        try:
            value = _decrypt_row(row, self.keys_for(session).keyring())
        except CredentialDecryptionFailed as exc:
            _record_failure(session, {**log, "credential_id": row.id, "error": exc.message})
            raise
        session.add(CredentialAccessLog(credential_id=row.id, success=True, **log))
        session.flush()
        return value

    def describe(
        self,
        session: Session,
        *,
        owner_type: str,
        owner_id: int,
        kind: str,
        name: str = "default",
    ) -> SecretInfo:
        """Return whether the secret is set and its last 4 characters; no decryption, no log.

        ``last4`` is None for passwords, TOTP secrets and secrets under 12 characters.
        """
        row = _find(session, _identity(owner_type, owner_id, kind, name))
        if row is None:
            return SecretInfo(is_set=False)
        return SecretInfo(is_set=True, last4=row.last4, updated_at=row.updated_at)

    def delete_secret(
        self,
        session: Session,
        *,
        owner_type: str,
        owner_id: int,
        kind: str,
        name: str = "default",
        actor: str | None,
        actor_user_id: int | None,
        purpose: str = "delete",
        ip_address: str | None = None,
    ) -> bool:
        """Delete the secret and log it; False when there was none.

        The log row's ``credential_id`` becomes NULL with the row (``ON DELETE SET NULL``),
        so its purpose also names the identity that was deleted.
        """
        identity = _identity(owner_type, owner_id, kind, name)
        _check_log_fields(actor, purpose, ip_address)
        row = _find(session, identity, lock=True)
        if row is None:
            return False
        session.add(
            CredentialAccessLog(
                credential_id=row.id,
                user_id=actor_user_id,
                actor=actor,
                action=CredentialAction.delete,
                purpose=f"{purpose} [{identity}]"[:200],
                success=True,
                ip_address=ip_address,
            )
        )
        session.flush()
        session.delete(row)
        session.flush()
        return True

    def key_usage(self, session: Session) -> dict[str, int]:
        """Return how many secrets each key id encrypts."""
        counts = session.execute(
            select(Credential.key_id, func.count()).group_by(Credential.key_id)
        ).all()
        return {key_id: count for key_id, count in counts}

    def rotate_key(
        self,
        *,
        factory: sessionmaker[Session] | None = None,
        new_key: MasterKey | None = None,
        batch_size: int = 500,
        progress: ProgressCallback | None = None,
        actor: str | None = "rotate-key",
        actor_user_id: int | None = None,
    ) -> RotationResult:
        """Re-encrypt every secret under the active key, batch by batch, then retire old keys.

        Key file: *new_key* (or a generated key) becomes the active key first, and the old
        one stays in the file, decrypt-only, so running servers still read every row. An
        interrupted run is finished by running again (the rows' ``key_id`` say what is
        left). When no row is under an old key any more, the old keys leave the key file.
        With TRADEBASE_SECRET_KEY set, the operator has already made the new key active
        and listed the old ones in TRADEBASE_PREVIOUS_SECRET_KEYS; the result names the
        ids to remove from there. Each batch is its own transaction; rows that do not
        decrypt are skipped, logged and reported, and keep the old keys from retiring.
        """
        if batch_size < 1:
            raise CredentialInvalid("batch_size must be at least 1")
        keys = self.keys_for(factory.kw["bind"]) if factory is not None else self.keys
        with keys.rotation_lock():
            keyring = keys.begin_rotation(new_key)
            active = keyring.active.key_id
            total = self._count_not_under(factory, active)
            if keys.from_environment and not keyring.previous and total == 0:
                raise KeyRotationRefused(
                    f"every secret is already under key {active} (TRADEBASE_SECRET_KEY). To"
                    " rotate: run `tradebase credentials generate-key`, set TRADEBASE_SECRET_KEY"
                    " to the new key and TRADEBASE_PREVIOUS_SECRET_KEYS to the current one,"
                    " restart Tradebase, then run rotate-key again"
                )
            done = 0
            failed: dict[int, str] = {}
            if progress:
                progress(0, total)
            remaining = total
            for _ in range(3):  # later passes catch rows written under an old key meanwhile
                last_id = 0
                while True:
                    with unit_of_work(Database.credentials, write=True, factory=factory) as s:
                        rows = s.scalars(
                            select(Credential)
                            .where(Credential.key_id != active, Credential.id > last_id)
                            .order_by(Credential.id)
                            .limit(batch_size)
                            .with_for_update()
                        ).all()
                        if not rows:
                            break
                        last_id = rows[-1].id
                        batch_done = self._reencrypt(s, rows, keyring, failed, actor, actor_user_id)
                    done += batch_done
                    if progress:
                        handled = done + len(failed)
                        progress(handled, max(total, handled))
                remaining = self._count_not_under(factory, active)
                if remaining <= len(failed):
                    break
            retired: tuple[str, ...] = ()
            finished = remaining == 0
            if finished:
                retired = keys.retire_previous()
                with unit_of_work(Database.credentials, write=True, factory=factory) as s:
                    s.add(
                        CredentialAccessLog(
                            credential_id=None,
                            user_id=actor_user_id,
                            actor=actor,
                            action=CredentialAction.rotate,
                            purpose=f"rotation to key {active} finished; retired"
                            f" {', '.join(retired) or 'no key file keys'}"[:200],
                            success=True,
                        )
                    )
            still_configured = tuple(k.key_id for k in keys.keyring().previous)
            return RotationResult(
                active_key_id=active,
                total=total,
                reencrypted=done,
                failed=failed,
                remaining=remaining,
                finished=finished,
                retired_key_ids=retired,
                keys_to_remove=still_configured if finished else (),
            )

    def _count_not_under(self, factory: sessionmaker[Session] | None, key_id: str) -> int:
        with unit_of_work(Database.credentials, write=False, factory=factory) as session:
            count = session.scalar(
                select(func.count()).select_from(Credential).where(Credential.key_id != key_id)
            )
        return int(count or 0)

    def _reencrypt(
        self,
        session: Session,
        rows: Sequence[Credential],
        keyring: Keyring,
        failed: dict[int, str],
        actor: str | None,
        actor_user_id: int | None,
    ) -> int:
        active = keyring.active
        now = utc_now()
        done = 0
        for row in rows:
            old_key_id = row.key_id
            try:
                value = _decrypt_row(row, keyring)
            except CredentialDecryptionFailed as exc:
                failed[row.id] = exc.message
                error: str | None = exc.message
            else:
                row.ciphertext = encrypt(
                    active, value.encode("utf-8"), _Identity.of(row).associated_data
                )
                row.key_id = active.key_id
                row.rotated_at = now
                failed.pop(row.id, None)
                error = None
                done += 1
            session.add(
                CredentialAccessLog(
                    credential_id=row.id,
                    user_id=actor_user_id,
                    actor=actor,
                    action=CredentialAction.rotate,
                    purpose=f"re-encrypt from key {old_key_id} to key {active.key_id}",
                    success=error is None,
                    error=error,
                )
            )
        return done


credential = CredentialService()
