"""Failover: 10,000 SIMs on node A (PostgreSQL), node A SIGKILLed, lns-loadgen fails over to B.

    python -m benchmarks.failover [--sims 10000] [--tunnels 4] [--concurrency 1000]
        [--retransmit 0.5] [--retries 3] [--hello-interval 0.5]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--output FILE]

The rig is the failover tests' (lns.testing.nodes): two ``twistd -n lns`` nodes, node-A
on 127.0.0.2 and node-B on 127.0.0.3, sharing a throw-away PostgreSQL database (one /18
pool made with lns-admin), a FreeRADIUS of the benchmark's own on 127.0.0.1 (one CHAP user
per SIM, the ICCID as password) with accounting, no TUN device. lns-loadgen runs with
``--lns node-A,node-B``, sets up ``--sims`` sessions on node A, and holds them.

Then node A is SIGKILLed. The load generator notices (its HELLOs go unacknowledged:
``--retransmit`` x (2^(retries+1) - 1) s), marks A down and sets every SIM up again on
node B, same ICCIDs, as fast as ``--concurrency`` allows. Once node B holds a lease for
every SIM (polled in the database), the load generator is interrupted and tears down.

Printed: the time from the kill to every SIM up again, split into the LAC's detection
(kill to A marked down) and the recovery (the first SIM lost to the last one up on B,
as lns-loadgen measures it); takeovers per second over the recovery, beside the rate at
which the same SIMs were first set up on node A; node B's CPU seconds (user + system)
from the kill to the last lease, per SIM, beside node A's from its start to the kill
(the same SIMs' first setup, start-up and hold included); how many SIMs came back and
how many kept their address; any moment a lease was held twice (the database polled
once a second); node B's log lines about adopting node A (its accounting Stops and
leases, written while the SIMs arrive). Machine figures as the other benchmarks print.

Never a test: it prints figures and writes JSON with ``--output``; it fails (exit 1)
only when the rig does not come up or the SIMs do not come back within the time limit.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from lns.pool.models import PoolAddress
from lns.testing.freeradius import FreeRadius, RadiusUser, ensure_freeradius, users_file
from lns.testing.nodes import Deployment
from lns.testing.ports import free_udp_port
from lns.testing.processes import ProcessError
from lns.testing.servers import BenchError, machine, machine_busy, write_report

ICCID_START = 8944000000000000001  # lns-loadgen's default first ICCID
RADIUS_SECRET = "bench-failover-radius-secret"
POOL = "100.80.0.0/18"  # 16,382 addresses


def leases_on(deployment: Deployment, node: str) -> int:
    query = select(func.count()).select_from(PoolAddress).where(PoolAddress.lease_node == node)
    with deployment.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    sims = args.sims
    users = users_file(
        RadiusUser(str(iccid), str(iccid)) for iccid in range(ICCID_START, ICCID_START + sims)
    )
    radius = FreeRadius(RADIUS_SECRET, users, free_udp_port(), free_udp_port(), ready_timeout=180)
    radius.start(ensure_freeradius())
    try:
        with Deployment(directory, radius, args.postgres, nodes=2, pool=POOL) as deployment:
            return failover(args, deployment)
    finally:
        radius.stop()


def failover(args: argparse.Namespace, deployment: Deployment) -> dict[str, Any]:
    sims = args.sims
    a, b = deployment.start().nodes
    print(f"nodes up: {a.name} {a.endpoint}, {b.name} {b.endpoint}; setting up {sims} SIMs")
    loadgen = deployment.loadgen(
        [a, b],
        "--tunnels", str(args.tunnels),
        "--sessions", str(sims),
        "--rate", "0",
        "--concurrency", str(args.concurrency),
        "--hold", "36000",  # interrupted once every SIM is back
        "--hello-interval", str(args.hello_interval),
        "--retransmit", str(args.retransmit),
        "--retries", str(args.retries),
        "--timeout", "120",
        "--iccid-start", str(ICCID_START),
    )  # fmt: skip
    loadgen.wait_phase({"hold"}, args.limit)
    if loadgen.phase != "hold":
        raise BenchError(f"the SIMs did not come up on {a.name}:\n{loadgen.tail(20)}")
    on_a = leases_on(deployment, a.name)
    print(f"{on_a} SIMs up on {a.name}; killing it")
    watch = deployment.watch_leases(interval=1.0)
    cpu_a = a.cpu_seconds()  # since it started: start-up, the setups, the hold so far
    cpu_b = b.cpu_seconds()
    busy = machine_busy()
    killed_at = time.time()
    a.kill()
    deadline = time.monotonic() + args.limit
    back = 0
    while (back := leases_on(deployment, b.name)) < sims:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    all_back_at = time.time()
    cpu_b = b.cpu_seconds() - cpu_b
    busy_share = machine_busy(busy)
    watch.stop()
    print(f"{back} SIMs hold a lease on {b.name}; interrupting the load generator")
    loadgen.process.send_signal(signal.SIGINT)
    summary = loadgen.wait(args.limit)
    failovers = summary["failovers"]
    if not failovers:
        raise BenchError(f"lns-loadgen saw no failover:\n{loadgen.tail(20)}")
    first = failovers[0]
    recovery = first["recovery_s"]
    up_again_at = first["down_at_epoch"] + (recovery or 0.0)
    result = {
        "sims": sims,
        "on_a_before": on_a,
        "leases_on_b": back,
        "detection_s": round(first["down_at_epoch"] - killed_at, 3),
        "recovery_s": recovery,
        "kill_to_all_up_s": round(up_again_at - killed_at, 3) if first["complete"] else None,
        "kill_to_all_leases_on_b_s": round(all_back_at - killed_at, 3),
        "takeovers_per_s": round(first["sims_back"] / recovery, 1) if recovery else None,
        "sims_lost": first["sims_lost"],
        "sims_back": first["sims_back"],
        "kept_address": first["kept_address"],
        "not_back": first["not_back"],
        "b_cpu_s": round(cpu_b, 2),
        "b_cpu_ms_per_sim": round(1000 * cpu_b / max(1, first["sims_back"]), 3),
        "a_cpu_s": round(cpu_a, 2),
        "a_cpu_ms_per_sim": round(1000 * cpu_a / max(1, on_a), 3),
        "machine_busy_percent": busy_share,
        "lease_held_twice": len(watch.violations),
        "lease_polls": watch.polls,
        "loadgen_failover": first,
        "setup_on_a_per_s": summary["setup"]["setups_per_s"],
        "b_adoption": [
            line
            for line in b.log().splitlines()
            if "adopted dead node" in line or "adoption of" in line
        ][:4],
        "b_problems": _problems(b.log()),
        "a_problems": _problems(a.all_logs()),
    }
    return result


def _problems(log: str, limit: int = 10) -> list[str]:
    lines = [
        line
        for line in log.splitlines()
        if "Traceback" in line or "Unhandled" in line or "#error]" in line or "#critical]" in line
    ]
    return lines[:limit]


def show(result: dict[str, Any]) -> None:
    rows = [
        ("SIMs", f"{result['sims']} up on node-A, then node-A SIGKILLed"),
        ("detection", f"{result['detection_s']:.2f} s (kill to node-A marked down by the LAC)"),
        (
            "recovery",
            "n/a"
            if result["recovery_s"] is None
            else f"{result['recovery_s']:.2f} s (first SIM lost to the last one up on node-B)",
        ),
        (
            "kill to all up",
            "not all back"
            if result["kill_to_all_up_s"] is None
            else f"{result['kill_to_all_up_s']:.2f} s",
        ),
        (
            "takeovers",
            f"{result['takeovers_per_s']} per s (the same SIMs' first setup on node-A: "
            f"{result['setup_on_a_per_s']} per s)",
        ),
        (
            "back",
            f"{result['sims_back']} of {result['sims_lost']} SIMs, "
            f"{result['kept_address']} with the address they had",
        ),
        (
            "node-B CPU",
            f"{result['b_cpu_s']:.2f} s from the kill to the last lease, "
            f"{result['b_cpu_ms_per_sim']:.3f} ms per SIM",
        ),
        (
            "node-A CPU",
            f"{result['a_cpu_s']:.2f} s from its start to the kill (the first setups), "
            f"{result['a_cpu_ms_per_sim']:.3f} ms per SIM",
        ),
        ("machine busy", f"{result['machine_busy_percent']}% of both cores meanwhile"),
        (
            "leases",
            f"{result['lease_held_twice']} moments held twice in {result['lease_polls']} polls",
        ),
    ]
    if result["not_back"]:
        rows.append(("not back", str(result["not_back"])))
    for line in result["b_adoption"]:
        rows.append(("node-B adoption", line))
    for name in ("a_problems", "b_problems"):
        for line in result[name]:
            rows.append((name, line))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=10_000)
    parser.add_argument("--tunnels", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--retransmit", type=float, default=0.5)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--hello-interval", type=float, default=0.5)
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="a database on the PostgreSQL server to use (the benchmark makes its own there)",
    )
    parser.add_argument("--limit", type=float, default=900.0, help="longest wait for each step")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the nodes' directory")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="lns-bench-failover-"))
    directory.chmod(0o755)
    try:
        result = run(args, directory)
    except (BenchError, ProcessError, AssertionError) as exc:
        print(f"failover benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    print()
    show(result)
    write_report(
        args.output,
        {
            "benchmark": "failover",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "result": result,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
