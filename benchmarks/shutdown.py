"""SIGTERM with many live sessions whose LAC has vanished: how long twistd takes to exit,
and whether every session's accounting Stop reached RADIUS or the spool.

    python -m benchmarks.shutdown [--sessions 10000] [--tunnels 10] [--database sqlite]
        [--profile FILE] [--output FILE]

A fresh network namespace gets FreeRADIUS (one CHAP user per SIM) and ``twistd -n lns``
(lns.testing.servers: TUN device, RADIUS accounting, the pool in SQLite or PostgreSQL).
lns-loadgen sets up ``--sessions`` sessions and holds them; once they are up it is
killed with SIGKILL, so no LAC answers the StopCCNs any more. Then twistd gets SIGTERM
and the clock runs until the process has exited.

Afterwards the Stops are counted where they can be: the Accounting-Request Stops in
FreeRADIUS's detail files plus the Stop records still in the spool table (the node sends
those when it starts again). Every session that was up must be in one of the two; one
in both was logged by FreeRADIUS but its answer came after the node stopped waiting
(accounting is at least once: it is sent again, with the same Event-Timestamp).
Printed: the exit time, the Stops delivered and spooled, the Acct-Terminate-Cause they
carry, and the last lines the node logged while stopping (its per-session and per-call
lines left out).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy

from lns.config import load_config
from lns.testing.freeradius import detail_records
from lns.testing.profiles import profile_summary
from lns.testing.servers import (
    BenchError,
    Harness,
    held_loadgen,
    run_reported,
    start_freeradius,
    start_lns,
    stop_process,
    users,
)

STOP = 2  # Acct-Status-Type Stop (RFC 2866 section 5.1)
# The steps of a stop as the node logs them: sessions ended and StopCCNs sent, the wait
# for their acknowledgements over, accounting stopped.
MARKERS = ("sent StopCCN to", "L2TP stopped", "Main loop terminated")


def spooled_stops(url: str) -> list[str]:
    """The Acct-Session-Id of every Stop still in the spool."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sqlalchemy.text(
                "SELECT acct_session_id FROM accounting_spool WHERE status_type = :stop"
            )
            return [str(row[0]) for row in connection.execute(query, {"stop": STOP})]
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    label = f"lns-{args.database} x {args.sessions:,}"
    print(f"--- {label}: starting FreeRADIUS and the server", flush=True)
    with Harness() as harness:
        namespace = harness.namespace()
        directory = harness.directory("lns-bench-shutdown-")
        radius = start_freeradius(harness, namespace, users(args.sessions))
        server = start_lns(harness, namespace, directory, args.database)
        url = load_config(server.log.path.parent / "lns.toml").database.url
        loadgen = held_loadgen(
            harness,
            namespace,
            directory,
            args.setup_timeout,
            sessions=args.sessions,
            tunnels=args.tunnels,
            concurrency=args.concurrency,
        )
        up, _failed = loadgen.sessions_up()
        time.sleep(args.settle)  # every Start delivered, the node idle
        starts_before = Counter(r.get("Acct-Status-Type") for r in detail_records(radius))
        loadgen.kill()  # the LAC vanishes: nobody acknowledges the StopCCNs
        log_before = server.log.path.stat().st_size
        spy = None
        if args.profile is not None:
            spy = subprocess.Popen(
                [
                    *("py-spy", "record", "--pid", str(server.process.pid), "--rate", "250"),
                    *(
                        "--format",
                        "raw",
                        "--output",
                        str(args.profile),
                        "--nonblocking",
                        "--subprocesses",
                    ),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            harness.callback(stop_process, spy)
            time.sleep(1)  # the sampler attached
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        seen: dict[str, float] = {}
        text = ""
        with server.log.path.open("rb") as log:
            log.seek(log_before)
            while server.process.poll() is None:  # when each step of the stop is logged
                if time.monotonic() - started > args.exit_timeout:
                    server.process.kill()
                    server.process.wait(10)
                    raise BenchError(f"twistd running {args.exit_timeout:.0f} s after SIGTERM")
                text = text[-64:] + log.read().decode(errors="replace")  # a marker read in two
                for marker in MARKERS:
                    if marker not in seen and marker in text:
                        seen[marker] = round(time.monotonic() - started, 2)
                time.sleep(0.02)
        exit_seconds = time.monotonic() - started
        code = server.process.returncode
        records = detail_records(radius)
        stops = [r for r in records if r.get("Acct-Status-Type") == "Stop"]
        causes = Counter(r.get("Acct-Terminate-Cause", "-") for r in stops)
        spooled = spooled_stops(url)
        delivered = {r.get("Acct-Session-Id", "") for r in stops}
        # At least once: a Stop that FreeRADIUS logged but whose answer came after the
        # node had stopped waiting stays spooled too, and is sent again at the next start.
        both = delivered & set(spooled)
        stop_log = server.log.path.read_bytes()[log_before:].decode(errors="replace")
        tail = [
            _clock_and_message(line)
            for line in stop_log.splitlines()
            if "session down:" not in line and "call down:" not in line
        ][-12:]
        profile = None
        if spy is not None and args.profile is not None:
            spy.wait(30)
            profile = profile_summary(args.profile)
        return {
            "profile": profile,
            "run": label,
            "sessions_up": up,
            "starts_delivered": starts_before.get("Start", 0),
            "exit_seconds": round(exit_seconds, 2),
            "steps_seconds": seen,
            "exit_code": code,
            "stops_delivered": len(stops),
            "stops_spooled": len(spooled),
            "stops_delivered_and_spooled": len(both),
            "stops_missing": up - len(delivered | set(spooled)),
            "terminate_causes": dict(causes),
            "shutdown_log_tail": tail,
            "log_problems": server.problem_count(),
            "log_problem_sample": server.problems(limit=5),
        }


def _clock_and_message(line: str) -> str:
    """A log line's time of day and message (its date and source left out)."""
    when, _, rest = line.partition(" ")
    return f"{when[11:23]} {rest.partition(' ')[2]}"


def show(result: dict[str, Any]) -> None:
    print(
        f"{result['run']:<22} up {result['sessions_up']:>6,}  SIGTERM to exit"
        f" {result['exit_seconds']:6.2f} s (code {result['exit_code']})"
        f"  Stops delivered {result['stops_delivered']:,} spooled {result['stops_spooled']:,}"
        f" (both {result['stops_delivered_and_spooled']:,}) missing {result['stops_missing']:,}"
        f"  causes {result['terminate_causes']}",
        flush=True,
    )
    steps = ", ".join(f"'{marker}' at {at:.2f} s" for marker, at in result["steps_seconds"].items())
    print(f"    logged after SIGTERM: {steps}")
    for line in result["shutdown_log_tail"]:
        print(f"    {line}")
    profile = result.get("profile")
    if profile:
        print(f"    profile of the stop ({profile['samples']} samples), nearest lns frame:")
        for name, share in profile["project"]:
            print(f"    {share:5.1f}%  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--tunnels", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--setup-timeout", type=float, default=600.0)
    parser.add_argument("--exit-timeout", type=float, default=120.0)
    parser.add_argument("--profile", type=Path, help="py-spy's raw samples of the stop to FILE")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    label = f"lns-{args.database} x {args.sessions:,}"
    return run_reported("shutdown", label, lambda: run(args), show, args.output, 22)


if __name__ == "__main__":
    sys.exit(main())
