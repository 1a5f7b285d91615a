"""A trader with a funded paper portfolio and a webhook key, made over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from tests.accounts.helpers import bearer, make_key, make_user
from tests.conftest import LiveServer


@dataclass
class Trader:
    key: str  # API key
    webhook_key: str
    portfolio_id: int
    account_id: int
    user_id: int

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.key)


def make_trader(live: LiveServer, *, cash: str = "100000", fee_rate: str = "0") -> Trader:
    person = make_user(live)
    _, key = make_key(live, person, rate_limit=100_000)
    with live.client() as http:
        account = http.post(
            "/api/v1/accounts",
            json={"account_name": "paper acct", "fee_rate": fee_rate},
            headers=bearer(key),
        )
        assert account.status_code == 201, account.text
        portfolio = http.post(
            "/api/v1/portfolios",
            json={"account_id": account.json()["id"], "name": "main"},
            headers=bearer(key),
        )
        assert portfolio.status_code == 201, portfolio.text
        pid = portfolio.json()["id"]
        deposit = http.post(
            f"/api/v1/portfolios/{pid}/deposits", json={"amount": cash}, headers=bearer(key)
        )
        assert deposit.status_code == 201, deposit.text
        made = http.post("/api/v1/signals/webhook-key", headers=bearer(key))
        assert made.status_code == 200, made.text
    return Trader(key, made.json()["webhook_key"], pid, account.json()["id"], person.id)


def positions(live: LiveServer, trader: Trader) -> list[tuple[str, str, str]]:
    with live.client() as http:
        rows = http.get(
            f"/api/v1/portfolios/{trader.portfolio_id}/positions", headers=trader.auth
        ).json()
    return [(p["symbol"], p["direction"], p["quantity"]) for p in rows]


def add_account(
    live: LiveServer, trader: Trader, name: str, cash: str = "100000"
) -> tuple[int, int]:
    """Another funded paper account of *trader*: its id and its portfolio's."""
    with live.client() as http:
        account = http.post("/api/v1/accounts", json={"account_name": name}, headers=trader.auth)
        assert account.status_code == 201, account.text
        portfolio = http.post(
            "/api/v1/portfolios",
            json={"account_id": account.json()["id"], "name": name},
            headers=trader.auth,
        )
        assert portfolio.status_code == 201, portfolio.text
        pid = portfolio.json()["id"]
        deposit = http.post(
            f"/api/v1/portfolios/{pid}/deposits", json={"amount": cash}, headers=trader.auth
        )
        assert deposit.status_code == 201, deposit.text
    return account.json()["id"], pid
