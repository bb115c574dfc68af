"""A LAC (RFC 2661 section 1), as a mobile operator's GGSN/PGW drives an LNS.

Used by the tests and the load generator: it opens tunnels (with tunnel
authentication both ways), places incoming calls whose ICRQ carries the SIM's
ICCID and whose ICCN carries proxy LCP and proxy authentication (DESIGN.md
section 3), hangs them up, closes tunnels, and can send arbitrary bytes.
I/O-free like the LNS core: feed it datagrams and time, pull datagrams out.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from lns.deadlines import Deadlines
from lns.l2tp.avp import AttributeType, Avp, MessageType, ResultCode, make
from lns.l2tp.header import ControlPacket, DataPacket, decode_packet, encode_control, encode_data
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.proxy import ProxyAuthenType
from lns.l2tp.reliable import ReliableChannel, RetransmitPolicy, seq_distance
from lns.l2tp.tunnel import PROTOCOL_VERSION_1_0, challenge_response
from lns.l2tp.wire import MalformedPacket
from lns.ppp.frame import MalformedFrame, Protocol, decode_frame
from lns.testing.lacsim.device import Device

# LCP Configure-Request options (RFC 1661 section 6) as a LAC passes them on.
LCP_MRU_1450 = bytes([1, 4, 0x05, 0xAA])
LCP_AUTH_CHAP_MD5 = bytes([3, 5, 0xC2, 0x23, 5])
LCP_AUTH_PAP = bytes([3, 4, 0xC0, 0x23])
LCP_PFC = bytes([7, 2])
LCP_ACFC = bytes([8, 2])


def lcp_magic(magic: int) -> bytes:
    return bytes([5, 6]) + magic.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class ProxyAuthSpec:
    """What the LAC saw of the device's authentication (AVPs 29-33)."""

    authen_type: ProxyAuthenType
    name: bytes = b""
    challenge: bytes = b""
    chap_id: int | None = None
    response: bytes = b""

    def avps(self) -> list[Avp]:
        avps = [make(AttributeType.PROXY_AUTHEN_TYPE, int(self.authen_type))]
        avps.append(make(AttributeType.PROXY_AUTHEN_NAME, self.name))
        if self.challenge:
            avps.append(make(AttributeType.PROXY_AUTHEN_CHALLENGE, self.challenge))
        if self.chap_id is not None:
            avps.append(make(AttributeType.PROXY_AUTHEN_ID, self.chap_id))
        if self.response:
            avps.append(make(AttributeType.PROXY_AUTHEN_RESPONSE, self.response))
        return avps


def proxy_chap(password: bytes, rng: random.Random, name: bytes = b"") -> ProxyAuthSpec:
    """A device's CHAP-MD5 answer (RFC 1994): MD5(ID || secret || challenge)."""
    chap_id = rng.randrange(256)
    challenge = rng.randbytes(16)
    response = hashlib.md5(bytes([chap_id]) + password + challenge).digest()
    return ProxyAuthSpec(ProxyAuthenType.CHAP, name, challenge, chap_id, response)


def proxy_pap(password: bytes, name: bytes = b"") -> ProxyAuthSpec:
    return ProxyAuthSpec(ProxyAuthenType.PAP, name, response=password)


@dataclass(frozen=True, slots=True)
class ProxyLcpSpec:
    """Proxy LCP (AVPs 26-28): raw Configure-Request options, no LCP header."""

    initial_received: bytes
    last_sent: bytes
    last_received: bytes

    def avps(self) -> list[Avp]:
        return [
            make(AttributeType.INITIAL_RECEIVED_LCP_CONFREQ, self.initial_received),
            make(AttributeType.LAST_SENT_LCP_CONFREQ, self.last_sent),
            make(AttributeType.LAST_RECEIVED_LCP_CONFREQ, self.last_received),
        ]


