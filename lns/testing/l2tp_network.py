"""Connects a simulated LAC to the LNS endpoint in memory, on a fake clock.

Time is a number the test advances; nothing sleeps. ``drop`` decides, per
datagram, whether the "network" loses it. Datagrams the LNS sends to anyone
but the simulated LAC (an attacker, a refused peer) are kept in ``to_others``;
:class:`RawPeer` and the message builders below play such peers by hand.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import TypeVar

from lns.l2tp.avp import AttributeType, Avp, MessageType, make
from lns.l2tp.effects import Effect
from lns.l2tp.endpoint import Datagram, LacMatch, LnsEndpoint
from lns.l2tp.header import ControlPacket, decode_packet, encode_control
from lns.l2tp.message import ControlMessage, decode_message, encode_message, peek
from lns.l2tp.tunnel import (
    SCCCN_RESPONSE_TYPE,
    LacPeer,
    TunnelSettings,
    TunnelState,
    challenge_response,
)
from lns.testing.lacsim.lac import Lac

_E = TypeVar("_E")

LAC_ADDRESS = ("192.0.2.10", 1701)
SECRET = b"tunnel-secret"


def make_endpoint(
    secret: bytes | None = SECRET,
    authenticate: bool = True,
    hostname: str | None = None,
    network: str = "192.0.2.0/24",
    **settings: object,
) -> LnsEndpoint:
    peer = LacPeer("op-a", secret, authenticate, hostname)
    match = LacMatch(ipaddress.ip_network(network), peer)
    return LnsEndpoint(TunnelSettings(**settings), [match], random.Random(1))  # type: ignore[arg-type]


class Network:
    def __init__(
        self,
        endpoint: LnsEndpoint,
        lac: Lac,
        lac_address: tuple[str, int] = LAC_ADDRESS,
        now: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        self.lac = lac
        self.lac_address = lac_address
        self.now = now
        self.effects: list[Effect] = []
        self.to_lns: list[bytes] = []  # every datagram the LAC sent (before loss)
        self.to_lac: list[bytes] = []  # every datagram the LNS sent (before loss)
        self.to_others: list[Datagram] = []  # what the LNS sent to other addresses
        self.drop_to_lns: Callable[[bytes], bool] = lambda data: False
        self.drop_to_lac: Callable[[bytes], bool] = lambda data: False

    def flush(self) -> None:
        """Deliver datagrams both ways until both sides are quiet."""
        while True:
            moved = False
            for data in self.lac.datagrams_to_send(self.now):
                moved = True
                self.to_lns.append(data)
                if not self.drop_to_lns(data):
                    self.effects += self.endpoint.datagram_received(
                        data, self.lac_address, self.now
                    )
            for datagram in self.endpoint.datagrams_to_send(self.now):
                moved = True
                if datagram.peer != self.lac_address:
                    self.to_others.append(datagram)
                    continue
                self.to_lac.append(datagram.data)
                if not self.drop_to_lac(datagram.data):
                    self.lac.datagram_received(datagram.data, self.now)
            if not moved:
                return

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, firing every timer on the way."""
        target = self.now + seconds
        self.flush()
        while True:
            deadlines = [
                t for t in (self.endpoint.get_timer(), self.lac.get_timer()) if t is not None
            ]
            due = min(deadlines) if deadlines else None
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.effects += self.endpoint.handle_timer(self.now)
            self.lac.handle_timer(self.now)
            self.flush()
        self.now = target
        self.flush()

    def of_type(self, kind: type[_E]) -> list[_E]:
        return [e for e in self.effects if isinstance(e, kind)]


# --- peers played by hand ------------------------------------------------------------


def sccrq(
    peer_tunnel: int,
    *,
    hostname: str = "lac1",
    ns: int = 0,
    extra: tuple[Avp, ...] = (),
) -> bytes:
    """An SCCRQ datagram with the AVPs section 6.1 requires (no Challenge)."""
    message = ControlMessage(
        MessageType.SCCRQ,
        (
            make(AttributeType.PROTOCOL_VERSION, 0x0100),
            make(AttributeType.HOST_NAME, hostname),
            make(AttributeType.FRAMING_CAPABILITIES, 3),
            make(AttributeType.ASSIGNED_TUNNEL_ID, peer_tunnel),
            *extra,
        ),
    )
    return encode_control(0, 0, ns, 0, encode_message(message))


