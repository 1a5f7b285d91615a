"""``tradebase signals list`` and ``replay``: a signal refused for lack of cash runs once
the cash is there; a processed one is not replayed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from tests.conftest import LiveServer
from tests.signals.helpers import make_trader, positions
from tradebase.cli import app
from tradebase.config import get_settings
from tradebase.core.db import engines


@pytest.fixture
def cli(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    for name, value in live.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    engines.dispose()  # the CLI's engines: on the live server's databases
    yield CliRunner()
    get_settings.cache_clear()
    engines.dispose()


def test_list_and_replay(live: LiveServer, cli: CliRunner) -> None:
    trader = make_trader(live, cash="100")
    body = {"ticker": "BTC", "action": "buy", "qty": "2", "price": "80", "order_id": "big-1"}
    with live.client() as http:
        refused = http.post(f"/webhook/{trader.webhook_key}", json=body)
    assert refused.status_code in (400, 409, 422), refused.text
    signal_id = refused.json()["error"]["details"]["signal_id"]
    with live.client() as http:  # a copy answers with the same refusal
        copy = http.post(f"/webhook/{trader.webhook_key}", json=body)
    assert copy.status_code == refused.status_code, copy.text
    assert copy.json()["error"]["details"]["signal_id"] == signal_id
    listed = cli.invoke(app, ["signals", "list", "--status", "rejected", "--limit", "50"])
    assert listed.exit_code == 0, listed.output
    assert any(line.split()[1:2] == [str(signal_id)] for line in listed.output.splitlines())

    # still short of cash: refused again, exit 1
    again = cli.invoke(app, ["signals", "replay", str(signal_id)])
    assert again.exit_code == 1 and f"signal {signal_id}: rejected:" in again.output
    with live.client() as http:
        deposit = http.post(
            f"/api/v1/portfolios/{trader.portfolio_id}/deposits",
            json={"amount": "1000"},
            headers=trader.auth,
        )
        assert deposit.status_code == 201, deposit.text
    replayed = cli.invoke(app, ["signals", "replay", str(signal_id)])
    assert replayed.exit_code == 0, replayed.output
    assert replayed.output == f"signal {signal_id}: processed, 1 order(s)\n"
    assert positions(live, trader) == [("BTC", "long", "2")]
    # A copy of the alert now answers with the outcome of the replay, not the refusal the
    # server saw when it executed the signal (the server tells copies from memory).
    with live.client() as http:
        copy = http.post(f"/webhook/{trader.webhook_key}", json=body)
    assert copy.status_code == 200, copy.text
    assert copy.json()["duplicate"] is True
    assert copy.json()["signal"]["id"] == signal_id
    assert copy.json()["signal"]["status"] == "processed"
    assert [o["quantity"] for o in copy.json()["signal"]["outcome"]["orders"]] == ["2"]
    # a processed signal is not replayed, and nothing more is bought
    twice = cli.invoke(app, ["signals", "replay", str(signal_id)])
    assert twice.exit_code == 1 and "only a rejected or failed signal is replayed" in twice.output
    assert positions(live, trader) == [("BTC", "long", "2")]
    missing = cli.invoke(app, ["signals", "replay", "999999999"])
    assert missing.exit_code == 1 and "no signal 999999999" in missing.output


def test_the_inbox_filters(live: LiveServer) -> None:
    trader = make_trader(live)
    with live.client() as http:
        sent = []
        for ticker, side in (("AAA", "buy"), ("BBB", "buy"), ("AAA", "sell")):
            answer = http.post(
                f"/webhook/{trader.webhook_key}",
                json={"ticker": ticker, "action": side, "qty": "1", "price": "10"},
            )
            assert answer.status_code == 200, answer.text
            sent.append(answer.json()["signal"])
        bad = http.post(f"/webhook/{trader.webhook_key}", json={"action": "buy", "qty": "1"})
        assert bad.status_code == 422

        def ids(query: str) -> list[int]:
            got = http.get(f"/api/v1/signals?{query}", headers=trader.auth)
            assert got.status_code == 200, got.text
            return [s["id"] for s in got.json()]

        assert ids("symbol=AAA") == [sent[2]["id"], sent[0]["id"]]
        assert ids("symbol=AAA&status=processed&limit=1") == [sent[2]["id"]]
        assert ids(f"symbol=AAA&after_id={sent[2]['id']}") == [sent[0]["id"]]
        assert len(ids("status=rejected")) == 1
        assert ids("source=api") == []
        since = sent[1]["received_at"]
        assert ids(f"symbol=BBB&since={since.replace('+', '%2B')}") == [sent[1]["id"]]
        assert ids(f"symbol=BBB&until={since.replace('+', '%2B')}") == []
        naive = http.get("/api/v1/signals?since=2026-01-01T00:00:00", headers=trader.auth)
        assert naive.status_code == 422  # a time without its zone is refused
        shown = http.get(f"/api/v1/signals/{sent[0]['id']}", headers=trader.auth).json()
        assert shown["raw_payload"] == '{"ticker":"AAA","action":"buy","qty":"1","price":"10"}'
