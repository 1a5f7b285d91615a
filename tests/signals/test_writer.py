"""The writer process of a server on SQLite (signals/writer.py): signals are stored and
executed there and answered by the server; the server's stream clients hear of its
commits; if it dies, the server goes on without it and loses nothing it acknowledged; it
stops with the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from websockets.sync.client import connect

from tests.accounts.helpers import bearer
from tests.conftest import Scratch, ScratchFactory, free_port, wait_ready
from tests.events.test_stream import next_event, ws_url
from tradebase.accounts.cli import CLI
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.orders.models import Order
from tradebase.portfolios.models import Position
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.signals.models import Signal
from tradebase.signals.service import signal as signal_service

SRC = str(Path(__file__).resolve().parents[2] / "src")


@dataclass
class Served:
    """A `tradebase serve` on a SQLite file, its trader, and its writer process."""

    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    folder: Path
    engines: Engines
    webhook_key: str
    api_key: str
    portfolio_id: int

    @property
    def writer_pid(self) -> int:
        [pid] = _children(self.process.pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "tradebase.signals.writer" in cmdline, cmdline
        return pid

    def send(
        self, http: httpx.Client, order_id: str, qty: str = "1", timeout: float = 30
    ) -> httpx.Response:
        body = {"ticker": "WRT", "action": "buy", "qty": qty, "price": "20", "order_id": order_id}
        return http.post(f"/webhook/{self.webhook_key}", json=body, timeout=timeout)

    def log(self) -> str:
        return (self.folder / "serve.log").read_text(errors="replace")


def _children(pid: int) -> list[int]:
    """The processes *pid* started (each thread's, those it has not reaped)."""
    tasks = Path(f"/proc/{pid}/task").glob("*/children")
    return sorted(int(child) for task in tasks for child in task.read_text().split())


def _serve(env: dict[str, str], port: int, cwd: Path) -> subprocess.Popen[bytes]:
    with (cwd / "serve.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tradebase", "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # a process group of its own, as under a service manager
        )


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # exited, not yet reaped by its parent
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def served(scratch_factory: ScratchFactory, tmp_path: Path) -> Iterator[Served]:
    scratch: Scratch = scratch_factory.new("sqlite", "writer")
    settings = scratch.settings().model_copy(update={"data_dir": tmp_path})
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    engines = Engines(settings)
    with unit_of_work(factory=engines.session_factory(Database.main)) as session:
        user, _ = user_service.create(
            session, username="writer", email="w@example.com", role="trader",
            password="pw-writer-12345",
        )  # fmt: skip
        who = Principal(user_id=user.id, username=user.username, role=user.role, via="python")
        account = account_service.create(session, who, account_name="paper")
        portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
        portfolio_service.deposit(session, who, portfolio.id, Decimal(1_000_000))
        webhook_key = signal_service.new_webhook_key(session, who)
        _, api_key = api_key_service.create(session, CLI, name="ws", owner=user)
        portfolio_id = portfolio.id
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBASE_")}
    # The writer process is the default; the stream's safety poll a minute away, so that
    # only a wake-up brings an event within seconds.
    env |= {**scratch.env(), "TRADEBASE_DATA_DIR": str(tmp_path), "PYTHONPATH": SRC,
            "TRADEBASE_EVENTS_POLL_SECONDS": "6"}  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(env, port, tmp_path)
    try:
        wait_ready(url, process)
        yield Served(url, process, env, tmp_path, engines, webhook_key, api_key, portfolio_id)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        engines.dispose()


def _counts(served: Served) -> tuple[dict[str, str], dict[int, int]]:
    """Each signal's status by its order_id, and the orders of each signal."""
    with unit_of_work(factory=served.engines.session_factory(Database.main)) as session:
        statuses = dict(session.execute(select(Signal.sender_order_id, Signal.status)).all())
        orders = dict(
            session.execute(
                select(Order.signal_id, func.count(Order.id)).group_by(Order.signal_id)
            ).all()
        )
    return {str(k): str(v) for k, v in statuses.items()}, orders


def test_signals_are_executed_in_the_writer_process_and_answered_by_the_server(
    served: Served,
) -> None:
    writer = served.writer_pid
    with httpx.Client(base_url=served.url, timeout=30) as http:
        first = served.send(http, "w1", qty="2")
        assert first.status_code == 200, first.text
        assert first.json()["signal"]["status"] == "processed"
        [order] = first.json()["signal"]["outcome"]["orders"]
        assert (order["quantity"], order["average_fill_price"]) == ("2", "20")

        # Stopped, the writer answers nothing: the server waits for it, and nothing else
        # executes signals; once it goes on, the signal is executed once, and its copy
        # is answered with its outcome.
        os.kill(writer, signal.SIGSTOP)
        try:
            with pytest.raises(httpx.ReadTimeout):
                served.send(http, "w2", timeout=1.5)
        finally:
            os.kill(writer, signal.SIGCONT)
        again = served.send(http, "w2")
        assert again.status_code == 200, again.text
        assert again.json()["signal"]["sender_order_id"] == "w2"
        assert again.json()["duplicate"] is True

        # Twenty at once: one group or a few, every answer the committed outcome.
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda n: served.send(http, f"b{n}"), range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["signal"]["status"] for a in answers} == {"processed"}
    statuses, orders = _counts(served)
    assert statuses == {"w1": "processed", "w2": "processed"} | {
        f"b{n}": "processed" for n in range(20)
    }
    assert sorted(orders.values()) == [1] * 22
    with unit_of_work(factory=served.engines.session_factory(Database.main)) as session:
        [position] = session.scalars(select(Position).where(Position.symbol == "WRT")).all()
        assert (position.direction, position.quantity) == ("long", Decimal(2 + 1 + 20))
    assert _children(served.process.pid) == [writer]  # the same writer all along


