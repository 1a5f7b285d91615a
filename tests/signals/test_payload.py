"""Reading signal bodies and their idempotency keys: no database needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebase.signals import keys, payload


def test_aliases_fold_and_values_are_exact() -> None:
    fields = payload.parse(
        payload.decode(
            b'{"Ticker": "btcusdt", "ACTION": "Sell", "contracts": 0.1, "price": "64000.10",'
            b' "order_type": "stop", "stop_price": 63000, "product": "mis",'
            b' "hedging_enabled": true, "timestamp": 1764583200000}'
        )
    )
    assert fields.error is None
    assert (fields.symbol, fields.direction, fields.quantity) == ("BTCUSDT", "sell", Decimal("0.1"))
    assert (fields.price, fields.order_type, fields.stop_price) == (
        Decimal("64000.10"),
        "stop_loss",
        Decimal(63000),
    )
    assert (fields.product, fields.hedging_enabled) == ("MIS", True)
    assert fields.timestamp == datetime(2025, 12, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"side": "buy", "qty": 1}, "symbol: missing (send symbol or ticker)"),
        (
            {"ticker": "X", "qty": 1},
            "direction: missing (send direction, action or side: buy or sell)",
        ),
        ({"ticker": "X", "side": "buy"}, "quantity: missing (send quantity, qty or contracts)"),
        ({"ticker": "X", "side": "buy", "qty": "1e"}, "quantity: '1e' is not a number"),
        ({"ticker": "X", "side": "buy", "qty": "NaN"}, "quantity: 'NaN' is not a number"),
        ({"ticker": "X", "side": "buy", "qty": True}, "quantity: True is not a number"),
        ({"ticker": "X", "side": "buy", "qty": "-2"}, "quantity: must be greater than 0, got -2"),
        (
            {"ticker": "X", "side": "buy", "qty": 1, "order_type": "limit"},
            "limit_price: a limit signal needs limit_price (or price)",
        ),
        (
            {"ticker": "X", "side": "buy", "qty": 1, "timestamp": "yesterday"},
            "timestamp: 'yesterday' is not an ISO 8601 time or a Unix time",
        ),
        ({"ticker": "X" * 51, "side": "buy", "qty": 1}, "symbol: longer than 50 characters"),
    ],
)
def test_a_bad_field_is_named_precisely(body: dict[str, object], error: str) -> None:
    assert payload.parse(body).error == error


def test_a_target_or_a_close_needs_no_direction() -> None:
    assert payload.parse({"ticker": "X", "position_size": "-1"}).error is None
    assert payload.parse({"ticker": "X", "trade_action": "CLOSE"}).error is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "the body is empty"),
        (b"buy 1 AAPL", "the body is not valid JSON"),
        (b'["buy"]', "the body must be a JSON object, not list"),
        (b'{"qty": NaN}', "the body is not valid JSON"),
        (b"\xff\xfe", "the body is not UTF-8 text"),
    ],
)
def test_a_body_that_is_not_a_json_object(raw: bytes, message: str) -> None:
    with pytest.raises(payload.PayloadError, match=message):
        payload.decode(raw)


WINDOW = 60
START = datetime(2026, 1, 1, tzinfo=UTC)


@given(st.integers(0, 10**7), st.integers(0, WINDOW - 1))
def test_copies_less_than_a_window_apart_share_a_key(offset: int, gap: int) -> None:
    first = keys.window_keys("order_id:Long", START + timedelta(seconds=offset), WINDOW)
    second = keys.window_keys("order_id:Long", START + timedelta(seconds=offset + gap), WINDOW)
    assert first[0] == second[0] or first[1] == second[1]


@given(st.integers(0, 10**7), st.integers(2 * WINDOW, 10**6))
def test_copies_two_windows_apart_are_new_signals(offset: int, gap: int) -> None:
    first = keys.window_keys("order_id:Long", START + timedelta(seconds=offset), WINDOW)
    second = keys.window_keys("order_id:Long", START + timedelta(seconds=offset + gap), WINDOW)
    assert first[0] != second[0] and first[1] != second[1]


def test_without_an_order_id_the_body_is_the_key() -> None:
    assert keys.base_key(None, b"{}") == keys.base_key(None, b"{}")
    assert keys.base_key(None, b"{}") != keys.base_key(None, b"{ }")
    assert keys.base_key("Long", b"{}") == keys.base_key("Long", b"{ }")


def test_access_log_lines_do_not_show_the_webhook_key() -> None:
    import logging

    from tradebase.signals.router import WebhookKeyFilter

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/webhook/whk_secret123?x=1", "1.1", 200), None,
    )  # fmt: skip
    assert WebhookKeyFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "POST /webhook/[redacted]?x=1 HTTP/1.1" 200'
