"""Holdings, settlement, figures, the trades ledger and calendars over HTTP, worked out by
hand; refusals in the one error shape."""

from __future__ import annotations

from typing import Any

import httpx

from tests.accounts.helpers import assert_error_shape, bearer, make_key, make_user
from tests.conftest import LiveServer


def _setup(live: LiveServer) -> tuple[str, str, int]:
    """A trader's key, an admin (feeder) key and the trader's portfolio with 5000."""
    _, key = make_key(live, make_user(live))
    _, admin_key = make_key(live, make_user(live, role="admin"))
    with live.client() as http:
        account = http.post(
            "/api/v1/accounts", json={"account_name": "delivery"}, headers=bearer(key)
        )
        assert account.status_code == 201, account.text
        portfolio = http.post(
            "/api/v1/portfolios",
            json={"account_id": account.json()["id"], "name": "main"},
            headers=bearer(key),
        )
        pid = portfolio.json()["id"]
        deposit = http.post(
            f"/api/v1/portfolios/{pid}/deposits", json={"amount": "5000"}, headers=bearer(key)
        )
        assert deposit.status_code == 201, deposit.text
    return key, admin_key, pid


def _buy_cnc_limit(http: httpx.Client, key: str, pid: int, quantity: str, price: str) -> None:
    placed = http.post(
        "/api/v1/orders",
        json={
            "portfolio_id": pid,
            "symbol": "INFY",
            "exchange": "NSE",
            "side": "buy",
            "quantity": quantity,
            "order_type": "limit",
            "price": price,
            "product": "CNC",
        },
        headers=bearer(key),
    )
    assert placed.status_code == 201 and placed.json()["status"] == "open", placed.text


def _bar(http: httpx.Client, admin_key: str, at: str, o: str, h: str, low: str, c: str) -> None:
    bars: dict[str, Any] = {
        "symbol": "INFY",
        "exchange": "NSE",
        "bars": [{"timestamp": at, "open": o, "high": h, "low": low, "close": c, "volume": "100"}],
    }
    posted = http.post("/api/v1/prices", json=bars, headers=bearer(admin_key))
    assert posted.status_code == 201 and posted.json()["fills"] == 1, posted.text


