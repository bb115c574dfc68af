"""The LNS end of L2TP: every control connection of this node, behind one UDP port.

Demultiplexes datagrams by Tunnel ID, matches an SCCRQ to a configured LAC
(by source address, then Host Name when one is configured), answers peers
that are not allowed with a stateless StopCCN, recognises an SCCRQ that a LAC
retransmitted because it missed our SCCRP (RFC 2661 section 5.8), and
collects what every tunnel has to send. I/O-free, like the tunnels.

Cheap rejection first, because an SCCRQ needs no secret and its source
address may be forged: a datagram from an address no ``[[l2tp.lac]]`` matches
is never decoded (a bounded look at its AVP headers finds the tunnel to
address a refusal to); an SCCRQ larger than ``unauthenticated_max_bytes`` is
dropped; each source address gets ``unauthenticated_per_source`` messages a
second before it proves the secret; the caps on tunnels (node-wide and per
LAC, established or being set up) refuse an SCCRQ before its AVPs are
decoded; and every reply sent without keeping state shares one budget of
``stateless_replies`` a second (a refusal to an unlisted address is never
longer than the SCCRQ it answers). A message from a configured LAC for a tunnel
we do not know (we restarted, say) is answered with a StopCCN naming that
tunnel (section 6.4: header Tunnel ID 0, Assigned Tunnel ID), so the LAC
re-establishes at once instead of waiting for its HELLO to time out.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from lns.deadlines import Deadlines
from lns.histogram import Histogram
from lns.l2tp import ids
from lns.l2tp.admission import PerSecond, SetupAdmission
from lns.l2tp.avp import AttributeType, MessageType, ResultCode, make
from lns.l2tp.control import Sccrq, UnusableMessage, parse
from lns.l2tp.effects import Effect, PacketDropped, PppFrameReceived, TunnelRefused
from lns.l2tp.header import (
    CONTROL_HEADER_LENGTH,
    ControlPacket,
    DataPacket,
    decode_packet,
    encode_control,
)
from lns.l2tp.message import ControlMessage, decode_message, encode_message, peek
from lns.l2tp.result import GeneralError, StopCcnResult
from lns.l2tp.session import CallState
from lns.l2tp.tunnel import (
    ControlConnection,
    LacPeer,
    TunnelSettings,
    TunnelState,
    sccrq_refusal,
)
from lns.l2tp.wire import MalformedPacket

Address = tuple[str, int]
SHUTDOWN_REASON = "LNS is shutting down"  # the StopCCNs of a stopping node
_PEEKED = frozenset({AttributeType.ASSIGNED_TUNNEL_ID, AttributeType.HOST_NAME})


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


@dataclass(frozen=True, slots=True)
class _Chosen:
    """An SCCRQ decoded with the secret of the LAC entry it matched."""

    lac: LacPeer
    sccrq: Sccrq


class LnsEndpoint:
    """All tunnels of this node: routing, admission, set-up, timers and output.

    ``setups_elsewhere`` counts the session setups in progress past their ICCN (the
    layers above: PPP, AAA, the pool); with the calls waiting for an ICCN they make
    the setups in progress that ``max_setups_in_progress`` bounds.
    """

    def __init__(
        self,
        settings: TunnelSettings,
        lacs: Iterable[LacMatch],
        rng: random.Random | None = None,
        setups_elsewhere: Callable[[], int] | None = None,
    ) -> None:
        self.admission = SetupAdmission(settings.max_setups_in_progress)
        if setups_elsewhere is not None:
            self.admission.elsewhere = setups_elsewhere
        self.settings = settings
        self.lacs = tuple(lacs)
        self.tunnels: dict[int, ControlConnection] = {}
        self.counters: Counter[str] = Counter()
        self.hello_rtts = Histogram()  # every tunnel's HELLO round trips (section 6.5)
        self._rng = rng if rng is not None else random.SystemRandom()
        self._by_setup: dict[tuple[str, int, int], int] = {}
        # The key each tunnel was set up under: the peer's Assigned Tunnel ID as its SCCRQ
        # said it, which the tunnel itself may never have adopted (a refused SCCRQ).
        self._setup_key: dict[int, tuple[str, int, int]] = {}
        self._dirty: set[int] = set()
        self._deadlines: Deadlines[int] = Deadlines()
        self._outbox: list[Datagram] = []
        self._unproven: set[int] = set()  # tunnels not established yet
        self._per_lac: Counter[str] = Counter()
        self._per_lac_unproven: Counter[str] = Counter()
        self._per_source = PerSecond(settings.unauthenticated_per_source)
        self._stateless = PerSecond(settings.stateless_replies)
        self._unknown_answered = PerSecond(1)  # one StopCCN per unknown tunnel a second

    @property
    def settings(self) -> TunnelSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: TunnelSettings) -> None:
        """New settings (a reload): new tunnels take them; the node-wide bounds apply now."""
        self._settings = settings
        self.admission.limit = settings.max_setups_in_progress

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
            return self._data(packet, peer, now, local)
        if packet.tunnel_id == 0:
            return self._tunnel_zero(packet, peer, now, local)
        conn = self.tunnels.get(packet.tunnel_id)
        if conn is None:
            return self._unknown_tunnel(packet.tunnel_id, packet, peer, now, local)
        if conn.peer[0] != peer[0]:
            return self._drop(peer, "wrong_peer", f"tunnel {packet.tunnel_id} is not this peer's")
        if not conn.was_established and not self._per_source.allow(now, peer[0]):
            return self._drop(peer, "rate_limited", f"tunnel {packet.tunnel_id} not established")
        self.counters["control_received"] += 1
        return self._run(conn, conn.receive(packet, now))

    def _run(self, conn: ControlConnection, effects: list[Effect]) -> list[Effect]:
        """After a tunnel ran: schedule its output, keep the caps' counts, count its drops."""
        self._dirty.add(conn.tunnel_id)
        if conn.was_established and conn.tunnel_id in self._unproven:
            self._unproven.discard(conn.tunnel_id)
            self._per_lac_unproven[conn.lac.name] -= 1
        for effect in effects:
            if isinstance(effect, PacketDropped):
                self.counters[effect.counter] += 1
        return effects

    def _data(
        self, packet: DataPacket, peer: Address, now: float, local: str | None
    ) -> list[Effect]:
        conn = self.tunnels.get(packet.tunnel_id)
        if conn is None:
            return self._unknown_tunnel(packet.tunnel_id, None, peer, now, local)
        if conn.peer[0] != peer[0]:
            return self._drop(peer, "unknown_tunnel", f"data for tunnel {packet.tunnel_id}")
        call = conn.calls.get(packet.session_id)
        if call is None or call.state is not CallState.ESTABLISHED:
            return self._drop(peer, "unknown_session", f"data for session {packet.session_id}")
        return [PppFrameReceived(conn.tunnel_id, call.session_id, packet.payload)]

    def _drop(self, peer: Address, counter: str, reason: str) -> list[Effect]:
        self.counters[counter] += 1
        return [PacketDropped(peer, counter, reason)]

    def _lacs_for(self, host: str) -> list[LacPeer]:
        address = ipaddress.ip_address(host)
        return [m.peer for m in self.lacs if address in m.network]

    # --- tunnel 0: SCCRQs --------------------------------------------------------------

    def _tunnel_zero(
        self, packet: ControlPacket, peer: Address, now: float, local: str | None
    ) -> list[Effect]:
        if packet.is_zlb:
            return self._drop(peer, "unknown_tunnel", "ZLB for tunnel 0")
        candidates = self._lacs_for(peer[0])
        if not candidates:
            return self._refuse_unlisted(packet, peer, now, local)
        size = len(packet.payload)
        if size > self.settings.unauthenticated_max_bytes:
            return self._drop(peer, "oversized", f"{size}-byte message for tunnel 0")
        if not self._per_source.allow(now, peer[0]):
            return self._drop(peer, "rate_limited", "SCCRQ")
        try:
            mtype, plain = peek(packet.payload, _PEEKED, self.settings.unauthenticated_max_avps)
        except MalformedPacket as exc:
            return self._drop(peer, "malformed", f"SCCRQ: {exc}")
        if mtype != MessageType.SCCRQ:
            return self._drop(peer, "unexpected", f"{_type_name(mtype)} for tunnel 0")
        peer_tunnel = _u16(plain.get(AttributeType.ASSIGNED_TUNNEL_ID))
        hostname = _text(plain.get(AttributeType.HOST_NAME))
        if peer_tunnel:
            # Both answered without decoding: the retransmission of an SCCRQ we hold,
            # and an SCCRQ over a cap.
            existing = self._retransmitted(packet, peer, peer_tunnel, now)
            if existing is not None:
                return existing
            over = self._over_cap(candidates)
            if over is not None:
                return self._capped(peer_tunnel, hostname, over, packet, peer, now, local)
        chosen = self._decode_sccrq(packet, peer, candidates)
        if isinstance(chosen, MalformedPacket):
            return self._drop(peer, "malformed", f"SCCRQ: {chosen}")
        if isinstance(chosen, UnusableMessage):
            result = ResultCode(StopCcnResult.GENERAL_ERROR, chosen.error, chosen.text)
            self.counters[chosen.counter] += 1
            if chosen.assigned_tunnel_id:
                self._stateless_stopccn(
                    chosen.assigned_tunnel_id, 0, packet, result, peer, now, local
                )
            return [PacketDropped(peer, chosen.counter, f"SCCRQ: {chosen.text}")]
        if isinstance(chosen, str):
            return self._refused_lac(peer_tunnel, hostname, chosen, packet, peer, now, local)
        sccrq = chosen.sccrq
        if not peer_tunnel:  # the Assigned Tunnel ID was hidden: the same checks, decoded
            existing = self._retransmitted(packet, peer, sccrq.assigned_tunnel_id, now)
            if existing is not None:
                return existing
        over = self._over_cap([chosen.lac])
        if over is not None:
            return self._capped(
                sccrq.assigned_tunnel_id, sccrq.host_name, over, packet, peer, now, local
            )
        refusal = sccrq_refusal(sccrq, chosen.lac)
        if refusal is not None:
            self.counters["tunnels_refused"] += 1
            self._stateless_stopccn(sccrq.assigned_tunnel_id, 0, packet, refusal, peer, now, local)
            return [TunnelRefused(peer, sccrq.host_name, refusal.message)]
        tunnel_id = ids.allocate(self._rng, self.tunnels)
        if tunnel_id is None:  # the caps keep us far from it; refused, never looped
            over = "every tunnel ID is in use"
            return self._capped(
                sccrq.assigned_tunnel_id, sccrq.host_name, over, packet, peer, now, local
            )
        conn = ControlConnection(
            tunnel_id,
            peer,
            chosen.lac,
            self.settings,
            self._rng,
            now,
            local=local,
            hello_rtts=self.hello_rtts,
            admission=self.admission,
        )
        self.tunnels[tunnel_id] = conn
        setup_key = (peer[0], peer[1], sccrq.assigned_tunnel_id)
        self._by_setup[setup_key] = tunnel_id
        self._setup_key[tunnel_id] = setup_key
        self._unproven.add(tunnel_id)
        self._per_lac[chosen.lac.name] += 1
        self._per_lac_unproven[chosen.lac.name] += 1
        self.counters["tunnels_created"] += 1
        return self._run(conn, conn.receive(packet, now, sccrq))

    def _retransmitted(
        self, packet: ControlPacket, peer: Address, peer_tunnel: int, now: float
    ) -> list[Effect] | None:
        """The LAC missed our SCCRP and sent its SCCRQ again: the same tunnel takes it."""
        existing = self._by_setup.get((peer[0], peer[1], peer_tunnel))
        conn = self.tunnels.get(existing) if existing is not None else None
        if conn is None:
            return None
        self.counters["sccrq_retransmitted"] += 1
        return self._run(conn, conn.receive(packet, now))

    def _decode_sccrq(
        self, packet: ControlPacket, peer: Address, candidates: Sequence[LacPeer]
    ) -> _Chosen | UnusableMessage | MalformedPacket | str:
        """The SCCRQ read with the secret of the entry it matches; else what is wrong with it:
        malformed with every candidate's secret, unusable, or (a string) matching no entry."""
        limit = self.settings.unauthenticated_max_avps
        problem: str | None = None
        malformed = MalformedPacket("no LAC entry")
        unusable: UnusableMessage | None = None
        for lac in candidates:
            try:
                message = decode_message(packet.payload, lac.secret, limit)
            except MalformedPacket as exc:
                malformed = exc
                continue
            hostname = message.get(AttributeType.HOST_NAME)
            if lac.hostname is not None and lac.hostname != hostname:
                problem = f"host name {hostname!r} matches no [[l2tp.lac]] for {peer[0]}"
                continue
            if message.invalid() and any(a.hidden for a in message.invalid()):
                # A hidden value that does not fit: most likely another entry's secret.
                unusable = _parse_error(message) or unusable
                continue
            try:
                return _Chosen(lac, _as_sccrq(parse(message)))
            except UnusableMessage as exc:
                return exc
        if unusable is not None:
            return unusable
        return problem if problem is not None else malformed

    def _over_cap(self, lacs: Sequence[LacPeer]) -> str | None:
        """Why no tunnel can be set up for any of these LAC entries, or None."""
        settings = self.settings
        if len(self.tunnels) >= settings.max_tunnels:
            return f"{len(self.tunnels)} tunnels, the node's max_tunnels"
        if len(self._unproven) >= settings.max_tunnels_setting_up:
            return f"{len(self._unproven)} tunnels being set up, the node's max_tunnels_setting_up"
        reasons = []
        for lac in lacs:
            if self._per_lac[lac.name] >= lac.max_tunnels:
                reasons.append(
                    f"LAC {lac.name} has {self._per_lac[lac.name]} tunnels (max_tunnels)"
                )
            elif self._per_lac_unproven[lac.name] >= lac.max_tunnels_setting_up:
                reasons.append(
                    f"LAC {lac.name} has {self._per_lac_unproven[lac.name]} tunnels being set up "
                    "(max_tunnels_setting_up)"
                )
            else:
                return None
        return "; ".join(reasons)

    def _capped(
        self,
        peer_tunnel: int,
        hostname: str,
        why: str,
        packet: ControlPacket,
        peer: Address,
        now: float,
        local: str | None,
    ) -> list[Effect]:
        self.counters["tunnels_refused"] += 1
        self.counters["tunnels_capped"] += 1
        result = ResultCode(
            StopCcnResult.GENERAL_ERROR,
            GeneralError.INSUFFICIENT_RESOURCES,
            "too many tunnels; try again later",
        )
        self._stateless_stopccn(peer_tunnel, 0, packet, result, peer, now, local)
        return [TunnelRefused(peer, hostname, why)]

    def _refused_lac(
        self,
        peer_tunnel: int,
        hostname: str,
        problem: str,
        packet: ControlPacket,
        peer: Address,
        now: float,
        local: str | None,
    ) -> list[Effect]:
        self.counters["tunnels_refused"] += 1
        result = ResultCode(StopCcnResult.NOT_AUTHORIZED, 0, "not authorized")
        if peer_tunnel:
            self._stateless_stopccn(peer_tunnel, 0, packet, result, peer, now, local)
        return [TunnelRefused(peer, hostname, problem)]

    def _refuse_unlisted(
        self, packet: ControlPacket, peer: Address, now: float, local: str | None
    ) -> list[Effect]:
        """An address no LAC entry allows: refused before any AVP is decoded."""
        self.counters["tunnels_refused"] += 1
        problem = f"no [[l2tp.lac]] allows address {peer[0]}"
        if len(packet.payload) > self.settings.unauthenticated_max_bytes:
            return [TunnelRefused(peer, "", problem)]
        if not self._stateless.allow(now):
            self.counters["stateless_suppressed"] += 1
            return [TunnelRefused(peer, "", problem)]
        try:
            mtype, plain = peek(packet.payload, _PEEKED, self.settings.unauthenticated_max_avps)
        except MalformedPacket:
            return [TunnelRefused(peer, "", problem)]
        hostname = _text(plain.get(AttributeType.HOST_NAME))
        peer_tunnel = _u16(plain.get(AttributeType.ASSIGNED_TUNNEL_ID))
        if mtype == MessageType.SCCRQ and peer_tunnel:
            # Never more bytes than it sent: it may be anyone's forged address.
            result = ResultCode(StopCcnResult.NOT_AUTHORIZED, 0, "not authorized")
            size = CONTROL_HEADER_LENGTH + len(packet.payload)
            self._send_stateless(peer_tunnel, 0, packet, result, peer, local, limit=size)
        return [TunnelRefused(peer, hostname, problem)]

    # --- messages for tunnels we do not know --------------------------------------------

    def _unknown_tunnel(
        self,
        tunnel_id: int,
        packet: ControlPacket | None,
        peer: Address,
        now: float,
        local: str | None,
    ) -> list[Effect]:
        """Tell a configured LAC that this tunnel is gone (we restarted, or forgot it)."""
        what = "data" if packet is None else "control"
        dropped = self._drop(peer, "unknown_tunnel", f"{what} for tunnel {tunnel_id}")
        if (packet is not None and packet.is_zlb) or not self._lacs_for(peer[0]):
            return dropped  # a ZLB asks for nothing; an unlisted source gets nothing
        if not self._unknown_answered.allow(now, (peer[0], tunnel_id)):
            return dropped
        result = ResultCode(
            StopCcnResult.GENERAL_ERROR,
            GeneralError.NO_CONTROL_CONNECTION,
            f"no tunnel {tunnel_id} here (the LNS restarted?): open a new one",
        )
        if self._stateless_stopccn(0, tunnel_id, packet, result, peer, now, local):
            self.counters["unknown_tunnel_stopccn"] += 1
        return dropped

    # --- replies that keep no state -------------------------------------------------------

    def _stateless_stopccn(
        self,
        peer_tunnel: int,
        our_tunnel: int,
        packet: ControlPacket | None,
        result: ResultCode,
        peer: Address,
        now: float,
        local: str | None,
    ) -> bool:
        """A StopCCN within the node's budget for replies without state; False when over it."""
        if not self._stateless.allow(now):
            self.counters["stateless_suppressed"] += 1
            return False
        self._send_stateless(peer_tunnel, our_tunnel, packet, result, peer, local)
        return True

    def _send_stateless(
        self,
        peer_tunnel: int,
        our_tunnel: int,
        packet: ControlPacket | None,
        result: ResultCode,
        peer: Address,
        local: str | None,
        limit: int | None = None,
    ) -> None:
        """A StopCCN that acknowledges ``packet`` (when a control message) and says why not.

        Addressed to the peer's tunnel when we know it; else to tunnel 0 with our
        (former) tunnel ID in the Assigned Tunnel ID, by which the peer finds its
        tunnel (RFC 2661 section 6.4). Not sent when longer than ``limit`` bytes.
        """
        body = encode_message(
            ControlMessage(
                MessageType.StopCCN,
                (
                    make(AttributeType.ASSIGNED_TUNNEL_ID, our_tunnel),
                    make(AttributeType.RESULT_CODE, result),
                ),
            )
        )
        nr = (packet.ns + 1) & 0xFFFF if packet is not None else 0
        data = encode_control(peer_tunnel, 0, 0, nr, body)
        if limit is not None and len(data) > limit:
            self.counters["stateless_withheld"] += 1
            return
        self._outbox.append(Datagram(data, peer, local))

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
        return self._run(conn, conn.disconnect_call(session_id, result, reason, now))

    def close_tunnel(
        self, tunnel_id: int, result: ResultCode, reason: str, now: float
    ) -> list[Effect]:
        conn = self.tunnels.get(tunnel_id)
        if conn is None:
            return []
        return self._run(conn, conn.close(result, now, reason))

    def shutdown(self, now: float) -> list[Effect]:
        """StopCCN to every LAC: this node is going away.

        Tunnels never established are forgotten without one: their peer may be a
        forged address, and nothing waits on them.
        """
        result = ResultCode(StopCcnResult.SHUTTING_DOWN, 0, SHUTDOWN_REASON)
        effects: list[Effect] = []
        for tunnel_id, conn in list(self.tunnels.items()):
            if not conn.was_established:
                self._forget(conn)
                continue
            effects += self.close_tunnel(tunnel_id, result, SHUTDOWN_REASON, now)
        return effects

    @property
    def closing(self) -> bool:
        """Some StopCCN of ours still waits for its acknowledgement."""
        return any(c.state is TunnelState.CLOSING for c in self.tunnels.values())

    @property
    def tunnels_setting_up(self) -> int:
        """Tunnels in memory that have not been established (yet)."""
        return len(self._unproven)

    # --- timers and output -------------------------------------------------------------

    def handle_timer(self, now: float) -> list[Effect]:
        """Run every tunnel whose deadline has come (no scan of idle tunnels)."""
        effects: list[Effect] = []
        for tunnel_id in self._deadlines.pop_due(now):
            conn = self.tunnels[tunnel_id]
            retransmissions = conn.channel.retransmissions
            effects += self._run(conn, conn.handle_timer(now))
            self.counters["retransmissions"] += conn.channel.retransmissions - retransmissions
            if conn.finished(now):
                self._forget(conn)
        return effects

    def _forget(self, conn: ControlConnection) -> None:
        del self.tunnels[conn.tunnel_id]
        self._dirty.discard(conn.tunnel_id)
        self._deadlines.discard(conn.tunnel_id)
        self._per_lac[conn.lac.name] -= 1
        if conn.tunnel_id in self._unproven:
            self._unproven.discard(conn.tunnel_id)
            self._per_lac_unproven[conn.lac.name] -= 1
            self.counters["tunnels_never_established"] += 1
        key = self._setup_key.pop(conn.tunnel_id, None)
        if key is not None and self._by_setup.get(key) == conn.tunnel_id:
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
            withheld = conn.withheld
            out.extend(
                Datagram(data, conn.peer, conn.local) for data in conn.datagrams_to_send(now)
            )
            self.counters["withheld_unproven"] += conn.withheld - withheld
            self._deadlines.set(tunnel_id, conn.get_timer())
        self._dirty.clear()
        self.counters["control_sent"] += len(out)
        return out


def _u16(raw: bytes | None) -> int:
    return int.from_bytes(raw, "big") if raw is not None and len(raw) == 2 else 0


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw is not None else ""


def _type_name(mtype: int) -> str:
    known = MessageType._value2member_map_.get(mtype)
    return known.name if known is not None else f"message type {mtype}"


def _as_sccrq(record: object) -> Sccrq:
    if not isinstance(record, Sccrq):  # peek read the same Message Type AVP
        raise AssertionError(f"expected an SCCRQ, parsed {type(record).__name__}")
    return record


def _parse_error(message: ControlMessage) -> UnusableMessage | None:
    try:
        parse(message)
    except UnusableMessage as exc:
        return exc
    return None
