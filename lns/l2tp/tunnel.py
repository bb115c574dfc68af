"""RFC 2661 sections 5 and 7: one control connection (tunnel), LNS side.

SCCRQ -> SCCRP -> SCCCN with tunnel authentication both ways (section 5.1.1:
Challenge Response = MD5(message type || secret || challenge), 2 for SCCRP, 3
for SCCCN), HELLO keepalive (section 6.5), StopCCN both ways, and the incoming
calls it carries (ICRQ/ICRP/ICCN/CDN, WEN, SLI; OCRQ refused: we are an LNS).

Which handler runs is data: :data:`_TUNNEL_TRANSITIONS` maps (state, message
record) to a handler; a pair missing from it is a finite-state-machine error.
Messages arrive typed (:mod:`lns.l2tp.control`); one that is unusable is
answered with a CDN when it belongs to a call (section 4.1), else a StopCCN.

An SCCRQ needs no secret and its source address may be forged, so until the
LAC proves the secret (a valid SCCCN) the tunnel is held short: it is gone if
not established within the retransmission budget, and its messages are held
to a size and AVP count. Until the peer shows that it receives what we send
to its address (it acknowledges our SCCRP, whose Tunnel ID it cannot guess),
our channel retransmits only when the peer does, and we never send it more
bytes than it sent us: the rest is withheld, as if lost, and the peer's own
retransmission earns it (no reflection, no amplification). AVPs are hidden
only once the tunnel is established: what goes before (identifiers, our
challenge, the MD5 response) holds nothing the hiding protects, and plain it
stays small. Once established, each tunnel bounds its calls waiting for an
ICCN and the messages it queues for a peer that does not acknowledge them.
I/O-free: ``now`` is a number, output is pulled with ``datagrams_to_send``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lns.deadlines import Deadlines
from lns.histogram import Histogram
from lns.iccid import InvalidIccid, parse_iccid
from lns.l2tp import ids
from lns.l2tp.admission import SetupAdmission
from lns.l2tp.avp import AttributeType, MessageType, ResultCode
from lns.l2tp.control import (
    CALL_MESSAGES,
    Cdn,
    Hello,
    Iccn,
    Icrp,
    Icrq,
    Ocrq,
    Scccn,
    Sccrp,
    Sccrq,
    Sli,
    StopCcn,
    TypedMessage,
    UnusableMessage,
    Wen,
    parse,
    to_message,
)
from lns.l2tp.effects import (
    CallCleared,
    CallEstablished,
    CallRefused,
    Effect,
    PacketDropped,
    TunnelClosed,
    TunnelEstablished,
)
from lns.l2tp.header import CONTROL_HEADER_LENGTH, ControlPacket, encode_control
from lns.l2tp.message import decode_message, encode_message
from lns.l2tp.reliable import ReliableChannel, RetransmitPolicy
from lns.l2tp.result import CdnResult, GeneralError, StopCcnResult, describe
from lns.l2tp.session import CallState, IncomingCall
from lns.l2tp.wire import MalformedPacket

PROTOCOL_VERSION_1_0 = 0x0100
FRAMING_SYNC_ASYNC = 0x3
CHALLENGE_LENGTH = 16
SCCRP_RESPONSE_TYPE = 2
SCCCN_RESPONSE_TYPE = 3

# A message as the channel delivers it: typed, or the reason it cannot be used.
Incoming = TypedMessage | UnusableMessage


def challenge_response(message_type: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 2661 section 5.1.1: MD5 over the message type octet, the secret and the challenge."""
    return hashlib.md5(bytes([message_type]) + secret + challenge).digest()


