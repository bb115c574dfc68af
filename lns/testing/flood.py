"""The floods of issue 12 against a running LNS, from loopback addresses, paced or counted.

    python -m lns.testing.flood 127.0.0.1:1701 --secret-file F --duration 30 --json OUT
        [--rate half-open=1000,icrq=1000,unlisted=500,unknown-tunnel=400,oversized=40,garbage=100]
        [--lac-prefix 127.0.0] [--unlisted 127.1.0.1]

Kinds of datagram, each from its own source addresses (all on loopback, so the
datagrams never leave the machine or the namespace the caller runs us in):

* ``half-open``: SCCRQs from many addresses of the LAC's prefix, each SCCRP
  acknowledged with a ZLB and never followed by an SCCCN (the node hung for good);
* ``icrq``: one tunnel authenticated with the secret, then ICRQs that are never
  followed by an ICCN, within the window the LNS advertises, everything it sends
  acknowledged (one LAC exhausting session IDs);
* ``unlisted``: SCCRQs from an address no LAC entry allows (log flooding);
* ``oversized``: 65,000-byte SCCRQs of 10,800 empty AVPs, from the unlisted address
  and from the LAC's prefix (expensive parsing);
* ``unknown-tunnel``: HELLOs for tunnels the LNS does not know, from the LAC's prefix;
* ``garbage``: random bytes.

Every reply is counted by kind and message type with its bytes, so the report
shows what each flood drew back (reflection) and what the caps refused. With
``--count KIND=N`` a kind stops after N datagrams instead of after ``--duration``
(the integration test's deterministic floods).
"""

from __future__ import annotations

import argparse
import json
import random
import selectors
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lns.l2tp.avp import AttributeType, MessageType, ResultCode, make
from lns.l2tp.control import Sccrp, StopCcn, UnusableMessage, parse
from lns.l2tp.header import ControlPacket, decode_packet, encode_control
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.tunnel import SCCCN_RESPONSE_TYPE, challenge_response
from lns.l2tp.wire import MalformedPacket

KINDS = ("half-open", "icrq", "unlisted", "oversized", "unknown-tunnel", "garbage")
DEFAULT_RATES = {
    "half-open": 1000.0,
    "icrq": 1000.0,
    "unlisted": 500.0,
    "oversized": 40.0,
    "unknown-tunnel": 400.0,
    "garbage": 100.0,
}
ICCID = "8944500102198304826"
HALF_OPEN_SOURCES = 64
WINDOW = 16  # what lns advertises; the ICRQ flood keeps within it
LAC_LIKE = (
    make(AttributeType.FRAMING_CAPABILITIES, 3),
    make(AttributeType.BEARER_CAPABILITIES, 3),
    make(AttributeType.TIE_BREAKER, b"floodtie"),
    make(AttributeType.FIRMWARE_REVISION, 0x0100),
    make(AttributeType.VENDOR_NAME, "flood generator"),
    make(AttributeType.RECEIVE_WINDOW_SIZE, WINDOW),
)


def sccrq(peer_tunnel: int, hostname: str = "flood") -> bytes:
    message = ControlMessage(
        MessageType.SCCRQ,
        (
            make(AttributeType.PROTOCOL_VERSION, 0x0100),
            make(AttributeType.HOST_NAME, hostname),
            make(AttributeType.ASSIGNED_TUNNEL_ID, peer_tunnel),
            *LAC_LIKE,
        ),
    )
    return encode_control(0, 0, 0, 0, encode_message(message))


def oversized_sccrq() -> bytes:
    """An SCCRQ followed by 10,800 empty AVPs: 65,000 bytes to parse before the secret."""
    empty_avps = struct.pack("!HHH", 6, 0, 99) * 10_800
    return encode_control(0, 0, 0, 0, _body(sccrq(1)) + empty_avps)


def _body(data: bytes) -> bytes:
    packet = decode_packet(data)
    assert isinstance(packet, ControlPacket)
    return packet.payload


@dataclass
class Tally:
    sent: int = 0
    sent_bytes: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    reply_bytes: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "sent_bytes": self.sent_bytes,
            "replies": dict(self.replies.most_common()),
            "reply_bytes": self.reply_bytes,
            "reflection": round(self.reply_bytes / self.sent_bytes, 3) if self.sent_bytes else None,
        }


def _kind_of(data: bytes) -> tuple[str, ControlPacket | None]:
    try:
        packet = decode_packet(data)
    except MalformedPacket:
        return "malformed", None
    if not isinstance(packet, ControlPacket):
        return "data", None
    if packet.is_zlb:
        return "ZLB", packet
    try:
        message = decode_message(packet.payload)
    except MalformedPacket:
        return "hidden-or-malformed", packet
    known = MessageType._value2member_map_.get(message.message_type)
    name = known.name if known is not None else str(message.message_type)
    if message.message_type in (MessageType.StopCCN, MessageType.CDN):
        result = message.get(AttributeType.RESULT_CODE)
        if isinstance(result, ResultCode):
            name += f" {result.result}/{result.error or 0}"
    return name, packet