def assigned_tunnel(data: bytes) -> int:
    """Our tunnel ID, read from an SCCRP (or any message with a plain Assigned Tunnel ID)."""
    packet = decode_packet(data)
    assert isinstance(packet, ControlPacket)
    _mtype, plain = peek(packet.payload, frozenset({AttributeType.ASSIGNED_TUNNEL_ID}), 32)
    return int.from_bytes(plain[AttributeType.ASSIGNED_TUNNEL_ID], "big")


def message_type(data: bytes) -> int | str:
    """The Message Type of a control datagram ("ZLB" for one without AVPs)."""
    packet = decode_packet(data)
    assert isinstance(packet, ControlPacket)
    if packet.is_zlb:
        return "ZLB"
    return peek(packet.payload, frozenset(), 32)[0]


class RawPeer:
    """The LAC side of one established tunnel, numbered by hand: it sends what it is
    told, and acknowledges everything the LNS sends it (as a LAC's ZLB would)."""

    def __init__(
        self,
        endpoint: LnsEndpoint,
        address: tuple[str, int],
        tunnel_id: int,
        peer_tunnel_id: int,
        ns: int,
        nr: int,
    ) -> None:
        self.endpoint = endpoint
        self.address = address
        self.tunnel_id = tunnel_id  # ours, the header's Tunnel ID
        self.peer_tunnel_id = peer_tunnel_id
        self.ns = ns
        self.nr = nr
        self.received: list[bytes] = []

    def send(self, message: ControlMessage, now: float, session_id: int = 0) -> list[Effect]:
        data = encode_control(self.tunnel_id, session_id, self.ns, self.nr, encode_message(message))
        self.ns = (self.ns + 1) % 65536
        return self.endpoint.datagram_received(data, self.address, now)

    def take(self, datagrams: list[Datagram]) -> None:
        """Read what the LNS sent this peer; later messages acknowledge it."""
        for datagram in datagrams:
            packet = decode_packet(datagram.data)
            if datagram.peer != self.address or not isinstance(packet, ControlPacket):
                continue
            if packet.tunnel_id != self.peer_tunnel_id:
                continue
            self.received.append(datagram.data)
            if packet.payload:
                self.nr = (packet.ns + 1) % 65536


# Enough for an SCCRP to fit in the bytes of the SCCRQ, as in a real LAC's.
LAC_LIKE = (
    make(AttributeType.BEARER_CAPABILITIES, 3),
    make(AttributeType.TIE_BREAKER, b"tiebreak"),
    make(AttributeType.FIRMWARE_REVISION, 0x1120),
    make(AttributeType.VENDOR_NAME, "Example Networks Inc."),
    make(AttributeType.RECEIVE_WINDOW_SIZE, 16),
)
ICCID = "8944500102198304826"


def establish_raw(net: Network, address: tuple[str, int], peer_tunnel: int = 77) -> RawPeer:
    """A LAC tunnel played by hand beside ``net``'s: SCCRQ, SCCRP, SCCCN with our
    challenge answered (the secret is SECRET)."""
    start = len(net.to_others)
    net.effects += net.endpoint.datagram_received(
        sccrq(peer_tunnel, extra=LAC_LIKE), address, net.now
    )
    net.flush()
    [sccrp] = [d.data for d in net.to_others[start:] if d.peer == address]
    packet = decode_packet(sccrp)
    assert isinstance(packet, ControlPacket)
    challenge = decode_message(packet.payload, SECRET).get(AttributeType.CHALLENGE)
    assert isinstance(challenge, bytes)
    peer = RawPeer(net.endpoint, address, assigned_tunnel(sccrp), peer_tunnel, ns=1, nr=1)
    response = challenge_response(SCCCN_RESPONSE_TYPE, SECRET, challenge)
    scccn = ControlMessage(MessageType.SCCCN, (make(AttributeType.CHALLENGE_RESPONSE, response),))
    net.effects += peer.send(scccn, net.now)
    net.flush()
    assert net.endpoint.tunnels[peer.tunnel_id].state is TunnelState.ESTABLISHED
    return peer


def icrq(peer_session: int, iccid: str = ICCID) -> ControlMessage:
    """An ICRQ for the LAC's session ``peer_session``, calling number ``iccid``."""
    return ControlMessage(
        MessageType.ICRQ,
        (
            make(AttributeType.ASSIGNED_SESSION_ID, peer_session),
            make(AttributeType.CALL_SERIAL_NUMBER, peer_session),
            make(AttributeType.CALLING_NUMBER, iccid),
        ),
    )
