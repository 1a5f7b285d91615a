"""The built-in paper broker: fills at a reference price, moved by slippage, with fees.

Market orders fill at the reference price (the order's price hint, else the latest close
in price_data), moved by ``slippage_bps`` basis points against the taker (up for a buy,
down for a sell), with a fee of ``fee_rate`` x value.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradebase.brokers.base import Execution, Health
from tradebase.brokers.errors import NoPrice
from tradebase.core.money import quantize
from tradebase.marketdata.models import PriceData

_BPS = Decimal(10_000)


class PaperBroker:
    name = "paper"

    def __init__(
        self, session: Session, *, fee_rate: Decimal, slippage_bps: Decimal, currency: str = "USD"
    ) -> None:
        self.session = session
        self.fee_rate = fee_rate
        self.slippage_bps = slippage_bps
        self.currency = currency

    def reference_price(self, symbol: str, exchange: str, hint: Decimal | None) -> Decimal:
        if hint is not None:
            return hint
        close = self.session.scalar(
            select(PriceData.close)
            .where(PriceData.symbol == symbol, PriceData.exchange == exchange)
            .order_by(PriceData.timestamp.desc())
            .limit(1)
        )
        if close is None:
            raise NoPrice(
                f"no price for {symbol}: send a price hint or post bars to /api/v1/prices",
                details={"symbol": symbol, "exchange": exchange},
            )
        return close

    def fill_price(self, reference: Decimal, side: str) -> Decimal:
        move = reference * self.slippage_bps / _BPS
        return quantize(reference + move if side == "buy" else reference - move)

    def fee(self, value: Decimal) -> Decimal:
        return quantize(value * self.fee_rate)

    def execute_market(
        self,
        *,
        symbol: str,
        exchange: str,
        side: str,
        quantity: Decimal,
        price_hint: Decimal | None,
    ) -> Execution:
        price = self.fill_price(self.reference_price(symbol, exchange, price_hint), side)
        return Execution(quantity, price, self.fee(quantity * price), self.currency)

    def health(self) -> Health:
        return Health(True, "the paper broker is always up")
