"""Idempotency keys of signals: the same signal again within the window is the same key.

TradingView's ``{{strategy.order.id}}`` is an entry name ("Long") that repeats with every
trade, so a sender's order_id alone cannot be the key for ever; it is the key within a
window of W seconds. Cutting time into fixed windows would let two copies sent a moment
apart, across a window's edge, get different keys. So each signal has two keys, on two
grids of 2W-second windows offset by W, each under its own unique index: two copies less
than W apart fall into one window on at least one grid (the edges of the two grids
together are W apart, so no gap shorter than W crosses two of them), and collide there.
Copies more than 2W apart never collide. The database enforces it; no process memory.
"""

from __future__ import annotations

import hashlib
from datetime import datetime


def base_key(sender_order_id: str | None, raw: bytes) -> str:
    """What identifies the signal: the sender's order_id, else the whole raw body."""
    if sender_order_id is not None:
        return "order_id:" + sender_order_id
    return "body:" + hashlib.sha256(raw).hexdigest()


def window_keys(base: str, at: datetime, window_seconds: int) -> tuple[str, str]:
    """The key on the plain grid and on the shifted grid, for a signal received *at*."""
    seconds = int(at.timestamp())
    span = 2 * window_seconds
    plain = seconds // span
    shifted = (seconds + window_seconds) // span
    return _digest(f"{base}|a{plain}"), _digest(f"{base}|b{shifted}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