class _IcrqTunnel:
    """The one LAC that floods its own authenticated tunnel with ICRQs."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.reset()

    def reset(self) -> None:
        self.ours = random.randrange(1, 0x10000)  # our (the flooder's) tunnel ID
        self.theirs = 0  # the LNS's
        self.ns = 0
        self.nr = 0
        self.acked = 0  # the LNS's Nr: our messages it has taken
        self.up = False
        self.session = 0
        self.started = 0.0

    def opening(self) -> bytes:
        self.ns = 1
        return sccrq(self.ours, "flood-lac")

    def take(self, packet: ControlPacket) -> bytes | None:
        """Read what the LNS sent us; returns the SCCCN that answers its SCCRP. Everything
        else is acknowledged by the Nr of our next ICRQ."""
        self.acked = packet.nr
        if packet.is_zlb:
            return None
        self.nr = (packet.ns + 1) & 0xFFFF
        try:
            record = parse(decode_message(packet.payload, self.secret))
        except (MalformedPacket, UnusableMessage):
            return None
        if isinstance(record, Sccrp):
            self.theirs = record.assigned_tunnel_id
            avps = []
            if record.challenge is not None:
                response = challenge_response(SCCCN_RESPONSE_TYPE, self.secret, record.challenge)
                avps.append(make(AttributeType.CHALLENGE_RESPONSE, response))
            self.up = True
            return self._message(ControlMessage(MessageType.SCCCN, tuple(avps)))
        if isinstance(record, StopCcn):
            self.reset()
        return None

    def zlb(self) -> bytes:
        return encode_control(self.theirs, 0, self.ns, self.nr, b"")

    def next_icrq(self) -> bytes | None:
        """The next ICRQ, if the LNS's window has room."""
        if not self.up or (self.ns - self.acked) % 0x10000 >= WINDOW:
            return None
        self.session = self.session % 0xFFFF + 1
        message = ControlMessage(
            MessageType.ICRQ,
            (
                make(AttributeType.ASSIGNED_SESSION_ID, self.session),
                make(AttributeType.CALL_SERIAL_NUMBER, self.session),
                make(AttributeType.CALLING_NUMBER, ICCID),
            ),
        )
        return self._message(message)

    def _message(self, message: ControlMessage) -> bytes:
        data = encode_control(
            self.theirs, 0, self.ns, self.nr, encode_message(message, self.secret)
        )
        self.ns = (self.ns + 1) & 0xFFFF
        return data


