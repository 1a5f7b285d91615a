"""Price bars in and out."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from tradebase.accounts.schemas import Strict

Price = Annotated[Decimal, Field(max_digits=38, decimal_places=18, ge=0)]


class BarIn(Strict):
    timestamp: AwareDatetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Price = Decimal(0)
    vwap: Price | None = None
    num_trades: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> BarIn:
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise ValueError("a bar needs low <= open, close <= high")
        return self


class BarsIn(Strict):
    symbol: str = Field(min_length=1, max_length=50)
    exchange: str = Field(default="paper", min_length=1, max_length=50)
    timeframe: str = Field(default="1m", pattern=r"^\d+[smhdwM]$")
    bars: list[BarIn] = Field(min_length=1, max_length=10_000)


class BarsResult(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    stored: int
    duplicates: int
    fills: int
