"""The LNS end of L2TP: every control connection of this node, behind one UDP port.

Demultiplexes datagrams by Tunnel ID, matches an SCCRQ to a configured LAC
(by source address, then Host Name when one is configured), answers peers
that are not allowed with a stateless StopCCN, recognises an SCCRQ that a LAC
retransmitted because it missed our SCCRP (RFC 2661 section 5.8), and
collects what every tunnel has to send. I/O-free, like the tunnels.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from lns.deadlines import Deadlines
from lns.l2tp.avp import AttributeType, MessageType, ResultCode, make
from lns.l2tp.effects import Effect, PacketDropped, PppFrameReceived, TunnelRefused
from lns.l2tp.header import ControlPacket, DataPacket, decode_packet, encode_control
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.result import StopCcnResult
from lns.l2tp.session import CallState
from lns.l2tp.tunnel import ControlConnection, LacPeer, TunnelSettings, TunnelState
from lns.l2tp.wire import MalformedPacket

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class LacMatch:
    """A ``[[l2tp.lac]]`` entry: the addresses it may come from, and who it is."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    peer: LacPeer


@dataclass(frozen=True, slots=True)
class Datagram:
    """Bytes to send to ``peer``, from our address ``local`` when known."""

    data: bytes
    peer: Address
    local: str | None = None