class TunnelState(enum.Enum):
    IDLE = "idle"  # created for an SCCRQ, not yet answered
    WAIT_CTL_CONN = "wait-ctl-conn"  # SCCRP sent, waiting for SCCCN
    ESTABLISHED = "established"
    CLOSING = "closing"  # our StopCCN is in flight
    CLOSED = "closed"  # lingering to acknowledge retransmissions of the peer's StopCCN


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """The LNS side's parameters, from ``[l2tp]`` (the node-wide limits are the endpoint's)."""

    hostname: str = "lns"
    hello_interval: float = 60.0
    receive_window: int = 16
    retransmit: RetransmitPolicy = field(default_factory=RetransmitPolicy)
    hide_avps: bool = False
    ack_delay: float = 0.05
    # After a StopCCN, state is kept this long to acknowledge retransmissions of
    # it: the whole default retransmission schedule (1+2+4+8+8+8 s).
    linger: float = 31.0
    max_calls: int = 65535
    # A call answered with ICRP but never connected by an ICCN is cleared after this.
    connect_timeout: float = 30.0
    # Calls answered with ICRP and waiting for their ICCN; an ICRQ beyond gets a CDN.
    # Above a LAC's setup burst (a load generator's default concurrency is 1000).
    max_connecting_calls: int = 1024
    # Our messages waiting for the peer's acknowledgement; beyond this, the peer's
    # new messages are not taken (nor acknowledged) until it acknowledges ours.
    max_queued: int = 1024
    # --- node-wide, read by the endpoint ---
    # Session setups in progress (ICRQ to IPCP Opened or failure); an ICRQ beyond gets a
    # CDN "temporarily out of resources" (lns.l2tp.admission). Above a LAC's setup burst
    # (a load generator's default concurrency is 1000), a few seconds of the node's work.
    max_setups_in_progress: int = 2000
    max_tunnels: int = 1024  # tunnels in memory, any state
    max_tunnels_setting_up: int = 256  # tunnels not established yet
    # Before the peer proved the secret: the largest message and the most AVPs we
    # read (an SCCRQ is about 100 bytes and a dozen AVPs), the messages a second we
    # take from one source address, and the StopCCNs a second we send without
    # keeping state (refusals, unknown tunnels).
    unauthenticated_max_bytes: int = 1024
    unauthenticated_max_avps: int = 32
    unauthenticated_per_source: int = 100
    stateless_replies: int = 100

    @property
    def setup_timeout(self) -> float:
        """A tunnel not established within the retransmission budget is given up."""
        policy = self.retransmit
        return sum(policy.timeout(n) for n in range(policy.max_retransmissions + 1))


@dataclass(frozen=True, slots=True)
class LacPeer:
    """The LAC a tunnel belongs to, as configured in ``[[l2tp.lac]]``."""

    name: str
    secret: bytes | None
    authenticate: bool
    hostname: str | None = None
    max_tunnels: int = 256  # this LAC's tunnels in memory, any state
    max_tunnels_setting_up: int = 64  # this LAC's tunnels not established yet


def sccrq_refusal(sccrq: Sccrq, lac: LacPeer) -> ResultCode | None:
    """Why an SCCRQ from this LAC cannot be answered with an SCCRP, or None."""
    if sccrq.protocol_version != PROTOCOL_VERSION_1_0:
        text = f"protocol version {sccrq.protocol_version:#06x} is not supported, only 1.0"
        return ResultCode(StopCcnResult.BAD_PROTOCOL_VERSION, 0, text)
    if sccrq.challenge is not None and lac.secret is None:
        text = "the LAC sent a Challenge but no secret is configured for it"
        return ResultCode(StopCcnResult.NOT_AUTHORIZED, 0, text)
    return None


