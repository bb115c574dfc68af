"""Issue 12's floods against ``twistd -n lns`` while a LAC holds sessions and sets up new ones.

    python -m benchmarks.hostile_floods [--duration 30] [--held 100] [--new-rate 10]
        [--rate half-open=1000,icrq=1000,...] [--settle 45] [--output FILE]

One network namespace holds FreeRADIUS, lns (SQLite, TUN device; its LAC entry
allows 127.0.0.0/24) and everything that talks to it, on the namespace's loopback
(lns.testing.servers). First lns-loadgen sets up ``--held`` sessions over two
tunnels and holds them, sending a HELLO on each tunnel every 0.2 s and timing its
acknowledgement; a second lns-loadgen opens its tunnel and sets up ``--new-rate``
sessions a second for as long as the flood lasts. Then lns.testing.flood sends
the floods of issue 12 for ``--duration`` seconds (by default about 3,000
datagrams a second: half-open SCCRQs from 64 addresses of the LAC's prefix,
ICRQs without ICCN in an authenticated tunnel, SCCRQs from an unlisted address,
65,000-byte SCCRQs, HELLOs for unknown tunnels, random bytes). After the flood
the state it made has ``--settle`` seconds to time out (31 s for a half-open
tunnel, 30 s for a call without ICCN).

Printed: the held tunnels' HELLO round trip during the flood (p50/p99/max; a
HELLO still unacknowledged when the next is due counts as skipped), the
sessions set up during the flood (and failures), the server's RSS before, at
its peak, at the end of the flood and after settling, its log's growth, its
CPU, and per kind of flood what was sent and what came back (reflection).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from lns.testing.flood import DEFAULT_RATES, KINDS
from lns.testing.processes import SOURCE_ROOT, working_tree_env
from lns.testing.servers import (
    ICCID_START,
    L2TP_SECRET,
    BenchError,
    Harness,
    Loadgen,
    loadgen_arguments,
    machine,
    machine_busy,
    start_server,
    users,
    write_report,
)

HELLO_INTERVAL = 0.2
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)([+-]\d{4}) ")


def log_growth(text: str, start: float, end: float) -> dict[str, int]:
    """Lines and bytes the server logged between two wall-clock instants (its log is
    buffered, so it is read once the server has stopped), and how many were warnings
    from the L2TP adapter, the lines a peer can cause."""
    lines = peer = size = 0
    for line in text.splitlines():
        match = _STAMP.match(line)
        if match is None:
            continue
        when = datetime.strptime(match.group(1) + match.group(2), "%Y-%m-%dT%H:%M:%S%z")
        if not start - 1 <= when.timestamp() < end:
            continue
        lines += 1
        size += len(line) + 1
        peer += "[lns.adapters.l2tp.L2tpService#warn]" in line
    return {"lines": lines, "bytes": size, "l2tp_warnings": peer}


def _rates(text: str) -> dict[str, float]:
    rates = dict(DEFAULT_RATES)
    for item in filter(None, text.split(",")):
        kind, _, value = item.partition("=")
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        rates[kind] = float(value)
    return rates


def run(args: argparse.Namespace) -> dict[str, Any]:
    new_sessions = max(1, int(args.new_rate * args.duration))
    with Harness() as harness:
        print("--- starting FreeRADIUS and lns", flush=True)
        server, namespace = start_server(
            harness, "lns-sqlite", users(args.held + new_sessions), peer="127.0.0.0/24"
        )
        directory = harness.directory("lns-bench-hostile-")
        hold = args.duration + args.settle + 60
        held = Loadgen(
            namespace,
            directory,
            loadgen_arguments(
                sessions=args.held,
                tunnels=2,
                hold=hold,
                hello_interval=HELLO_INTERVAL,
                timeout=60,
            ),
        )
        harness.callback(held.kill)
        print(f"--- setting up {args.held} sessions to hold", flush=True)
        if held.wait_phase({"hold"}, 300) != "hold":
            raise BenchError(f"the held sessions did not come up: {held.tail()}")
        fresh = Loadgen(
            namespace,
            directory,
            loadgen_arguments(
                sessions=new_sessions,
                tunnels=1,
                rate=args.new_rate,
                hello_interval=HELLO_INTERVAL,
                timeout=60,
                iccid_start=ICCID_START + args.held,
            ),
        )
        harness.callback(fresh.kill)
        # Its tunnel first: a half-open flood from the LAC's own prefix fills the LAC's
        # cap on tunnels being set up, and a new tunnel would be refused meanwhile.
        fresh.wait_phase({"setup", "hold", "teardown", "done"}, 60)
        rss_before = server.rss_kib()
        cpu_before = server.cpu_seconds()
        busy_before = machine_busy()
        secret = directory / "l2tp-secret"
        secret.write_text(L2TP_SECRET + "\n")
        report_path = directory / "flood.json"
        rates = ",".join(f"{kind}={rate:g}" for kind, rate in args.rate.items())
        print(f"--- flooding for {args.duration:g} s ({rates})", flush=True)
        flood = namespace.popen(
            sys.executable,
            "-m",
            "lns.testing.flood",
            "127.0.0.1:1701",
            "--secret-file",
            str(secret),
            "--duration",
            str(args.duration),
            "--rate",
            rates,
            "--lac-prefix",
            "127.0.0",
            "--unlisted",
            "127.1.0.1",
            "--json",
            str(report_path),
            cwd=SOURCE_ROOT,
            env=working_tree_env(),
            stdin=subprocess.DEVNULL,
        )
        started = time.monotonic()
        flood_start = time.time()
        rss_peak = rss_before
        while flood.poll() is None:
            rss_peak = max(rss_peak, server.rss_kib())
            if time.monotonic() - started > args.duration + 60:
                flood.kill()
                raise BenchError("the flood did not end")
            time.sleep(0.5)
        cpu_flood = server.cpu_seconds() - cpu_before
        flood_wall = time.monotonic() - started
        flood_end = time.time()
        busy = machine_busy(busy_before)
        rss_end = server.rss_kib()
        report = json.loads(report_path.read_text())
        print(f"--- letting the flood's state time out ({args.settle:g} s)", flush=True)
        settle_until = time.monotonic() + args.settle
        while time.monotonic() < settle_until:
            rss_peak = max(rss_peak, server.rss_kib())
            time.sleep(1.0)
        rss_after = server.rss_kib()
        settle_end = time.time()
        fresh_summary = fresh.wait(120)
        held.process.send_signal(2)  # SIGINT: the load generator tears down and reports
        held_summary = held.wait(120)
        server.stop()
        log_text = server.log.text()
        problems = server.problems(limit=8)
    hello = held_summary["hello"]
    return {
        "benchmark": "hostile_floods",
        "machine": machine(),
        "duration_s": args.duration,
        "flood": report,
        "held": {
            "sessions": held_summary["sessions"]["established"],
            "hello_rtt_ms": hello["rtt_hold_ms"],
            "hellos_skipped": hello["skipped"],
            "dropped": held_summary["sessions"]["dropped"],
            "hung_up": held_summary["sessions"]["hung_up"],
        },
        "new": {
            "requested": new_sessions,
            "established": fresh_summary["sessions"]["established"],
            "failed": fresh_summary["sessions"]["failed"],
            "failures": fresh_summary["sessions"]["failures"],
            "setups_per_s": fresh_summary["setup"]["setups_per_s"],
            "latency_ms": fresh_summary["setup"]["latency_ms"],
            "hello_rtt_ms": fresh_summary["hello"]["rtt_ms"],
        },
        "server": {
            "rss_kib": {
                "before": rss_before,
                "peak": rss_peak,
                "flood_end": rss_end,
                "after_settle": rss_after,
                "change_percent": round(100 * (rss_after - rss_before) / rss_before, 1),
            },
            "log": {
                "flood": log_growth(log_text, flood_start, flood_end),
                "settle": log_growth(log_text, flood_end, settle_end),
            },
            "cpu_percent_during_flood": round(100 * cpu_flood / max(flood_wall, 1e-9), 1),
            "machine_busy_percent_during_flood": busy,
            "log_problems": problems,
        },
    }


def _ms(values: dict[str, Any] | None, key: str) -> str:
    return "n/a" if not values else f"{values[key]:.1f} ms"


def show(result: dict[str, Any]) -> None:
    flood, held, new, server = result["flood"], result["held"], result["new"], result["server"]
    hello = held["hello_rtt_ms"]
    sent, seconds, pps = flood["sent"], flood["duration_s"], flood["rate_pps"]
    print(f"\nflood: {sent:,} datagrams in {seconds} s ({pps:,} a second)")
    for kind, tally in flood["kinds"].items():
        replies = (
            ", ".join(f"{name} {count:,}" for name, count in tally["replies"].items()) or "none"
        )
        print(
            f"  {kind:<15} sent {tally['sent']:>7,} ({tally['sent_bytes']:>11,} B)"
            f"  back {tally['reply_bytes']:>9,} B (x{tally['reflection'] or 0:.3f}): {replies}"
        )
    print(
        f"held: {held['sessions']} sessions; HELLO RTT p50 {_ms(hello, 'p50')}"
        f" p99 {_ms(hello, 'p99')} max {_ms(hello, 'max')} (n={hello['count'] if hello else 0}),"
        f" {held['hellos_skipped']} skipped; dropped by the LNS {held['dropped']}"
    )
    print(
        f"new during the flood: {new['established']}/{new['requested']} up, {new['failed']} failed"
        f" ({new['setups_per_s']} a second, latency p50 {_ms(new['latency_ms'], 'p50')}"
        f" p99 {_ms(new['latency_ms'], 'p99')}); HELLO RTT max {_ms(new['hello_rtt_ms'], 'max')}"
    )
    if new["failures"]:
        print(f"  failures: {new['failures']}")
    rss = server["rss_kib"]
    print(
        f"server RSS: before {rss['before'] / 1024:.1f} MiB, peak {rss['peak'] / 1024:.1f},"
        f" flood end {rss['flood_end'] / 1024:.1f}, after settling {rss['after_settle'] / 1024:.1f}"
        f" ({rss['change_percent']:+.1f}%)"
    )
    flood_log, settle_log = server["log"]["flood"], server["log"]["settle"]
    cpu, busy = server["cpu_percent_during_flood"], server["machine_busy_percent_during_flood"]
    print(
        f"server log during the flood: {flood_log['bytes']:,} B, {flood_log['lines']:,} lines"
        f" ({flood_log['l2tp_warnings']:,} L2TP warnings, the rest the sessions' events);"
        f" while settling: {settle_log['bytes']:,} B, {settle_log['lines']:,} lines"
        f" ({settle_log['l2tp_warnings']:,} L2TP warnings)"
    )
    print(f"server CPU during the flood {cpu}% of one core (machine {busy}% busy)")
    for line in server["log_problems"][:3]:
        print(f"  log: {line[:160]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--held", type=int, default=100)
    parser.add_argument("--new-rate", type=float, default=10.0, help="new sessions a second")
    parser.add_argument("--rate", type=_rates, default=dict(DEFAULT_RATES))
    parser.add_argument("--settle", type=float, default=45.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    try:
        result = run(args)
    except BenchError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    show(result)
    write_report(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