def test_settle_then_holdings_metrics_and_trades(live: LiveServer) -> None:
    key, admin_key, pid = _setup(live)
    _, other_key = make_key(live, make_user(live))
    with live.client() as http:
        # Monday 2026-11-23 on NSE: 10 fill at the limit 100 (09:30 in Mumbai), then 5 at
        # the limit 106 (11:00); the last close is 106.
        _buy_cnc_limit(http, key, pid, "10", "100")
        _bar(http, admin_key, "2026-11-23T04:00:00Z", "101", "101", "99", "100")
        _buy_cnc_limit(http, key, pid, "5", "106")
        _bar(http, admin_key, "2026-11-23T05:30:00Z", "107", "108", "105", "106")
        assert http.get(f"/api/v1/portfolios/{pid}/holdings", headers=bearer(key)).json() == []

        settled = http.post(f"/api/v1/portfolios/{pid}/settle", headers=bearer(key))

        assert settled.status_code == 200, settled.text
        body = settled.json()
        assert (body["waiting"], body["held"]) == (0, 0)
        assert [
            (s["symbol"], s["quantity"], s["cost"], s["average_price"]) for s in body["settled"]
        ] == [("INFY", "15", "1530", "102")]
        again = http.post(f"/api/v1/portfolios/{pid}/settle", headers=bearer(key)).json()
        assert again["settled"] == []
        [holding] = http.get(f"/api/v1/portfolios/{pid}/holdings", headers=bearer(key)).json()
        # 15 at 102 = 1530, worth 15 x 106 = 1590: up 60, 60 x 100 / 1530 percent
        assert {
            k: holding[k]
            for k in (
                "symbol",
                "exchange",
                "quantity",
                "average_price",
                "invested_value",
                "current_price",
                "current_value",
                "pnl",
                "pnl_percent",
            )
        } == {
            "symbol": "INFY",
            "exchange": "NSE",
            "quantity": "15",
            "average_price": "102",
            "invested_value": "1530",
            "current_price": "106",
            "current_value": "1590",
            "pnl": "60",
            "pnl_percent": "3.921568627450980392",
        }
        closed = http.get(
            f"/api/v1/portfolios/{pid}/positions", params={"status": "closed"}, headers=bearer(key)
        ).json()
        assert [(p["settled"], p["quantity"], p["closed_at"] is not None) for p in closed] == [
            (True, "15", True)
        ]

        metrics = http.get(f"/api/v1/portfolios/{pid}/metrics", headers=bearer(key))
        assert metrics.status_code == 200, metrics.text
        figures = metrics.json()
        # cash 5000 - 1530; value 3470 + 1590 = 5060 against 5000 deposited: +60, +1.2%
        assert {k: v for k, v in figures.items() if k != "at"} == {
            "portfolio_id": pid,
            "base_currency": "USD",
            "cash": "3470",
            "positions_value": "0",
            "holdings_value": "1590",
            "total_value": "5060",
            "net_deposits": "5000",
            "total_pnl": "60",
            "total_pnl_percent": "1.2",
            "daily_pnl": None,
            "sharpe_ratio": None,
            "max_drawdown": "0",
            "win_rate": None,
            "closing_trades": 0,
        }

        # A fill of today on the paper exchange, and the ledger across portfolios.
        paper = http.post(
            "/api/v1/orders",
            json={
                "portfolio_id": pid,
                "symbol": "BTC/USDT",
                "side": "buy",
                "quantity": "0.5",
                "price": "100",
            },
            headers=bearer(key),
        )
        assert paper.status_code == 201, paper.text
        trades = http.get("/api/v1/trades", headers=bearer(key)).json()
        assert [(t["symbol"], t["price"]) for t in trades] == [
            ("BTC/USDT", "100"),
            ("INFY", "106"),
            ("INFY", "100"),
        ]

        def listed(**params: Any) -> list[str]:
            found = http.get("/api/v1/trades", params=params, headers=bearer(key))
            assert found.status_code == 200, found.text
            return [t["price"] for t in found.json()]

        assert listed(symbol="INFY") == ["106", "100"]
        assert listed(side="sell") == []
        assert listed(portfolio_id=pid, since="2026-11-23T05:00:00Z") == ["100", "106"]
        assert listed(until="2026-11-23T05:00:00Z") == ["100"]
        first_page = http.get("/api/v1/trades", params={"limit": 2}, headers=bearer(key)).json()
        assert [t["price"] for t in first_page] == ["100", "106"]
        assert listed(after_id=first_page[-1]["id"]) == ["100"]
        assert http.get("/api/v1/trades", headers=bearer(other_key)).json() == []

        # Another user's portfolio is not found; a CNC sell beyond the position and the
        # holding is refused.
        for method, path in (
            ("GET", f"/api/v1/portfolios/{pid}/holdings"),
            ("GET", f"/api/v1/portfolios/{pid}/metrics"),
            ("POST", f"/api/v1/portfolios/{pid}/settle"),
        ):
            response = http.request(method, path, headers=bearer(other_key))
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "portfolio_not_found"
        refused = http.post(
            "/api/v1/orders",
            json={
                "portfolio_id": pid,
                "symbol": "INFY",
                "exchange": "NSE",
                "side": "sell",
                "quantity": "16",
                "order_type": "limit",
                "price": "120",
                "product": "CNC",
            },
            headers=bearer(key),
        )
        assert refused.status_code == 409
        assert_error_shape(refused.json(), 409)
        error = refused.json()["error"]
        assert error["code"] == "cnc_sell_exceeds_position"
        assert error["details"] == {
            "product": "CNC",
            "symbol": "INFY",
            "requested": "16",
            "open": "0",
            "holding": "15",
        }


