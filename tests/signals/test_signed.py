"""Signed webhooks: HMAC-SHA256 over '<timestamp>.<body>', a 5-minute replay window."""

from __future__ import annotations

import hashlib
import hmac
import time

from tests.conftest import LiveServer
from tests.signals.helpers import make_trader


def _signed(secret: str, body: bytes, at: int) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Tradebase-Timestamp": str(at),
        "X-Tradebase-Signature": f"sha256={digest}",
    }


def test_signed_webhooks(live: LiveServer) -> None:
    trader = make_trader(live)
    url = f"/webhook/{trader.webhook_key}"
    body = b'{"ticker": "QQQ", "side": "buy", "qty": "1", "price": "500", "order_id": "q1"}'
    with live.client() as http:
        made = http.post("/api/v1/signals/signing-secret", headers=trader.auth)
        assert made.status_code == 200, made.text
        secret = made.json()["signing_secret"]
        assert http.get("/api/v1/signals/settings", headers=trader.auth).json()["signed"]
        now = int(time.time())
        unsigned = http.post(url, content=body, headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 401
        assert unsigned.json()["error"]["code"] == "signature_invalid"
        forged = http.post(
            url, content=body.replace(b'"1"', b'"9"'), headers=_signed(secret, body, now)
        )
        assert forged.status_code == 401
        assert "does not match the body" in forged.json()["error"]["message"]
        stale = http.post(url, content=body, headers=_signed(secret, body, now - 301))
        assert (
            stale.status_code == 401 and "refused as a replay" in stale.json()["error"]["message"]
        )
        good = http.post(url, content=body, headers=_signed(secret, body, now))
        assert good.status_code == 200, good.text
        assert good.json()["signal"]["outcome"]["orders"][0]["quantity"] == "1"
        replay = http.post(url, content=body, headers=_signed(secret, body, now))
        assert replay.status_code == 200 and replay.json()["duplicate"] is True
        assert len(http.get("/api/v1/signals", headers=trader.auth).json()) == 1
        off = http.delete("/api/v1/signals/signing-secret", headers=trader.auth)
        assert off.status_code == 204
        plain = http.post(
            url, content=body.replace(b"q1", b"q2"), headers={"Content-Type": "application/json"}
        )
        assert plain.status_code == 200, plain.text
