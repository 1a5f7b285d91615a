"""One TradingView alert sent 100 times at once: how long the slowest copy waits for its
answer, against TradingView's 3 seconds, next to 100 requests at once to a minimal endpoint
of the same framework and server (one INSERT and COMMIT each), in the same run.

Per engine (SQLite in a temporary data dir; with --postgres and --mariadb, a scratch
database on that server, dropped and recreated): migrate, make a trader, start a real
``tradebase serve`` (one uvicorn worker) and ``bench/bare_insert_app.py`` (on SQLite, the
same uvicorn, the same flags), then take turns, --rounds each: 100 client threads, each
with a connection of its own (as 100 senders would), wait at a barrier and post at once —

- to Tradebase: the same alert 100 times (a market buy of 1 BURST with a price hint and
  an ``order_id`` new each round): one signal, one order, one fill; the 99 copies answer
  with the first one's outcome;
- to the bare endpoint: 100 distinct rows.

Each round is checked: every answer 200, one signal id, one outcome, one order in it;
afterwards the position equals the rounds' buys. Figures: medians over the rounds of the
slowest answer and of the median answer (ms), from the barrier to the whole answer read.

    python bench/bench_burst.py [--rounds 5] [--copies 100]
        [--postgres postgresql://postgres@127.0.0.1:5432/]
        [--mariadb mysql://root@127.0.0.1:3306/]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
from bench_signals import Server, Trader, free_port, make_trader, serve_command, server_env
from sqlalchemy import text

from tradebase.config import Settings, normalize_database_url
from tradebase.core.db import Database, Engines

BENCH = Path(__file__).resolve().parent
TRADINGVIEW_SECONDS = 3.0
SCRATCH = "tb_bench_burst"


@dataclass
class Side:
    slowest: list[float] = field(default_factory=list)  # ms, one a round
    median: list[float] = field(default_factory=list)

    def add(self, seconds: list[float]) -> None:
        self.slowest.append(max(seconds) * 1000)
        self.median.append(statistics.median(seconds) * 1000)


def burst(url: str, bodies: list[str]) -> list[tuple[httpx.Response, float]]:
    """Post *bodies* at once, each from a client of its own; (answer, seconds) each."""
    start = threading.Barrier(len(bodies))

    def send(body: str) -> tuple[httpx.Response, float]:
        with httpx.Client(timeout=60) as http:
            start.wait()
            began = time.perf_counter()
            answer = http.post(url, content=body, headers={"Content-Type": "text/plain"})
            return answer, time.perf_counter() - began

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


def check_round(answers: list[httpx.Response]) -> str | None:
    """What is wrong with one round of copies, or None."""
    if any(a.status_code != 200 for a in answers):
        return f"answers {sorted({a.status_code for a in answers})}: {answers[0].text[:200]}"
    signals = {a.json()["signal"]["id"] for a in answers}
    firsts = [a for a in answers if not a.json()["duplicate"]]
    outcomes = {json.dumps(a.json()["signal"]["outcome"], sort_keys=True) for a in answers}
    if len(signals) != 1 or len(firsts) != 1 or len(outcomes) != 1:
        return f"{len(signals)} signals, {len(firsts)} firsts, {len(outcomes)} outcomes"
    orders = firsts[0].json()["signal"]["outcome"]["orders"]
    if [(o["side"], o["quantity"], o["status"]) for o in orders] != [("buy", "1", "filled")]:
        return f"orders {orders}"
    return None


def position(settings: Settings, trader: Trader) -> Decimal:
    engines = Engines(settings)
    try:
        with engines.engine(Database.main).connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT direction, quantity FROM positions WHERE portfolio_id = :p"
                    " AND symbol = 'BURST' AND status = 'open'"
                ),
                {"p": trader.portfolio_id},
            ).all()
    finally:
        engines.dispose()
    return sum((Decimal(str(q)) * (1 if d == "long" else -1) for d, q in rows), start=Decimal(0))


def bench_engine(
    title: str, settings: Settings, env: dict[str, str], folder: Path, args: argparse.Namespace
) -> tuple[Side, Side | None, list[str]]:
    trader = make_trader(settings)
    python = sys.executable
    tb_port = free_port()
    tradebase = Server(
        "tradebase serve", serve_command(tb_port), env, folder / "tradebase-serve.log"
    )
    bare: Server | None = None
    bare_port = free_port()
    if args.baseline:
        bare = Server(
            "bare_insert_app",
            [python, str(BENCH / "bare_insert_app.py"), "--port", str(bare_port),
             "--workers", "1", "--log-level", "warning"],
            {**env, "BARE_DB": f"sqlite:///{folder / 'bare.db'}"}, folder / "bare.log",
        )  # fmt: skip
    signals, baseline = Side(), Side() if bare is not None else None
    problems: list[str] = []
    run_id = uuid.uuid4().hex[:6]
    try:
        tradebase.wait_ready(tb_port, "/health")
        if bare is not None:
            bare.wait_ready(bare_port, "/webhook/x")
        hook = f"http://127.0.0.1:{tb_port}/webhook/{trader.webhook_key}"
        for number in range(-1, args.rounds):  # round -1 warms both up
            alert = json.dumps(
                {"symbol": "BURST", "exchange": "paper", "action": "buy", "quantity": "1",
                 "price": "50", "order_id": f"{run_id}-{number}", "comment": "burst"}
            )  # fmt: skip
            timed = burst(hook, [alert] * args.copies)
            wrong = check_round([a for a, _ in timed])
            if wrong:
                problems.append(f"{title} round {number + 1}: {wrong}")
            if number >= 0:
                signals.add([s for _, s in timed])
            if bare is not None and baseline is not None:
                rows = [f'{{"n": "{run_id}-{number}-{i}"}}' for i in range(args.copies)]
                plain = burst(f"http://127.0.0.1:{bare_port}/webhook/bare", rows)
                if any(a.status_code != 200 for a, _ in plain):
                    problems.append(f"{title} baseline round {number + 1}: non-200")
                if number >= 0:
                    baseline.add([s for _, s in plain])
            if number >= 0:
                print(
                    f"  {title} round {number + 1}: copies slowest {signals.slowest[-1]:7.1f} ms"
                    f"  median {signals.median[-1]:7.1f} ms"
                    + (
                        f"   bare slowest {baseline.slowest[-1]:7.1f} ms"
                        f"  median {baseline.median[-1]:7.1f} ms"
                        if baseline is not None
                        else ""
                    ),
                    flush=True,
                )
    finally:
        tradebase.stop()
        if bare is not None:
            bare.stop()
    held = position(settings, trader)
    if held != args.rounds + 1:  # a buy of 1 a round, the warm-up's too
        problems.append(f"{title}: position {held}, expected {args.rounds + 1}")
    return signals, baseline, problems


def scratch_database(server_url: str) -> str:
    """A new empty database on the server of *server_url*; its URL."""
    server = normalize_database_url(server_url)
    if server.drivername.startswith("postgresql"):
        import psycopg

        admin = server.set(drivername="postgresql", database="postgres")
        with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{SCRATCH}"')
    else:
        import pymysql

        conn = pymysql.connect(
            host=server.host or "127.0.0.1",
            port=server.port or 3306,
            user=server.username or "root",
            password=server.password or "",
            autocommit=True,
        )
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{SCRATCH}`")
            cursor.execute(f"CREATE DATABASE `{SCRATCH}` CHARACTER SET utf8mb4")
        conn.close()
    return server.set(database=SCRATCH).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="bursts on each side")
    parser.add_argument("--copies", type=int, default=100, help="requests a burst")
    parser.add_argument("--postgres", help="PostgreSQL server URL (a scratch database is made)")
    parser.add_argument("--mariadb", help="MariaDB server URL (a scratch database is made)")
    parser.add_argument("--no-sqlite", action="store_true", help="only the servers given")
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="no bare endpoint"
    )
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    engines: list[tuple[str, str | None]] = []
    if not args.no_sqlite:
        engines.append(("SQLite", None))
    if args.postgres:
        engines.append(("PostgreSQL", args.postgres))
    if args.mariadb:
        engines.append(("MariaDB", args.mariadb))
    results = []
    for title, server in engines:
        folder = Path(tempfile.mkdtemp(prefix="tb-bench-burst-"))
        extra = {"TRADEBASE_DATA_DIR": str(folder)}
        if server is None:
            settings = Settings(data_dir=folder)
        else:
            url = scratch_database(server)
            settings = Settings(data_dir=folder, database_url=url)
            extra["TRADEBASE_DATABASE_URL"] = url
        results.append((title, *bench_engine(title, settings, server_env(extra), folder, args)))
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"\n{args.copies} copies of one alert at once, medians of {args.rounds} rounds (ms):")
    print("| engine | slowest copy | median copy | bare: slowest | bare: median | limit |")
    print("|---|---:|---:|---:|---:|---:|")
    for title, signals, baseline, _ in results:
        bare_cells = (
            f"{statistics.median(baseline.slowest):,.0f} | {statistics.median(baseline.median):,.0f}"
            if baseline is not None
            else "- | -"
        )
        print(
            f"| {title} | {statistics.median(signals.slowest):,.0f} |"
            f" {statistics.median(signals.median):,.0f} | {bare_cells} |"
            f" {TRADINGVIEW_SECONDS * 1000:,.0f} |"
        )
    problems = [p for *_, found in results for p in found]
    for problem in problems:
        print("WRONG:", problem)
    if problems or any(max(r[1].slowest) >= TRADINGVIEW_SECONDS * 1000 for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
