"""What the credentials service hands out: never a secret except through `read_secret`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class SecretInfo(BaseModel):
    """Whether a secret is set and, for long non-password secrets, its last 4 characters."""

    model_config = ConfigDict(frozen=True)

    is_set: bool
    last4: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class RotationResult:
    """The outcome of one ``rotate-key`` run."""

    active_key_id: str
    total: int  # rows not under the active key when the run started
    reencrypted: int
    failed: dict[int, str]  # credential id -> why it could not be re-encrypted
    remaining: int  # rows still not under the active key (failed, or written meanwhile)
    finished: bool  # every row is now under the active key
    retired_key_ids: tuple[str, ...]  # removed from the key file by this run
    keys_to_remove: tuple[str, ...]  # ids still configured in TRADEBASE_PREVIOUS_SECRET_KEYS
