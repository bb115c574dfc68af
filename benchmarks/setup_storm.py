"""Session setup storm: lns (SQLite, PostgreSQL) against l2tpns under the same load generator.

    python -m benchmarks.setup_storm [--sessions 10000] [--tunnels 4] [--concurrency 1000]
        [--servers lns-sqlite,lns-postgresql,l2tpns] [--lns-retransmit 1.0]
        [--l2tpns-retransmit 1.0,0.2] [--profile DIR] [--output FILE]

Each run gets a fresh network namespace holding FreeRADIUS (one CHAP user per ICCID, the
ICCID as password), the server, and lns-loadgen on the namespace's loopback
(lns.testing.servers). The load generator opens ``--tunnels`` tunnels and sets up
``--sessions`` sessions as fast as ``--concurrency`` setups in flight allow (``--rate 0``),
each authenticated by RADIUS CHAP and given an address from the server's pool (lns: its
SQL pool, SQLite file or PostgreSQL database; l2tpns: its in-memory /etc/l2tpns/ip_pool),
while it sends a HELLO on every tunnel every 0.1 s and times its acknowledgement. Then it
tears everything down.

l2tpns acknowledges late (notes/peers.md), so its rate follows the LAC's retransmission
timer: it runs once per ``--l2tpns-retransmit`` value. lns runs at ``--lns-retransmit``.

Printed per run: sessions per second (first ICRQ to last IPCP Opened), setup latency
p50/p99 (ICRQ to the device's IPCP Opened), failures by reason, the HELLO round trip
p50/p99/max during the storm, the LAC's retransmissions, the server's CPU (user + system)
and problems in its log. With ``--profile DIR`` py-spy samples the lns process during the
storm: DIR/<run>.txt (raw collapsed stacks) and a summary of the hottest functions. The
sampler costs CPU on a 2-core machine: take the figures from a run without --profile.
The machine's busy share (all processes, /proc/stat) is printed too, so a run disturbed
by something else on the machine shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lns.testing.profiles import profile_summary
from lns.testing.servers import (
    BenchError,
    Harness,
    Loadgen,
    loadgen_arguments,
    machine_busy,
    start_server,
    stop_process,
    summarise,
    users,
)


def run_one(
    kind: str, retransmit: float, args: argparse.Namespace, profile_dir: Path | None
) -> dict[str, Any]:
    label = f"{kind}@{retransmit:g}s"
    print(f"--- {label}: starting FreeRADIUS and the server", flush=True)
    with Harness() as harness:
        options = {} if kind == "l2tpns" else {"cpus": args.cpus, "worker": args.worker}
        server, namespace = start_server(harness, kind, users(args.sessions), **options)
        directory = harness.directory("lns-bench-storm-")
        cpu_before = server.cpu_seconds()
        rss_before = server.rss_kib()
        loadgen = Loadgen(
            namespace,
            directory,
            loadgen_arguments(
                sessions=args.sessions,
                tunnels=args.tunnels,
                retransmit=retransmit,
                concurrency=args.concurrency,
                timeout=args.timeout,
            ),
        )
        spy = None
        raw = None
        if profile_dir is not None and server.kind == "lns" and shutil.which("py-spy"):
            raw = profile_dir / f"{kind}-{retransmit:g}.txt"
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--rate",
                    str(args.profile_rate),
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            harness.callback(stop_process, spy)
        started = time.monotonic()
        busy_before = machine_busy()
        loadgen.wait_phase({"hold", "teardown", "done"}, args.timeout * 20 + args.sessions)
        setup_wall = time.monotonic() - started
        cpu_setup = server.cpu_seconds() - cpu_before
        lost = server.sessions_down()  # before the teardown, every one is a loss
        busy = machine_busy(busy_before)
        rss_peak = server.rss_kib()
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(10)
        summary = loadgen.wait(args.timeout * 10 + args.sessions / 10)
        result = {
            "run": label,
            "server": server.label,
            "retransmit_s": retransmit,
            "sessions": args.sessions,
            "tunnels": args.tunnels,
            "concurrency": args.concurrency,
            "loadgen_exit": loadgen.process.returncode,
            "setups_per_s": summary["setup"]["setups_per_s"],
            "setup_duration_s": summary["setup"]["duration_s"],
            "latency_ms": summary["setup"]["latency_ms"],
            "established": summary["sessions"]["established"],
            "failed": summary["sessions"]["failed"],
            "failures": summary["sessions"]["failures"],
            "not_attempted": summary["sessions"]["not_attempted"],
            "dropped": summary["sessions"]["dropped"],
            "hello_rtt_ms": summary["hello"]["rtt_ms"],
            "retransmissions": summary["control"]["retransmissions"],
            "teardown_complete": summary["teardown_complete"],
            "server_cpu_s_during_setup": round(cpu_setup, 2),
            "server_cpu_percent_during_setup": round(100 * cpu_setup / max(setup_wall, 1e-9), 1),
            "machine_busy_percent_during_setup": busy,
            "server_rss_kib": {"before": rss_before, "after_setup": rss_peak},
            "server_sessions_down_during_setup": lost,
            "server_log_problems": server.problem_count(),
            "server_log_problem_sample": server.problems(limit=8),
            "loadgen_summary": summary,
        }
        if raw is not None and raw.exists():
            result["profile"] = {"raw": str(raw), **profile_summary(raw)}
        server.stop()
        result["server_log_problems"] = server.problem_count()
        result["server_log_problem_sample"] = server.problems(limit=8)
    return result


def show(result: dict[str, Any]) -> None:
    latency = result["latency_ms"] or {}
    hello = result["hello_rtt_ms"] or {}
    print(
        f"{result['run']:<22} {result['setups_per_s'] or 0:>8,.0f} setups/s"
        f"  latency p50 {latency.get('p50', float('nan')):>8.1f} ms"
        f" p99 {latency.get('p99', float('nan')):>8.1f} ms"
        f"  up {result['established']:>6,}/{result['sessions']:,} failed {result['failed']:,}"
        f"  HELLO p50 {hello.get('p50', float('nan')):.1f} p99 {hello.get('p99', float('nan')):.1f}"
        f" max {hello.get('max', float('nan')):.1f} ms"
        f"  retransmissions {result['retransmissions']:,}"
        f"  server CPU {result['server_cpu_percent_during_setup']:.0f}%"
        f" (machine {result['machine_busy_percent_during_setup']:.0f}% of"
        f" {os.cpu_count()} cores)  log problems {result['server_log_problems']}",
        flush=True,
    )
    if result["failures"]:
        print(f"    failures: {result['failures']}")
    if result.get("server_sessions_down_during_setup"):
        print(f"    sessions the server closed: {result['server_sessions_down_during_setup']}")
    for line in result["server_log_problem_sample"][:3]:
        print(f"    log: {line[:200]}")
    profile = result.get("profile")
    if profile:
        print(f"    hottest functions ({profile['samples']} samples; self time):")
        for name, share in profile["self"]:
            print(f"      {share:5.1f}%  {name}")
        print("    charged to the innermost lns frame:")
        for name, share in profile["project"]:
            print(f"      {share:5.1f}%  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--tunnels", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--servers", default="lns-sqlite,lns-postgresql,l2tpns")
    parser.add_argument("--lns-retransmit", default="1.0")
    parser.add_argument("--l2tpns-retransmit", default="1.0,0.2")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles of lns")
    parser.add_argument("--profile-rate", type=int, default=50, help="py-spy samples/s")
    parser.add_argument(
        "--cpus", help="run lns on these CPUs only (taskset -c), e.g. 0 for one core"
    )
    parser.add_argument(
        "--worker",
        choices=["process", "threads"],
        default="process",
        help="lns's [database] worker",
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    runs = []
    for kind in args.servers.split(","):
        timers = args.l2tpns_retransmit if kind == "l2tpns" else args.lns_retransmit
        runs += [(kind, float(value)) for value in timers.split(",")]
    results = []
    for kind, retransmit in runs:
        try:
            result = run_one(kind, retransmit, args, args.profile)
        except BenchError as exc:
            print(f"{kind}@{retransmit:g}s failed: {exc}", file=sys.stderr)
            result = {"run": f"{kind}@{retransmit:g}s", "error": str(exc)}
        else:
            show(result)
        results.append(result)
    return summarise("setup_storm", results, show, args.output, 22)


if __name__ == "__main__":
    sys.exit(main())
