"""Position accounting: hand-worked examples (computed on paper) and properties."""

from __future__ import annotations

from decimal import Decimal as D  # noqa: N817 - the hand-worked figures read better

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebase.portfolios.errors import CloseExceedsPosition, CncSellExceedsPosition
from tradebase.portfolios.pnl import (
    Book,
    Fill,
    Held,
    HoldingSale,
    Lot,
    apply_netting,
    sell_holding,
    split_cnc_sell,
)


def test_average_cost_partial_close_reversal_and_a_short_closed_at_a_loss() -> None:
    book = Book()
    # Two buys: 10 @ 100 (fee 1) and 30 @ 104 (fee 3): cost 1000 + 3120 = 4120 for 40,
    # so the average cost is 4120 / 40 = 103; fees 4 wait for the close.
    book.apply(Fill("buy", D(10), D(100), D(1)))
    book.apply(Fill("buy", D(30), D(104), D(3)))
    assert book.lots["long"] == Lot("long", D(40), D(4120), D(4))
    assert book.lots["long"].entry_price == D(103)
    assert book.cash == D("-4124")

    # Partial close: sell 10 @ 110 (fee 1.1). Releases 10/40 of the cost (1030) and of the
    # opening fees (1): 1100 - 1030 - 1.1 - 1 = 67.9.
    out = book.apply(Fill("sell", D(10), D(110), D("1.1")))
    assert out.closed is not None and out.closed.realized == D("67.9")
    assert out.closed.released_fees == D(1) and not out.closed.flat
    assert book.lots["long"] == Lot("long", D(30), D(3090), D(3))

    # Reversal: sell 50 @ 100 (fee 5) against 30 long. The fee splits 30:20, so 3 for the
    # close and 2 for the new short. Close: 3000 - 3090 - 3 - 3 = -96.
    out = book.apply(Fill("sell", D(50), D(100), D(5)))
    assert out.closed is not None
    assert (out.closed.quantity, out.closed.fee, out.closed.realized) == (D(30), D(3), D(-96))
    assert out.opened_fee == D(2)
    assert book.lots == {"short": Lot("short", D(20), D(2000), D(2))}

    # The short closed at a loss: buy 20 @ 105 (fee 2.1): -(2100 - 2000) - 2.1 - 2 = -104.1.
    out = book.apply(Fill("buy", D(20), D(105), D("2.1")))
    assert out.closed is not None and out.closed.realized == D("-104.1") and out.closed.flat
    assert book.lots == {}
    # Flat: 67.9 - 96 - 104.1 = -132.2, and the cash moved by -4124 + 1098.9 + 4995 - 2102.1.
    assert book.realized == D("-132.2") == book.cash


def test_shares_that_do_not_divide_evenly_still_add_up() -> None:
    book = Book()
    book.apply(Fill("buy", D(1), D(10)))
    book.apply(Fill("buy", D(2), D(11)))  # cost 32 for 3
    first = book.apply(Fill("sell", D(1), D(12)))
    # 32/3 = 10.666... rounded half-even at 18 places: 10.666666666666666667
    assert first.closed is not None
    assert first.closed.realized == D("1.333333333333333333")
    second = book.apply(Fill("sell", D(2), D(12)))
    assert second.closed is not None
    assert second.closed.realized == D("2.666666666666666667")  # 24 - 21.333333333333333333
    assert book.realized == D(4) == book.cash  # -32 + 36


def test_hedging_keeps_a_long_and_a_short_open_at_once() -> None:
    book = Book(hedging=True)
    book.apply(Fill("buy", D(10), D(50), D("0.5")))
    book.apply(Fill("sell", D(4), D(52), D("0.2")))  # opens a short beside the long
    assert set(book.lots) == {"long", "short"}
    assert book.net_quantity == D(6)
    out = book.apply(Fill("buy", D(4), D(51), D("0.2"), closes=True))
    # Closing the short: -(204 - 208) - 0.2 - 0.2 = 3.6; the long is untouched.
    assert out.closed is not None and out.closed.realized == D("3.6")
    assert book.lots == {"long": Lot("long", D(10), D(500), D("0.5"))}
    with pytest.raises(CloseExceedsPosition):
        book.apply(Fill("buy", D(1), D(51), closes=True))  # no short left to close


def test_unrealized_pnl_follows_the_price() -> None:
    long = Lot("long", D(40), D(4120), D(4))
    assert long.unrealized(D(105)) == D(4200) - D(4120) - D(4)
    short = Lot("short", D(20), D(2000), D(2))
    assert short.unrealized(D(95)) == D(2000) - D(1900) - D(2)


def test_a_cnc_sell_takes_the_open_position_first_then_the_holding() -> None:
    # Sell 8 @ 112, fee 0.896, with 3 open today: 3 from the position with 3/8 of the fee
    # (0.336), the other 5 from the holding with the rest (0.56).
    fill = Fill("sell", D(8), D(112), D("0.896"))
    assert split_cnc_sell(D(3), fill) == (
        Fill("sell", D(3), D(112), D("0.336")),
        Fill("sell", D(5), D(112), D("0.56")),
    )
    assert split_cnc_sell(D(8), fill) == (fill, None)  # the position covers it all
    assert split_cnc_sell(D(0), fill) == (None, fill)  # nothing open: all from the holding
    with pytest.raises(ValueError):
        split_cnc_sell(D(3), Fill("buy", D(1), D(1)))