def default_proxy_lcp(rng: random.Random, auth: bytes = LCP_AUTH_CHAP_MD5) -> ProxyLcpSpec:
    device = LCP_MRU_1450 + lcp_magic(rng.getrandbits(32) | 1) + LCP_PFC + LCP_ACFC
    ours = LCP_MRU_1450 + auth + lcp_magic(rng.getrandbits(32) | 1)
    return ProxyLcpSpec(device, ours, device)


class Phase(enum.Enum):
    WAITING = "waiting"  # request sent, reply not yet received
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass(eq=False)
class SimulatedCall:
    tunnel: SimulatedTunnel
    session_id: int  # the LAC's
    iccid: str
    called_number: str
    proxy_lcp: ProxyLcpSpec | None
    proxy_auth: ProxyAuthSpec | None
    sequencing: bool = False
    peer_session_id: int = 0  # the LNS's, from ICRP
    phase: Phase = Phase.WAITING
    result: ResultCode | None = None  # from the LNS's CDN
    frames: list[bytes] = field(default_factory=list)
    data_sequence: list[int | None] = field(default_factory=list)
    device: Device | None = None  # the PPP end of the call, when the test wants one
    opened: bool = False  # the device's IPCP reached Opened (LacObserver.call_opened told)
    _data_ns: int = 0


@dataclass(eq=False)
class SimulatedTunnel:
    tunnel_id: int  # the LAC's
    secret: bytes | None
    channel: ReliableChannel[tuple[int, ControlMessage]]
    challenge: bytes | None
    peer_tunnel_id: int = 0
    phase: Phase = Phase.WAITING
    peer_hostname: str = ""
    result: ResultCode | None = None  # from the LNS's StopCCN
    failure: str = ""
    calls: dict[int, SimulatedCall] = field(default_factory=dict)
    waiting_calls: list[SimulatedCall] = field(default_factory=list)  # until SCCRP
    messages_received: list[MessageType | int] = field(default_factory=list)
    # The HELLO being timed (Lac.send_hello): its body until it first leaves, then its Ns
    # and when it left; cleared when an Nr beyond that Ns acknowledges it.
    hello_payload: bytes | None = None
    hello_ns: int | None = None
    hello_sent_at: float = 0.0


class LacObserver:
    """What a driver of the LAC (the load generator) hears about, as it happens.

    Every method does nothing here; override the ones you need. They are called
    from inside :meth:`Lac.datagram_received` and :meth:`Lac.handle_timer`, so
    they must not feed the LAC again, only record or queue work for later.
    """

    def tunnel_established(self, tunnel: SimulatedTunnel, now: float) -> None:
        """SCCRP accepted (the LNS's challenge response checked), SCCCN queued."""

    def tunnel_closed(self, tunnel: SimulatedTunnel, now: float) -> None:
        """StopCCN received, the LNS failed authentication, or it stopped acknowledging
        (``tunnel.failure`` says which; the tunnel's calls are closed with it)."""

    def call_opened(self, call: SimulatedCall, now: float) -> None:
        """The call's device reached IPCP Opened (``call.device.address`` is set)."""

    def call_closed(self, call: SimulatedCall, now: float) -> None:
        """The LNS cleared the call with a CDN (``call.result`` says why)."""

    def hello_acknowledged(self, tunnel: SimulatedTunnel, rtt: float, now: float) -> None:
        """A HELLO from :meth:`Lac.send_hello` was acknowledged, ``rtt`` s after it left."""

    def ip_received(self, call: SimulatedCall, packet: bytes, now: float) -> None:
        """An IPv4 packet arrived for the call's device."""


