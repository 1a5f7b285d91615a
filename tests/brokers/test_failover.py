"""Failover across processes: two `tradebase serve` processes on loopback, B the
OpenAlgo-style broker of A's primary account. B is killed mid-run: the next orders go to
A's next account, failover_events say so, nothing is lost or doubled (checked by
client_order_id on both sides), and the account comes back when B does."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import Scratch, ScratchFactory, free_port, wait_ready
from tradebase.accounts.cli import CLI
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.config import Settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.crypto import KeyStore
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.credentials.service import CredentialService
from tradebase.orders.models import Order
from tradebase.portfolios.models import Position, TradingAccount
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.strategies.models import FailoverEvent

SRC = str(Path(__file__).resolve().parents[2] / "src")
pytestmark = pytest.mark.slow


@dataclass
class Server:
    scratch: Scratch
    settings: Settings
    engines: Engines
    data: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBASE_")}
        return {
            **env,
            **self.scratch.env(),
            "TRADEBASE_DATA_DIR": str(self.data),
            "TRADEBASE_BROKER_TIMEOUT_SECONDS": "2",
            "PYTHONPATH": SRC,
        }

    def start(self) -> None:
        with (self.data / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tradebase", "serve", "--port", str(self.port)],
                env=self.env(),
                cwd=self.data,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_ready(self.url, self.process, log=self.data / "serve.log")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def session(self, write: bool = True) -> Any:
        return unit_of_work(factory=self.engines.session_factory(Database.main), write=write)


def _server(factory: ScratchFactory, backend: str, label: str, tmp: Path) -> Server:
    scratch = factory.new(backend, label)
    data = tmp / label
    data.mkdir()
    settings = scratch.settings().model_copy(update={"data_dir": data})
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    return Server(scratch, settings, Engines(settings), data, free_port())


def _user(server: Server, name: str) -> tuple[Principal, str]:
    with server.session() as session:
        user, _ = user_service.create(
            session,
            username=name,
            email=f"{name}@example.com",
            role="trader",
            password=f"pw-{name}-secret-1",
        )
        _, key = api_key_service.create(
            session, CLI, name="k", owner=user, rate_limit_per_minute=100_000
        )
        return Principal(user_id=user.id, username=name, role="trader", via="python"), key


def _paper(server: Server, who: Principal, name: str, priority: int) -> tuple[int, int]:
    with server.session() as session:
        account = account_service.create(session, who, account_name=name, priority=priority)
        portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
        portfolio_service.deposit(session, who, portfolio.id, Decimal(100_000))
        return account.id, portfolio.id


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_broker_killed_mid_run_fails_over_and_comes_back(
    backend: str, scratch_factory: ScratchFactory, tmp_path: Path
) -> None:
    b = _server(scratch_factory, backend, "b", tmp_path)
    a = _server(scratch_factory, backend, "a", tmp_path)
    # B: a broker user with a paper account; its API key is A's account's OpenAlgo apikey.
    b_user, b_key = _user(b, "desk")
    _, b_portfolio = _paper(b, b_user, "desk paper", 1)
    # A: the primary account trades on B; a paper account is next in failover order.
    trader, a_key = _user(a, "trader")
    with a.session() as session:
        live = account_service.create(
            session, trader, account_name="on B", broker="openalgo",
            host_url=f"{b.url}/openalgo", is_primary=True, priority=1,
        )  # fmt: skip
        live_pf = portfolio_service.create(session, trader, account_id=live.id, name="main")
        portfolio_service.deposit(session, trader, live_pf.id, Decimal(100_000))
        live_id, live_pid = live.id, live_pf.id
    CredentialService(KeyStore.from_settings(a.settings)).set_secret(
        unit := a.engines.session_factory(Database.credentials)(),
        user_id=trader.user_id, owner_type="account", owner_id=live_id,
        kind="broker_api_key", value=b_key,
    )  # fmt: skip
    unit.commit()
    unit.close()
    backup_id, backup_pid = _paper(a, trader, "backup paper", 2)
    auth = {"Authorization": f"Bearer {a_key}"}
    answers: list[dict[str, Any]] = []
    try:
        b.start()
        a.start()
        with httpx.Client(base_url=a.url, headers=auth, timeout=30) as http:
            check = http.post(f"/api/v1/accounts/{live_id}/health/check")
            assert check.status_code == 200, check.text
            assert check.json()["connection_status"] == "connected"

            def order(i: int) -> dict[str, Any]:
                answer = http.post(
                    "/api/v1/orders",
                    json={
                        "portfolio_id": live_pid,
                        "symbol": "BTC",
                        "exchange": "CRYPTO",
                        "side": "buy",
                        "quantity": "1",
                        "price": "100",
                        "client_order_id": f"ord-{i}",
                    },
                )
                assert answer.status_code == 201, answer.text
                return dict(answer.json())

            for i in range(8):
                if i == 3:
                    b.kill()  # mid-run: the broker process is gone
                if i == 6:
                    b.start()  # the broker returns; a health check brings the account back
                    back = http.post(f"/api/v1/accounts/{live_id}/health/check").json()
                    assert back["connection_status"] == "connected", back
                answers.append(order(i))
                if i == 3:
                    assert (
                        http.get(f"/api/v1/accounts/{live_id}/health").json()["connection_status"]
                        == "disconnected"
                    )
            failovers = http.get("/api/v1/failover-events").json()
    finally:
        a.kill()
        b.kill()
    # What A answered: 0-2 and 6-7 filled on B's account, 3-5 on the backup account.
    for i, answer in enumerate(answers):
        on_b = i < 3 or i >= 6
        assert answer["status"] == "filled", answer
        assert answer["account_id"] == (live_id if on_b else backup_id), (i, answer)
        assert Decimal(answer["average_fill_price"]) == 100
        expected = f"ord-{i}" if on_b else f"ord-{i}~fo{backup_id}"
        assert answer["client_order_id"] == expected
    # The failover_events: one per order placed while B was down, from -> to, success.
    assert len(failovers) == 3
    for event in failovers:
        assert (event["from_account_id"], event["to_account_id"], event["success"]) == (
            live_id, backup_id, True
        )  # fmt: skip
        assert "unreachable" in event["reason"]
    # Nothing lost, nothing doubled: each order is filled exactly once, on one side.
    with a.session(write=False) as session:
        a_orders = session.scalars(select(Order).order_by(Order.id)).all()
        filled = [o.client_order_id for o in a_orders if o.status == "filled"]
        assert sorted(filled) == sorted(answer["client_order_id"] for answer in answers)
        rejected = {o.client_order_id: o.reject_reason for o in a_orders if o.status == "rejected"}
        assert set(rejected) == {"ord-3", "ord-4", "ord-5"}
        assert all("failed over" in (why or "") for why in rejected.values())
        on_b_at_a = sorted(
            o.client_order_id for o in a_orders if o.status == "filled" and o.account_id == live_id
        )
        assert all(
            o.exchange_order_id
            for o in a_orders
            if o.account_id == live_id and o.status == "filled"
        )
        events = session.scalars(select(FailoverEvent)).all()
        assert {e.order_id for e in events} == {o.id for o in a_orders if o.status == "rejected"}
        account = session.get(TradingAccount, live_id)
        assert account is not None and account.connection_status == "connected"
        assert account.last_connected is not None
        held = {
            p.portfolio_id: p.quantity
            for p in session.scalars(select(Position).where(Position.status == "open"))
        }
        assert held == {live_pid: Decimal(5), backup_pid: Decimal(3)}
    with b.session(write=False) as session:
        b_orders = session.scalars(select(Order).order_by(Order.id)).all()
        desk = b_user.user_id  # the facade keeps a client's ids under its key owner
        assert [o.client_order_id for o in b_orders] == [f"oa{desk}:{c}" for c in on_b_at_a]
        assert on_b_at_a == [
            "ord-0", "ord-1", "ord-2", "ord-6", "ord-7"
        ]  # fmt: skip
        assert all(o.status == "filled" and o.portfolio_id == b_portfolio for o in b_orders)
    a.engines.dispose()
    b.engines.dispose()
