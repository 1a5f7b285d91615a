"""A server killed (SIGKILL) while signals stream in loses none it acknowledged: after a
restart each is processed exactly once, and `tradebase reconcile` agrees."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import func, select

from tests.conftest import Scratch, free_port, wait_ready
from tradebase.accounts.service import user as user_service
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.orders.models import Order
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.signals.models import Signal
from tradebase.signals.service import signal as signal_service

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env(scratch: Scratch, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBASE_")}
    return {**env, **scratch.env(), "TRADEBASE_DATA_DIR": str(data), "PYTHONPATH": SRC}


def _serve(env: dict[str, str], port: int, cwd: Path) -> subprocess.Popen[bytes]:
    with (cwd / "serve.log").open("ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "tradebase", "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _trader(factory: object) -> tuple[str, int]:
    """A trader with a funded paper portfolio; their webhook key and the portfolio id."""
    with unit_of_work(factory=factory) as session:  # type: ignore[arg-type]
        user, _ = user_service.create(
            session,
            username="streamer",
            email="s@example.com",
            role="trader",
            password="pw-streamer-1",
        )
        who = Principal(user_id=user.id, username=user.username, role=user.role, via="python")
        account = account_service.create(session, who, account_name="paper one")
        portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
        portfolio_service.deposit(session, who, portfolio.id, Decimal(1_000_000))
        key = signal_service.new_webhook_key(session, who)
        return key, portfolio.id


def test_sigkill_while_signals_stream_in_loses_none_acknowledged(
    scratch: Scratch, tmp_path: Path
) -> None:
    settings = scratch.settings().model_copy(update={"data_dir": tmp_path})
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    engines = Engines(settings)
    factory = engines.session_factory(Database.main)
    key, portfolio_id = _trader(factory)
    env = _env(scratch, tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(env, port, tmp_path)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(1_000_000))

    def stream() -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                order_id = f"s{n}"
                body = (
                    '{"ticker": "BTC", "action": "buy", "qty": "1",'
                    f' "price": "{100 + n % 7}", "order_id": "{order_id}"}}'
                )
                try:
                    answer = http.post(
                        f"/webhook/{key}", content=body, headers={"Content-Type": "text/plain"}
                    )
                except httpx.TransportError:
                    continue  # not acknowledged: the server is down
                if answer.status_code in (200, 202):
                    with lock:
                        acknowledged.append(order_id)

    try:
        wait_ready(url, server)
        senders = [threading.Thread(target=stream) for _ in range(4)]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # SIGKILL, with requests in flight
        server.wait(timeout=10)
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
        assert len(acknowledged) >= 40
        with unit_of_work(factory=factory, write=False) as session:
            left = session.scalar(
                select(func.count(Signal.id)).where(Signal.status.in_(["received", "processing"]))
            )
        print(f"acknowledged {len(acknowledged)}, left pending by the kill: {left}")
        server = _serve(env, port, tmp_path)  # recovers pending signals before it serves
        wait_ready(url, server)
    finally:
        server.kill()
        server.wait(timeout=10)
    with unit_of_work(factory=factory, write=False) as session:
        rows = session.execute(
            select(Signal.sender_order_id, Signal.status, Signal.id).order_by(Signal.id)
        ).all()
        by_sender = {sender: (status, sid) for sender, status, sid in rows}
        assert len(by_sender) == len(rows)  # no signal stored twice
        errors = session.scalars(select(Signal.error).where(Signal.status != "processed")).all()
        assert errors == []  # none left pending, none failed
        assert set(acknowledged) <= set(by_sender)
        per_signal = dict(
            session.execute(
                select(Order.signal_id, func.count(Order.id)).group_by(Order.signal_id)
            ).all()
        )
        assert per_signal == {sid: 1 for _, _, sid in rows}  # exactly one order each
    engines.dispose()
    reconcile = subprocess.run(
        [sys.executable, "-m", "tradebase", "reconcile", "--portfolio", str(portfolio_id)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert reconcile.returncode == 0, reconcile.stderr
    assert f"{len(rows)} fills: positions and cash agree" in reconcile.stdout