def test_calendars_and_market_status(live: LiveServer) -> None:
    _, key = make_key(live, make_user(live, role="viewer"))
    with live.client() as http:
        calendars = http.get("/api/v1/calendars", headers=bearer(key))
        assert calendars.status_code == 200, calendars.text
        by_name = {c["name"]: c for c in calendars.json()}
        assert {"NSE", "NYSE", "CRYPTO"} <= set(by_name)
        nse, nyse = by_name["NSE"], by_name["NYSE"]
        assert (nse["timezone"], len(nse["sessions"]), "BSE" in nse["aliases"]) == (
            "Asia/Kolkata",
            7,
            True,
        )
        monday = nse["sessions"][0]
        assert (monday["day_of_week"], monday["market_open"], monday["market_close"]) == (
            0,
            "09:15:00",
            "15:30:00",
        )
        assert len(nyse["holidays"]) == 10 and "NASDAQ" in nyse["aliases"]
        assert {"date": "2026-11-26", "description": "Thanksgiving Day"}.items() <= next(
            h for h in nyse["holidays"] if h["date"] == "2026-11-26"
        ).items()

        def status(exchange: str, at: str) -> dict[str, Any]:
            found = http.get(
                f"/api/v1/calendars/{exchange}/status", params={"at": at}, headers=bearer(key)
            )
            assert found.status_code == 200, found.text
            body: dict[str, Any] = found.json()
            return body

        assert status("NSE", "2026-11-23T05:00:00Z") == {
            "exchange": "NSE",
            "calendar": "NSE",
            "at": "2026-11-23T05:00:00Z",
            "is_open": True,
            "reason": "NSE is open",
            "day_ends_at": "2026-11-23T10:00:00Z",
        }
        thanksgiving = status("NASDAQ", "2026-11-26T16:00:00Z")
        assert (thanksgiving["calendar"], thanksgiving["is_open"]) == ("NYSE", False)
        assert "Thanksgiving Day" in thanksgiving["reason"]
        assert thanksgiving["day_ends_at"] == "2026-11-27T21:00:00Z"  # Friday, 16:00 in NY
        paper = status("paper", "2026-11-28T03:00:00+05:30")
        assert (paper["calendar"], paper["is_open"], paper["day_ends_at"]) == (
            None,
            True,
            "2026-11-28T00:00:00Z",  # 03:00 in Mumbai is 21:30 UTC on the 27th
        )
        assert status("NSE", "2026-11-23T05:00:00Z")["at"] == "2026-11-23T05:00:00Z"
        now = http.get("/api/v1/calendars/CRYPTO/status", headers=bearer(key)).json()
        assert now["is_open"] is True

        # Bad input: a time without a zone, not a time, a bad exchange code; a future settle.
        for params, path in (
            ({"at": "2026-11-23T05:00:00"}, "/api/v1/calendars/NSE/status"),
            ({"at": "monday"}, "/api/v1/calendars/NSE/status"),
            ({}, "/api/v1/calendars/N%20SE/status"),
            ({"side": "short"}, "/api/v1/trades"),
        ):
            bad = http.get(path, params=params, headers=bearer(key))
            assert bad.status_code == 422, (path, params, bad.text)
            assert_error_shape(bad.json(), 422)
            assert bad.json()["error"]["code"] == "validation_error"


def test_a_future_settlement_is_refused_in_the_one_error_shape(live: LiveServer) -> None:
    key, _, pid = _setup(live)
    with live.client() as http:
        future = http.post(
            f"/api/v1/portfolios/{pid}/settle",
            params={"at": "2999-01-01T00:00:00Z"},
            headers=bearer(key),
        )
        assert future.status_code == 400, future.text
        assert_error_shape(future.json(), 400)
        assert future.json()["error"]["code"] == "settlement_in_future"
