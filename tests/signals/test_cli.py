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
    for name, value in live.scratch.env().items():
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
    # a processed signal is not replayed, and nothing more is bought
    twice = cli.invoke(app, ["signals", "replay", str(signal_id)])
    assert twice.exit_code == 1 and "only a rejected or failed signal is replayed" in twice.output
    assert positions(live, trader) == [("BTC", "long", "2")]
    missing = cli.invoke(app, ["signals", "replay", "999999999"])
    assert missing.exit_code == 1 and "no signal 999999999" in missing.output
