"""Orders over HTTP: place, read, list with a cursor, refuse in the one error shape."""

from __future__ import annotations

from tests.accounts.helpers import assert_error_shape, bearer, make_key, make_user
from tests.conftest import LiveServer


def _setup(live: LiveServer) -> tuple[str, int]:
    person = make_user(live)
    _, key = make_key(live, person)
    with live.client() as http:
        account = http.post(
            "/api/v1/accounts",
            json={"account_name": "paper acct", "fee_rate": "0.001"},
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
            f"/api/v1/portfolios/{pid}/deposits", json={"amount": "5000"}, headers=bearer(key)
        )
        assert deposit.status_code == 201 and deposit.json()["balance_after"] == "5000"
    return key, pid


def test_place_list_and_read_orders(live: LiveServer) -> None:
    key, pid = _setup(live)
    with live.client() as http:
        ids = []
        for i in range(3):
            placed = http.post(
                "/api/v1/orders",
                json={
                    "portfolio_id": pid,
                    "symbol": "BTC/USDT",
                    "side": "buy",
                    "quantity": "0.5",
                    "price": str(100 + i),
                },
                headers=bearer(key),
            )
            assert placed.status_code == 201, placed.text
            assert placed.json()["status"] == "filled"
            ids.append(placed.json()["id"])
        page = http.get(
            "/api/v1/orders", params={"portfolio_id": pid, "limit": 2}, headers=bearer(key)
        ).json()
        assert [o["id"] for o in page] == ids[::-1][:2]
        rest = http.get(
            "/api/v1/orders",
            params={"portfolio_id": pid, "after_id": page[-1]["id"]},
            headers=bearer(key),
        ).json()
        assert [o["id"] for o in rest] == [ids[0]]
        positions = http.get(f"/api/v1/portfolios/{pid}/positions", headers=bearer(key)).json()
        # 0.5 at 100, 101, 102: cost 151.5 for 1.5, average 101
        assert [(p["quantity"], p["cost_basis"], p["entry_price"]) for p in positions] == [
            ("1.5", "151.5", "101")
        ]
        events = http.get(f"/api/v1/orders/{ids[0]}/events", headers=bearer(key)).json()
        assert [e["to_status"] for e in events] == ["pending", "open", "filled"]
        trades = http.get(f"/api/v1/portfolios/{pid}/trades", headers=bearer(key)).json()
        assert len(trades) == 3 and trades[0]["fee"] == "0.05"  # 0.1% of 50


def test_refusals_use_the_one_error_shape(live: LiveServer) -> None:
    key, pid = _setup(live)
    with live.client() as http:
        no_price = http.post(
            "/api/v1/orders",
            json={"portfolio_id": pid, "symbol": "NOPE", "side": "buy", "quantity": "1"},
            headers=bearer(key),
        )
        assert no_price.status_code == 422
        assert_error_shape(no_price.json(), 422)
        error = no_price.json()["error"]
        assert error["code"] == "order_rejected" and "no price for NOPE" in error["message"]
        kept = http.get(
            f"/api/v1/orders/{error['details']['order_id']}", headers=bearer(key)
        ).json()
        assert kept["status"] == "rejected"
        cancel = http.delete(f"/api/v1/orders/{kept['id']}", headers=bearer(key))
        assert (
            cancel.status_code == 409
            and cancel.json()["error"]["code"] == "invalid_order_transition"
        )
        broke = http.post(
            f"/api/v1/portfolios/{pid}/withdrawals", json={"amount": "5000.01"}, headers=bearer(key)
        )
        assert broke.status_code == 422 and broke.json()["error"]["code"] == "insufficient_cash"
        zero = http.post(
            "/api/v1/orders",
            json={"portfolio_id": pid, "symbol": "X", "side": "buy", "quantity": "0"},
            headers=bearer(key),
        )
        assert zero.status_code == 422
        assert_error_shape(zero.json(), 422)


def test_bars_in_drive_resting_orders_and_need_an_admin(live: LiveServer) -> None:
    from tests.accounts.helpers import make_key as _make_key
    from tests.accounts.helpers import make_user as _make_user

    key, pid = _setup(live)
    _, admin_key = _make_key(live, _make_user(live, role="admin"))
    bars = {
        "symbol": "XYZ",
        "bars": [
            {
                "timestamp": "2026-11-23T15:00:00Z",
                "open": "10",
                "high": "11",
                "low": "9",
                "close": "10.5",
                "volume": "50",
            }
        ],
    }
    with live.client() as http:
        placed = http.post(
            "/api/v1/orders",
            json={
                "portfolio_id": pid,
                "symbol": "XYZ",
                "side": "buy",
                "quantity": "2",
                "order_type": "limit",
                "price": "9.5",
            },
            headers=bearer(key),
        )
        assert placed.status_code == 201 and placed.json()["status"] == "open"
        assert http.post("/api/v1/prices", json=bars, headers=bearer(key)).status_code == 403
        posted = http.post("/api/v1/prices", json=bars, headers=bearer(admin_key))
        assert posted.status_code == 201, posted.text
        assert posted.json() == {"stored": 1, "duplicates": 0, "fills": 1}
        filled = http.get(f"/api/v1/orders/{placed.json()['id']}", headers=bearer(key)).json()
        assert (filled["status"], filled["average_fill_price"]) == ("filled", "9.5")
        bad = http.post(
            "/api/v1/prices",
            json={
                "symbol": "XYZ",
                "bars": [
                    {
                        "timestamp": "2026-11-23T15:01:00Z",
                        "open": "10",
                        "high": "9",
                        "low": "8",
                        "close": "9",
                    }
                ],
            },
            headers=bearer(admin_key),
        )
        assert bad.status_code == 422
        assert_error_shape(bad.json(), 422)