class ControlConnection:
    """One tunnel: its reliable channel, handshake, keepalive and calls."""

    def __init__(
        self,
        tunnel_id: int,
        peer: tuple[str, int],
        lac: LacPeer,
        settings: TunnelSettings,
        rng: random.Random,
        now: float,
        local: str | None = None,
        hello_rtts: Histogram | None = None,
        admission: SetupAdmission | None = None,
    ) -> None:
        self.tunnel_id = tunnel_id
        self.peer = peer
        self.local = local
        self.lac = lac
        self.settings = settings
        self.state = TunnelState.IDLE
        self.peer_tunnel_id = 0
        self.peer_hostname = ""
        self.tie_breaker: bytes | None = None
        self.calls: dict[int, IncomingCall] = {}
        self.channel: ReliableChannel[tuple[int, Incoming]] = ReliableChannel(
            settings.retransmit,
            receive_window=settings.receive_window,
            ack_delay=settings.ack_delay,
        )
        self.channel.passive = True  # until the peer is reachable (module docstring)
        self.reachable = False  # the peer acknowledged something we sent to its address
        self.was_established = False
        self.dropped = 0
        self.withheld = 0  # datagrams not sent to an unreachable peer for want of credit
        self._credit = 0  # bytes an unreachable peer sent us, less the bytes we sent it
        self._setup_deadline: float | None = now + settings.setup_timeout
        self._rng = rng
        self._our_challenge: bytes | None = None
        self._last_heard = now
        self.created_at = now
        self.established_at: float | None = None
        # Section 6.5: the round trip of our last HELLO (sent, then acknowledged);
        # each one is also observed into `hello_rtts`, the node's histogram.
        self.hello_rtt: float | None = None
        self._hello_rtts = hello_rtts
        self._hello_sent: tuple[float, int] | None = None  # (when, acknowledged count then)
        self._linger_until: float | None = None
        self._connecting: Deadlines[int] = Deadlines()  # calls waiting for their ICCN
        # The node's bound on setups in progress, shared by its tunnels (each counts its
        # calls waiting for an ICCN in it); a tunnel on its own has a bound of its own.
        self._admission = (
            admission if admission is not None else SetupAdmission(settings.max_setups_in_progress)
        )

    # --- input ------------------------------------------------------------------

    def read(self, payload: bytes) -> Incoming:
        """Decode a message body with this tunnel's secret and type it; MalformedPacket."""
        limit = None if self.was_established else self.settings.unauthenticated_max_avps
        message = decode_message(payload, self.lac.secret, limit)
        try:
            return parse(message)
        except UnusableMessage as exc:
            return exc

    def receive(
        self, packet: ControlPacket, now: float, message: Incoming | None = None
    ) -> list[Effect]:
        """Take a control datagram for this tunnel (``message``: its body, when already read)."""
        if not self.reachable:
            self._credit += CONTROL_HEADER_LENGTH + len(packet.payload)
        size = len(packet.payload)
        if not self.was_established and size > self.settings.unauthenticated_max_bytes:
            self.dropped += 1
            text = f"tunnel {self.tunnel_id}: {size} bytes before SCCCN"
            return [PacketDropped(self.peer, "oversized", text)]
        if not packet.is_zlb and message is None:
            try:
                message = self.read(packet.payload)
            except MalformedPacket as exc:
                # Not acknowledged: the peer will retransmit, and may send it right.
                self.dropped += 1
                return [PacketDropped(self.peer, "malformed", f"tunnel {self.tunnel_id}: {exc}")]
        self._last_heard = now
        item = None if message is None else (packet.session_id, message)
        if item is not None and self.channel.unacknowledged >= self.settings.max_queued:
            # The peer does not take what we send: take its acknowledgements only, and
            # let it retransmit the rest once it has caught up (flow control, not loss).
            self.channel.receive(packet.ns, packet.nr, None, now)
            self.dropped += 1
            text = f"tunnel {self.tunnel_id}: {self.channel.unacknowledged} messages unacknowledged"
            return [PacketDropped(self.peer, "busy", text)]
        effects: list[Effect] = []
        for session_id, delivered in self.channel.receive(packet.ns, packet.nr, item, now):
            effects += self._dispatch(session_id, delivered, now)
        if not self.reachable and self.channel.acknowledged:
            self._reached()
        if self._hello_sent is not None and self.channel.acknowledged > self._hello_sent[1]:
            self._hello_answered(now)
        if self.state is TunnelState.CLOSING and self.channel.idle:
            self.state = TunnelState.CLOSED  # our StopCCN was acknowledged
            self._linger_until = now
        return effects

    def _dispatch(self, session_id: int, message: Incoming, now: float) -> list[Effect]:
        if self.state in (TunnelState.CLOSED, TunnelState.CLOSING):
            # Nothing to do but acknowledge, and nothing of ours will carry the ack: at
            # once, before our StopCCN's acknowledgement lets the node close its socket.
            self.channel.ack_now(now)
            return []
        if isinstance(message, UnusableMessage):
            return self._unusable(session_id, message, now)
        handler = _TUNNEL_TRANSITIONS.get((self.state, type(message)))
        if handler is None:
            name = message.TYPE.name
            if self.state is TunnelState.ESTABLISHED:
                self.dropped += 1
                text = f"tunnel {self.tunnel_id}: {name} ignored"
                return [PacketDropped(self.peer, "unexpected", text)]
            text = f"{name} in state {self.state.value}"
            return self.close(ResultCode(StopCcnResult.FSM_ERROR, 0, text), now, reason=text)
        return handler(self, session_id, message, now)

    def _unusable(self, session_id: int, problem: UnusableMessage, now: float) -> list[Effect]:
        """Answer a message we cannot use: CDN for its call, else StopCCN (section 4.1)."""
        self.dropped += 1
        counted: list[Effect] = [
            PacketDropped(self.peer, problem.counter, f"tunnel {self.tunnel_id}: {problem.text}")
        ]
        result = ResultCode(StopCcnResult.GENERAL_ERROR, problem.error, problem.text)
        mtype = problem.known_type
        if mtype in CALL_MESSAGES and self.state is TunnelState.ESTABLISHED:
            if session_id and session_id in self.calls:
                return counted + self.disconnect_call(
                    session_id, _cdn_from(result), problem.text, now
                )
            if mtype in (MessageType.ICRQ, MessageType.OCRQ) and problem.assigned_session_id:
                # A call request belongs to the session it opens: refuse that call and
                # keep every other one.
                return counted + self._refuse_call(
                    problem.assigned_session_id, problem.number, _cdn_from(result)
                )
            return counted  # a call we do not know: nothing to clear
        if self.peer_tunnel_id == 0:
            # Refused in the SCCRQ itself: address the StopCCN to the LAC's tunnel,
            # or it goes to tunnel 0 and the LAC never learns why (section 6.4).
            self.peer_tunnel_id = problem.assigned_tunnel_id
        return counted + self.close(result, now, reason=problem.text)

    # --- tunnel set-up ------------------------------------------------------------

    def _on_sccrq(self, session_id: int, message: Sccrq, now: float) -> list[Effect]:
        self.peer_tunnel_id = message.assigned_tunnel_id
        self.peer_hostname = message.host_name
        window = message.receive_window_size
        self.channel.peer_window = window if window else 4  # section 4.4.3: 4 when absent
        self.tie_breaker = message.tie_breaker
        refusal = sccrq_refusal(message, self.lac)
        if refusal is not None:
            return self.close(refusal, now, refusal.message)
        response = None
        if message.challenge is not None:
            assert self.lac.secret is not None  # sccrq_refusal says so
            response = challenge_response(SCCRP_RESPONSE_TYPE, self.lac.secret, message.challenge)
        if self.lac.authenticate:
            self._our_challenge = self._rng.randbytes(CHALLENGE_LENGTH)
        # Only what section 6.2 requires and what the LAC needs: until the LAC proves
        # the secret the SCCRP must not be larger than its SCCRQ (module docstring).
        self.state = TunnelState.WAIT_CTL_CONN
        self._send(
            Sccrp(
                protocol_version=PROTOCOL_VERSION_1_0,
                host_name=self.settings.hostname,
                framing_capabilities=FRAMING_SYNC_ASYNC,
                assigned_tunnel_id=self.tunnel_id,
                receive_window_size=self.settings.receive_window,
                challenge_response=response,
                challenge=self._our_challenge,
            )
        )
        return []

    def _on_scccn(self, session_id: int, message: Scccn, now: float) -> list[Effect]:
        if self.lac.authenticate:
            assert self._our_challenge is not None
            assert self.lac.secret is not None  # the config refuses authenticate without a secret
            expected = challenge_response(SCCCN_RESPONSE_TYPE, self.lac.secret, self._our_challenge)
            response = message.challenge_response
            if response is None or not hmac.compare_digest(response, expected):
                text = (
                    "tunnel authentication failed: no Challenge Response"
                    if response is None
                    else "tunnel authentication failed: wrong Challenge Response"
                )
                return self.close(ResultCode(StopCcnResult.NOT_AUTHORIZED, 0, text), now, text)
        self.state = TunnelState.ESTABLISHED
        self.was_established = True
        self.established_at = now
        self._setup_deadline = None
        self._reached()
        return [
            TunnelEstablished(
                self.tunnel_id, self.peer_tunnel_id, self.lac.name, self.peer_hostname, self.peer
            )
        ]

    def _reached(self) -> None:
        self.reachable = True
        self.channel.passive = False

    def _hello_answered(self, now: float) -> None:
        # Our HELLO went out on an idle channel, so the next acknowledgement is its own.
        assert self._hello_sent is not None
        self.hello_rtt = now - self._hello_sent[0]
        self._hello_sent = None
        if self._hello_rtts is not None:
            self._hello_rtts.observe(self.hello_rtt)

    def _on_hello(self, session_id: int, message: Hello, now: float) -> list[Effect]:
        self.channel.ack_now(now)  # a HELLO is answered at once, never held back
        return []

    def _on_stopccn(self, session_id: int, message: StopCcn, now: float) -> list[Effect]:
        self.channel.ack_now(now)
        result = message.result_code
        reason = _describe(result) if result is not None else "no Result Code"
        effects = self._clear_calls(
            ResultCode(CdnResult.LOST_CARRIER), f"tunnel closed by the LAC: {reason}", by_peer=True
        )
        self.state = TunnelState.CLOSED
        self._linger_until = now + self.settings.linger
        closed = TunnelClosed(
            self.tunnel_id,
            self.lac.name,
            reason,
            by_peer=True,
            was_established=self.was_established,
        )
        return [*effects, closed]

    # --- calls ------------------------------------------------------------------------

    def _on_icrq(self, session_id: int, message: Icrq, now: float) -> list[Effect]:
        peer_session = message.assigned_session_id
        calling = message.calling_number or ""
        try:
            iccid = parse_iccid(calling)
        except InvalidIccid as exc:
            code = ResultCode(CdnResult.GENERAL_ERROR, GeneralError.OUT_OF_RANGE, str(exc))
            return self._refuse_call(peer_session, calling, code)
        waiting = len(self._connecting)
        if waiting >= self.settings.max_connecting_calls:
            code = ResultCode(
                CdnResult.TEMPORARY_LACK_OF_FACILITIES,
                GeneralError.INSUFFICIENT_RESOURCES,
                f"{waiting} calls of this tunnel already wait for their ICCN",
            )
            return self._refuse_call(peer_session, calling, code)
        refusal = self._admission.refusal()
        if refusal is not None:
            return self._refuse_call(peer_session, calling, refusal)
        our_session = ids.allocate(self._rng, self.calls)
        if len(self.calls) >= self.settings.max_calls or our_session is None:
            code = ResultCode(
                CdnResult.TEMPORARY_LACK_OF_FACILITIES,
                GeneralError.INSUFFICIENT_RESOURCES,
                f"tunnel already carries {len(self.calls)} sessions",
            )
            return self._refuse_call(peer_session, calling, code)
        call = IncomingCall(
            session_id=our_session,
            peer_session_id=peer_session,
            tunnel_id=self.tunnel_id,
            peer_tunnel_id=self.peer_tunnel_id,
            call_serial=message.call_serial_number,
            iccid=iccid,
            called_number=message.called_number or "",
            requested_at=now,
        )
        self.calls[call.session_id] = call
        self._connecting.set(call.session_id, now + self.settings.connect_timeout)
        self._admission.connecting += 1
        self._send(Icrp(assigned_session_id=call.session_id), peer_session)
        return []

    def _refuse_call(self, peer_session: int, calling: str, result: ResultCode) -> list[Effect]:
        # The CDN names a session of ours (section 6.12) though none was given to the
        # call; 0 when every identifier is taken.
        ours = ids.allocate(self._rng, self.calls) or 0
        self._send(Cdn(result_code=result, assigned_session_id=ours), peer_session)
        return [CallRefused(self.tunnel_id, calling, result)]

    def _on_ocrq(self, session_id: int, message: Ocrq, now: float) -> list[Effect]:
        result = ResultCode(
            CdnResult.PERMANENT_LACK_OF_FACILITIES, 0, "this LNS does not place outgoing calls"
        )
        return self._refuse_call(message.assigned_session_id, message.called_number, result)

    def _unknown_session(self, name: str, session_id: int) -> list[Effect]:
        self.dropped += 1
        text = f"{name} for unknown session {session_id}"
        return [PacketDropped(self.peer, "unknown_session", text)]

    def _on_iccn(self, session_id: int, message: Iccn, now: float) -> list[Effect]:
        call = self.calls.get(session_id)
        if call is None:
            return self._unknown_session("ICCN", session_id)
        if call.state is not CallState.WAIT_CONNECT:
            self.dropped += 1
            text = f"ICCN in call state {call.state.value}"
            return [PacketDropped(self.peer, "unexpected", text)]
        call.connect(message)
        self._stop_waiting(call.session_id)
        # Nothing of ours answers an ICCN, and the layer above now starts PPP, RADIUS and
        # database work for the call: acknowledge at once, not after the hold-off that
        # work could stretch (DESIGN.md section 6: control traffic is never stuck behind it).
        self.channel.ack_now(now)
        return [
            CallEstablished(self.tunnel_id, call, self.lac.name, self.peer_hostname, self.peer[0])
        ]

    def _on_cdn(self, session_id: int, message: Cdn, now: float) -> list[Effect]:
        call = self.calls.get(session_id)
        if call is None and session_id == 0 and message.assigned_session_id:
            # A LAC that hangs up before it saw our ICRP addresses the CDN to session 0;
            # its Assigned Session ID (the LAC's) still names the call (section 6.12).
            peer_session = message.assigned_session_id
            call = next((c for c in self.calls.values() if c.peer_session_id == peer_session), None)
        if call is None:
            return self._unknown_session("CDN", session_id)
        del self.calls[call.session_id]
        self._stop_waiting(call.session_id)
        self.channel.ack_now(now)  # as for an ICCN: the session's teardown work follows
        was_established = call.state is CallState.ESTABLISHED
        call.state = CallState.CLOSED
        code = message.result_code or ResultCode(CdnResult.GENERAL_ERROR)
        return [
            CallCleared(
                self.tunnel_id,
                call.session_id,
                call.iccid,
                code,
                f"CDN from the LAC: {_describe(code, CdnResult)}",
                by_peer=True,
                was_established=was_established,
            )
        ]

    def _on_wen(self, session_id: int, message: Wen, now: float) -> list[Effect]:
        call = self.calls.get(session_id)
        if call is None:
            return self._unknown_session("WEN", session_id)
        call.call_errors = message.call_errors
        return []

    def _on_sli(self, session_id: int, message: Sli, now: float) -> list[Effect]:
        call = self.calls.get(session_id)
        if call is None:
            return self._unknown_session("SLI", session_id)
        call.accm = message.accm
        return []

    def disconnect_call(
        self, session_id: int, result: ResultCode, reason: str, now: float
    ) -> list[Effect]:
        """Clear one call from our side: CDN to the LAC."""
        call = self.calls.pop(session_id, None)
        if call is None or self.state not in (TunnelState.ESTABLISHED, TunnelState.WAIT_CTL_CONN):
            return []
        self._stop_waiting(session_id)
        was_established = call.state is CallState.ESTABLISHED
        call.state = CallState.CLOSED
        self._send(
            Cdn(result_code=result, assigned_session_id=call.session_id), call.peer_session_id
        )
        return [
            CallCleared(
                self.tunnel_id,
                call.session_id,
                call.iccid,
                result,
                reason,
                by_peer=False,
                was_established=was_established,
            )
        ]

    def _clear_calls(self, result: ResultCode, reason: str, by_peer: bool) -> list[Effect]:
        effects: list[Effect] = []
        for call in self.calls.values():
            effects.append(
                CallCleared(
                    self.tunnel_id,
                    call.session_id,
                    call.iccid,
                    result,
                    reason,
                    by_peer=by_peer,
                    was_established=call.state is CallState.ESTABLISHED,
                )
            )
            call.state = CallState.CLOSED
        self.calls.clear()
        self._admission.connecting -= len(self._connecting)
        self._connecting = Deadlines()
        return effects

    def _stop_waiting(self, session_id: int) -> None:
        """The call waits for its ICCN no more (connected, cleared or timed out)."""
        if session_id in self._connecting:
            self._connecting.discard(session_id)
            self._admission.connecting -= 1

    # --- teardown, timers, output -----------------------------------------------------

    def close(self, result: ResultCode, now: float, reason: str = "") -> list[Effect]:
        """Clear the tunnel from our side: StopCCN, every call cleared with it."""
        if self.state in (TunnelState.CLOSING, TunnelState.CLOSED):
            return []
        reason = reason or _describe(result)
        effects = self._clear_calls(
            ResultCode(CdnResult.ADMINISTRATIVE), f"tunnel closed: {reason}", by_peer=False
        )
        self._send(StopCcn(assigned_tunnel_id=self.tunnel_id, result_code=result))
        self.state = TunnelState.CLOSING
        closed = TunnelClosed(
            self.tunnel_id,
            self.lac.name,
            reason,
            by_peer=False,
            was_established=self.was_established,
        )
        return [*effects, closed]

    def handle_timer(self, now: float) -> list[Effect]:
        if self._setup_deadline is not None and now >= self._setup_deadline:
            return self._setup_expired(now)
        self.channel.handle_timer(now)
        if self.channel.failed and self.state is not TunnelState.CLOSED:
            closing = self.state is TunnelState.CLOSING
            self.state = TunnelState.CLOSED
            self._linger_until = now
            if closing:
                return []
            reason = (
                f"no acknowledgement from the LAC after "
                f"{self.settings.retransmit.max_retransmissions} retransmissions"
            )
            cleared = self._clear_calls(ResultCode(CdnResult.LOST_CARRIER), reason, by_peer=False)
            closed = TunnelClosed(
                self.tunnel_id, self.lac.name, reason, False, was_established=self.was_established
            )
            return [*cleared, closed]
        effects: list[Effect] = []
        expired = self._connecting.pop_due(now)
        self._admission.connecting -= len(expired)
        for session_id in expired:
            call = self.calls.get(session_id)
            if call is not None and call.state is CallState.WAIT_CONNECT:
                text = f"no ICCN within {self.settings.connect_timeout:g} s of our ICRP"
                effects += self.disconnect_call(
                    session_id, ResultCode(CdnResult.TIMEOUT, 0, text), text, now
                )
        hello_at = self._hello_deadline()
        if hello_at is not None and now >= hello_at:
            self._send(Hello())
            self._hello_sent = (now, self.channel.acknowledged)
        return effects

    def _setup_expired(self, now: float) -> list[Effect]:
        """Never established within the retransmission budget: forgotten, nothing sent."""
        self._setup_deadline = None
        effects: list[Effect] = []
        if self.state in (TunnelState.IDLE, TunnelState.WAIT_CTL_CONN):
            reason = f"not established within {self.settings.setup_timeout:g} s"
            effects.append(TunnelClosed(self.tunnel_id, self.lac.name, reason, False, False))
        if self.state is not TunnelState.CLOSED:
            self.state = TunnelState.CLOSED
            self._linger_until = now
        return effects

    def _hello_deadline(self) -> float | None:
        if self.state is not TunnelState.ESTABLISHED or not self.channel.idle:
            return None
        return self._last_heard + self.settings.hello_interval

    def get_timer(self) -> float | None:
        """The next instant this tunnel has something to do, or None."""
        if self.state is TunnelState.CLOSED:
            return self._linger_until
        candidates = [
            t
            for t in (
                self.channel.get_timer(),
                self._hello_deadline(),
                self._connecting.earliest(),
                self._setup_deadline,
            )
            if t is not None
        ]
        return min(candidates) if candidates else None

    def finished(self, now: float) -> bool:
        """True once the tunnel can be forgotten."""
        return (
            self.state is TunnelState.CLOSED
            and self._linger_until is not None
            and now >= self._linger_until
        )

    @property
    def connecting_calls(self) -> int:
        """Calls answered with ICRP and still waiting for their ICCN."""
        return len(self._connecting)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self.channel.failed:
            return []
        out = [
            encode_control(self.peer_tunnel_id, item.session_id, item.ns, item.nr, item.payload)
            for item in self.channel.datagrams_to_send(now)
        ]
        if self.reachable:
            return out
        # No amplification: an unreachable peer gets no more bytes than it sent. What
        # does not fit is withheld as if lost; the peer's retransmission earns it.
        allowed = []
        for data in out:
            if len(data) <= self._credit:
                self._credit -= len(data)
                allowed.append(data)
            else:
                self.withheld += 1
        return allowed

    def _send(self, record: TypedMessage, session_id: int = 0) -> None:
        hide = self.settings.hide_avps and self.lac.secret is not None and self.was_established
        body = encode_message(to_message(record, hide=hide), self.lac.secret, self._rng.randbytes)
        self.channel.queue(body, session_id)


