"""Both ends of an ICMP echo across a TUN device, run inside a test's network namespace.

``serve`` is a tiny host behind the TUN device: it opens `TunDevice` and
`TunNetwork` on the Twisted reactor, gives the device its address, MTU and routes,
and answers the ICMP echo requests it reads from the device that are addressed to
a routed address. It prints ``ready``, then one JSON line per command read on
stdin, and the counters as JSON when it ends (SIGTERM or end of stdin)::

    tun_echo.py serve --name tun0 --local 100.64.0.1 --mtu 1400 --route 100.64.7.0/24

    pause | resume          stop or start reading the device (packets queue in the kernel)
    add CIDR | remove CIDR  TunNetwork.add_route / remove_route
    flush                   TunNetwork.flush_routes
    write HEX               TunDevice.write of these bytes
    stats                   the counters

``ping`` sends COUNT echo requests at once from a raw socket, prints ``sent``, then
waits at most TIMEOUT seconds for the replies and prints a JSON summary; the
machine may have no ``ping`` binary::

    tun_echo.py ping --count 3 --timeout 1 100.64.7.9

Errors opening or configuring the device are one line on stderr and exit status 1.
Both ends build and read their ICMP with `lns.testing.packets`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import sys
import time
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet import stdio
from twisted.protocols.basic import LineReceiver

from lns.adapters.netlink_routes import RouteChanges
from lns.adapters.tun import RT_SCOPE_LINK, RTPROT_LNS, TunDevice, TunError, TunNetwork, errno_name
from lns.testing.packets import answer_echo, echo_message, echo_payload, parse_echo_reply

# --- serve -------------------------------------------------------------------------


class EchoHost:
    """Answers echo requests for routed addresses; the routes are set through TunNetwork."""

    def __init__(self, device: TunDevice, network: TunNetwork) -> None:
        self.device = device
        self.network = network
        self.routes: set[ipaddress.IPv4Network] = set()
        self.changes: RouteChanges
        self.missing_device: RouteChanges
        self.echoed = 0
        self.ignored = 0
        self.largest_batch = 0

    def packets_received(self, packets: list[bytes]) -> None:
        self.largest_batch = max(self.largest_batch, len(packets))
        for packet in packets:
            reply = answer_echo(packet)
            if reply is None or not self.routed(ipaddress.IPv4Address(packet[16:20])):
                self.ignored += 1
            elif self.device.write(reply):
                self.echoed += 1

    def routed(self, address: ipaddress.IPv4Address) -> bool:
        return any(address in network for network in self.routes)

    def add(self, network: ipaddress.IPv4Network) -> None:
        self.network.add_route(network)
        self.routes.add(network)

    def remove(self, network: ipaddress.IPv4Network) -> None:
        self.network.remove_route(network)
        self.routes.discard(network)

    def counters(self) -> dict[str, Any]:
        return {
            "packets_read": self.device.packets_read,
            "read_batches": self.device.read_batches,
            "packets_written": self.device.packets_written,
            "write_errors": dict(self.device.write_errors),
            "echoed": self.echoed,
            "ignored": self.ignored,
            "largest_batch": self.largest_batch,
        }


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, host: EchoHost) -> None:
        self.host = host

    def connectionMade(self) -> None:
        self.sendLine(b"ready")  # type: ignore[no-untyped-call]

    def lineReceived(self, line: bytes) -> None:
        command, _, argument = line.decode().strip().partition(" ")
        try:
            answer = self.run(command, argument)
        except TunError as exc:
            answer = {"error": str(exc)}
        self.sendLine(json.dumps(answer).encode())  # type: ignore[no-untyped-call]

    def run(self, command: str, argument: str) -> dict[str, Any]:
        host = self.host
        if command == "pause":
            host.device.stop_reading()
        elif command == "resume":
            host.device.start_reading()
        elif command == "add":
            host.add(ipaddress.IPv4Network(argument))
        elif command == "remove":
            host.remove(ipaddress.IPv4Network(argument))
        elif command in ("radd", "rremove", "rbad"):
            # RouteChanges, as the server changes per-session routes; its answer from
            # the kernel is already queued when send returns, so it is read at once.
            changes = host.changes if command != "rbad" else host.missing_device
            network = ipaddress.IPv4Network(argument)
            if command == "rremove":
                changes.remove(network)
            else:
                changes.add(network)
            changes.doRead()
            return {"ok": True, "failures": dict(changes.failures), "waiting": changes.waiting}
        elif command == "flush":
            flushed = host.network.flush_routes()
            host.routes.clear()
            return {"ok": True, "flushed": flushed}
        elif command == "write":
            return {"ok": host.device.write(bytes.fromhex(argument)), **host.counters()}
        elif command == "stats":
            return host.counters()
        else:
            return {"error": f"unknown command {command!r}"}
        return {"ok": True}

    def connectionLost(self, reason: object = None) -> None:
        if global_reactor.running:
            global_reactor.stop()


def serve(options: argparse.Namespace) -> int:
    device = TunDevice(options.name, global_reactor, lambda packets: None, batch=options.batch)
    try:
        device.open()
        network = TunNetwork(device.name)
        host = EchoHost(device, network)
        device.on_packets = host.packets_received
        network.configure(ipaddress.IPv4Address(options.local), options.mtu)
        host.changes = RouteChanges(
            global_reactor, device.name, network.index, RTPROT_LNS, RT_SCOPE_LINK
        )
        host.changes.open()
        host.missing_device = RouteChanges(
            global_reactor, "missing", 999999, RTPROT_LNS, RT_SCOPE_LINK
        )
        host.missing_device.open()
        for route in options.route:
            host.add(ipaddress.IPv4Network(route))
    except TunError as exc:
        print(exc, file=sys.stderr)
        return 1
    device.start_reading()
    stdio.StandardIO(Commands(host))  # type: ignore[no-untyped-call]
    global_reactor.run()
    device.close()
    network.close()
    os.set_blocking(sys.stdout.fileno(), True)  # StandardIO made it non-blocking
    print(json.dumps(host.counters()), flush=True)
    return 0


# --- ping --------------------------------------------------------------------------


def ping(options: argparse.Namespace) -> int:
    identifier = os.getpid() & 0xFFFF
    payload = bytes(range(56))
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        send_errors: dict[str, int] = {}
        for sequence in range(options.count):
            try:
                sock.sendto(echo_message(identifier, sequence, payload), (options.target, 0))
            except OSError as exc:
                name = errno_name(exc.errno)
                send_errors[name] = send_errors.get(name, 0) + 1
        print("sent", flush=True)
        answered: set[int] = set()
        deadline = time.monotonic() + options.timeout
        while len(answered) < options.count and (remaining := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], remaining)[0]:
                break
            packet = sock.recv(65535)
            echo = parse_echo_reply(packet)
            if (
                echo is not None
                and echo.identifier == identifier
                and echo_payload(packet) == payload
            ):
                answered.add(echo.sequence)
    print(
        json.dumps({"sent": options.count, "received": len(answered), "send_errors": send_errors}),
        flush=True,
    )
    return 0 if len(answered) == options.count else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="the host behind the TUN device")
    serving.add_argument("--name", default="tun0")
    serving.add_argument("--local", default="100.64.0.1")
    serving.add_argument("--mtu", type=int, default=1400)
    serving.add_argument("--route", action="append", default=[])
    serving.add_argument("--batch", type=int, default=64)
    pinging = commands.add_parser("ping", help="send echo requests and count the replies")
    pinging.add_argument("--count", type=int, default=3)
    pinging.add_argument("--timeout", type=float, default=1.0)
    pinging.add_argument("target")
    options = parser.parse_args(argv)
    return serve(options) if options.command == "serve" else ping(options)


if __name__ == "__main__":
    sys.exit(main())
