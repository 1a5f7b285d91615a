"""The cipher, master keys and the key file: no database needed."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tradebase.config import Settings
from tradebase.core.crypto import (
    DecryptionFailed,
    KeyRotationRefused,
    KeyStore,
    MasterKey,
    MasterKeyError,
    decrypt,
    encrypt,
    read_key_file,
)

# A fixed key, so that expected values can be worked out by hand below.
MATERIAL = bytes(range(32))
KEY = MasterKey(MATERIAL)


def test_the_blob_is_version_nonce_and_aes_256_gcm_under_an_hkdf_key() -> None:
    # Decrypt with cryptography directly, following docs/credentials.md, not the module.
    blob = encrypt(KEY, b"hunter2", b"row-identity")
    working_key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"tradebase/credentials/aes-256-gcm/v1",
    ).derive(MATERIAL)
    assert blob[0] == 1
    assert len(blob) == 1 + 12 + len(b"hunter2") + 16
    plaintext = AESGCM(working_key).decrypt(blob[1:13], blob[13:], b"\x01row-identity")
    assert plaintext == b"hunter2"


def test_every_encryption_uses_a_fresh_nonce() -> None:
    blobs = {encrypt(KEY, b"same secret", b"ad") for _ in range(50)}
    assert len(blobs) == 50
    assert len({blob[1:13] for blob in blobs}) == 50


def test_the_key_id_is_a_short_domain_separated_hash() -> None:
    expected = hashlib.sha256(b"tradebase/key-id/v1\0" + MATERIAL).hexdigest()[:16]
    assert KEY.key_id == expected
    assert MasterKey.generate().key_id != KEY.key_id
    assert MATERIAL.hex() not in repr(KEY) and KEY.encode() not in repr(KEY)
    store = KeyStore(key_file=Path("k"), secret_key=KEY.encode(), previous_keys=KEY.encode())
    assert KEY.encode() not in repr(store)


@pytest.mark.parametrize(
    "change",
    ["wrong key", "other associated data", "flipped bit", "truncated", "unknown version"],
)
def test_anything_but_the_right_key_and_data_raises_never_garbage(change: str) -> None:
    blob = encrypt(KEY, b"secret", b"account/1")
    key, data = KEY, b"account/1"
    if change == "wrong key":
        key = MasterKey.generate()
    elif change == "other associated data":
        data = b"account/2"
    elif change == "flipped bit":
        blob = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    elif change == "truncated":
        blob = blob[:20]
    else:
        blob = b"\x02" + blob[1:]
    with pytest.raises(DecryptionFailed):
        decrypt(key, blob, data)
    assert decrypt(KEY, encrypt(KEY, b"secret", b"account/1"), b"account/1") == b"secret"


def test_a_key_reads_back_from_base64_and_hex() -> None:
    assert MasterKey.parse(KEY.encode(), source="x") == KEY
    assert len(KEY.encode()) == 43
    assert MasterKey.parse(MATERIAL.hex(), source="x") == KEY
    assert MasterKey.parse(base64.b64encode(MATERIAL).decode(), source="x") == KEY  # padded
    assert MasterKey.parse(f"  {KEY.encode()}\n", source="x") == KEY


@pytest.mark.parametrize(
    "text",
    [
        "",
        "change-me",
        "x" * 43,  # base64 alphabet, but not canonical base64 of 32 bytes
        base64.urlsafe_b64encode(bytes(range(31))).decode(),  # 31 bytes
        base64.urlsafe_b64encode(bytes(range(33))).decode(),  # 33 bytes
        "A" * 43,  # decodes to 32 zero bytes: a placeholder
        "0" * 64,
        "g" * 64,  # 64 characters, not hex, not base64 of 32 bytes
    ],
)
def test_an_unusable_key_is_one_line_naming_the_setting_without_the_value(text: str) -> None:
    with pytest.raises(MasterKeyError) as info:
        MasterKey.parse(text, source="TRADEBASE_SECRET_KEY")
    message = str(info.value)
    assert message.startswith("TRADEBASE_SECRET_KEY: not a usable key")
    assert "\n" not in message
    assert "generate-key" in message
    if len(text) > 3:
        assert text not in message


def test_a_wrong_secret_key_setting_fails_when_the_key_store_is_built(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="too-short")
    with pytest.raises(MasterKeyError, match=r"^TRADEBASE_SECRET_KEY: not a usable key"):
        KeyStore.from_settings(settings)
    settings = Settings(
        data_dir=tmp_path, secret_key=KEY.encode(), previous_secret_keys=f"{KEY.encode()},nope"
    )
    with pytest.raises(MasterKeyError, match=r"^TRADEBASE_PREVIOUS_SECRET_KEYS \(key 2\)"):
        KeyStore.from_settings(settings)


def test_the_environment_key_is_active_and_previous_keys_only_added(tmp_path: Path) -> None:
    old1, old2 = MasterKey.generate(), MasterKey.generate()
    settings = Settings(
        data_dir=tmp_path,
        secret_key=KEY.encode(),
        previous_secret_keys=f"{old1.encode()}, {old2.encode()}",
    )
    keys = KeyStore.from_settings(settings)
    keyring = keys.keyring()
    assert keys.from_environment
    assert keyring.active == KEY
    assert keyring.previous == (old1, old2)
    assert keyring.get(old2.key_id) == old2
    assert keyring.get(MasterKey.generate().key_id) is None
    assert not (tmp_path / "secret.key").exists()  # no key file when the key is set


def test_the_key_file_is_created_on_first_use_with_mode_0600(tmp_path: Path) -> None:
    keys = KeyStore.from_settings(Settings(data_dir=tmp_path / "data"))
    path = tmp_path / "data" / "secret.key"
    assert not path.exists()
    old_umask = os.umask(0o022)  # a usual umask would give 0644
    try:
        active = keys.keyring().active
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == [active]
    assert active.encode() in path.read_text()
    # A second store (another process) finds the same key; nothing is left behind.
    assert KeyStore(key_file=path).keyring().active == active
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret.key"]


def test_the_key_file_setting_moves_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", key_file=tmp_path / "keys" / "tb.key")
    KeyStore.from_settings(settings).keyring()
    assert (tmp_path / "keys" / "tb.key").exists()
    assert not (tmp_path / "data" / "secret.key").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_may_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret.key"
    KeyStore(key_file=path).keyring()
    path.chmod(mode)
    with pytest.raises(MasterKeyError) as info:
        KeyStore(key_file=path).keyring()
    assert str(info.value) == (
        f"key file {path} is accessible by group or others (mode {mode:04o}); "
        f"make it private with: chmod 600 {path}"
    )
    path.chmod(0o600)
    KeyStore(key_file=path).keyring()


def test_a_damaged_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("# nothing here\n")
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match="holds no key"):
        KeyStore(key_file=path).keyring()
    path.write_text(f"{KEY.encode()}\nnot-a-key\n")
    with pytest.raises(MasterKeyError, match=rf"^key file {path} line 2: not a usable key"):
        KeyStore(key_file=path).keyring()


def test_a_running_store_sees_the_rotated_key_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    server = KeyStore(key_file=path)
    old = server.keyring().active
    new = MasterKey.generate()
    keyring = KeyStore(key_file=path).begin_rotation(new)  # another process rotates
    assert (keyring.active, keyring.previous) == (new, (old,))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server.keyring().active == new and server.keyring().get(old.key_id) == old
    assert KeyStore(key_file=path).retire_previous() == (old.key_id,)
    assert server.keyring().previous == ()
    assert read_key_file(path) == [new]


def test_an_unfinished_rotation_is_resumed_not_restarted(tmp_path: Path) -> None:
    keys = KeyStore(key_file=tmp_path / "secret.key")
    old = keys.keyring().active
    first = keys.begin_rotation()
    assert first.active != old and first.previous == (old,)
    assert keys.begin_rotation() == first  # no second new key
    assert keys.begin_rotation(first.active) == first
    with pytest.raises(KeyRotationRefused, match="unfinished"):
        keys.begin_rotation(MasterKey.generate())
    keys.retire_previous()
    with pytest.raises(KeyRotationRefused, match="already the active key"):
        keys.begin_rotation(first.active)


def test_with_the_environment_key_the_new_key_must_come_from_there(tmp_path: Path) -> None:
    keys = KeyStore(key_file=tmp_path / "secret.key", secret_key=KEY.encode())
    with pytest.raises(KeyRotationRefused, match="TRADEBASE_SECRET_KEY is set"):
        keys.begin_rotation(MasterKey.generate())
    assert keys.begin_rotation(KEY).active == KEY
    assert keys.retire_previous() == ()
    assert not (tmp_path / "secret.key").exists()


def test_one_rotation_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    refused = pytest.raises(KeyRotationRefused, match="another rotate-key is running")
    with KeyStore(key_file=path).rotation_lock(), refused, KeyStore(key_file=path).rotation_lock():
        pass
    with KeyStore(key_file=path).rotation_lock():
        pass
