"""Drives a whole LnsEndpoint with well-behaved, mangled and hostile peers, on a fake clock.

The invariant the fuzzers check (tests/fuzz): whatever the datagrams, from
whichever sources, in whatever order and at whatever times, the endpoint never
raises, its state stays within its caps (tunnels per node and per LAC,
established or being set up, calls waiting for an ICCN, messages queued for a
peer), its bookkeeping agrees with its tunnels, it sends a source that no LAC
entry allows no more bytes than that source sent, and once every peer falls
silent, its timers free every tunnel.

A step is ``(action, source, number, blob)``; actions speak the protocol (an
SCCRQ, the SCCCN that answers our challenge right or wrong, ICRQ, ICCN, CDN,
HELLO, StopCCN, acknowledgements), mangle it (a byte of the last datagram
changed, AVPs from the blob under a valid header), send the blob as it is, let
time pass, or have the layers above clear a call or a tunnel. The peers learn
our tunnel and session IDs from what we send them, as a LAC would.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from dataclasses import dataclass, field

from lns.l2tp.avp import AttributeType, MessageType, ResultCode, make
from lns.l2tp.endpoint import Datagram, LacMatch, LnsEndpoint
from lns.l2tp.header import DataPacket, decode_packet, encode_control, encode_data
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.tunnel import SCCCN_RESPONSE_TYPE, LacPeer, TunnelSettings, challenge_response
from lns.l2tp.wire import MalformedPacket

SECRET = b"fuzz-secret"
SOURCES = (
    ("192.0.2.10", 1701),  # LAC entry "op-a"
    ("192.0.2.11", 1701),  # the same entry, another address of its prefix
    ("192.0.2.12", 4500),
    ("198.51.100.7", 1701),  # no LAC entry allows it
)
UNLISTED = SOURCES[3]
ICCID = "8944500102198304826"
SETTINGS = TunnelSettings(
    hello_interval=10.0,
    max_tunnels=6,
    max_tunnels_setting_up=4,
    max_connecting_calls=3,
    max_setups_in_progress=5,
    max_queued=8,
    connect_timeout=5.0,
    unauthenticated_per_source=20,
    stateless_replies=10,
)
LAC = LacPeer("op-a", SECRET, True, None, max_tunnels=5, max_tunnels_setting_up=3)
ACTIONS = 15
# Silence long enough for every timer to run out: our HELLO, its retransmissions
# (the budget), the linger after a StopCCN, a setup that never completes.
SILENCE = SETTINGS.hello_interval + 3 * SETTINGS.setup_timeout + SETTINGS.linger + 10.0


@dataclass
class _PeerTunnel:
    """What a peer knows of one tunnel: our ID, its numbering, our challenge, the calls."""

    ours: int
    theirs: int
    ns: int = 1
    nr: int = 1
    challenge: bytes | None = None
    calls: dict[int, int] = field(default_factory=dict)  # their session -> ours (0: no ICRP yet)


class EndpointDriver:
    def __init__(self) -> None:
        self.endpoint = LnsEndpoint(
            SETTINGS, [LacMatch(ipaddress.ip_network("192.0.2.0/24"), LAC)], random.Random(7)
        )
        self.now = 0.0
        self.tunnels: dict[tuple[str, int], dict[int, _PeerTunnel]] = {s: {} for s in SOURCES}
        self.last: bytes = b""
        self.received_from: Counter[tuple[str, int]] = Counter()
        self.sent_to: Counter[tuple[str, int]] = Counter()

    # --- steps ---------------------------------------------------------------------------

    def step(self, action: int, source: int, number: int, blob: bytes) -> None:
        peer = SOURCES[source % len(SOURCES)]
        known = self.tunnels[peer]
        tunnel = list(known.values())[number % len(known)] if known else None
        action %= ACTIONS
        if action == 0:
            self.advance(number % 3000 / 100)
        elif action == 1:
            self._sccrq(peer, number)
        elif action == 2 and tunnel is not None and tunnel.challenge is not None:
            right = number % 4 != 0
            secret = SECRET if right else b"not the secret"
            response = challenge_response(SCCCN_RESPONSE_TYPE, secret, tunnel.challenge)
            self._control(
                peer, tunnel, MessageType.SCCCN, [(AttributeType.CHALLENGE_RESPONSE, response)]
            )
        elif action == 3 and tunnel is not None:
            self._send(peer, encode_control(tunnel.ours, 0, tunnel.ns, tunnel.nr, b""))
        elif action == 4 and tunnel is not None:
            self._control(peer, tunnel, MessageType.HELLO, [])
        elif action == 5 and tunnel is not None:
            for burst in range(1 + number % 5):  # a GGSN sends them in bursts
                session = (number + burst) % 0xFFFF + 1
                tunnel.calls.setdefault(session, 0)
                avps = [
                    (AttributeType.ASSIGNED_SESSION_ID, session),
                    (AttributeType.CALL_SERIAL_NUMBER, number),
                    (AttributeType.CALLING_NUMBER, ICCID if number % 7 else "not an iccid"),
                ]
                self._control(peer, tunnel, MessageType.ICRQ, avps)
        elif action == 6 and tunnel is not None and tunnel.calls:
            ours = list(tunnel.calls.values())[number % len(tunnel.calls)]
            avps = [(AttributeType.TX_CONNECT_SPEED, 1000), (AttributeType.FRAMING_TYPE, 1)]
            self._control(peer, tunnel, MessageType.ICCN, avps, session=ours)
        elif action == 7 and tunnel is not None and tunnel.calls:
            theirs, ours = list(tunnel.calls.items())[number % len(tunnel.calls)]
            avps = [
                (AttributeType.RESULT_CODE, ResultCode(1)),
                (AttributeType.ASSIGNED_SESSION_ID, theirs),
            ]
            self._control(peer, tunnel, MessageType.CDN, avps, session=ours)
        elif action == 8 and tunnel is not None:
            avps = [
                (AttributeType.ASSIGNED_TUNNEL_ID, tunnel.theirs),
                (AttributeType.RESULT_CODE, ResultCode(1)),
            ]
            self._control(peer, tunnel, MessageType.StopCCN, avps)
        elif action == 9:
            self._send(peer, blob)
        elif action == 10 and self.last:
            mangled = bytearray(self.last)
            for offset, value in zip(blob[::2], blob[1::2], strict=False):
                mangled[offset % len(mangled)] = value
            self._send(peer, bytes(mangled))
        elif action == 11:
            ours = tunnel.ours if tunnel is not None else number % 0x10000
            ns, nr = (tunnel.ns, tunnel.nr) if tunnel is not None else (0, 0)
            self._send(peer, encode_control(ours, number % 3, ns, nr, blob))
        elif action == 12 and tunnel is not None:
            ours = next(iter(tunnel.calls.values()), number % 0x10000)
            self._send(peer, encode_data(tunnel.ours, ours, blob))
        elif action == 13 and tunnel is not None:
            if number % 2:
                self.endpoint.close_tunnel(tunnel.ours, ResultCode(1), "fuzz", self.now)
            else:
                for ours in tunnel.calls.values():
                    self.endpoint.disconnect_call(
                        tunnel.ours, ours, ResultCode(3), "fuzz", self.now
                    )
            self._collect()
        elif action == 14 and self.last:  # a retransmission: the last datagram again
            self._send(peer, self.last)
        self.check()

    def _sccrq(self, peer: tuple[str, int], number: int) -> None:
        theirs = number % 0xFFFF + 1
        avps = [
            make(AttributeType.PROTOCOL_VERSION, 0x0100),
            make(AttributeType.HOST_NAME, "fuzz-lac"),
            make(AttributeType.FRAMING_CAPABILITIES, 3),
            make(AttributeType.ASSIGNED_TUNNEL_ID, theirs),
            make(AttributeType.VENDOR_NAME, "a vendor name long enough to answer"),
        ]
        body = encode_message(ControlMessage(MessageType.SCCRQ, tuple(avps)))
        self._send(peer, encode_control(0, 0, 0, 0, body))

    def _control(
        self,
        peer: tuple[str, int],
        tunnel: _PeerTunnel,
        mtype: MessageType,
        values: list[tuple[AttributeType, object]],
        session: int = 0,
    ) -> None:
        message = ControlMessage(mtype, tuple(make(a, v) for a, v in values))  # type: ignore[arg-type]
        body = encode_message(message, SECRET)
        data = encode_control(tunnel.ours, session, tunnel.ns, tunnel.nr, body)
        tunnel.ns = (tunnel.ns + 1) % 0x10000
        self._send(peer, data)

    def _send(self, peer: tuple[str, int], data: bytes) -> None:
        self.last = data
        self.received_from[peer] += len(data)
        self.endpoint.datagram_received(data, peer, self.now)
        self._collect()

    def advance(self, seconds: float) -> None:
        """Let time pass, running every timer that comes due on the way."""
        target = self.now + seconds
        while True:
            due = self.endpoint.get_timer()
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.endpoint.handle_timer(self.now)
            self._collect()
        self.now = target

    # --- what the peers learn ---------------------------------------------------------------

    def _collect(self) -> None:
        for datagram in self.endpoint.datagrams_to_send(self.now):
            self.sent_to[datagram.peer] += len(datagram.data)
            self._learn(datagram)

    def _learn(self, datagram: Datagram) -> None:
        try:
            packet = decode_packet(datagram.data)
        except MalformedPacket:
            raise AssertionError(f"we sent a malformed datagram: {datagram.data.hex()}") from None
        if isinstance(packet, DataPacket) or packet.is_zlb or datagram.peer not in self.tunnels:
            return
        message = decode_message(packet.payload, SECRET)  # ours always decode
        known = self.tunnels[datagram.peer]
        if message.message_type == MessageType.SCCRP:
            ours = message.get(AttributeType.ASSIGNED_TUNNEL_ID)
            challenge = message.get(AttributeType.CHALLENGE)
            assert isinstance(ours, int)
            new = known.setdefault(ours, _PeerTunnel(ours, packet.tunnel_id))
            new.challenge = challenge if isinstance(challenge, bytes) else None
        tunnel = next((t for t in known.values() if t.theirs == packet.tunnel_id), None)
        if tunnel is None:
            return
        tunnel.nr = (packet.ns + 1) % 0x10000
        if message.message_type == MessageType.ICRP:
            ours = message.get(AttributeType.ASSIGNED_SESSION_ID)
            if isinstance(ours, int) and packet.session_id in tunnel.calls:
                tunnel.calls[packet.session_id] = ours
        elif message.message_type == MessageType.StopCCN:
            del known[tunnel.ours]

    # --- the invariant --------------------------------------------------------------------------

    def check(self) -> None:
        endpoint = self.endpoint
        tunnels = endpoint.tunnels
        assert len(tunnels) <= SETTINGS.max_tunnels
        unproven = [t for t in tunnels.values() if not t.was_established]
        assert endpoint.tunnels_setting_up == len(unproven) <= SETTINGS.max_tunnels_setting_up
        assert len(tunnels) <= LAC.max_tunnels
        assert len(unproven) <= LAC.max_tunnels_setting_up
        # The node-wide count of calls waiting for an ICCN is their sum, within its bound.
        waiting = sum(conn.connecting_calls for conn in tunnels.values())
        assert endpoint.admission.connecting == waiting <= SETTINGS.max_setups_in_progress
        for conn in tunnels.values():
            assert conn.connecting_calls <= SETTINGS.max_connecting_calls
            assert len(conn.calls) <= SETTINGS.max_calls
            # Our own messages pile up only a little past the point where we stop taking
            # the peer's: the replies to one message, a HELLO, a StopCCN, a CDN per call.
            assert conn.channel.unacknowledged <= SETTINGS.max_queued + len(conn.calls) + 3
        # No reflection towards a source no LAC entry allows.
        assert self.sent_to[UNLISTED] <= self.received_from[UNLISTED]

    def fall_silent(self) -> None:
        """Every peer stops; when the timers have run, nothing of any tunnel is left."""
        self.advance(SILENCE)
        endpoint = self.endpoint
        assert endpoint.tunnels == {}, {t: c.state for t, c in endpoint.tunnels.items()}
        assert endpoint.tunnels_setting_up == 0
        assert endpoint.admission.connecting == 0
        assert endpoint.get_timer() is None
        assert not endpoint._by_setup
        assert sum(endpoint._per_lac.values()) == 0
        assert sum(endpoint._per_lac_unproven.values()) == 0
