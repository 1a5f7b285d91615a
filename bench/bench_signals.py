"""Webhook signals per second, from the HTTP request to the fill and the position, against
a minimal endpoint of the same framework and server doing one INSERT and COMMIT per
request, both over HTTP on loopback with wrk, interleaved in the same run.

Per engine (SQLite in a temporary data dir; with --postgres, also a scratch database on
that server, dropped and recreated each run): migrate, make a trader (account, funded
portfolio, a long seed position, a webhook key), start a real ``tradebase serve`` (one
uvicorn worker, log level warning) and ``bench/bare_insert_app.py`` (the same uvicorn, the
same flags) on free loopback ports, then take turns: baseline, signals, baseline, signals
… (--rounds each, --duration seconds a round, after a short warm-up of both):

    wrk -t2 -c8 -d<duration>s --latency -s bench/signals.lua http://127.0.0.1:<port> \
        -- /webhook/<key> <round tag>

A third server in the same turns is the floor (``bench/raw_signal_app.py``): the same
framework and server doing a signal's writes as literal SQL on the bare driver, against a
database Tradebase migrated (every index and trigger), with none of Tradebase's code. It
says how close any implementation of this data model can come to the bare endpoint.

Every request is a distinct signal (order_id = round tag, wrk thread, counter), a market
buy or sell of 1 BENCH on the always-open paper exchange with a price hint, alternating.
Afterwards the database is checked: every signal processed with exactly one order and one
fill, the position equal to the seed plus the signals' net quantity, at least as many
signals as wrk counted 2xx answers (a request in flight when wrk stops is still executed),
and no non-2xx answers or socket errors.

    python bench/bench_signals.py [--duration 10] [--rounds 3] [--connections 8]
        [--threads 2] [--postgres postgresql://postgres@127.0.0.1:5432/]

wrk is the Debian package: ``apt-get install -y wrk``. Figures: medians of the rounds of
requests/s, p50 and p99 (wrk's --latency distribution), and signals/baseline.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tradebase.accounts.service import user as user_service
from tradebase.config import Settings, normalize_database_url
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.money import canonical
from tradebase.orders.service import order as order_service
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.signals.service import signal as signal_service

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
LUA = BENCH / "signals.lua"
SEED = Decimal(1_000_000)  # a long position the sells draw on, so none goes short
SCRATCH = "tb_bench_signals"


@dataclass
class Run:
    """One wrk run: requests/s, latency percentiles (ms), answers counted."""

    rate: float
    p50: float
    p99: float
    requests: int
    non_2xx: int
    socket_errors: int


@dataclass
class Side:
    runs: list[Run] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(r, name) for r in self.runs)

    def total(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.runs)


# --- wrk ------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> Run:
    def grab(pattern: str) -> str | None:
        match = re.search(pattern, output, re.MULTILINE)
        return match.group(1) if match else None

    rate, p50, p99 = grab(r"^Requests/sec:\s+([\d.]+)"), grab(r"^\s+50%\s+(\S+)"), None
    p99 = grab(r"^\s+99%\s+(\S+)")
    requests = grab(r"^\s+(\d+) requests in")
    if rate is None or p50 is None or p99 is None or requests is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return Run(
        rate=float(rate),
        p50=_ms(p50),
        p99=_ms(p99),
        requests=int(requests),
        non_2xx=int(grab(r"Non-2xx or 3xx responses:\s+(\d+)") or 0),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def wrk(port: int, path: str, tag: str, *, seconds: float, threads: int, connections: int) -> Run:
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
        "-s", str(LUA), f"http://127.0.0.1:{port}", "--", path, tag,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


# --- servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process on a loopback port, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log_path = name, log
        self.log = log.open("w")
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=BENCH
        )

    def wait_ready(self, port: int, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def serve_command(port: int) -> list[str]:
    """``tradebase serve`` on a loopback port: one uvicorn worker, warnings only."""
    return [sys.executable, "-m", "tradebase", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--log-level", "warning"]  # fmt: skip


def server_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBASE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


# --- the trader ------------------------------------------------------------------------


@dataclass
class Trader:
    webhook_key: str
    user_id: int
    portfolio_id: int


def make_trader(settings: Settings) -> Trader:
    for database in Database:
        migrate.upgrade(database, settings=settings)
    engines = Engines(settings)
    try:
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            user, _ = user_service.create(
                session, username="bench", email="bench@example.com", password="benchmark pw"
            )
            who = Principal(user_id=user.id, username=user.username, role="trader")
            account = account_service.create(session, who, account_name="bench")
            portfolio = portfolio_service.create(session, who, account_id=account.id, name="bench")
            portfolio_service.deposit(session, who, portfolio.id, Decimal(10**12))
            order_service.place(
                session, who, portfolio_id=portfolio.id, symbol="BENCH", side="buy",
                quantity=SEED, price=Decimal(100), exchange="paper",
            )  # fmt: skip
            key = signal_service.new_webhook_key(session, who)
            return Trader(key, user.id, portfolio.id)
    finally:
        engines.dispose()


def check(settings: Settings, trader: Trader, answered: int) -> dict[str, Any]:
    """What the database holds after the run, and whether it is right."""
    engines = Engines(settings)
    try:
        with engines.engine(Database.main).connect() as conn:

            def one(sql: str) -> Any:
                return conn.execute(text(sql), {"u": trader.user_id}).scalar()

            # Wait for the requests wrk left in flight to finish.
            for _ in range(100):
                if not one(
                    "SELECT COUNT(*) FROM signals WHERE status IN ('received', 'processing')"
                ):
                    break
                time.sleep(0.1)
            signals = one("SELECT COUNT(*) FROM signals WHERE user_id = :u")
            processed = one(
                "SELECT COUNT(*) FROM signals WHERE user_id = :u AND status = 'processed'"
            )
            not_one_order = one(
                "SELECT COUNT(*) FROM signals s WHERE s.user_id = :u AND"
                " (SELECT COUNT(*) FROM orders o WHERE o.signal_id = s.id) <> 1"
            )
            orders = one("SELECT COUNT(*) FROM orders WHERE signal_id IS NOT NULL")
            not_one_fill = one(
                "SELECT COUNT(*) FROM orders o WHERE o.signal_id IS NOT NULL AND"
                " ((SELECT COUNT(*) FROM trades t WHERE t.order_id = o.id) <> 1"
                " OR o.status <> 'filled')"
            )
            fills = one(
                "SELECT COUNT(*) FROM trades t JOIN orders o ON o.id = t.order_id"
                " WHERE o.signal_id IS NOT NULL"
            )
            net = Decimal(0)
            for side, quantity in conn.execute(
                text("SELECT side, quantity FROM orders WHERE signal_id IS NOT NULL")
            ):
                net += Decimal(str(quantity)) * (1 if side == "buy" else -1)
            held = Decimal(0)
            for direction, quantity in conn.execute(
                text(
                    "SELECT direction, quantity FROM positions WHERE portfolio_id = :p"
                    " AND symbol = 'BENCH' AND status = 'open'"
                ),
                {"p": trader.portfolio_id},
            ):
                held += Decimal(str(quantity)) * (1 if direction == "long" else -1)
    finally:
        engines.dispose()
    ok = (
        signals == processed
        and not not_one_order
        and not not_one_fill
        and orders == signals == fills
        and held == SEED + net
        and signals >= answered
    )
    return {
        "signals": signals, "processed": processed, "orders": orders, "fills": fills,
        "signals without exactly one order": not_one_order,
        "orders without exactly one fill": not_one_fill,
        "position": canonical(held), "seed + net of the orders": canonical(SEED + net),
        "wrk 2xx": answered,
        "ok": ok,
    }  # fmt: skip


def bare_rows(url: str) -> int:
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT COUNT(*) FROM bare_signals").fetchone()
            return int(row[0]) if row else 0
    import sqlite3

    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM bare_signals").fetchone()[0])


# --- one engine ------------------------------------------------------------------------


def raw_url_of(settings: Settings) -> str:
    """The main database of *settings* as the bare drivers take it."""
    url = settings.main_url
    if url.drivername.startswith("sqlite"):
        return f"sqlite:///{url.database}"
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def bench_engine(
    title: str,
    settings: Settings,
    env: dict[str, str],
    bare_url: str,
    folder: Path,
    args: argparse.Namespace,
    floor_settings: Settings,
) -> tuple[Side, Side, Side, dict[str, Any], int]:
    trader = make_trader(settings)
    floor_trader = make_trader(floor_settings)
    with Engines(floor_settings).engine(Database.main).connect() as conn:
        account_id = conn.execute(
            text("SELECT account_id FROM portfolios WHERE id = :p"),
            {"p": floor_trader.portfolio_id},
        ).scalar_one()
    ids = f"{floor_trader.user_id},{account_id},{floor_trader.portfolio_id}"
    tb_port, bare_port, floor_port = free_port(), free_port(), free_port()
    python = sys.executable
    tradebase = Server(
        "tradebase serve", serve_command(tb_port), env, folder / "tradebase-serve.log"
    )
    bare = Server(
        "bare_insert_app",
        [python, str(BENCH / "bare_insert_app.py"), "--port", str(bare_port),
         "--workers", "1", "--log-level", "warning"],
        {**env, "BARE_DB": bare_url}, folder / "bare.log",
    )  # fmt: skip
    floor = Server(
        "raw_signal_app",
        [python, str(BENCH / "raw_signal_app.py"), "--port", str(floor_port),
         "--workers", "1", "--log-level", "warning"],
        {**env, "RAW_DB": raw_url_of(floor_settings), "RAW_IDS": ids},
        folder / "floor.log",
    )  # fmt: skip
    sides = {"baseline": Side(), "floor": Side(), "signals": Side()}
    targets = {
        "baseline": (bare_port, "/webhook/bare"),
        "floor": (floor_port, "/webhook/floor"),
        "signals": (tb_port, f"/webhook/{trader.webhook_key}"),
    }
    try:
        tradebase.wait_ready(tb_port, "/health")
        bare.wait_ready(bare_port, "/webhook/x")
        floor.wait_ready(floor_port, "/docs")
        run_id = uuid.uuid4().hex[:6]
        load = dict(threads=args.threads, connections=args.connections)
        for port, path in targets.values():  # warm up both
            wrk(port, path, f"{run_id}w", seconds=args.warmup, **load)
        for number in range(args.rounds):
            for name, (port, path) in targets.items():
                run = wrk(port, path, f"{run_id}r{number}", seconds=args.duration, **load)
                sides[name].runs.append(run)
                print(
                    f"  {title} round {number + 1} {name:8}: {run.rate:8,.0f} req/s"
                    f"  p50 {run.p50:6.2f} ms  p99 {run.p99:6.2f} ms"
                    + (f"  non-2xx {run.non_2xx}" if run.non_2xx else "")
                    + (f"  socket errors {run.socket_errors}" if run.socket_errors else ""),
                    flush=True,
                )
    finally:
        tradebase.stop()
        bare.stop()
        floor.stop()
    # The check covers every signal in the inbox, the warm-up's too; wrk's count is of the
    # measured rounds only (so the inbox holds at least that many).
    answered = sum(r.requests - r.non_2xx for r in sides["signals"].runs)
    verdict = check(settings, trader, answered)
    return sides["baseline"], sides["floor"], sides["signals"], verdict, bare_rows(bare_url)


def report(results: list[tuple[str, Side, Side, Side, dict[str, Any], int]]) -> None:
    print("\nrequests/s, p50 and p99 in ms: medians of the rounds")
    header = (
        f"{'engine':12} {'baseline/s':>10} {'p50':>6} {'p99':>6}"
        f" {'floor/s':>8} {'p50':>6} {'p99':>6}"
        f" {'signals/s':>10} {'p50':>6} {'p99':>6}"
        f" {'sig/base':>8} {'floor/base':>10} {'sig/floor':>9}  checked"
    )
    print(header)
    for title, base, floor, sig, verdict, _rows in results:
        rate = {name: side.median("rate") for name, side in
                (("base", base), ("floor", floor), ("sig", sig))}  # fmt: skip
        print(
            f"{title:12} {rate['base']:10,.0f} {base.median('p50'):6.2f}"
            f" {base.median('p99'):6.2f} {rate['floor']:8,.0f} {floor.median('p50'):6.2f}"
            f" {floor.median('p99'):6.2f} {rate['sig']:10,.0f} {sig.median('p50'):6.2f}"
            f" {sig.median('p99'):6.2f} {rate['sig'] / rate['base']:8.2f}"
            f" {rate['floor'] / rate['base']:10.2f} {rate['sig'] / rate['floor']:9.2f}"
            f"  {'ok' if verdict['ok'] else 'WRONG'}"
        )
    for title, base, _floor, sig, verdict, rows in results:
        print(f"\n{title}: database check")
        for name, value in verdict.items():
            print(f"  {name}: {value}")
        print(f"  bare rows: {rows} (wrk 2xx {base.total('requests') - base.total('non_2xx')})")
        for name, side in (("baseline", base), ("signals", sig)):
            bad, errors = side.total("non_2xx"), side.total("socket_errors")
            if bad or errors:
                print(f"  {name}: {bad} non-2xx answers, {errors} socket errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up each")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--postgres", help="PostgreSQL server URL (a scratch database is made)")
    parser.add_argument("--no-sqlite", action="store_true", help="only PostgreSQL")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: install it with  apt-get install -y wrk  (Debian package)")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results = []
    if not args.no_sqlite:
        folder = Path(tempfile.mkdtemp(prefix="tb-bench-signals-"))
        settings = Settings(data_dir=folder)
        env = server_env({"TRADEBASE_DATA_DIR": str(folder)})
        bare_url = f"sqlite:///{folder / 'bare.db'}"
        floor_settings = Settings(data_dir=folder / "floor")
        results.append(
            (
                "SQLite",
                *bench_engine("SQLite", settings, env, bare_url, folder, args, floor_settings),
            )
        )
        shutil.rmtree(folder, ignore_errors=True)
    if args.postgres:
        import psycopg

        server = normalize_database_url(args.postgres)
        admin = server.set(drivername="postgresql", database="postgres")
        with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
            for name in (SCRATCH, f"{SCRATCH}_floor"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')
        url = server.set(database=SCRATCH).render_as_string(hide_password=False)
        floor_url = server.set(database=f"{SCRATCH}_floor").render_as_string(hide_password=False)
        folder = Path(tempfile.mkdtemp(prefix="tb-bench-signals-pg-"))
        settings = Settings(data_dir=folder, database_url=url)
        env = server_env({"TRADEBASE_DATA_DIR": str(folder), "TRADEBASE_DATABASE_URL": url})
        bare_url = server.set(drivername="postgresql", database=SCRATCH).render_as_string(False)
        floor_settings = Settings(data_dir=folder / "floor", database_url=floor_url)
        results.append(
            (
                "PostgreSQL",
                *bench_engine("PostgreSQL", settings, env, bare_url, folder, args, floor_settings),
            )
        )
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    report(results)
    if not all(r[4]["ok"] for r in results) or any(
        s.total("non_2xx") or s.total("socket_errors") for r in results for s in r[1:4]
    ):
        sys.exit(1)


if __name__ == "__main__":
    main()
