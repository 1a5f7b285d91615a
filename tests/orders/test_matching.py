"""Resting orders against bars, worked out by hand."""

from __future__ import annotations

from decimal import Decimal as D  # noqa: N817 - the hand-worked figures read better

import pytest

from tradebase.orders.matching import Bar, Match, match


def bar(o: str, h: str, low: str, c: str) -> Bar:
    return Bar(D(o), D(h), D(low), D(c), D(1000))


@pytest.mark.parametrize(
    ("order_type", "side", "price", "trigger", "b", "expected"),
    [
        # buy limit 100: a bar that dips to 99 fills at 100; one that opens at 98 fills at 98
        ("limit", "buy", "100", None, bar("101", "102", "99", "101"), Match(D(100))),
        ("limit", "buy", "100", None, bar("98", "99", "97", "98.5"), Match(D(98))),
        ("limit", "buy", "100", None, bar("101", "103", "100.5", "102"), None),
        # sell limit 110: touched at 110; a gap up to 112 fills at 112
        ("limit", "sell", "110", None, bar("108", "110", "107", "109"), Match(D(110))),
        ("limit", "sell", "110", None, bar("112", "113", "111", "112"), Match(D(112))),
        # buy stop 105: high reaches it -> 105; a gap open at 107 -> 107 (the gap)
        ("stop_loss", "buy", None, "105", bar("103", "106", "102", "105"), Match(D(105))),
        ("stop_loss", "buy", None, "105", bar("107", "108", "106", "107"), Match(D(107))),
        # sell stop 95 gapping through: opens at 93 -> fills at 93
        ("stop_loss", "sell", None, "95", bar("93", "94", "92", "93.5"), Match(D(93))),
        ("stop_loss", "sell", None, "95", bar("97", "98", "95.5", "96"), None),
        # buy stop_limit stop 105 limit 106: triggered at 105, within the limit: fills at 105
        ("stop_limit", "buy", "106", "105", bar("104", "107", "103", "106"), Match(D(105), True)),
        # triggered by a gap to 108 but above the limit 106: triggered, no fill
        ("stop_limit", "buy", "106", "105", bar("108", "109", "107", "108"), Match(None, True)),
    ],
)
def test_rules(
    order_type: str,
    side: str,
    price: str | None,
    trigger: str | None,
    b: Bar,
    expected: Match | None,
) -> None:
    got = match(
        order_type,
        side,
        b,
        price=D(price) if price else None,
        trigger=D(trigger) if trigger else None,
    )
    assert got == expected


def test_a_triggered_stop_limit_is_a_plain_limit_on_later_bars() -> None:
    assert (
        match(
            "stop_limit",
            "buy",
            bar("107", "108", "106.5", "107"),
            price=D(106),
            trigger=D(105),
            triggered=True,
        )
        is None
    )
    assert match(
        "stop_limit",
        "buy",
        bar("107", "108", "105.5", "106"),
        price=D(106),
        trigger=D(105),
        triggered=True,
    ) == Match(D(106))