def test_a_commit_of_the_writer_wakes_the_servers_stream_clients(served: Served) -> None:
    """The writer's commits wake the server's hub (its safety poll is a minute away)."""
    with (
        connect(ws_url(served.url), additional_headers=bearer(served.api_key)) as stream,
        httpx.Client(base_url=served.url, timeout=30) as http,
    ):
        assert json.loads(stream.recv(timeout=5))["type"] == "hello"
        for n in range(3):
            answer = served.send(http, f"e{n}")
            assert answer.status_code == 200, answer.text
            [order] = answer.json()["signal"]["outcome"]["orders"]
            event = next_event(stream, timeout=5)
            assert event is not None, "the stream client was not woken"
            assert (event["type"], event["data"]["order_id"]) == ("order.filled", order["id"])


def test_the_server_goes_on_when_its_writer_process_dies(served: Served) -> None:
    """SIGKILL the writer while signals stream in: the server answers on (its writer
    thread), every signal acknowledged is processed exactly once, none is left pending,
    and reconcile agrees."""
    writer = served.writer_pid
    acknowledged: list[str] = []
    failed: list[int | str] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(1_000_000))

    def stream() -> None:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            while not stop.is_set():
                with lock:
                    order_id = f"k{next(counter)}"
                try:
                    answer = served.send(http, order_id)
                except httpx.HTTPError as exc:
                    with lock:
                        failed.append(repr(exc))
                    continue
                with lock:
                    if answer.status_code in (200, 202):
                        acknowledged.append(order_id)
                    else:
                        failed.append(answer.status_code)

    senders = [threading.Thread(target=stream) for _ in range(4)]
    for sender in senders:
        sender.start()
    try:
        deadline = time.monotonic() + 30
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(writer, signal.SIGKILL)
        at_kill = len(acknowledged)
        deadline = time.monotonic() + 30
        while len(acknowledged) < at_kill + 40 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=60)
    assert len(acknowledged) >= at_kill + 40, "the server stopped answering"
    assert failed == []  # the signals in flight were answered from the database
    assert _children(served.process.pid) == []  # reaped, and no other started
    assert "signal writer process" in served.log()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the recovery of what it left stored
        statuses, orders = _counts(served)
        if set(statuses.values()) == {"processed"}:
            break
        time.sleep(0.1)
    assert set(statuses.values()) == {"processed"}, statuses
    assert set(acknowledged) <= set(statuses)
    assert sorted(orders.values()) == [1] * len(statuses)  # exactly one order each
    reconcile = subprocess.run(
        [sys.executable, "-m", "tradebase", "reconcile", "--portfolio",
         str(served.portfolio_id)],
        env=served.env, cwd=served.folder, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert reconcile.returncode == 0, reconcile.stderr
    assert f"{len(statuses)} fills: positions and cash agree" in reconcile.stdout


@pytest.mark.parametrize("how", ["term", "kill", "term-group"])
def test_the_writer_process_stops_with_the_server(served: Served, how: str) -> None:
    """SIGTERM to the server, SIGKILL, or SIGTERM to every process of the server (as a
    service manager stops it): the writer exits with the server, and is not killed
    before it (the server would log that it died and go on without it)."""
    writer = served.writer_pid
    with httpx.Client(base_url=served.url, timeout=30) as http:
        assert served.send(http, "s1").status_code == 200
    if how == "term-group":
        os.killpg(served.process.pid, signal.SIGTERM)
    else:
        served.process.send_signal(signal.SIGTERM if how == "term" else signal.SIGKILL)
    served.process.wait(timeout=30)
    assert _gone(writer, 30), "the writer process outlived the server"
    if how != "kill":
        assert "signal writer process" not in served.log(), served.log()


def test_checkpoints_off_the_writers_path_let_the_wal_start_over(tmp_path: Path) -> None:
    """The writer process's checkpoints (a thread, and the writer's short catch-up now and
    then): the WAL is copied and starts over long before the writer's own automatic
    checkpoint (the safety net, `Checkpoints.LIMIT` pages) would do it, and nothing
    written is lost."""
    from sqlalchemy import create_engine, text

    from tradebase.signals.writer import Checkpoints

    path = tmp_path / "wal.db"
    engine = create_engine(f"sqlite:///{path}")
    checkpoints = Checkpoints(engine)  # before the first connection, as in the writer
    with engine.begin() as conn:
        conn.execute(text("PRAGMA journal_mode = WAL"))
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)"))
        limit = conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one()
    assert limit == Checkpoints.LIMIT
    page = 4096
    largest = 0
    groups = 600  # ~25 pages each: 15,000 pages, beyond the safety net
    for _ in range(groups):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (blob) VALUES (randomblob(100000))"))
        checkpoints.after_group()
        largest = max(largest, (tmp_path / "wal.db-wal").stat().st_size)
    assert largest < Checkpoints.LIMIT * page / 2, largest  # started over, many times
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == groups
        assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
    checkpoints.close()
    engine.dispose()