def test_a_holding_sells_at_its_average_with_the_sell_fee_only() -> None:
    # 6 held for 600 (average 100); sell 5 @ 112 with fee 0.56: cost 500, 560 - 500 - 0.56.
    sale, left = sell_holding(Held(D(6), D(600)), Fill("sell", D(5), D(112), D("0.56")))
    assert sale == HoldingSale(D(5), D(112), D(500), D("0.56"))
    assert (sale.realized, sale.cash_change) == (D("59.44"), D("559.44"))
    assert left == Held(D(1), D(100))
    sale, left = sell_holding(Held(D(1), D(100)), Fill("sell", D(1), D(90)))
    assert (sale.realized, left) == (D(-10), None)  # sold out
    with pytest.raises(CncSellExceedsPosition):
        sell_holding(Held(D(6), D(600)), Fill("sell", D(7), D(112)))


def test_holding_shares_that_do_not_divide_evenly_add_up_to_the_invested_value() -> None:
    # 17 for 1750: 5 of them cost 8750 / 17 = 514.70588235294117647058... -> ...471.
    first, left = sell_holding(Held(D(17), D(1750)), Fill("sell", D(5), D(100)))
    assert first.cost == D("514.705882352941176471")
    assert left == Held(D(12), D("1235.294117647058823529"))
    last, rest = sell_holding(left, Fill("sell", D(12), D(100)))
    assert (last.cost, rest) == (D("1235.294117647058823529"), None)
    assert first.cost + last.cost == D(1750)


def test_bad_fills_are_refused() -> None:
    for side, qty, price, fee in [
        ("hold", 1, 1, 0),
        ("buy", 0, 1, 0),
        ("buy", 1, 0, 0),
        ("buy", 1, 1, -1),
    ]:
        with pytest.raises(ValueError):
            Fill(side, D(qty), D(price), D(fee))


quantities = st.decimals(min_value=D("0.001"), max_value=D(1000), places=3)
prices = st.decimals(min_value=D("0.01"), max_value=D(100000), places=2)
fees = st.decimals(min_value=D(0), max_value=D(50), places=4)
fills = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), quantities, prices, fees), max_size=40)


def _flatten(book: Book, price: D) -> None:
    for lot in list(book.lots.values()):
        side = "sell" if lot.direction == "long" else "buy"
        book.apply(Fill(side, lot.quantity, price, D("0.5"), closes=book.hedging))


@settings(max_examples=300, deadline=None)
@given(fills, prices)
def test_netting_ends_flat_with_realized_equal_to_cash(
    sequence: list[tuple[str, D, D, D]], last: D
) -> None:
    book = Book()
    signed = D(0)
    for side, qty, price, fee in sequence:
        book.apply(Fill(side, qty, price, fee))
        signed += qty if side == "buy" else -qty
        assert book.net_quantity == signed  # quantities are conserved
        for lot in book.lots.values():
            assert lot.quantity > 0 and lot.cost > 0 and lot.open_fees >= 0
    _flatten(book, last)
    assert book.lots == {}
    assert book.realized == book.cash  # exactly: Decimal, no tolerance


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["buy", "sell"]), st.booleans(), quantities, prices, fees),
        max_size=40,
    ),
    prices,
)
def test_hedging_ends_flat_with_realized_equal_to_cash(
    sequence: list[tuple[str, bool, D, D, D]], last: D
) -> None:
    book = Book(hedging=True)
    for side, closes, qty, price, fee in sequence:
        target = "short" if side == "buy" else "long"
        if closes and (target not in book.lots or book.lots[target].quantity < qty):
            closes = False  # only close what is open
        book.apply(Fill(side, qty, price, fee, closes=closes))
    _flatten(book, last)
    assert book.lots == {}
    assert book.realized == book.cash


@settings(max_examples=200, deadline=None)
@given(fills)
def test_applying_one_fill_at_a_time_equals_a_replay(sequence: list[tuple[str, D, D, D]]) -> None:
    stepwise: Lot | None = None
    for side, qty, price, fee in sequence:
        stepwise = apply_netting(stepwise, Fill(side, qty, price, fee)).after
    replay = Book()
    for side, qty, price, fee in sequence:
        replay.apply(Fill(side, qty, price, fee))
    assert (stepwise is None and replay.lots == {}) or replay.lots == {stepwise.direction: stepwise}  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(quantities, prices, st.lists(quantities, min_size=1, max_size=10))
def test_selling_a_holding_piece_by_piece_releases_its_cost_exactly(
    held: D, price: D, pieces: list[D]
) -> None:
    holding: Held | None = Held(held, held * price)
    released = D(0)
    for piece in pieces:
        if holding is None:
            break
        sale, holding = sell_holding(holding, Fill("sell", min(piece, holding.quantity), price))
        released += sale.cost
        assert holding is None or (holding.quantity > 0 and holding.invested > 0)
    if holding is not None:
        sale, holding = sell_holding(holding, Fill("sell", holding.quantity, price))
        released += sale.cost
    assert released == held * price
