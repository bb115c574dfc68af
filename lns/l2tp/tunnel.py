"""RFC 2661 sections 5 and 7: one control connection (tunnel), LNS side.

SCCRQ -> SCCRP -> SCCCN with tunnel authentication both ways (section 5.1.1:
Challenge Response = MD5(message type || secret || challenge), 2 for SCCRP, 3
for SCCCN), HELLO keepalive (section 6.5), StopCCN both ways, and the incoming
calls it carries (ICRQ/ICRP/ICCN/CDN, WEN, SLI; OCRQ refused: we are an LNS).

Which handler runs is data: :data:`_TUNNEL_TRANSITIONS` maps (state, message
type) to a handler; a pair missing from it is a finite-state-machine error.
I/O-free: ``now`` is a number, output is pulled with ``datagrams_to_send``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from lns.deadlines import Deadlines
from lns.iccid import InvalidIccid, parse_iccid
from lns.l2tp.avp import (
    AVP_TABLE,
    Accm,
    AttributeType,
    Avp,
    CallErrors,
    MessageType,
    ResultCode,
    make,
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
from lns.l2tp.header import ControlPacket, encode_control
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.reliable import ReliableChannel, RetransmitPolicy
from lns.l2tp.result import CdnResult, GeneralError, StopCcnResult
from lns.l2tp.session import CallState, IncomingCall
from lns.l2tp.wire import MalformedPacket

PROTOCOL_VERSION_1_0 = 0x0100
FRAMING_SYNC_ASYNC = 0x3
CHALLENGE_LENGTH = 16
SCCRP_RESPONSE_TYPE = 2
SCCCN_RESPONSE_TYPE = 3


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
    """The LNS side's parameters, from ``[l2tp]``."""

    hostname: str = "lns"
    hello_interval: float = 60.0
    receive_window: int = 16
    retransmit: RetransmitPolicy = field(default_factory=RetransmitPolicy)
    hide_avps: bool = False
    ack_delay: float = 0.05
    # After a StopCCN, state is kept this long to acknowledge retransmissions of
    # it: the whole default retransmission schedule (1+2+4+8+8+8 s).
    linger: float = 31.0
    vendor_name: str = "lns"
    firmware_revision: int = 0x0100
    max_calls: int = 65535
    # A call answered with ICRP but never connected by an ICCN is cleared after this.
    connect_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class LacPeer:
    """The LAC a tunnel belongs to, as configured in ``[[l2tp.lac]]``."""

    name: str
    secret: bytes | None
    authenticate: bool
    hostname: str | None = None


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
        self.channel: ReliableChannel[tuple[int, ControlMessage]] = ReliableChannel(
            settings.retransmit,
            receive_window=settings.receive_window,
            ack_delay=settings.ack_delay,
        )
        self.dropped = 0
        self._rng = rng
        self._our_challenge: bytes | None = None
        self._last_heard = now
        self._linger_until: float | None = None
        self._connecting: Deadlines[int] = Deadlines()  # calls waiting for their ICCN

    # --- input ------------------------------------------------------------------

    def decode(self, payload: bytes) -> ControlMessage:
        """Decode a message body with this tunnel's secret (hidden AVPs); MalformedPacket."""
        return decode_message(payload, self.lac.secret)

    def receive(
        self, packet: ControlPacket, now: float, message: ControlMessage | None = None
    ) -> list[Effect]:
        """Take a control datagram for this tunnel (``message``: its body, when already decoded)."""
        if not packet.is_zlb and message is None:
            try:
                message = self.decode(packet.payload)
            except MalformedPacket as exc:
                # Not acknowledged: the peer will retransmit, and may send it right.
                self.dropped += 1
                return [PacketDropped(self.peer, "malformed", f"tunnel {self.tunnel_id}: {exc}")]
        self._last_heard = now
        item = None if message is None else (packet.session_id, message)
        effects: list[Effect] = []
        for session_id, delivered in self.channel.receive(packet.ns, packet.nr, item, now):
            effects += self._dispatch(session_id, delivered, now)
        if self.state is TunnelState.CLOSING and self.channel.idle:
            self.state = TunnelState.CLOSED  # our StopCCN was acknowledged
            self._linger_until = now
        return effects

    def _dispatch(self, session_id: int, message: ControlMessage, now: float) -> list[Effect]:
        if self.state in (TunnelState.CLOSED, TunnelState.CLOSING):
            return []  # acknowledged by the channel, nothing else to do
        mtype = message.message_type
        if not isinstance(mtype, MessageType) or message.unknown_mandatory():
            what = (
                f"unknown message type {mtype}"
                if not isinstance(mtype, MessageType)
                else "unknown mandatory AVP "
                + ", ".join(f"{a.vendor}:{a.attribute}" for a in message.unknown_mandatory())
            )
            result = ResultCode(
                StopCcnResult.GENERAL_ERROR, GeneralError.UNKNOWN_MANDATORY_AVP, what
            )
            # Counted like any message we could not use, then answered (section 4.1).
            self.dropped += 1
            counter = (
                "unknown_message_type"
                if not isinstance(mtype, MessageType)
                else "unknown_mandatory_avp"
            )
            counted: list[Effect] = [
                PacketDropped(self.peer, counter, f"tunnel {self.tunnel_id}: {what}")
            ]
            if session_id and session_id in self.calls and isinstance(mtype, MessageType):
                return counted + self.disconnect_call(session_id, _cdn_from(result), what, now)
            peer_session = message.get(AttributeType.ASSIGNED_SESSION_ID)
            if (
                mtype in (MessageType.ICRQ, MessageType.OCRQ)
                and self.state is TunnelState.ESTABLISHED
                and isinstance(peer_session, int)
                and peer_session != 0
            ):
                # A call request belongs to the session it opens (section 4.1: terminate
                # the session, not the tunnel): refuse that call, keep every other one.
                number = message.get(
                    AttributeType.CALLING_NUMBER
                    if mtype == MessageType.ICRQ
                    else AttributeType.CALLED_NUMBER
                )
                text = number if isinstance(number, str) else ""
                return counted + self._refuse_call(peer_session, text, _cdn_from(result))
            if self.peer_tunnel_id == 0:
                # Refused in the SCCRQ itself: address the StopCCN to the LAC's tunnel,
                # or it goes to tunnel 0 and the LAC never learns why (section 6.4).
                assigned = message.get(AttributeType.ASSIGNED_TUNNEL_ID)
                self.peer_tunnel_id = assigned if isinstance(assigned, int) else 0
            return counted + self.close(result, now, reason=what)
        handler = _TUNNEL_TRANSITIONS.get((self.state, mtype))
        if handler is None:
            if self.state is TunnelState.ESTABLISHED:
                self.dropped += 1
                return [
                    PacketDropped(
                        self.peer, "unexpected", f"tunnel {self.tunnel_id}: {mtype.name} ignored"
                    )
                ]
            text = f"{mtype.name} in state {self.state.value}"
            return self.close(ResultCode(StopCcnResult.FSM_ERROR, 0, text), now, reason=text)
        return handler(self, session_id, message, now)

    # --- tunnel set-up ------------------------------------------------------------

    def _on_sccrq(self, session_id: int, message: ControlMessage, now: float) -> list[Effect]:
        peer_tunnel = message.get(AttributeType.ASSIGNED_TUNNEL_ID)
        assert isinstance(peer_tunnel, int)  # checked by the endpoint before creating us
        self.peer_tunnel_id = peer_tunnel
        host = message.get(AttributeType.HOST_NAME)
        self.peer_hostname = host if isinstance(host, str) else ""
        window = message.get(AttributeType.RECEIVE_WINDOW_SIZE)
        self.channel.peer_window = window if isinstance(window, int) and window > 0 else 4
        tie = message.get(AttributeType.TIE_BREAKER)
        self.tie_breaker = tie if isinstance(tie, bytes) else None
        version = message.get(AttributeType.PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION_1_0:
            text = f"protocol version {version!r} is not supported, only 1.0"
            return self.close(ResultCode(StopCcnResult.BAD_PROTOCOL_VERSION, 0, text), now, text)
        avps = [
            make(AttributeType.PROTOCOL_VERSION, PROTOCOL_VERSION_1_0),
            make(AttributeType.HOST_NAME, self.settings.hostname),
            make(AttributeType.FRAMING_CAPABILITIES, FRAMING_SYNC_ASYNC),
            make(AttributeType.BEARER_CAPABILITIES, 0),
            make(AttributeType.FIRMWARE_REVISION, self.settings.firmware_revision),
            make(AttributeType.VENDOR_NAME, self.settings.vendor_name),
            make(AttributeType.ASSIGNED_TUNNEL_ID, self.tunnel_id),
            make(AttributeType.RECEIVE_WINDOW_SIZE, self.settings.receive_window),
        ]
        challenge = message.get(AttributeType.CHALLENGE)
        if isinstance(challenge, bytes):
            if self.lac.secret is None:
                text = "the LAC sent a Challenge but no secret is configured for it"
                return self.close(ResultCode(StopCcnResult.NOT_AUTHORIZED, 0, text), now, text)
            response = challenge_response(SCCRP_RESPONSE_TYPE, self.lac.secret, challenge)
            avps.append(make(AttributeType.CHALLENGE_RESPONSE, response))
        if self.lac.authenticate:
            self._our_challenge = self._rng.randbytes(CHALLENGE_LENGTH)
            avps.append(make(AttributeType.CHALLENGE, self._our_challenge))
        self.state = TunnelState.WAIT_CTL_CONN
        self._send(MessageType.SCCRP, avps)
        return []

    def _on_scccn(self, session_id: int, message: ControlMessage, now: float) -> list[Effect]:
        if self.lac.authenticate:
            assert self._our_challenge is not None
            assert self.lac.secret is not None  # the config refuses authenticate without a secret
            expected = challenge_response(SCCCN_RESPONSE_TYPE, self.lac.secret, self._our_challenge)
            response = message.get(AttributeType.CHALLENGE_RESPONSE)
            if not isinstance(response, bytes) or not hmac.compare_digest(response, expected):
                text = (
                    "tunnel authentication failed: no Challenge Response"
                    if response is None
                    else "tunnel authentication failed: wrong Challenge Response"
                )
                return self.close(ResultCode(StopCcnResult.NOT_AUTHORIZED, 0, text), now, text)
        self.state = TunnelState.ESTABLISHED
        return [
            TunnelEstablished(
                self.tunnel_id, self.peer_tunnel_id, self.lac.name, self.peer_hostname, self.peer
            )
        ]

    def _on_hello(self, session_id: int, message: ControlMessage, now: float) -> list[Effect]:
        self.channel.ack_now(now)  # a HELLO is answered at once, never held back
        return []

    def _on_stopccn(self, session_id: int, message: ControlMessage, now: float) -> list[Effect]:
        self.channel.ack_now(now)
        result = message.get(AttributeType.RESULT_CODE)
        reason = _describe(result) if isinstance(result, ResultCode) else "no Result Code"
        effects = self._clear_calls(
            ResultCode(CdnResult.LOST_CARRIER), f"tunnel closed by the LAC: {reason}", by_peer=True
        )
        self.state = TunnelState.CLOSED
        self._linger_until = now + self.settings.linger
        return [*effects, TunnelClosed(self.tunnel_id, self.lac.name, reason, by_peer=True)]

    # --- calls ------------------------------------------------------------------------

    def _new_session_id(self) -> int:
        while True:
            candidate = self._rng.randrange(1, 0x10000)
            if candidate not in self.calls:
                return candidate

    def _on_icrq(self, session_id: int, message: ControlMessage, now: float) -> list[Effect]:
        peer_session = message.get(AttributeType.ASSIGNED_SESSION_ID)
        if not isinstance(peer_session, int) or peer_session == 0:
            self.dropped += 1
            return [PacketDropped(self.peer, "invalid", "ICRQ without an Assigned Session ID")]
        calling = message.get(AttributeType.CALLING_NUMBER)
        calling_text = calling if isinstance(calling, str) else ""
        try:
            iccid = parse_iccid(calling_text)
        except InvalidIccid as exc:
            code = ResultCode(CdnResult.GENERAL_ERROR, GeneralError.OUT_OF_RANGE, str(exc))
            return self._refuse_call(peer_session, calling_text, code)
        if len(self.calls) >= self.settings.max_calls:
            code = ResultCode(
                CdnResult.TEMPORARY_LACK_OF_FACILITIES,
                GeneralError.INSUFFICIENT_RESOURCES,
                f"tunnel already carries {len(self.calls)} sessions",
            )
            return self._refuse_call(peer_session, calling_text, code)
        serial = message.get(AttributeType.CALL_SERIAL_NUMBER)
        called = message.get(AttributeType.CALLED_NUMBER)
        call = IncomingCall(
            session_id=self._new_session_id(),
            peer_session_id=peer_session,
            tunnel_id=self.tunnel_id,
            peer_tunnel_id=self.peer_tunnel_id,
            call_serial=serial if isinstance(serial, int) else 0,
            iccid=iccid,
            called_number=called if isinstance(called, str) else "",
        )
        self.calls[call.session_id] = call
        self._connecting.set(call.session_id, now + self.settings.connect_timeout)
        self._send(
            MessageType.ICRP,
            [make(AttributeType.ASSIGNED_SESSION_ID, call.session_id)],
            peer_session,
        )
        return []

    def _refuse_call(self, peer_session: int, calling: str, result: ResultCode) -> list[Effect]:
        self._send(MessageType.CDN, _cdn_avps(result, self._new_session_id()), peer_session)
        return [CallRefused(self.tunnel_id, calling, result)]

    def _on_ocrq(self, session_id: int, message: ControlMessage, now: float) -> list[Effect]:
        peer_session = message.get(AttributeType.ASSIGNED_SESSION_ID)
        if not isinstance(peer_session, int):
            self.dropped += 1
            return [PacketDropped(self.peer, "invalid", "OCRQ without an Assigned Session ID")]
        called = message.get(AttributeType.CALLED_NUMBER)
        result = ResultCode(
            CdnResult.PERMANENT_LACK_OF_FACILITIES, 0, "this LNS does not place outgoing calls"
        )
        return self._refuse_call(peer_session, called if isinstance(called, str) else "", result)

    def _on_call_message(
        self, session_id: int, message: ControlMessage, now: float
    ) -> list[Effect]:
        call = self.calls.get(session_id)
        if call is None and session_id == 0 and message.message_type == MessageType.CDN:
            # A LAC that hangs up before it saw our ICRP addresses the CDN to session 0;
            # its Assigned Session ID (the LAC's) still names the call (RFC 2661 section 6.12).
            assigned = message.get(AttributeType.ASSIGNED_SESSION_ID)
            call = next((c for c in self.calls.values() if c.peer_session_id == assigned), None)
        if call is None:
            self.dropped += 1
            name = MessageType(message.message_type).name
            return [
                PacketDropped(
                    self.peer, "unknown_session", f"{name} for unknown session {session_id}"
                )
            ]
        mtype = message.message_type
        if mtype == MessageType.CDN:
            del self.calls[call.session_id]
            was_established = call.state is CallState.ESTABLISHED
            call.state = CallState.CLOSED
            result = message.get(AttributeType.RESULT_CODE)
            code = result if isinstance(result, ResultCode) else ResultCode(CdnResult.GENERAL_ERROR)
            return [
                CallCleared(
                    self.tunnel_id,
                    call.session_id,
                    call.iccid,
                    code,
                    f"CDN from the LAC: {_describe(code)}",
                    by_peer=True,
                    was_established=was_established,
                )
            ]
        if mtype == MessageType.ICCN and call.state is CallState.WAIT_CONNECT:
            call.connect(message)
            self._connecting.discard(call.session_id)
            return [
                CallEstablished(
                    self.tunnel_id, call, self.lac.name, self.peer_hostname, self.peer[0]
                )
            ]
        if mtype == MessageType.WEN:
            errors = message.get(AttributeType.CALL_ERRORS)
            call.call_errors = errors if isinstance(errors, CallErrors) else call.call_errors
            return []
        if mtype == MessageType.SLI:
            accm = message.get(AttributeType.ACCM)
            call.accm = accm if isinstance(accm, Accm) else call.accm
            return []
        self.dropped += 1
        return [
            PacketDropped(self.peer, "unexpected", f"{mtype!s} in call state {call.state.value}")
        ]

    def disconnect_call(
        self, session_id: int, result: ResultCode, reason: str, now: float
    ) -> list[Effect]:
        """Clear one call from our side: CDN to the LAC."""
        call = self.calls.pop(session_id, None)
        if call is None or self.state not in (TunnelState.ESTABLISHED, TunnelState.WAIT_CTL_CONN):
            return []
        was_established = call.state is CallState.ESTABLISHED
        call.state = CallState.CLOSED
        self._send(MessageType.CDN, _cdn_avps(result, call.session_id), call.peer_session_id)
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
        return effects

    # --- teardown, timers, output -----------------------------------------------------

    def close(self, result: ResultCode, now: float, reason: str = "") -> list[Effect]:
        """Clear the tunnel from our side: StopCCN, every call cleared with it."""
        if self.state in (TunnelState.CLOSING, TunnelState.CLOSED):
            return []
        reason = reason or _describe(result)
        effects = self._clear_calls(
            ResultCode(CdnResult.ADMINISTRATIVE), f"tunnel closed: {reason}", by_peer=False
        )
        self._send(
            MessageType.StopCCN,
            [
                make(AttributeType.ASSIGNED_TUNNEL_ID, self.tunnel_id),
                make(AttributeType.RESULT_CODE, result),
            ],
        )
        self.state = TunnelState.CLOSING
        return [*effects, TunnelClosed(self.tunnel_id, self.lac.name, reason, by_peer=False)]

    def handle_timer(self, now: float) -> list[Effect]:
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
            return [*cleared, TunnelClosed(self.tunnel_id, self.lac.name, reason, by_peer=False)]
        effects: list[Effect] = []
        for session_id in self._connecting.pop_due(now):
            call = self.calls.get(session_id)
            if call is not None and call.state is CallState.WAIT_CONNECT:
                text = f"no ICCN within {self.settings.connect_timeout:g} s of our ICRP"
                effects += self.disconnect_call(
                    session_id, ResultCode(CdnResult.TIMEOUT, 0, text), text, now
                )
        hello_at = self._hello_deadline()
        if hello_at is not None and now >= hello_at:
            self._send(MessageType.HELLO, [])
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
            for t in (self.channel.get_timer(), self._hello_deadline(), self._connecting.earliest())
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

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self.channel.failed:
            return []
        return [
            encode_control(self.peer_tunnel_id, out.session_id, out.ns, out.nr, out.payload)
            for out in self.channel.datagrams_to_send(now)
        ]

    def _send(self, message_type: MessageType, avps: list[Avp], session_id: int = 0) -> None:
        hide = self.settings.hide_avps and self.lac.secret is not None
        if hide:
            avps = [_hidden_if_allowed(avp) for avp in avps]
        body = encode_message(
            ControlMessage(message_type, tuple(avps)), self.lac.secret, self._rng.randbytes
        )
        self.channel.queue(body, session_id)


def _hidden_if_allowed(avp: Avp) -> Avp:
    spec = AVP_TABLE.get(avp.attribute)
    if spec is None or not spec.may_hide:
        return avp
    return Avp(avp.attribute, avp.value, avp.mandatory, True, avp.vendor)


def _cdn_avps(result: ResultCode, session_id: int) -> list[Avp]:
    return [
        make(AttributeType.RESULT_CODE, result),
        make(AttributeType.ASSIGNED_SESSION_ID, session_id),
    ]


def _cdn_from(stop: ResultCode) -> ResultCode:
    return ResultCode(CdnResult.GENERAL_ERROR, stop.error, stop.message)


def _describe(result: ResultCode) -> str:
    text = f"result {result.result}"
    if result.error:
        text += f" error {result.error}"
    if result.message:
        text += f": {result.message}"
    return text


_Handler = Callable[[ControlConnection, int, ControlMessage, float], list[Effect]]
_S = TunnelState
_M = MessageType
_TUNNEL_TRANSITIONS: dict[tuple[TunnelState, MessageType], _Handler] = {
    (_S.IDLE, _M.SCCRQ): ControlConnection._on_sccrq,
    (_S.WAIT_CTL_CONN, _M.SCCCN): ControlConnection._on_scccn,
    (_S.WAIT_CTL_CONN, _M.HELLO): ControlConnection._on_hello,
    (_S.WAIT_CTL_CONN, _M.StopCCN): ControlConnection._on_stopccn,
    (_S.ESTABLISHED, _M.HELLO): ControlConnection._on_hello,
    (_S.ESTABLISHED, _M.StopCCN): ControlConnection._on_stopccn,
    (_S.ESTABLISHED, _M.ICRQ): ControlConnection._on_icrq,
    (_S.ESTABLISHED, _M.OCRQ): ControlConnection._on_ocrq,
    (_S.ESTABLISHED, _M.ICCN): ControlConnection._on_call_message,
    (_S.ESTABLISHED, _M.CDN): ControlConnection._on_call_message,
    (_S.ESTABLISHED, _M.WEN): ControlConnection._on_call_message,
    (_S.ESTABLISHED, _M.SLI): ControlConnection._on_call_message,
}
