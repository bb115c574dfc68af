"""Data-plane throughput: UDP packets through established sessions, both directions.

    python -m benchmarks.dataplane [--sessions 16] [--seconds 5] [--servers lns,l2tpns]
        [--output FILE]

Builds the site of lns.testing.dataplane_site in network namespaces (needs root): a LAC
namespace, the server (``twistd -n lns``, TUN device, FreeRADIUS, SQLite pool) in its
own, and a host behind it. The LAC simulator brings ``--sessions`` sessions up and
leaves (the calls stay up at the server); then, for 64- and 1400-byte IP packets:

* up: benchmarks/udp_blast.py in the LAC namespace sends L2TP data messages carrying
  IP/UDP packets from the sessions' addresses to the host, round robin over the sessions,
  as fast as one core can;
* down: udp_blast.py in the host namespace sends IP/UDP packets to the sessions'
  addresses, which the server reads from its TUN device and sends down the calls.

Packets are counted where they arrive, by the kernel (the receiving veth's counters),
never by a Python receiver. Printed per run: packets offered, packets delivered per
second, Mbit/s of IP packets delivered, and the CPU the server used (user + system,
as a share of one core). The machine has 2 cores: the sender takes one, the server the
other, and the kernel's veth work is shared between them. The JSON goes to --output.

The same measurement runs against l2tpns (``--servers``, both by default): the same
namespaces, addresses, users and pool, with l2tpns (configured through
/etc/netns/NAMESPACE/l2tpns, see lns.testing.servers) in the server's place. l2tpns
ignores the LAC's proxy authentication, so the devices answer its CHAP challenge with
the ICCID as name (session_driver.py --device-auth).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lns.testing.dataplane_site import HOST, LAC_ADDRESS, LNS_ADDRESS, Site, build_site
from lns.testing.freeradius import ensure_freeradius
from lns.testing.netns import NetNs, can_create_namespaces, unique_name
from lns.testing.processes import working_tree_env
from lns.testing.servers import build_l2tpns_site, machine

BLAST = str(Path(__file__).resolve().parent / "udp_blast.py")
TICKS = os.sysconf("SC_CLK_TCK")


def link_stats(namespace: NetNs, interface: str) -> dict[str, dict[str, int]]:
    shown = namespace.ip("-s", "-j", "link", "show", interface).stdout
    stats: dict[str, dict[str, int]] = json.loads(shown)[0]["stats64"]
    return stats


def rx_packets(namespace: NetNs, interface: str) -> int:
    return link_stats(namespace, interface)["rx"]["packets"]


def udp_counters(namespace: NetNs) -> dict[str, int]:
    """The namespace's UDP counters (/proc/net/snmp): where the kernel dropped datagrams."""
    lines = [line.split() for line in namespace.run("cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = [line for line in lines if line[0] == "Udp:"][:2]
    return dict(zip(names[1:], map(int, values[1:]), strict=True))


def drops(site: Site) -> dict[str, int]:
    """Where packets die on the server's side: its UDP socket and its TUN device's queue."""
    udp = udp_counters(site.lns)
    tun = link_stats(site.lns, "lns0")
    return {
        "server_udp_receive_buffer_errors": udp["RcvbufErrors"],
        "server_udp_send_buffer_errors": udp["SndbufErrors"],
        "tun_queue_drops": tun["tx"]["dropped"],
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def run_one(
    site: Site,
    direction: str,
    size: int,
    seconds: float,
    calls: list[list[int]],
    lac_port: int,
) -> dict[str, Any]:
    assert site.server is not None
    if direction == "up":
        sender, receiver, interface = site.lac, site.host, "down0"
        args = [
            "up",
            "--bind",
            f"{LAC_ADDRESS}:{lac_port}",
            "--lns",
            f"{LNS_ADDRESS}:1701",
            "--to",
            HOST,
        ]
    else:
        sender, receiver, interface = site.host, site.lac, "lac0"
        args = ["down"]
    before_rx = rx_packets(receiver, interface)
    before_drops = drops(site)
    before_cpu = cpu_seconds(site.server.pid)
    started = time.perf_counter()
    blast = sender.run(
        sys.executable,
        BLAST,
        *args,
        "--calls",
        json.dumps(calls),
        "--size",
        str(size),
        "--seconds",
        str(seconds),
        env=working_tree_env(),
    )
    # What the server still had queued drains for a moment after the sender stopped.
    time.sleep(0.5)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(site.server.pid) - before_cpu
    delivered = rx_packets(receiver, interface) - before_rx
    after_drops = drops(site)
    offered = json.loads(blast.stdout.strip().splitlines()[-1])
    send_seconds = offered["seconds"]
    return {
        "direction": direction,
        "ip_packet_bytes": size,
        "offered_packets": offered["sent"],
        "offered_pps": round(offered["sent"] / send_seconds),
        "delivered_packets": delivered,
        "delivered_pps": round(delivered / send_seconds),
        "delivered_mbit_s": round(delivered * size * 8 / send_seconds / 1e6, 1),
        "delivered_share": round(delivered / max(1, offered["sent"]), 3),
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        **{name: after_drops[name] - before_drops[name] for name in after_drops},
    }


def hold(namespace: NetNs, where: str) -> subprocess.Popen[str]:
    """A process holding a UDP port there, reading nothing."""
    sink = namespace.popen(
        sys.executable,
        BLAST,
        "sink",
        "--bind",
        where,
        stdout=subprocess.PIPE,
        env=working_tree_env(),
    )
    assert sink.stdout is not None
    sink.stdout.readline()  # {"ready": true}
    return sink


def measure(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Bring the sessions up on one server (``lns`` or ``l2tpns``) and blast both ways."""
    namespaces: list[NetNs] = []

    def create() -> NetNs:
        namespace = NetNs.create(unique_name())
        namespaces.append(namespace)
        return namespace

    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix=f"lns-bench-dataplane-{kind}-") as directory,
        contextlib.ExitStack() as cleanup,
    ):
        Path(directory).chmod(0o755)  # FreeRADIUS (user freerad) reads its files below it
        cleanup.callback(lambda: [n.delete() for n in reversed(namespaces)])
        extra: list[str] = []
        if kind == "lns":
            site = build_site(
                create, Path(directory), ensure_freeradius(), args.sessions, hello=3600
            )
            cleanup.enter_context(site.cleanup)
        else:
            site = build_l2tpns_site(create, Path(directory), args.sessions)
            cleanup.enter_context(site.cleanup)
            # l2tpns ignores the LAC's proxy CHAP and challenges each device itself.
            extra = ["--device-auth"]
        driver, lines = site.drive(args.sessions, "--ping", HOST, "--exit-after-up", *extra)
        up = lines.json(timeout=120)
        driver.wait(30)
        calls, lac_port = up["calls"], up["lac_port"]
        # The host's discard port is held, so what arrives there is dropped quietly
        # (a closed port would answer each packet with an ICMP Port Unreachable).
        hold(site.host, f"{HOST}:9")
        for direction in ("up", "down"):
            for size in (64, 1400):
                sink = None
                if direction == "down":
                    # The same for the LAC's port, which the server sends the calls to
                    # (in the up runs the sender itself is bound to it).
                    sink = hold(site.lac, f"{LAC_ADDRESS}:{lac_port}")
                result = {"server": kind}
                result.update(run_one(site, direction, size, args.seconds, calls, lac_port))
                if sink is not None:
                    sink.terminate()
                    sink.wait(10)
                results.append(result)
                show(result)
        output = site.stop_server()
        if "Traceback" in output:
            print(output, file=sys.stderr)
    return results


def show(result: dict[str, Any]) -> None:
    print(
        f"{result['server']:>6} {result['direction']:>4} {result['ip_packet_bytes']:>5} B:"
        f" offered {result['offered_pps']:>8,} pkt/s,"
        f" delivered {result['delivered_pps']:>8,} pkt/s"
        f" ({result['delivered_mbit_s']:>7,.1f} Mbit/s,"
        f" {result['delivered_share']:.0%} of offered),"
        f" server CPU {result['server_cpu_percent']:.0f}%;"
        f" dropped: server socket in {result['server_udp_receive_buffer_errors']:,}"
        f" out {result['server_udp_send_buffer_errors']:,},"
        f" TUN queue {result['tun_queue_drops']:,}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--servers", default="lns,l2tpns", help="lns, l2tpns or both")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    reason = can_create_namespaces()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    for kind in args.servers.split(","):
        results += measure(kind, args)
    print("\nsummary:")
    for result in results:
        show(result)
    report = {
        "benchmark": "dataplane",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "sessions": args.sessions,
        "seconds": args.seconds,
        "results": results,
    }
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