class Flood:
    def __init__(
        self,
        target: tuple[str, int],
        secret: bytes,
        rates: dict[str, float],
        counts: dict[str, int],
        lac_prefix: str,
        unlisted: str,
    ) -> None:
        self.target = target
        self.rates = rates
        self.counts = counts
        self.tallies = {kind: Tally() for kind in KINDS}
        self.selector = selectors.DefaultSelector()
        self.rng = random.Random(12)
        self._sockets: dict[str, list[socket.socket]] = {}
        self._owner: dict[socket.socket, str] = {}
        self._half_open = [
            self._bind("half-open", f"{lac_prefix}.{100 + n}") for n in range(HALF_OPEN_SOURCES)
        ]
        self._icrq_socket = self._bind("icrq", f"{lac_prefix}.90")
        self._unlisted = self._bind("unlisted", unlisted)
        self._oversized = [
            self._bind("oversized", unlisted),
            self._bind("oversized", f"{lac_prefix}.91"),
        ]
        self._unknown = self._bind("unknown-tunnel", f"{lac_prefix}.92")
        self._garbage = self._bind("garbage", f"{lac_prefix}.93")
        self._icrq = _IcrqTunnel(secret)
        self._big = oversized_sccrq()
        self._turn = 0
        self._icrq_done = False  # no more ICRQs: acknowledge what the LNS sends at once

    def _bind(self, kind: str, host: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((host, 0))
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ)
        self._owner[sock] = kind
        return sock

    def _send(self, kind: str, sock: socket.socket, data: bytes, count: bool = True) -> bool:
        try:
            sock.sendto(data, self.target)
        except OSError:
            return False
        if count:
            tally = self.tallies[kind]
            tally.sent += 1
            tally.sent_bytes += len(data)
        return True

    def _one(self, kind: str) -> bool:
        """One datagram of ``kind``; False when none could go (the ICRQ window is full)."""
        rng = self.rng
        if kind == "half-open":
            sock = self._half_open[self._turn % len(self._half_open)]
            self._turn += 1
            return self._send(kind, sock, sccrq(rng.randrange(1, 0x10000)))
        if kind == "icrq":
            icrq = self._icrq
            if not icrq.up:
                if time.monotonic() - icrq.started > 1.0:  # (re)open the tunnel
                    icrq.reset()
                    icrq.started = time.monotonic()
                    self._send(kind, self._icrq_socket, icrq.opening(), count=False)
                return False
            data = icrq.next_icrq()
            return data is not None and self._send(kind, self._icrq_socket, data)
        if kind == "unlisted":
            return self._send(kind, self._unlisted, sccrq(rng.randrange(1, 0x10000)))
        if kind == "oversized":
            self._turn += 1
            return self._send(kind, self._oversized[self._turn % 2], self._big)
        if kind == "unknown-tunnel":
            hello = encode_message(ControlMessage(MessageType.HELLO))
            tunnel, ns = rng.randrange(1, 0x10000), rng.randrange(0x10000)
            return self._send(kind, self._unknown, encode_control(tunnel, 0, ns, 0, hello))
        return self._send(kind, self._garbage, rng.randbytes(rng.randrange(1, 200)))

    def _receive(self, timeout: float) -> None:
        for key, _events in self.selector.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            kind = self._owner[sock]
            while True:
                try:
                    data, _source = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError:
                    break
                tally = self.tallies[kind]
                name, packet = _kind_of(data)
                tally.replies[name] += 1
                tally.reply_bytes += len(data)
                if packet is None:
                    continue
                if kind == "half-open" and name == "SCCRP":
                    # Acknowledged, so the LNS knows we hear it; never an SCCCN.
                    zlb = encode_control(_assigned_tunnel(data), 0, 1, 1, b"")
                    self._send(kind, sock, zlb, count=False)
                elif kind == "icrq":
                    answer = self._icrq.take(packet)
                    if answer is None and self._icrq_done and not packet.is_zlb:
                        answer = self._icrq.zlb()
                    if answer is not None:
                        self._send(kind, sock, answer, count=False)

    def run(self, duration: float | None) -> dict[str, Any]:
        start = time.monotonic()
        due = {kind: start for kind in KINDS if self.rates.get(kind, 0) > 0}
        left = {kind: self.counts.get(kind) for kind in due}
        # A counted flood that cannot finish (its tunnel refused, say) still ends.
        limit = duration if duration is not None else 60.0
        while due:
            now = time.monotonic()
            if now - start >= limit:
                break
            for kind in list(due):
                while due[kind] <= now:
                    due[kind] += 1.0 / self.rates[kind]
                    if not self._one(kind):
                        # Nothing could go (the ICRQ window is full): try again once the
                        # replies have been read, not in a burst to catch up.
                        due[kind] = max(due[kind], now + 0.001)
                        break
                    remaining = left[kind]
                    if remaining is not None:
                        left[kind] = remaining - 1
                        if remaining <= 1:
                            del due[kind]
                            self._icrq_done |= kind == "icrq"
                            break
            self._receive(max(0.0, min(due.values(), default=now) - time.monotonic()))
        elapsed = time.monotonic() - start
        self._icrq_done = True
        # The replies still on their way: read until a quiet half second (at most 5 s).
        quiet_until = time.monotonic() + 0.5
        end = time.monotonic() + 5.0
        while time.monotonic() < min(quiet_until, end):
            before = sum(t.reply_bytes for t in self.tallies.values())
            self._receive(0.1)
            if sum(t.reply_bytes for t in self.tallies.values()) != before:
                quiet_until = time.monotonic() + 0.5
        return {
            "duration_s": round(elapsed, 2),
            "sent": sum(t.sent for t in self.tallies.values()),
            "rate_pps": round(sum(t.sent for t in self.tallies.values()) / elapsed, 1)
            if elapsed
            else None,
            "kinds": {kind: tally.report() for kind, tally in self.tallies.items()},
        }

    def close(self) -> None:
        for sock in self._owner:
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()


def _assigned_tunnel(data: bytes) -> int:
    value = decode_message(_body(data)).get(AttributeType.ASSIGNED_TUNNEL_ID)
    return value if isinstance(value, int) else 0


def _pairs(text: str, convert: type) -> dict[str, Any]:
    pairs = {}
    for item in filter(None, text.split(",")):
        kind, _, value = item.partition("=")
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        pairs[kind] = convert(value)
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lns.testing.flood", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("target", help="HOST:PORT of the LNS (loopback)")
    parser.add_argument("--secret-file", type=Path, required=True, help="the LAC's tunnel secret")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--rate", type=lambda t: _pairs(t, float), default={})
    parser.add_argument("--count", type=lambda t: _pairs(t, int), default={})
    parser.add_argument("--only", default="", help="comma-separated kinds (default: all)")
    parser.add_argument(
        "--lac-prefix", default="127.0.0", help="first three octets of the LAC's sources"
    )
    parser.add_argument("--unlisted", default="127.1.0.1", help="a source no LAC entry allows")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if (
        not host.startswith("127.")
        or not args.unlisted.startswith("127.")
        or not args.lac_prefix.startswith("127.")
    ):
        parser.error("the flood goes from and to loopback addresses only")
    rates = dict(DEFAULT_RATES, **args.rate)
    if args.only:
        rates = {kind: rate for kind, rate in rates.items() if kind in args.only.split(",")}
    if args.duration is None and set(args.count) != set(rates):
        parser.error("without --duration every kind needs a --count")
    secret = args.secret_file.read_text().splitlines()[0].encode()
    flood = Flood((host, int(port)), secret, rates, args.count, args.lac_prefix, args.unlisted)
    try:
        report = flood.run(args.duration)
    finally:
        flood.close()
    text = json.dumps(report, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
