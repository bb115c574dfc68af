"""The LAC and its devices for the data-plane end-to-end test, run inside the test's LAC
network namespace: ``ip netns exec NS python -m lns.testing.session_driver ARGS``.

It brings up ``--sessions`` sessions (proxy CHAP, one ICCID each) over one tunnel, then
has every session ping every ``--ping`` address with an ICMP echo request inside PPP and
waits for each reply to come back through the right session. With ``--spoof-check`` and
``--syn`` it also sends a packet with another session's source address and a TCP SYN.
Then it prints one JSON line (``{"phase": "up", ...}``) and keeps the sessions up,
answering echo requests sent to any address inside a session's ``--serve`` networks
(the LAN behind a SIM, reached through its Framed-Route), until a line arrives on stdin;
then it hangs up, prints a last JSON line and exits.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, stdio, task
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from lns.dataplane import ipv4
from lns.ppp.frame import ip_packet
from lns.testing import packets
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.device import Device, DeviceBehaviour
from lns.testing.lacsim.lac import Lac, SimulatedCall, default_proxy_lcp, proxy_chap

SPOOF_ID = 0x5F00
SENTINEL_ID = 0x5E00
SYN_PORT = 40000
SYN_SEQ = 1000


class Session:
    """One SIM's call and what its device received as IP."""

    def __init__(self, index: int, call: SimulatedCall) -> None:
        self.index = index
        self.call = call
        self.replies: set[tuple[int, int]] = set()  # (identifier, sequence) of echo replies
        self.strays: list[str] = []  # IP packets this session should never have received
        self.served = 0  # echo requests to its LAN answered
        self.syn_ack_mss: int | None = None
        self.syn_ack_seq: int | None = None
        self._seen = 0

    @property
    def address(self) -> int | None:
        device = self.call.device
        return int(device.address) if device is not None and device.address else None


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        host, port = args.server.rsplit(":", 1)
        self.lac = Lac(hostname="lac1", secret=args.secret.encode(), rng=random.Random(6))
        self.client = LacClient(self.lac, (host, int(port)), reactor, local_host=args.local)
        self.sessions: list[Session] = []
        self.targets = [int(ipaddress.IPv4Address(a)) for a in args.ping]
        self.serve = [ipaddress.IPv4Network(n) for n in args.serve]

    def behaviour(self, iccid: str) -> DeviceBehaviour:
        """With --device-auth the device answers the LNS's own CHAP/PAP as the SIM (name
        = ICCID, the SIM's password), for an LNS that ignores proxy authentication."""
        if self.args.device_auth:
            return DeviceBehaviour(
                mru=self.args.mru, name=iccid.encode(), password=self.args.password.encode()
            )
        return DeviceBehaviour(mru=self.args.mru)

    # --- I/O ---------------------------------------------------------------------------

    def send_ip(self, session: Session, packet: bytes) -> None:
        self.lac.send_ppp(session.call, b"\xff\x03\x00\x21" + packet)

    def poll(self) -> None:
        """Look at the frames each call received since the last look (and forget them)."""
        for session in self.sessions:
            frames = session.call.frames
            for frame in frames:
                packet = ip_packet(frame)
                if packet is not None:
                    self.ip_received(session, packet)
            frames.clear()

    def ip_received(self, session: Session, packet: bytes) -> None:
        echo = packets.parse_icmp_echo(packet)
        if echo is not None:
            kind, _source, destination, identifier, sequence = echo
            if destination != session.address:
                session.strays.append(f"for {ipaddress.IPv4Address(destination)}")
            elif kind == packets.ECHO_REPLY:
                if identifier == SPOOF_ID:
                    session.strays.append("reply to a spoofed request")
                session.replies.add((identifier, sequence))
            return
        if packet[9] == 6 and packet[33] & 0x12 == 0x12:  # a SYN-ACK
            session.syn_ack_mss = ipv4.tcp_mss(packet)
            session.syn_ack_seq = int.from_bytes(packet[24:28], "big")

    def serve_lan(self) -> None:
        """Echo requests to a SIM's LAN get their reply (from the addressed host)."""
        for session in self.sessions:
            for frame in session.call.frames:
                packet = ip_packet(frame)
                reply = packets.answer_echo(packet) if packet is not None else None
                if reply is None:
                    continue
                if any(ipaddress.IPv4Address(ipv4.source(reply)) in n for n in self.serve):
                    self.send_ip(session, reply)
                    session.served += 1
            session.call.frames.clear()
        self.client.flush()

    # --- phases ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def run(self) -> Any:
        lac_port = self.client.start()
        tunnel = self.lac.open_tunnel(reactor.seconds())
        for index in range(self.args.sessions):
            iccid = f"{self.args.iccid_base + index}"
            call = self.lac.place_call(
                tunnel,
                iccid,
                proxy_lcp=default_proxy_lcp(self.lac.rng),
                proxy_auth=proxy_chap(self.args.password.encode(), self.lac.rng),
                device=Device(self.behaviour(iccid), rng=random.Random(index)),
            )
            self.sessions.append(Session(index, call))
        self.client.flush()
        yield self.until(lambda: all(s.address for s in self.sessions), "sessions up")

        for session in self.sessions:
            for number, target in enumerate(self.targets):
                assert session.address is not None
                request = packets.icmp_echo(session.address, target, session.index, number, b"lns")
                self.send_ip(session, request)
        self.client.flush()
        wanted = {(s.index, n) for s in self.sessions for n in range(len(self.targets))}
        yield self.until(
            lambda: all(
                (s.index, n) in s.replies for s in self.sessions for n in range(len(self.targets))
            ),
            "echo replies",
        )
        result: dict[str, Any] = {
            "phase": "up",
            "sessions": len(self.sessions),
            "addresses": [str(ipaddress.IPv4Address(s.address or 0)) for s in self.sessions],
            "replies": sum(len(s.replies) for s in self.sessions),
            "wanted": len(wanted),
        }
        if self.args.spoof_check and len(self.sessions) >= 2:
            result["spoof_reply_seen"] = yield self.spoof_check()
        if self.args.syn:
            result["syn_ack_mss"] = yield self.syn(self.args.syn)
        result["strays"] = [x for s in self.sessions for x in s.strays]
        if self.args.exit_after_up:
            # For the benchmark: what a traffic generator needs to speak for these calls
            # once this process is gone (the calls stay up at the LNS).
            result["lac_port"] = lac_port
            result["calls"] = [
                [tunnel.peer_tunnel_id, s.call.peer_session_id, s.address] for s in self.sessions
            ]
            print(json.dumps(result), flush=True)
            return
        print(json.dumps(result), flush=True)

        self.poll_loop = task.LoopingCall(self.serve_lan)
        self.poll_loop.start(0.01)
        yield self.wait_for_stdin()
        self.poll_loop.stop()
        result = {
            "phase": "done",
            "served": {str(s.index): s.served for s in self.sessions if s.served},
        }
        for session in self.sessions:
            self.lac.hang_up(session.call)
        self.client.flush()
        yield self.until(lambda: tunnel.channel.idle, "hang-ups acknowledged")
        print(json.dumps(result), flush=True)

    @defer.inlineCallbacks
    def spoof_check(self) -> Any:
        """Session 0 sends a request with session 1's address as its source. Forwarded, the
        host's reply would reach session 1; a sentinel request from session 1 itself, sent
        after it on the same path, is answered after it would have been."""
        first, second = self.sessions[0], self.sessions[1]
        assert second.address is not None
        target = self.targets[-1]
        self.send_ip(first, packets.icmp_echo(second.address, target, SPOOF_ID, 1))
        self.client.flush()
        self.send_ip(second, packets.icmp_echo(second.address, target, SENTINEL_ID, 1))
        self.client.flush()
        yield self.until(lambda: (SENTINEL_ID, 1) in second.replies, "sentinel reply")
        return (SPOOF_ID, 1) in second.replies

    @defer.inlineCallbacks
    def syn(self, where: str) -> Any:
        """A TCP handshake from session 0 to ``where`` (host:port), announcing MSS 1460;
        returns the MSS of the SYN-ACK as it reached the session."""
        host, port = where.rsplit(":", 1)
        session = self.sessions[0]
        assert session.address is not None
        destination = int(ipaddress.IPv4Address(host))
        syn = packets.tcp_syn(session.address, destination, SYN_PORT, int(port), 1460, SYN_SEQ)
        self.send_ip(session, syn)
        self.client.flush()
        yield self.until(lambda: session.syn_ack_seq is not None, "SYN-ACK")
        assert session.syn_ack_seq is not None
        ack = packets.tcp_segment(
            session.address,
            destination,
            SYN_PORT,
            int(port),
            seq=SYN_SEQ + 1,
            ack=session.syn_ack_seq + 1,
        )
        self.send_ip(session, ack)
        self.client.flush()
        return session.syn_ack_mss

    def until(self, condition: Callable[[], bool], what: str) -> defer.Deferred[None]:
        def check() -> bool:
            self.poll()
            return condition()

        def failed(failure: Failure) -> None:
            raise AssertionError(f"{what}: {failure.getErrorMessage()}")

        waiting = self.client.until(check, timeout=self.args.timeout)
        waiting.addErrback(failed)
        return waiting

    def wait_for_stdin(self) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()

        class Lines(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:
                if not done.called:
                    done.callback(None)

            def connectionLost(self, reason: object = None) -> None:
                if not done.called:
                    done.callback(None)

        stdio.StandardIO(Lines())  # type: ignore[no-untyped-call]
        return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--local", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--iccid-base", type=int, default=8944000000000100000)
    parser.add_argument("--mru", type=int, default=1450)
    parser.add_argument("--ping", action="append", default=[])
    parser.add_argument("--serve", action="append", default=[])
    parser.add_argument("--spoof-check", action="store_true")
    parser.add_argument("--syn")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--exit-after-up", action="store_true")
    parser.add_argument(
        "--device-auth",
        action="store_true",
        help="devices answer CHAP/PAP with the ICCID as name and --password (for l2tpns)",
    )
    args = parser.parse_args()
    driver = Driver(args)
    outcome: list[int] = []

    def finished(result: object) -> None:
        if isinstance(result, Failure):
            print(json.dumps({"phase": "failed", "error": result.getErrorMessage()}), flush=True)
            outcome.append(1)
        reactor.stop()

    reactor.callWhenRunning(lambda: driver.run().addBoth(finished))
    reactor.run()
    sys.exit(outcome[0] if outcome else 0)


if __name__ == "__main__":
    main()