def _cdn_from(stop: ResultCode) -> ResultCode:
    return ResultCode(CdnResult.GENERAL_ERROR, stop.error, stop.message)


def _describe(result: ResultCode, codes: type[enum.IntEnum] = StopCcnResult) -> str:
    text = describe(result.result, result.error or 0, codes=codes)
    if result.message:
        text += f": {result.message}"
    return text


_Handler = Callable[[ControlConnection, int, Any, float], list[Effect]]
_S = TunnelState
_TUNNEL_TRANSITIONS: dict[tuple[TunnelState, type[TypedMessage]], _Handler] = {
    (_S.IDLE, Sccrq): ControlConnection._on_sccrq,
    (_S.WAIT_CTL_CONN, Scccn): ControlConnection._on_scccn,
    (_S.WAIT_CTL_CONN, Hello): ControlConnection._on_hello,
    (_S.WAIT_CTL_CONN, StopCcn): ControlConnection._on_stopccn,
    (_S.ESTABLISHED, Hello): ControlConnection._on_hello,
    (_S.ESTABLISHED, StopCcn): ControlConnection._on_stopccn,
    (_S.ESTABLISHED, Icrq): ControlConnection._on_icrq,
    (_S.ESTABLISHED, Ocrq): ControlConnection._on_ocrq,
    (_S.ESTABLISHED, Iccn): ControlConnection._on_iccn,
    (_S.ESTABLISHED, Cdn): ControlConnection._on_cdn,
    (_S.ESTABLISHED, Wen): ControlConnection._on_wen,
    (_S.ESTABLISHED, Sli): ControlConnection._on_sli,
}

__all__ = [
    "PROTOCOL_VERSION_1_0",
    "AttributeType",
    "ControlConnection",
    "Incoming",
    "LacPeer",
    "TunnelSettings",
    "TunnelState",
    "challenge_response",
    "sccrq_refusal",
]
