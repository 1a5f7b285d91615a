"""Authenticated encryption of secrets at rest, and the master keys it uses.

* Cipher: AES-256-GCM (``cryptography``) with a fresh random 96-bit nonce per encryption.
  The blob is ``version (1 byte) | nonce (12) | ciphertext | tag (16)``; the caller's
  associated data (for credentials, the row's identity) is authenticated but not stored,
  so a blob moved to another row, or under another key, fails to decrypt instead of
  yielding garbage.
* Master keys are 32 random bytes, written as URL-safe base64 (43 characters). They are
  never used directly: each use derives its own key with HKDF-SHA256, so the credentials
  cipher and, say, session signing never share key material. A key is named by its *key
  id*, a 16-hex-digit hash stored next to each ciphertext; the id reveals nothing of the key.
* Where the keys come from (`KeyStore`): ``TRADEBASE_SECRET_KEY`` when set, else a key
  file (``DATA_DIR/secret.key``) created with mode 0600 on first use and refused when
  group or others may read it. The first key is *active* (it encrypts); the others
  (further lines of the key file, ``TRADEBASE_PREVIOUS_SECRET_KEYS``) only decrypt, while
  ``tradebase credentials rotate-key`` re-encrypts rows under the active key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tradebase.config import Settings, SettingsError
from tradebase.core.errors import Conflict

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
FORMAT_V1 = 1
KEY_FILE_NAME = "secret.key"
_CREDENTIALS_PURPOSE = "tradebase/credentials/aes-256-gcm/v1"
_GENERATE_HINT = "generate one with: tradebase credentials generate-key"


class MasterKeyError(SettingsError):
    """The master key is missing, malformed or exposed; the message says how to fix it."""


class DecryptionFailed(Exception):
    """The blob was not made by this key with this associated data (wrong key, moved, altered)."""


class KeyRotationRefused(Conflict):
    """A key rotation cannot start as asked; the message says what to do instead."""

    code = "key_rotation_refused"


@dataclass(frozen=True, repr=False)
class MasterKey:
    """32 random bytes from which every working key is derived."""

    material: bytes

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ValueError(f"a master key is {KEY_BYTES} bytes, not {len(self.material)}")

    def __repr__(self) -> str:  # never show the material, e.g. in tracebacks
        return f"MasterKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> MasterKey:
        """Return a new random key."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def parse(cls, text: str, *, source: str) -> MasterKey:
        """Read a key written as URL-safe base64 (43 characters) or hex (64 characters).

        *source* names where the text came from (a setting, a file line) in the one-line
        error raised when it is unusable; the error never contains the text itself.
        """
        raw = text.strip()
        material: bytes | None = None
        if len(raw) == 2 * KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in raw):
            material = bytes.fromhex(raw)
        elif raw:
            padded = raw.replace("+", "-").replace("/", "_").rstrip("=")
            try:
                decoded = base64.urlsafe_b64decode(padded + "=" * (-len(padded) % 4))
            except (binascii.Error, ValueError):
                decoded = b""
            if len(decoded) == KEY_BYTES and base64.urlsafe_b64encode(decoded).rstrip(
                b"="
            ) == padded.encode("ascii", "replace"):
                material = decoded
        if material is None:
            raise MasterKeyError(
                f"{source}: not a usable key: expected {KEY_BYTES} random bytes as URL-safe"
                f" base64 (43 characters) or hex (64 characters), got {len(raw)} characters;"
                f" {_GENERATE_HINT}"
            )
        if len(set(material)) < 8:  # e.g. all zeros: a placeholder, not a random key
            raise MasterKeyError(
                f"{source}: not a usable key: it is not random (a placeholder?); {_GENERATE_HINT}"
            )
        return cls(material)

    def encode(self) -> str:
        """Return the key as URL-safe base64 without padding, the form `parse` reads."""
        return base64.urlsafe_b64encode(self.material).rstrip(b"=").decode("ascii")

    @cached_property
    def key_id(self) -> str:
        """A short public name for the key: a domain-separated SHA-256, 16 hex digits."""
        return hashlib.sha256(b"tradebase/key-id/v1\0" + self.material).hexdigest()[:16]

    def derive(self, purpose: str, length: int = KEY_BYTES) -> bytes:
        """Derive the working key for *purpose* (HKDF-SHA256); one purpose, one key."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
        return hkdf.derive(self.material)

    @cached_property
    def _aead(self) -> AESGCM:
        return AESGCM(self.derive(_CREDENTIALS_PURPOSE))


@dataclass(frozen=True)
class Keyring:
    """The active key, which encrypts, and earlier keys that are still accepted to decrypt."""

    active: MasterKey
    previous: tuple[MasterKey, ...] = ()

    def get(self, key_id: str) -> MasterKey | None:
        """Return the key named *key_id*, or None when it is not configured."""
        for key in (self.active, *self.previous):
            if key.key_id == key_id:
                return key
        return None

    @property
    def previous_ids(self) -> tuple[str, ...]:
        return tuple(key.key_id for key in self.previous)


def encrypt(key: MasterKey, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt *plaintext* bound to *associated_data*, under a fresh random nonce."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    header = bytes([FORMAT_V1])
    return header + nonce + key._aead.encrypt(nonce, plaintext, header + associated_data)


def decrypt(key: MasterKey, blob: bytes, associated_data: bytes) -> bytes:
    """Decrypt a blob from `encrypt`, or raise `DecryptionFailed`; never return garbage."""
    blob = bytes(blob)
    if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[0] != FORMAT_V1:
        raise DecryptionFailed("not a Tradebase ciphertext (unknown format or truncated)")
    nonce = blob[1 : 1 + NONCE_BYTES]
    try:
        return key._aead.decrypt(nonce, blob[1 + NONCE_BYTES :], blob[:1] + associated_data)
    except InvalidTag:
        raise DecryptionFailed(
            "authentication failed: wrong key, or the ciphertext was altered or moved"
        ) from None


# -- where the keys live --------------------------------------------------------------------

_KEY_FILE_HEADER = """\
# Tradebase master keys. The first key encrypts; any further keys only decrypt, until
# `tradebase credentials rotate-key` has re-encrypted every secret and retires them.
# Keep this file private (chmod 600) and back it up apart from the databases:
# without it the encrypted credentials cannot be read.
"""


def _private_mode_problem(path: Path) -> str | None:
    if sys.platform == "win32":  # no POSIX modes; NTFS ACLs are the user's job
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return (
            f"key file {path} is accessible by group or others (mode {mode:04o}); "
            f"make it private with: chmod 600 {path}"
        )
    return None


def read_key_file(path: Path) -> list[MasterKey]:
    """Read the keys of a key file, refusing one that group or others may read."""
    problem = _private_mode_problem(path)
    if problem:
        raise MasterKeyError(problem)
    keys: list[MasterKey] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            keys.append(MasterKey.parse(text, source=f"key file {path} line {number}"))
    if not keys:
        raise MasterKeyError(
            f"key file {path} holds no key; restore it from a backup, or delete it to have"
            " a new key made (secrets encrypted under the old key are then lost)"
        )
    return keys


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if sys.platform != "win32":
            os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_file_text(keys: list[MasterKey]) -> str:
    lines = [_KEY_FILE_HEADER]
    for index, key in enumerate(keys):
        role = "active key" if index == 0 else "previous key, decrypt only"
        lines.append(f"# {role}, id {key.key_id}\n{key.encode()}\n")
    return "".join(lines)


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def write_key_file(path: Path, keys: list[MasterKey]) -> None:
    """Replace the key file atomically (a private temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        _write_private(tmp, _key_file_text(keys))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MasterKeyError(f"cannot write key file {path}: {exc.strerror or exc}") from exc
    if sys.platform != "win32":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def create_key_file(path: Path) -> bool:
    """Create *path* with one new key, mode 0600, unless it exists; True when created.

    The file appears complete or not at all (written aside, then hard-linked into place),
    so two processes starting at once agree on one key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    _write_private(tmp, _key_file_text([MasterKey.generate()]))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def default_key_file(settings: Settings) -> Path:
    return settings.key_file or settings.data_dir / KEY_FILE_NAME


def _parse_key_list(text: str, *, source: str) -> tuple[MasterKey, ...]:
    items = [item for item in text.replace("\n", ",").split(",") if item.strip()]
    return tuple(
        MasterKey.parse(item, source=f"{source} (key {number})")
        for number, item in enumerate(items, start=1)
    )


@dataclass
class KeyStore:
    """The master keys, from ``TRADEBASE_SECRET_KEY`` or from the key file.

    Environment keys are parsed (and refused when unusable) on construction. The key file
    is created on first use and read again whenever it changes on disk, so a running
    server picks up the new key the moment ``rotate-key`` writes it.
    """

    key_file: Path
    secret_key: str | None = field(default=None, repr=False)
    previous_keys: str | None = field(default=None, repr=False)
    _env_keyring: Keyring | None = field(default=None, init=False, repr=False)
    _extra_previous: tuple[MasterKey, ...] = field(default=(), init=False, repr=False)
    _file_cache: tuple[tuple[int, int, int, int], Keyring] | None = field(
        default=None, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.previous_keys:
            self._extra_previous = _parse_key_list(
                self.previous_keys, source="TRADEBASE_PREVIOUS_SECRET_KEYS"
            )
        if self.secret_key is not None:
            active = MasterKey.parse(self.secret_key, source="TRADEBASE_SECRET_KEY")
            previous = tuple(k for k in self._extra_previous if k.key_id != active.key_id)
            self._env_keyring = Keyring(active, previous)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        """Build the key store the settings describe; an unusable key raises here."""
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        previous = settings.previous_secret_keys
        return cls(
            key_file=default_key_file(settings).expanduser(),
            secret_key=secret if secret else None,
            previous_keys=previous.get_secret_value() if previous else None,
        )

    @property
    def from_environment(self) -> bool:
        """True when the active key is TRADEBASE_SECRET_KEY, not the key file."""
        return self._env_keyring is not None

    def keyring(self) -> Keyring:
        """Return the current keys, creating the key file on first use."""
        if self._env_keyring is not None:
            return self._env_keyring
        path = self.key_file
        try:
            st = path.stat()
        except FileNotFoundError:
            create_key_file(path)
            st = path.stat()
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if self._file_cache is not None and self._file_cache[0] == stamp:
            return self._file_cache[1]
        keys = read_key_file(path)
        seen = {key.key_id for key in keys}
        extra = tuple(k for k in self._extra_previous if k.key_id not in seen)
        keyring = Keyring(keys[0], (*keys[1:], *extra))
        self._file_cache = (stamp, keyring)
        return keyring

    def begin_rotation(self, new_key: MasterKey | None = None) -> Keyring:
        """Make the key rotation's target key active and return the keyring to rotate with.

        Key file: an unfinished rotation (previous keys still listed) is resumed; otherwise
        *new_key*, or a generated key, is written first in the file and the old keys after
        it, before any row is touched. Environment: the active key is TRADEBASE_SECRET_KEY,
        which only the operator can change, so *new_key* must be that key.
        """
        keyring = self.keyring()
        if self._env_keyring is not None:
            if new_key is not None and new_key.key_id != keyring.active.key_id:
                raise KeyRotationRefused(
                    "TRADEBASE_SECRET_KEY is set, so the new key must come from there: set"
                    " TRADEBASE_SECRET_KEY to the new key and TRADEBASE_PREVIOUS_SECRET_KEYS to"
                    " the current one, restart Tradebase, then run rotate-key again"
                )
            return keyring
        if keyring.previous:
            if new_key is not None and new_key.key_id != keyring.active.key_id:
                raise KeyRotationRefused(
                    f"a rotation to key {keyring.active.key_id} is unfinished: run rotate-key"
                    " without --new-key to finish it first"
                )
            return keyring
        if new_key is not None and new_key.key_id == keyring.active.key_id:
            raise KeyRotationRefused(f"key {new_key.key_id} is already the active key")
        target = new_key or MasterKey.generate()
        write_key_file(self.key_file, [target, keyring.active])
        return self.keyring()

    def retire_previous(self) -> tuple[str, ...]:
        """Drop every key but the active one from the key file; return the retired ids.

        Keys from TRADEBASE_PREVIOUS_SECRET_KEYS are not touched (the operator removes
        them); with TRADEBASE_SECRET_KEY set this writes nothing.
        """
        if self._env_keyring is not None:
            return ()
        in_file = read_key_file(self.key_file)
        if len(in_file) > 1:
            write_key_file(self.key_file, [in_file[0]])
        return tuple(key.key_id for key in in_file[1:])

    @contextlib.contextmanager
    def rotation_lock(self) -> Iterator[None]:
        """Hold an exclusive lock beside the key file so that one rotation runs at a time."""
        if self._env_keyring is not None or sys.platform == "win32":
            yield
            return
        import fcntl

        lock_path = self.key_file.with_name(self.key_file.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KeyRotationRefused(
                    f"another rotate-key is running (it holds {lock_path}); wait for it to end"
                ) from None
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
