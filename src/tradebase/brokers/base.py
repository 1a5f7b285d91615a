"""The broker interface: what the paper broker and every live adapter provide."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class Execution:
    """A fill as a broker reports it."""

    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str | None = None
    exchange_trade_id: str | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


class Broker(Protocol):
    """Place, cancel and ask about orders on one trading account."""

    name: str

    def execute_market(
        self,
        *,
        symbol: str,
        exchange: str,
        side: str,
        quantity: Decimal,
        price_hint: Decimal | None,
    ) -> Execution:
        """Fill a market order now, or raise a domain error saying why not."""
        ...

    def health(self) -> Health: ...