class LnsEndpoint:
    """All tunnels of this node: routing, set-up, timers and output."""

    def __init__(
        self,
        settings: TunnelSettings,
        lacs: Iterable[LacMatch],
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.lacs = tuple(lacs)
        self.tunnels: dict[int, ControlConnection] = {}
        self.counters: Counter[str] = Counter()
        self._rng = rng if rng is not None else random.SystemRandom()
        self._by_setup: dict[tuple[str, int, int], int] = {}
        self._dirty: set[int] = set()
        self._deadlines: Deadlines[int] = Deadlines()
        self._outbox: list[Datagram] = []

    # --- input ------------------------------------------------------------------

    def datagram_received(
        self, data: bytes, peer: Address, now: float, local: str | None = None
    ) -> list[Effect]:
        """One UDP datagram from ``peer``; returns what the layers above must act on."""
        try:
            packet = decode_packet(data)
        except MalformedPacket as exc:
            return self._drop(peer, "malformed", str(exc))
        if isinstance(packet, DataPacket):
            return self._data(packet, peer)
        if packet.tunnel_id == 0:
            return self._sccrq(packet, peer, now, local)
        conn = self.tunnels.get(packet.tunnel_id)
        if conn is None:
            return self._drop(peer, "unknown_tunnel", f"control for tunnel {packet.tunnel_id}")
        if conn.peer[0] != peer[0]:
            return self._drop(peer, "wrong_peer", f"tunnel {packet.tunnel_id} is not this peer's")
        self._dirty.add(conn.tunnel_id)
        self.counters["control_received"] += 1
        return self._counted(conn.receive(packet, now))

    def _counted(self, effects: list[Effect]) -> list[Effect]:
        """Count what a tunnel dropped (the tunnel reports it; the endpoint keeps the counters)."""
        for effect in effects:
            if isinstance(effect, PacketDropped):
                self.counters[effect.counter] += 1
        return effects

    def _data(self, packet: DataPacket, peer: Address) -> list[Effect]:
        conn = self.tunnels.get(packet.tunnel_id)
        if conn is None or conn.peer[0] != peer[0]:
            return self._drop(peer, "unknown_tunnel", f"data for tunnel {packet.tunnel_id}")
        call = conn.calls.get(packet.session_id)
        if call is None or call.state is not CallState.ESTABLISHED:
            return self._drop(peer, "unknown_session", f"data for session {packet.session_id}")
        call.count_received(packet.payload)
        return [PppFrameReceived(conn.tunnel_id, call.session_id, packet.payload)]

    def _drop(self, peer: Address, counter: str, reason: str) -> list[Effect]:
        self.counters[counter] += 1
        return [PacketDropped(peer, counter, reason)]

    def _sccrq(
        self, packet: ControlPacket, peer: Address, now: float, local: str | None
    ) -> list[Effect]:
        if packet.is_zlb:
            return self._drop(peer, "unknown_tunnel", "ZLB for tunnel 0")
        host = ipaddress.ip_address(peer[0])
        candidates = [m for m in self.lacs if host in m.network]
        message: ControlMessage | None = None
        chosen: LacPeer | None = None
        problem = f"no [[l2tp.lac]] allows address {peer[0]}"
        for match in candidates:
            try:
                message = decode_message(packet.payload, match.peer.secret)
            except MalformedPacket as exc:
                problem = str(exc)
                continue
            hostname = message.get(AttributeType.HOST_NAME)
            if match.peer.hostname is None or match.peer.hostname == hostname:
                chosen = match.peer
                break
            problem = f"host name {hostname!r} matches no [[l2tp.lac]] for {peer[0]}"
        if message is None:
            try:
                message = decode_message(packet.payload, None)
            except MalformedPacket as exc:
                return self._drop(peer, "malformed", f"SCCRQ: {exc}")
        if message.message_type != MessageType.SCCRQ:
            return self._drop(peer, "unexpected", f"{message.message_type!s} for tunnel 0")
        peer_tunnel = message.get(AttributeType.ASSIGNED_TUNNEL_ID)
        if not isinstance(peer_tunnel, int) or peer_tunnel == 0:
            return self._drop(peer, "invalid", "SCCRQ without an Assigned Tunnel ID")
        hostname = message.get(AttributeType.HOST_NAME)
        if chosen is None:
            self.counters["tunnels_refused"] += 1
            result = ResultCode(StopCcnResult.NOT_AUTHORIZED, 0, "not authorized")
            self._refuse(peer_tunnel, packet, result, peer, local)
            return [TunnelRefused(peer, str(hostname or ""), problem)]
        key = (peer[0], peer[1], peer_tunnel)
        existing = self._by_setup.get(key)
        if existing is not None and existing in self.tunnels:
            # The LAC missed our SCCRP and sent its SCCRQ again: same tunnel.
            self.counters["sccrq_retransmitted"] += 1
            self._dirty.add(existing)
            return self._counted(self.tunnels[existing].receive(packet, now, message))
        tunnel_id = self._new_tunnel_id()
        conn = ControlConnection(
            tunnel_id, peer, chosen, self.settings, self._rng, now, local=local
        )
        self.tunnels[tunnel_id] = conn
        self._by_setup[key] = tunnel_id
        self._dirty.add(tunnel_id)
        self.counters["tunnels_created"] += 1
        return self._counted(conn.receive(packet, now, message))

    def _refuse(
        self,
        peer_tunnel: int,
        sccrq: ControlPacket,
        result: ResultCode,
        peer: Address,
        local: str | None,
    ) -> None:
        """A StopCCN that keeps no state: it acknowledges the SCCRQ and says why not."""
        body = encode_message(
            ControlMessage(
                MessageType.StopCCN,
                (
                    make(AttributeType.ASSIGNED_TUNNEL_ID, 0),
                    make(AttributeType.RESULT_CODE, result),
                ),
            )
        )
        nr = (sccrq.ns + 1) & 0xFFFF
        self._outbox.append(Datagram(encode_control(peer_tunnel, 0, 0, nr, body), peer, local))

    def _new_tunnel_id(self) -> int:
        while True:
            candidate = self._rng.randrange(1, 0x10000)
            if candidate not in self.tunnels:
                return candidate

    # --- commands from the layers above ---------------------------------------------

    def send_ppp(self, tunnel_id: int, session_id: int, frame: bytes) -> Datagram | None:
        """Frame a PPP frame for an established call; None when the call is gone."""
        conn = self.tunnels.get(tunnel_id)
        if conn is None:
            return None
        call = conn.calls.get(session_id)
        if call is None or call.state is not CallState.ESTABLISHED:
            return None
        return Datagram(call.frame_ppp(frame), conn.peer, conn.local)

    def disconnect_call(
        self, tunnel_id: int, session_id: int, result: ResultCode, reason: str, now: float
    ) -> list[Effect]:
        conn = self.tunnels.get(tunnel_id)
        if conn is None:
            return []
        self._dirty.add(tunnel_id)
        return conn.disconnect_call(session_id, result, reason, now)

    def close_tunnel(
        self, tunnel_id: int, result: ResultCode, reason: str, now: float
    ) -> list[Effect]:
        conn = self.tunnels.get(tunnel_id)
        if conn is None:
            return []
        self._dirty.add(tunnel_id)
        return conn.close(result, now, reason)

    def shutdown(self, now: float) -> list[Effect]:
        """StopCCN to every LAC: this node is going away."""
        result = ResultCode(StopCcnResult.SHUTTING_DOWN, 0, "LNS is shutting down")
        effects: list[Effect] = []
        for tunnel_id in list(self.tunnels):
            effects += self.close_tunnel(tunnel_id, result, "LNS is shutting down", now)
        return effects

    @property
    def closing(self) -> bool:
        """Some StopCCN of ours still waits for its acknowledgement."""
        return any(c.state is TunnelState.CLOSING for c in self.tunnels.values())

    # --- timers and output -------------------------------------------------------------

    def handle_timer(self, now: float) -> list[Effect]:
        """Run every tunnel whose deadline has come (no scan of idle tunnels)."""
        effects: list[Effect] = []
        for tunnel_id in self._deadlines.pop_due(now):
            conn = self.tunnels[tunnel_id]
            self._dirty.add(tunnel_id)
            effects += self._counted(conn.handle_timer(now))
            if conn.finished(now):
                self._forget(conn)
        return effects

    def _forget(self, conn: ControlConnection) -> None:
        del self.tunnels[conn.tunnel_id]
        self._dirty.discard(conn.tunnel_id)
        self._deadlines.discard(conn.tunnel_id)
        key = (conn.peer[0], conn.peer[1], conn.peer_tunnel_id)
        if self._by_setup.get(key) == conn.tunnel_id:
            del self._by_setup[key]

    def get_timer(self) -> float | None:
        """The earliest deadline of any tunnel, as of the last datagrams_to_send."""
        return self._deadlines.earliest()

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        out, self._outbox = self._outbox, []
        for tunnel_id in self._dirty:
            conn = self.tunnels.get(tunnel_id)
            if conn is None:
                continue
            out.extend(
                Datagram(data, conn.peer, conn.local) for data in conn.datagrams_to_send(now)
            )
            self._deadlines.set(tunnel_id, conn.get_timer())
        self._dirty.clear()
        self.counters["control_sent"] += len(out)
        return out