class Lac:
    """The LAC side of any number of tunnels towards one LNS address."""

    def __init__(
        self,
        hostname: str = "lac1",
        secret: bytes | None = b"secret",
        rng: random.Random | None = None,
        retransmit: RetransmitPolicy | None = None,
        receive_window: int = 8,
        hide_avps: bool = False,
        challenge: bool = True,
        record: bool = True,
        observer: LacObserver | None = None,
    ) -> None:
        """``record`` False keeps no per-message history (``SimulatedCall.frames``,
        ``data_sequence``, ``SimulatedTunnel.messages_received``), for runs with
        many long-lived calls; ``observer`` hears about tunnels, calls and HELLOs."""
        self.hostname = hostname
        self.secret = secret
        self.rng = rng if rng is not None else random.Random(2661)
        self.retransmit = retransmit or RetransmitPolicy()
        self.receive_window = receive_window
        self.hide_avps = hide_avps
        self.send_challenge = challenge and secret is not None
        self.record = record
        self.observer = observer
        self.tunnels: dict[int, SimulatedTunnel] = {}
        self.malformed_received = 0
        self._outbox: list[bytes] = []
        self._next_serial = 1
        self._devices: Deadlines[SimulatedCall] = Deadlines()
        self._now = 0.0  # the time of the latest event, for devices started from a reply

    # --- what a LAC does ---------------------------------------------------------

    def open_tunnel(self, now: float) -> SimulatedTunnel:
        tunnel_id = self._free_id(self.tunnels)
        challenge = self.rng.randbytes(16) if self.send_challenge else None
        tunnel = SimulatedTunnel(
            tunnel_id,
            self.secret,
            ReliableChannel(self.retransmit, receive_window=self.receive_window),
            challenge,
        )
        self.tunnels[tunnel_id] = tunnel
        avps = [
            make(AttributeType.PROTOCOL_VERSION, PROTOCOL_VERSION_1_0),
            make(AttributeType.HOST_NAME, self.hostname),
            make(AttributeType.FRAMING_CAPABILITIES, 3),
            make(AttributeType.BEARER_CAPABILITIES, 3),
            make(AttributeType.TIE_BREAKER, self.rng.randbytes(8)),
            make(AttributeType.ASSIGNED_TUNNEL_ID, tunnel_id),
            make(AttributeType.RECEIVE_WINDOW_SIZE, self.receive_window),
        ]
        if challenge is not None:
            avps.append(make(AttributeType.CHALLENGE, challenge))
        self._send(tunnel, MessageType.SCCRQ, avps)
        return tunnel

    def place_call(
        self,
        tunnel: SimulatedTunnel,
        iccid: str,
        *,
        called_number: str = "iot.example",
        proxy_lcp: ProxyLcpSpec | None = None,
        proxy_auth: ProxyAuthSpec | None = None,
        sequencing: bool = False,
        device: Device | None = None,
    ) -> SimulatedCall:
        """ICRQ now; the ICCN with the proxy AVPs follows when the ICRP arrives.

        With a ``device``, the call's PPP frames are answered by it once the
        ICCN is sent (LCP, authentication, IPCP, echoes).
        """
        call = SimulatedCall(
            tunnel,
            self._free_id(tunnel.calls),
            iccid,
            called_number,
            proxy_lcp,
            proxy_auth,
            sequencing,
            device=device,
        )
        tunnel.calls[call.session_id] = call
        if tunnel.phase is Phase.ESTABLISHED:
            self._send_icrq(call)
        else:
            tunnel.waiting_calls.append(call)  # a LAC places calls on an established tunnel
        return call

    def _send_icrq(self, call: SimulatedCall) -> None:
        serial = self._next_serial
        self._next_serial += 1
        self._send(
            call.tunnel,
            MessageType.ICRQ,
            [
                make(AttributeType.ASSIGNED_SESSION_ID, call.session_id),
                make(AttributeType.CALL_SERIAL_NUMBER, serial),
                make(AttributeType.BEARER_TYPE, 2),
                make(AttributeType.CALLING_NUMBER, call.iccid, hidden=self.hide_avps),
                make(AttributeType.CALLED_NUMBER, call.called_number),
            ],
        )

    def hang_up(self, call: SimulatedCall, result: ResultCode | None = None) -> None:
        result = result or ResultCode(1)
        call.phase = Phase.CLOSED
        call.tunnel.calls.pop(call.session_id, None)
        self._send(
            call.tunnel,
            MessageType.CDN,
            [
                make(AttributeType.RESULT_CODE, result),
                make(AttributeType.ASSIGNED_SESSION_ID, call.session_id),
            ],
            call.peer_session_id,
        )

    def close_tunnel(self, tunnel: SimulatedTunnel, result: ResultCode | None = None) -> None:
        tunnel.phase = Phase.CLOSED
        self._send(
            tunnel,
            MessageType.StopCCN,
            [
                make(AttributeType.ASSIGNED_TUNNEL_ID, tunnel.tunnel_id),
                make(AttributeType.RESULT_CODE, result or ResultCode(1)),
            ],
        )

    def send_hello(self, tunnel: SimulatedTunnel) -> None:
        """A HELLO; the observer learns its round trip (first transmission to the Nr that
        acknowledges it, by ZLB or piggybacked) unless another one is still being timed."""
        payload = self._encode(ControlMessage(MessageType.HELLO, ()))
        if tunnel.hello_payload is None and tunnel.hello_ns is None:
            tunnel.hello_payload = payload
        tunnel.channel.queue(payload)

    @staticmethod
    def hello_outstanding(tunnel: SimulatedTunnel) -> bool:
        """A timed HELLO is queued or in flight, not yet acknowledged."""
        return tunnel.hello_payload is not None or tunnel.hello_ns is not None

    def send_message(
        self, tunnel: SimulatedTunnel, message: ControlMessage, session_id: int = 0
    ) -> None:
        """Any control message, reliably (e.g. WEN, SLI, OCRQ, or one with odd AVPs)."""
        tunnel.channel.queue(self._encode(message), session_id)

    def send_ppp(
        self,
        call: SimulatedCall,
        frame: bytes,
        *,
        ns: int | None = None,
        with_length: bool = False,
        offset_pad: int | None = None,
    ) -> None:
        """A PPP frame as a data message, in any header form RFC 2661 allows."""
        data = encode_data(
            call.tunnel.peer_tunnel_id,
            call.peer_session_id,
            frame,
            ns=ns,
            with_length=with_length,
            offset_pad=offset_pad,
        )
        self._outbox.append(data)

    def send_raw(self, data: bytes) -> None:
        """Bytes exactly as given (malformed packets, forged headers)."""
        self._outbox.append(data)

    # --- input ------------------------------------------------------------------

    def datagram_received(self, data: bytes, now: float) -> None:
        self._now = now
        try:
            packet = decode_packet(data)
        except MalformedPacket:
            self.malformed_received += 1
            return
        tunnel = self.tunnels.get(packet.tunnel_id)
        if tunnel is None:
            return
        if isinstance(packet, DataPacket):
            call = tunnel.calls.get(packet.session_id)
            if call is not None:
                if self.record:
                    call.frames.append(packet.payload)
                    call.data_sequence.append(packet.ns)
                if self.observer is not None:
                    self._observe_data(call, packet.payload, now)
                if call.device is not None:
                    self._device_output(call, call.device.frame_received(packet.payload, now))
                    if not call.opened and call.device.address is not None:
                        call.opened = True
                        if self.observer is not None:
                            self.observer.call_opened(call, now)
            return
        self._control(tunnel, packet, now)

    def _control(self, tunnel: SimulatedTunnel, packet: ControlPacket, now: float) -> None:
        item = None
        if not packet.is_zlb:
            try:
                item = (packet.session_id, decode_message(packet.payload, tunnel.secret))
            except MalformedPacket:
                self.malformed_received += 1
                return
        if tunnel.hello_ns is not None and seq_distance(packet.nr, tunnel.hello_ns) > 0:
            tunnel.hello_ns = None
            if self.observer is not None:
                self.observer.hello_acknowledged(tunnel, now - tunnel.hello_sent_at, now)
        for session_id, message in tunnel.channel.receive(packet.ns, packet.nr, item, now):
            if self.record:
                tunnel.messages_received.append(message.message_type)
            self._handle(tunnel, session_id, message, now)

    def _observe_data(self, call: SimulatedCall, frame: bytes, now: float) -> None:
        assert self.observer is not None
        try:
            protocol, payload = decode_frame(frame)
        except MalformedFrame:
            return
        if protocol == Protocol.IP:
            self.observer.ip_received(call, payload, now)

    def _handle(
        self, tunnel: SimulatedTunnel, session_id: int, message: ControlMessage, now: float
    ) -> None:
        mtype = message.message_type
        if mtype == MessageType.SCCRP:
            self._on_sccrp(tunnel, message)
            if self.observer is not None:
                if tunnel.phase is Phase.ESTABLISHED:
                    self.observer.tunnel_established(tunnel, now)
                elif tunnel.phase is Phase.CLOSED:
                    self.observer.tunnel_closed(tunnel, now)
        elif mtype == MessageType.StopCCN:
            if tunnel.peer_tunnel_id == 0:
                # RFC 2661 section 6.4: a StopCCN can come before (or instead of) the
                # SCCRP; its Assigned Tunnel ID is where the acknowledgement goes.
                assigned = message.get(AttributeType.ASSIGNED_TUNNEL_ID)
                if isinstance(assigned, int):
                    tunnel.peer_tunnel_id = assigned
            tunnel.channel.ack_now(now)
            result = message.get(AttributeType.RESULT_CODE)
            tunnel.result = result if isinstance(result, ResultCode) else None
            tunnel.phase = Phase.CLOSED
            for call in tunnel.calls.values():
                call.phase = Phase.CLOSED
            if self.observer is not None:
                self.observer.tunnel_closed(tunnel, now)
        elif mtype == MessageType.HELLO:
            tunnel.channel.ack_now(now)
        elif mtype == MessageType.ICRP:
            waiting = tunnel.calls.get(session_id)
            peer_session = message.get(AttributeType.ASSIGNED_SESSION_ID)
            if waiting is not None and isinstance(peer_session, int):
                waiting.peer_session_id = peer_session
                self._send_iccn(waiting)
        elif mtype == MessageType.CDN:
            cleared = tunnel.calls.pop(session_id, None)
            if cleared is not None:
                result = message.get(AttributeType.RESULT_CODE)
                cleared.result = result if isinstance(result, ResultCode) else None
                cleared.phase = Phase.CLOSED
                if self.observer is not None:
                    self.observer.call_closed(cleared, now)

    def _on_sccrp(self, tunnel: SimulatedTunnel, message: ControlMessage) -> None:
        peer_tunnel = message.get(AttributeType.ASSIGNED_TUNNEL_ID)
        host = message.get(AttributeType.HOST_NAME)
        tunnel.peer_hostname = host if isinstance(host, str) else ""
        if isinstance(peer_tunnel, int):
            tunnel.peer_tunnel_id = peer_tunnel
        window = message.get(AttributeType.RECEIVE_WINDOW_SIZE)
        if isinstance(window, int) and window > 0:
            tunnel.channel.peer_window = window
        if tunnel.challenge is not None:
            assert tunnel.secret is not None
            expected = challenge_response(2, tunnel.secret, tunnel.challenge)
            response = message.get(AttributeType.CHALLENGE_RESPONSE)
            if not isinstance(response, bytes) or not hmac.compare_digest(response, expected):
                tunnel.failure = "the LNS's Challenge Response is wrong"
                self.close_tunnel(tunnel, ResultCode(4, 0, "LNS failed authentication"))
                return
        avps = []
        challenge = message.get(AttributeType.CHALLENGE)
        if isinstance(challenge, bytes) and tunnel.secret is not None:
            response = challenge_response(3, tunnel.secret, challenge)
            avps.append(make(AttributeType.CHALLENGE_RESPONSE, response, hidden=self.hide_avps))
        tunnel.phase = Phase.ESTABLISHED
        self._send(tunnel, MessageType.SCCCN, avps)
        waiting, tunnel.waiting_calls = tunnel.waiting_calls, []
        for call in waiting:
            if call.phase is Phase.WAITING:
                self._send_icrq(call)

    def _send_iccn(self, call: SimulatedCall) -> None:
        avps = [
            make(AttributeType.TX_CONNECT_SPEED, 100_000_000),
            make(AttributeType.FRAMING_TYPE, 1),
            make(AttributeType.RX_CONNECT_SPEED, 50_000_000),
        ]
        if call.proxy_lcp is not None:
            avps += call.proxy_lcp.avps()
        if call.proxy_auth is not None:
            avps += [
                Avp(a.attribute, a.value, a.mandatory, self.hide_avps and a.attribute in _HIDEABLE)
                for a in call.proxy_auth.avps()
            ]
        if call.sequencing:
            avps.append(make(AttributeType.SEQUENCING_REQUIRED, None))
        call.phase = Phase.ESTABLISHED
        self._send(call.tunnel, MessageType.ICCN, avps, call.peer_session_id)
        if call.device is not None:
            self._device_output(call, call.device.start(self._now))

    def _device_output(self, call: SimulatedCall, frames: list[bytes]) -> None:
        """Frames from the device go out as data messages; its timer is rescheduled."""
        for frame in frames:
            ns = None
            if call.sequencing:
                ns, call._data_ns = call._data_ns, (call._data_ns + 1) % 0x10000
            self._outbox.append(
                encode_data(call.tunnel.peer_tunnel_id, call.peer_session_id, frame, ns=ns)
            )
        if call.device is not None and call.phase is not Phase.CLOSED:
            self._devices.set(call, call.device.get_timer())
        else:
            self._devices.discard(call)

    # --- output and timers ------------------------------------------------------------

    def _encode(self, message: ControlMessage) -> bytes:
        return encode_message(message, self.secret, self.rng.randbytes)

    def _send(
        self, tunnel: SimulatedTunnel, mtype: MessageType, avps: list[Avp], session_id: int = 0
    ) -> None:
        tunnel.channel.queue(self._encode(ControlMessage(mtype, tuple(avps))), session_id)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out, self._outbox = self._outbox, []
        for tunnel in self.tunnels.values():
            for o in tunnel.channel.datagrams_to_send(now):
                if o.payload is tunnel.hello_payload:
                    tunnel.hello_payload = None  # first transmission: the clock starts
                    tunnel.hello_ns, tunnel.hello_sent_at = o.ns, now
                out.append(
                    encode_control(tunnel.peer_tunnel_id, o.session_id, o.ns, o.nr, o.payload)
                )
        return out

    def handle_timer(self, now: float) -> None:
        self._now = now
        for call in self._devices.pop_due(now):
            if call.device is not None and call.phase is not Phase.CLOSED:
                self._device_output(call, call.device.handle_timer(now))
        for tunnel in self.tunnels.values():
            tunnel.channel.handle_timer(now)
            if tunnel.channel.failed and tunnel.phase is not Phase.CLOSED:
                tunnel.phase = Phase.CLOSED
                tunnel.failure = "the LNS stopped acknowledging"
                # As after a StopCCN: the calls went with the tunnel, so their devices
                # stop sending towards an LNS that is gone.
                for call in tunnel.calls.values():
                    call.phase = Phase.CLOSED
                if self.observer is not None:
                    self.observer.tunnel_closed(tunnel, now)

    def get_timer(self) -> float | None:
        deadlines = [
            t for tunnel in self.tunnels.values() if (t := tunnel.channel.get_timer()) is not None
        ]
        device_deadline = self._devices.earliest()
        if device_deadline is not None:
            deadlines.append(device_deadline)
        return min(deadlines) if deadlines else None

    def _free_id(self, used: Mapping[int, object]) -> int:
        while True:
            candidate = self.rng.randrange(1, 0x10000)
            if candidate not in used:
                return candidate


_HIDEABLE = {AttributeType.PROXY_AUTHEN_NAME, AttributeType.PROXY_AUTHEN_RESPONSE}
