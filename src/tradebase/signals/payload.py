"""A signal's body, read the way senders write it: JSON (as application/json or as
text/plain, which is what TradingView posts when it does not recognise the message as
JSON), with the field names people use (``ticker`` for ``symbol``, ``action`` for
``direction``, ``contracts`` for ``quantity``, ...).

Parsing never raises on a bad field: it keeps every field that is right and the first
problem, so that a refused signal is stored with what could be read and a precise error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tradebase.core.money import check_fits, to_decimal
from tradebase.orders.models import OrderSide, OrderType
from tradebase.portfolios.models import Product
from tradebase.signals.models import TradeAction

# Canonical name -> the names accepted for it, first match wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "order_id": ("order_id",),
    "symbol": ("symbol", "ticker"),
    "exchange": ("exchange",),
    "direction": ("direction", "action", "side"),
    "quantity": ("quantity", "qty", "contracts"),
    "price": ("price",),
    "order_type": ("order_type",),
    "limit_price": ("limit_price",),
    "stop_price": ("stop_price",),
    "position_size": ("position_size",),
    "trade_action": ("trade_action",),
    "hedging_enabled": ("hedging_enabled",),
    "deal_id": ("deal_id",),
    "strategy": ("strategy",),
    "account": ("account",),
    "portfolio": ("portfolio",),
    "product": ("product",),
    "comment": ("comment",),
    "timestamp": ("timestamp",),
}
KEY_FIELDS = ("key", "passphrase")  # the webhook key, when it is not in the path

_ORDER_TYPES = {
    "market": OrderType.market,
    "limit": OrderType.limit,
    "stop": OrderType.stop_loss,
    "stop_loss": OrderType.stop_loss,
    "stop_market": OrderType.stop_loss,
    "slm": OrderType.stop_loss,
    "stop_limit": OrderType.stop_limit,
    "sl": OrderType.stop_limit,
}
_LENGTHS = {
    "order_id": 200,
    "symbol": 50,
    "exchange": 50,
    "deal_id": 100,
    "comment": 500,
    "strategy": 100,
    "account": 100,
    "portfolio": 100,
}


class PayloadError(Exception):
    """The body is not a JSON object (nothing can be read from it)."""


@dataclass
class SignalFields:
    """What a signal asks for, every field checked; ``error`` is the first problem (with
    ``error_field``), None when the signal can be executed as far as its body goes."""

    order_id: str | None = None
    symbol: str | None = None
    exchange: str | None = None
    direction: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    order_type: str | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    position_size: Decimal | None = None
    trade_action: str | None = None
    hedging_enabled: bool = False
    deal_id: str | None = None
    strategy: str | None = None
    account: str | None = None
    portfolio: str | None = None
    product: str | None = None
    comment: str | None = None
    timestamp: datetime | None = None
    error: str | None = None
    error_field: str | None = None
    unknown: list[str] = field(default_factory=list)

    def refuse(self, name: str, message: str) -> None:
        if self.error is None:
            self.error, self.error_field = f"{name}: {message}", name


def decode(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; numbers stay exact (Decimal, never float)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PayloadError("the body is not UTF-8 text") from None
    if not text.strip():
        raise PayloadError('the body is empty: send a JSON object such as {"symbol": ...}')
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise PayloadError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PayloadError(f"the body must be a JSON object, not {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def webhook_key_of(payload: dict[str, Any]) -> str | None:
    for name in KEY_FIELDS:
        value = payload.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse(payload: dict[str, Any]) -> SignalFields:
    """Read *payload* into `SignalFields`, aliases folded, every value checked."""
    fields = SignalFields()
    values: dict[str, Any] = {}
    lowered = {str(k).lower(): v for k, v in payload.items()}
    known = {alias.lower() for names in ALIASES.values() for alias in names} | set(KEY_FIELDS)
    fields.unknown = sorted(k for k in lowered if k not in known)
    for name, aliases in ALIASES.items():
        for alias in aliases:
            value = lowered.get(alias.lower())
            if value is not None and value != "":
                values[name] = value
                break
    for name in (
        "order_id", "symbol", "exchange", "deal_id", "comment", "strategy", "account", "portfolio",
    ):  # fmt: skip
        if name in values:
            _text(fields, name, values[name])
    if fields.symbol is not None:
        fields.symbol = fields.symbol.upper()
    for name in ("quantity", "price", "limit_price", "stop_price", "position_size"):
        if name in values:
            _number(fields, name, values[name], positive=name != "position_size")
    if "direction" in values:
        _choice(fields, "direction", values["direction"], {s.value: s.value for s in OrderSide})
    if "order_type" in values:
        _choice(fields, "order_type", values["order_type"], dict(_ORDER_TYPES))
    if "trade_action" in values:
        choices = {a.value: a.value for a in TradeAction}
        _choice(fields, "trade_action", values["trade_action"], choices)
    if "product" in values:
        _choice(fields, "product", values["product"], {p.value.lower(): p.value for p in Product})
    if "hedging_enabled" in values:
        _flag(fields, "hedging_enabled", values["hedging_enabled"])
    if "timestamp" in values:
        _moment(fields, "timestamp", values["timestamp"])
    _check_order(fields)
    return fields


def _text(fields: SignalFields, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        fields.refuse(name, f"must be text, not {type(value).__name__}")
        return
    text = str(value).strip()
    if len(text) > _LENGTHS[name]:
        fields.refuse(name, f"longer than {_LENGTHS[name]} characters")
        return
    setattr(fields, name, text)


def _number(fields: SignalFields, name: str, value: Any, *, positive: bool) -> None:
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise TypeError
        number = check_fits(to_decimal(value))
    except (TypeError, ValueError):
        fields.refuse(name, f"{value!r} is not a number")
        return
    if positive and number <= 0:
        fields.refuse(name, f"must be greater than 0, got {number}")
        return
    setattr(fields, name, number)


def _choice(fields: SignalFields, name: str, value: Any, choices: dict[str, str]) -> None:
    key = str(value).strip().lower() if isinstance(value, str) else None
    if key is None or key not in choices:
        accepted = ", ".join(sorted(choices))
        fields.refuse(name, f"{value!r} is not one of {accepted}")
        return
    setattr(fields, name, choices[key])


def _flag(fields: SignalFields, name: str, value: Any) -> None:
    if isinstance(value, bool):
        setattr(fields, name, value)
    elif isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        setattr(fields, name, value.strip().lower() in ("true", "1"))
    elif isinstance(value, int) and value in (0, 1):
        setattr(fields, name, bool(value))
    else:
        fields.refuse(name, f"{value!r} is not true or false")


def _moment(fields: SignalFields, name: str, value: Any) -> None:
    try:
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            seconds = Decimal(value)
            if seconds > 10**11:  # milliseconds, as JavaScript and many bots send
                seconds /= 1000
            moment = datetime.fromtimestamp(float(seconds), UTC)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # TradingView's times are UTC
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError, OSError):
        fields.refuse(name, f"{value!r} is not an ISO 8601 time or a Unix time")
        return
    setattr(fields, name, moment.astimezone(UTC))


def _check_order(fields: SignalFields) -> None:
    """What a signal needs besides well-formed fields: a symbol, and a direction with a
    quantity unless it names a target position (or closes)."""
    if fields.error is not None:
        return
    if fields.symbol is None:
        fields.refuse("symbol", "missing (send symbol or ticker)")
        return
    if fields.trade_action == TradeAction.modify:
        return  # it names its order by order_id and sends what changes (signals/service.py)
    closing = fields.trade_action == TradeAction.close
    if fields.position_size is None and not closing:
        if fields.direction is None:
            fields.refuse("direction", "missing (send direction, action or side: buy or sell)")
        elif fields.quantity is None:
            fields.refuse("quantity", "missing (send quantity, qty or contracts)")
    kind = fields.order_type or OrderType.market
    if (
        kind in (OrderType.limit, OrderType.stop_limit)
        and (fields.limit_price or fields.price) is None
    ):
        fields.refuse("limit_price", f"a {kind} signal needs limit_price (or price)")
    elif kind in (OrderType.stop_loss, OrderType.stop_limit) and fields.stop_price is None:
        fields.refuse("stop_price", f"a {kind} signal needs stop_price")
