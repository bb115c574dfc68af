"""Memory per established session: lns against l2tpns, 10,000 and 50,000 idle sessions.

    python -m benchmarks.memory [--sessions 10000,50000] [--tunnels 10]
        [--servers lns-sqlite,l2tpns] [--settle 10] [--output FILE]

For each server and each count N, a fresh network namespace gets FreeRADIUS (N CHAP
users) and the server (lns.testing.servers). The server's resident memory (VmRSS of
its process and any children, /proc/PID/status) is read once it is ready and idle
(the baseline), then lns-loadgen sets up N sessions over ``--tunnels`` tunnels and holds
them (``--hold``); ``--settle`` seconds into the hold, when the sessions are idle (LCP
echoes and HELLOs only), RSS is read again. Printed: baseline, RSS with N sessions, and
(RSS - baseline) / sessions up, in KiB per session.

lns runs with its SQLite pool by default (``--servers lns-postgresql`` for the other
backend: what lns keeps per session does not depend on it).
l2tpns runs with the LAC retransmission timer at 0.2 s (it acks late; notes/peers.md).
The load generator is killed after the reading rather than tearing 50,000 sessions down.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lns.testing.servers import (
    BenchError,
    Harness,
    held_loadgen,
    start_server,
    summarise,
    users,
)


def run_one(kind: str, sessions: int, args: argparse.Namespace) -> dict[str, Any]:
    label = f"{kind} x {sessions:,}"
    print(f"--- {label}: starting FreeRADIUS and the server", flush=True)
    with Harness() as harness:
        server, namespace = start_server(harness, kind, users(sessions))
        directory = harness.directory("lns-bench-memory-")
        time.sleep(3)
        baseline = server.rss_kib()
        started = time.monotonic()
        loadgen = held_loadgen(
            harness,
            namespace,
            directory,
            args.setup_timeout,
            sessions=sessions,
            tunnels=args.tunnels,
            retransmit=0.2 if kind == "l2tpns" else 1.0,
            concurrency=args.concurrency,
        )
        setup_seconds = time.monotonic() - started
        time.sleep(args.settle)
        samples = []
        for _ in range(3):
            samples.append(server.rss_kib())
            time.sleep(1)
        rss = max(samples)
        up, failed = loadgen.sessions_up()
        lost = server.sessions_down()
        loadgen.kill()
        problems = server.problems(limit=8)
        result = {
            "run": label,
            "server": server.label,
            "sessions_requested": sessions,
            "sessions_up": up,
            "sessions_failed": failed,
            "setup_seconds": round(setup_seconds, 1),
            "baseline_rss_kib": baseline,
            "rss_kib": rss,
            "rss_samples_kib": samples,
            "kib_per_session": round((rss - baseline) / up, 2) if up else None,
            "server_pids": server.pids(),
            "server_sessions_down": lost,
            "server_log_problems": server.problem_count(),
            "server_log_problem_sample": problems,
        }
        server.stop()
    return result


def show(result: dict[str, Any]) -> None:
    per = result["kib_per_session"]
    print(
        f"{result['run']:<26} up {result['sessions_up']:>6,} (failed"
        f" {result['sessions_failed']:,}, {result['setup_seconds']:.0f} s)"
        f"  RSS idle {result['baseline_rss_kib'] / 1024:7.1f} MiB"
        f"  with sessions {result['rss_kib'] / 1024:7.1f} MiB"
        f"  per session {'-' if per is None else f'{per:.2f}'} KiB"
        f"  log problems {result['server_log_problems']}",
        flush=True,
    )
    if result.get("server_sessions_down"):
        print(f"    sessions the server closed: {result['server_sessions_down']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="10000,50000")
    parser.add_argument("--tunnels", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--servers", default="lns-sqlite,l2tpns")
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--setup-timeout", type=float, default=1800.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    results = []
    for kind in args.servers.split(","):
        for count in (int(n) for n in args.sessions.split(",")):
            try:
                result = run_one(kind, count, args)
            except BenchError as exc:
                print(f"{kind} x {count}: failed: {exc}", file=sys.stderr)
                result = {"run": f"{kind} x {count:,}", "error": str(exc)}
            else:
                show(result)
            results.append(result)
    return summarise("memory", results, show, args.output, 26)


if __name__ == "__main__":
    sys.exit(main())
