"""Webhook signals per second at another revision and at this checkout, in the same run:
two real ``tradebase serve`` processes (one uvicorn worker each, its own SQLite database
and trader, set up as bench/bench_signals.py sets them up), wrk rounds taking turns, and
the CPU each server spends per signal (user + system of the process and of its writer
process, from /proc/<pid>/stat around the round); the two go first in turn.

    python bench/ab_signals.py REV [--rounds 4] [--duration 10] [--connections 8]

REV is any git revision (a commit, ``HEAD~3``, a branch); it is checked out in a
temporary worktree, which is removed afterwards. The trader of each server is made with
this checkout's code on a database that the other revision's server then migrates
forward if it needs to (``tradebase serve`` upgrades on start). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench_signals import BENCH, Run, Server, free_port, make_trader, serve_command, wrk

from tradebase.config import Settings

ROOT = BENCH.parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU of *pid* and of the processes it started and still runs (the
    signal writer process, signals/writer.py)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").glob("*/children")
        for child in task.read_text().split()
    ]
    return own + sum(cpu_seconds(child) for child in children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the revision to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tb-ab-"))
    tree = work / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.rev],
        check=True,
        capture_output=True,
    )
    servers: dict[str, tuple[Server, int, str]] = {}
    runs: dict[str, list[tuple[Run, float]]] = {}
    try:
        for name, src in ((args.rev, tree / "src"), ("this checkout", ROOT / "src")):
            data = work / f"data-{len(servers)}"
            trader = make_trader(Settings(data_dir=data))
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBASE_")}
            env.update(PYTHONPATH=str(src), TRADEBASE_DATA_DIR=str(data))
            server = Server(name, serve_command(port), env, work / f"serve-{len(servers)}.log")
            servers[name] = (server, port, f"/webhook/{trader.webhook_key}")
            runs[name] = []
        load = dict(threads=args.threads, connections=args.connections)
        for server, port, path in servers.values():
            server.wait_ready(port, "/health")
            wrk(port, path, "warm", seconds=3, **load)
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        for number in range(args.rounds):
            # The two take turns going first: a round's disk writeback and cache state
            # spill into the next one's, which favoured whichever went first.
            turn = list(servers.items())[:: -1 if number % 2 else 1]
            for name, (server, port, path) in turn:
                before = cpu_seconds(server.process.pid)
                run = wrk(port, path, f"r{number}", seconds=args.duration, **load)
                ms = (cpu_seconds(server.process.pid) - before) * 1000 / max(run.requests, 1)
                runs[name].append((run, ms))
                print(
                    f"  round {number + 1} {name:>14}: {run.rate:6.0f} signals/s"
                    f"  p50 {run.p50:6.1f} ms  p99 {run.p99:6.1f} ms  CPU {ms:5.2f} ms/signal"
                    + (f"  non-2xx {run.non_2xx}" if run.non_2xx else ""),
                    flush=True,
                )
        print(f"load average after: {os.getloadavg()[0]:.2f}\n\nmedians of the rounds:")
        for name, measured in runs.items():
            rates = [r.rate for r, _ in measured]
            print(
                f"  {name:>14}: {statistics.median(rates):6.0f} signals/s"
                f"  p50 {statistics.median(r.p50 for r, _ in measured):6.1f} ms"
                f"  p99 {statistics.median(r.p99 for r, _ in measured):6.1f} ms"
                f"  CPU {statistics.median(ms for _, ms in measured):5.2f} ms/signal"
            )
    finally:
        for server, _port, _path in servers.values():
            server.stop()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
        )


if __name__ == "__main__":
    main()
