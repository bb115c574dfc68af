"""Traffic for benchmarks/dataplane.py, run inside one of its network namespaces.

    udp_blast.py up    --bind ADDR:PORT --lns ADDR:PORT --calls JSON --to HOST --size N --seconds S
        L2TP data messages, each an IP/UDP packet of N bytes from a session's address to
        HOST port 9, round robin over the calls, as fast as one core can send them.
    udp_blast.py down  --calls JSON --size N --seconds S
        IP/UDP packets of N bytes to each session's address (port 9), round robin.
    udp_blast.py sink  --bind ADDR:PORT
        Holds a UDP port and reads nothing: what arrives is dropped by the kernel, without
        the ICMP Port Unreachable a closed port would send back.

Prints one JSON line: packets offered and the seconds it took.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import socket
import time

from lns.l2tp.header import encode_data
from lns.testing import packets

DISCARD_PORT = 9
IP_UDP_HEADERS = 28


def address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def blast(sock: socket.socket, datagrams: list[tuple[bytes, tuple[str, int]]], seconds: float):
    sent = 0
    count = len(datagrams)
    started = time.perf_counter()
    deadline = started + seconds
    send = sock.sendto
    while True:
        for _ in range(256):
            data, where = datagrams[sent % count]
            try:
                send(data, where)
            except (BlockingIOError, OSError):
                continue
            sent += 1
        if time.perf_counter() >= deadline:
            break
    return sent, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["up", "down", "sink"])
    parser.add_argument("--bind")
    parser.add_argument("--lns")
    parser.add_argument("--calls", help="JSON: [[tunnel id, session id, address int], ...]")
    parser.add_argument("--to")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    if args.bind:
        sock.bind(address(args.bind))
    if args.mode == "sink":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stop = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        print(json.dumps({"ready": True}), flush=True)
        signal.sigwait(stop)
        return
    calls = json.loads(args.calls)
    payload = bytes(max(0, args.size - IP_UDP_HEADERS))
    datagrams: list[tuple[bytes, tuple[str, int]]] = []
    if args.mode == "up":
        lns = address(args.lns)
        target = int(ipaddress.IPv4Address(args.to))
        for tunnel_id, session_id, source in calls:
            packet = packets.udp_datagram(source, target, 40000, DISCARD_PORT, payload)
            frame = b"\xff\x03\x00\x21" + packet
            datagrams.append((encode_data(tunnel_id, session_id, frame), lns))
    else:
        for _, _, destination in calls:
            where = (str(ipaddress.IPv4Address(destination)), DISCARD_PORT)
            datagrams.append((payload, where))
    sent, seconds = blast(sock, datagrams, args.seconds)
    print(json.dumps({"sent": sent, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
