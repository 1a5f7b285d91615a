"""Tradebase: a self-hosted trading server with one relational database at its heart.

``tradebase.connect(url, user=...)`` opens one from Python (see `tradebase.client`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Tradebase", "__version__", "connect"]

if TYPE_CHECKING:
    from tradebase.client import Tradebase, connect


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI and the server should not pay for pandas.
    if name in ("Tradebase", "connect"):
        from tradebase import client

        return getattr(client, name)
    raise AttributeError(f"module 'tradebase' has no attribute {name!r}")
