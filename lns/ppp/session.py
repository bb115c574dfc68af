"""One PPP session terminated by the LNS over an L2TP call (RFC 1661 section 3.2 phases).

ESTABLISH: adopt the LAC's proxy LCP when it is acceptable, else negotiate LCP
(``lcp_renegotiation``). AUTHENTICATE: proxy PAP/CHAP, or without proxy
authentication per ``no_proxy_auth`` (ICCID alone, our own CHAP/PAP
challenge, or reject). AUTHORIZE and ADDRESS: waiting for AAA and the address
pool (effects out, results in). NETWORK: IPCP. OPENED: LCP Echo keepalive.
Session-Timeout and Idle-Timeout are the session supervisor's (:mod:`lns.sessions`),
which also forwards the session's IP packets. Protocols we do not run (IPv6CP,
CCP, any other) get an LCP Protocol-Reject. A device that renegotiates LCP or IPCP once
they are Opened ends the session (Terminate-Request) rather than renegotiating.
An IPCP Configure-Request that arrives while AAA or the pool is still working is
kept and answered as soon as the address is known (the device would otherwise
wait for its own restart timer, 3 s with pppd).

The address lease is opaque here (``LeaseT``): the session only returns it in
:class:`ReleaseAddress`, exactly once, when it ends or when it ended before the
pool answered.

I/O-free: events in (``start``, ``frame_received``, ``authenticated``,
``address_assigned``, ``handle_timer``, ``close``), effects out, one deadline
from ``get_timer``.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from lns.l2tp.proxy import ProxyAuth, ProxyAuthenType, ProxyLcp
from lns.ppp import chap, pap
from lns.ppp.auth import AuthMethod, AuthRequest, AuthSource, CallContext, Decision
from lns.ppp.automaton import (
    Automaton,
    Ignored,
    LayerDown,
    LayerFinished,
    LayerUp,
    Send,
)
from lns.ppp.automaton import State as AutomatonState
from lns.ppp.frame import MalformedFrame, Protocol, decode_frame, encode_frame
from lns.ppp.ipcp import IpcpPolicy
from lns.ppp.lcp import AuthProtocol, LcpPolicy, judge_proxy_lcp
from lns.ppp.packet import Code, ControlPacket, decode_options, decode_packet
from lns.ppp.termination import TerminateCause

IPv4 = ipaddress.IPv4Address
DEFAULT_LOCAL_ADDRESS = IPv4("100.64.0.1")
LeaseT = TypeVar("LeaseT")


class LcpRenegotiation(enum.StrEnum):
    """``[ppp] lcp_renegotiation``: when LCP is negotiated again instead of the LAC's proxy LCP."""

    NEVER = "never"  # refuse a call whose proxy LCP we cannot adopt
    ON_MISMATCH = "on-mismatch"  # adopt it when acceptable, else renegotiate
    ALWAYS = "always"


class NoProxyAuth(enum.StrEnum):
    """``[ppp] no_proxy_auth``: what to do when the LAC sent no proxy authentication."""

    ICCID = "iccid"  # ask AAA by the ICCID alone
    CHALLENGE = "challenge"  # authenticate the device ourselves (CHAP or PAP)
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class PppSettings:
    """The ``[ppp]`` section, as the session uses it."""

    mru: int = 1450
    local_address: IPv4 = DEFAULT_LOCAL_ADDRESS
    dns: tuple[IPv4, ...] = ()
    echo_interval: float = 30.0
    echo_failures: int = 5
    lcp_renegotiation: LcpRenegotiation = LcpRenegotiation.ON_MISMATCH
    no_proxy_auth: NoProxyAuth = NoProxyAuth.ICCID
    auth: tuple[AuthProtocol, ...] = (AuthProtocol.CHAP, AuthProtocol.PAP)
    hostname: bytes = b"lns"
    restart_interval: float = 3.0
    max_configure: int = 10
    max_failure: int = 5
    auth_timeout: float = 30.0  # for the device's PAP request or CHAP response

    def __post_init__(self) -> None:
        # The policies may be given by their configuration names.
        object.__setattr__(self, "lcp_renegotiation", LcpRenegotiation(self.lcp_renegotiation))
        object.__setattr__(self, "no_proxy_auth", NoProxyAuth(self.no_proxy_auth))


# --- effects ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendFrame:
    frame: bytes


@dataclass(frozen=True, slots=True)
class Authenticate:
    request: AuthRequest


@dataclass(frozen=True, slots=True)
class AllocateAddress:
    iccid: str
    pool: str | None
    requested: IPv4 | None


@dataclass(frozen=True, slots=True)
class ReleaseAddress(Generic[LeaseT]):
    lease: LeaseT


@dataclass(frozen=True, slots=True)
class SessionOpened:
    address: IPv4
    dns: tuple[IPv4, ...]
    decision: Decision


@dataclass(frozen=True, slots=True)
class SessionClosed:
    cause: TerminateCause
    message: str
    was_open: bool
    # False when no AAA server answered or no address was free: a temporary refusal.
    temporary: bool = False


Effect: TypeAlias = (
    SendFrame
    | Authenticate
    | AllocateAddress
    | ReleaseAddress[LeaseT]
    | SessionOpened
    | SessionClosed
)


class Phase(enum.Enum):
    ESTABLISH = "establish"
    AUTHENTICATE = "authenticate"
    AUTHORIZE = "authorize"  # waiting for AAA
    ADDRESS = "address"  # waiting for the pool
    NETWORK = "network"  # IPCP
    OPENED = "opened"
    CLOSED = "closed"


# LCP states where a Close sends a Terminate-Request (RFC 1661 section 4.1).
_TERMINATE_STATES = frozenset(
    {
        AutomatonState.OPENED,
        AutomatonState.REQ_SENT,
        AutomatonState.ACK_RCVD,
        AutomatonState.ACK_SENT,
    }
)
_CONFIGURE_CODES = frozenset(
    {Code.CONFIGURE_REQUEST, Code.CONFIGURE_ACK, Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT}
)


def _check_options(packet: ControlPacket) -> None:
    """Raise MalformedFrame when a Configure-* packet's options do not parse (RFC 1661 6)."""
    if packet.code in _CONFIGURE_CODES:
        decode_options(packet.data)


# Proxy Authen Types we can check without a PPP exchange.
_PROXY_METHODS = {ProxyAuthenType.CHAP: AuthMethod.CHAP, ProxyAuthenType.PAP: AuthMethod.PAP}


@dataclass(slots=True)
class _Counters:
    frames_in: int = 0
    frames_out: int = 0
    bad_frames: int = 0
    discarded: int = 0
    protocol_rejects: int = 0
    ip_packets_in: int = 0
    repeated_requests: int = 0  # Configure-Requests repeated after Opened, re-acked


class PppSession(Generic[LeaseT]):
    # One per session: no per-instance __dict__ (memory per session, benchmarks/memory.py).
    __slots__ = (
        "_adopted_magic",
        "_adopted_magic_negotiated",
        "_adopted_peer_mru",
        "_auth_deadline",
        "_challenge",
        "_challenge_id",
        "_challenges_sent",
        "_early_ipcp",
        "_echo_deadline",
        "_echo_outstanding",
        "_extra_id",
        "_ipcp_request",
        "_lcp_request",
        "_pap_id",
        "_proxy_method",
        "_rng",
        "address",
        "auth_source",
        "context",
        "counters",
        "decision",
        "ipcp",
        "ipcp_policy",
        "lcp",
        "lcp_policy",
        "lcp_renegotiated",
        "lease",
        "phase",
        "proxy_auth",
        "proxy_lcp",
        "settings",
    )

    def __init__(
        self,
        context: CallContext,
        settings: PppSettings,
        rng: random.Random,
        proxy_lcp: ProxyLcp | None = None,
        proxy_auth: ProxyAuth | None = None,
    ) -> None:
        self.context = context
        self.settings = settings
        self.proxy_lcp = proxy_lcp
        self.proxy_auth = proxy_auth
        self.phase = Phase.ESTABLISH
        self.counters = _Counters()
        self.address: IPv4 | None = None
        self.decision: Decision | None = None
        self.lease: LeaseT | None = None
        self.lcp_renegotiated = False
        self.auth_source = AuthSource.NONE
        self._rng = rng
        self._proxy_method = (
            _PROXY_METHODS.get(ProxyAuthenType(proxy_auth.authen_type))
            if proxy_auth is not None and proxy_auth.authen_type in _PROXY_METHODS
            else None
        )
        self.lcp_policy = LcpPolicy(settings.mru, rng, self._auth_to_offer())
        self.lcp = self._automaton(self.lcp_policy)
        self.ipcp_policy: IpcpPolicy | None = None
        self.ipcp: Automaton | None = None
        self._extra_id = rng.randrange(256)  # Echo and Protocol-Reject identifiers
        self._challenge: bytes = b""
        self._challenge_id = 0
        self._challenges_sent = 0
        self._auth_deadline: float | None = None
        self._echo_deadline: float | None = None
        # The options of the peer's latest Configure-Request: once Opened, the ones we acked.
        self._lcp_request: bytes | None = None
        self._ipcp_request: bytes | None = None
        self._echo_outstanding = 0
        # The device's IPCP Configure-Request that came before its address was known.
        self._early_ipcp: ControlPacket | None = None
        self._pap_id = 0
        self._adopted_magic = self.lcp_policy.magic
        self._adopted_magic_negotiated = False
        self._adopted_peer_mru = self.lcp_policy.peer_mru

    def _automaton(self, policy: LcpPolicy | IpcpPolicy) -> Automaton:
        return Automaton(
            policy,
            restart_interval=self.settings.restart_interval,
            max_configure=self.settings.max_configure,
            max_failure=self.settings.max_failure,
            first_identifier=self._rng_id(),
        )

    def _rng_id(self) -> int:
        return self._rng.randrange(256)

    def _auth_to_offer(self) -> list[AuthProtocol]:
        """Authentication protocols LCP must ask for: only when we challenge ourselves."""
        if self._proxy_method is None and self.settings.no_proxy_auth is NoProxyAuth.CHALLENGE:
            return list(self.settings.auth)
        return []

    # --- start: proxy LCP or LCP negotiation ----------------------------------------------

    def start(self, now: float) -> list[Effect[LeaseT]]:
        if self._proxy_method is None and self.settings.no_proxy_auth is NoProxyAuth.REJECT:
            return self.close(
                TerminateCause.USER_ERROR,
                "no proxy authentication from the LAC and no_proxy_auth = reject",
                now,
            )
        policy = self.settings.lcp_renegotiation
        if policy is not LcpRenegotiation.ALWAYS:
            verdict = self._judge_proxy()
            if verdict is None:
                self.lcp_policy.magic = self._adopted_magic
                self.lcp_policy.magic_negotiated = self._adopted_magic_negotiated
                self.lcp_policy.peer_mru = self._adopted_peer_mru
                return self._handle_lcp(self.lcp.force_opened(now), now)
            if policy is LcpRenegotiation.NEVER:
                return self.close(
                    TerminateCause.USER_ERROR, f"LCP renegotiation refused: {verdict}", now
                )
        self.lcp_renegotiated = True
        effects = self._handle_lcp(self.lcp.up(now), now)
        return effects + self._handle_lcp(self.lcp.open(now), now)

    def _judge_proxy(self) -> str | None:
        """None when proxy LCP can be adopted, else why not."""
        if self.proxy_lcp is None:
            return "no proxy LCP from the LAC"
        accepted = list(self.settings.auth)
        verdict = judge_proxy_lcp(
            self.proxy_lcp.last_sent, self.proxy_lcp.last_received, self.settings.mru, accepted
        )
        if not verdict.acceptable:
            return verdict.reason
        offer = self._auth_to_offer()
        if offer and verdict.auth is None:
            return "proxy LCP negotiated no authentication protocol, and we must challenge"
        if offer and verdict.auth is not None:
            # Challenge with the protocol the device already agreed to.
            self.lcp_policy.auth_choices = [verdict.auth]
        self._adopted_magic = verdict.our_magic or self.lcp_policy.magic
        self._adopted_magic_negotiated = bool(verdict.our_magic)
        self._adopted_peer_mru = verdict.peer_mru
        return None

    # --- input --------------------------------------------------------------------------

    def frame_received(self, frame: bytes, now: float) -> list[Effect[LeaseT]]:
        """A PPP frame from the device (through the L2TP data channel)."""
        if self.phase is Phase.CLOSED:
            return []
        self.counters.frames_in += 1
        try:
            protocol, payload = decode_frame(frame)
            if protocol == Protocol.IP:
                # IP is the data plane's once the session is open; before, it is discarded.
                self.counters.ip_packets_in += 1
                return []
            if protocol == Protocol.LCP:
                return self._lcp_packet(decode_packet(payload), now)
            if protocol == Protocol.IPCP:
                return self._ipcp_packet(decode_packet(payload), now)
            if protocol == Protocol.CHAP:
                return self._chap_packet(decode_packet(payload), now)
            if protocol == Protocol.PAP:
                return self._pap_packet(decode_packet(payload), now)
        except MalformedFrame:
            self.counters.bad_frames += 1
            return []
        return self._protocol_reject(protocol, payload)

    def _protocol_reject(self, protocol: int, payload: bytes) -> list[Effect[LeaseT]]:
        """RFC 1661 section 5.7: IPv6CP, CCP or anything we do not run."""
        if self.lcp.state is not AutomatonState.OPENED:
            self.counters.discarded += 1
            return []
        self.counters.protocol_rejects += 1
        room = max(0, self.lcp_policy.peer_mru - 6)
        data = protocol.to_bytes(2, "big") + payload[:room]
        return [self._lcp_send(ControlPacket(Code.PROTOCOL_REJECT, self._next_extra_id(), data))]

    def _next_extra_id(self) -> int:
        self._extra_id = (self._extra_id + 1) % 256
        return self._extra_id

    def _lcp_send(self, packet: ControlPacket) -> SendFrame:
        return self._send(Protocol.LCP, packet)

    def _send(self, protocol: int, packet: ControlPacket) -> SendFrame:
        self.counters.frames_out += 1
        return SendFrame(encode_frame(protocol, packet.encode()))

    def _lcp_packet(self, packet: ControlPacket, now: float) -> list[Effect[LeaseT]]:
        code = packet.code
        if code in (Code.ECHO_REQUEST, Code.ECHO_REPLY, Code.DISCARD_REQUEST, Code.PROTOCOL_REJECT):
            if self.lcp.state is not AutomatonState.OPENED:
                self.counters.discarded += 1
                return []
            if code == Code.ECHO_REQUEST:
                magic = self.lcp_policy.echo_magic.to_bytes(4, "big")
                # RFC 1661 section 5.8 copies the request's data into the reply; never
                # past the peer's MRU (header and magic included): no echo amplifies.
                room = max(0, self.lcp_policy.peer_mru - 8)
                data = magic + packet.data[4 : 4 + room]
                return [self._lcp_send(ControlPacket(Code.ECHO_REPLY, packet.identifier, data))]
            if code == Code.ECHO_REPLY:
                self._echo_outstanding = 0
                return []
            if code == Code.PROTOCOL_REJECT and packet.data[:2] == Protocol.IPCP.to_bytes(2, "big"):
                return self.close(TerminateCause.USER_ERROR, "the device rejected IPCP", now)
            return []
        _check_options(packet)
        if code == Code.CONFIGURE_REQUEST and self.lcp.state is AutomatonState.OPENED:
            if packet.data == self._lcp_request:
                # The device repeats the request we acked: our Configure-Ack was lost.
                self.counters.repeated_requests += 1
                ack = ControlPacket(Code.CONFIGURE_ACK, packet.identifier, packet.data)
                return [self._lcp_send(ack)]
            # RFC 1661 section 4.1 lets the peer renegotiate from Opened (tld); the call
            # was set up with the LCP we have, so a device that restarts LCP ends it.
            return self.close(
                TerminateCause.NAS_REQUEST,
                "the device renegotiated LCP after the link was up (not supported)",
                now,
            )
        if code == Code.CONFIGURE_REQUEST:
            self._lcp_request = packet.data  # the one we ack last is the one in force
        return self._handle_lcp(self.lcp.receive(packet, now), now)

    def _ipcp_packet(self, packet: ControlPacket, now: float) -> list[Effect[LeaseT]]:
        if self.ipcp is None:
            if (
                packet.code == Code.CONFIGURE_REQUEST
                and self.phase in (Phase.AUTHORIZE, Phase.ADDRESS)
                and self.lcp.state is AutomatonState.OPENED
            ):
                # The device is done authenticating and asks for its address while
                # AAA or the pool is still working: keep the request (the latest one)
                # and answer it as soon as the address is known.
                _check_options(packet)
                self._early_ipcp = packet
                return []
            # RFC 1661 section 3.4: NCP packets before the network phase are discarded.
            self.counters.discarded += 1
            return []
        _check_options(packet)
        if packet.code == Code.CONFIGURE_REQUEST and self.ipcp.state is AutomatonState.OPENED:
            if packet.data == self._ipcp_request:
                # The device repeats the request we acked: our Configure-Ack was lost.
                # Renegotiating (RFC 1661 section 4.1) would take the session down for it.
                self.counters.repeated_requests += 1
                ack = ControlPacket(Code.CONFIGURE_ACK, packet.identifier, packet.data)
                return [self._send(Protocol.IPCP, ack)]
            return self.close(
                TerminateCause.NAS_REQUEST,
                "the device renegotiated IPCP after the session was up (not supported)",
                now,
            )
        if packet.code == Code.CONFIGURE_REQUEST:
            self._ipcp_request = packet.data  # the one we ack last is the one in force
        return self._handle_ipcp(self.ipcp.receive(packet, now), now)

    # --- LCP and IPCP automaton effects ---------------------------------------------------

    def _handle_lcp(self, effects: Sequence[object], now: float) -> list[Effect[LeaseT]]:
        out: list[Effect[LeaseT]] = []
        ended: str | None = None  # why LCP left Opened or finished
        for effect in effects:
            if isinstance(effect, Send):
                # Once LCP went down, or our options ran out, the session ends (close sends
                # Terminate-Request): the automaton's new Configure-Request stays home.
                if effect.packet.code == Code.CONFIGURE_REQUEST and (
                    ended is not None or self.lcp_policy.failure
                ):
                    continue
                out.append(self._lcp_send(effect.packet))
            elif isinstance(effect, Ignored):
                self.counters.discarded += 1
            elif isinstance(effect, LayerUp):
                out += self._authenticate(now)
            elif isinstance(effect, (LayerDown, LayerFinished)):
                ended = ended or effect.reason or "LCP went down"
        # Closed after the packets of this step (a Terminate-Ack goes out before the call ends).
        if ended is not None:
            out += self.close(TerminateCause.USER_REQUEST, f"LCP: {ended}", now)
        elif self.lcp_policy.failure:
            out += self.close(TerminateCause.USER_ERROR, f"LCP: {self.lcp_policy.failure}", now)
        return out

    def _handle_ipcp(self, effects: Sequence[object], now: float) -> list[Effect[LeaseT]]:
        out: list[Effect[LeaseT]] = []
        ended: str | None = None
        for effect in effects:
            if isinstance(effect, Send):
                if ended is not None and effect.packet.code == Code.CONFIGURE_REQUEST:
                    continue  # as for LCP: no renegotiation, the session ends
                out.append(self._send(Protocol.IPCP, effect.packet))
            elif isinstance(effect, Ignored):
                self.counters.discarded += 1
            elif isinstance(effect, LayerUp):
                out += self._opened(now)
            elif isinstance(effect, (LayerDown, LayerFinished)):
                ended = ended or effect.reason or "IPCP went down"
        policy = self.ipcp_policy
        if ended is not None:
            out += self.close(TerminateCause.USER_REQUEST, f"IPCP: {ended}", now)
        elif policy is not None and policy.failure:
            out += self.close(TerminateCause.USER_ERROR, f"IPCP: {policy.failure}", now)
        return out

    # --- authentication -------------------------------------------------------------------

    def _authenticate(self, now: float) -> list[Effect[LeaseT]]:
        if self.phase is not Phase.ESTABLISH:
            return []
        self.phase = Phase.AUTHENTICATE
        if self.proxy_auth is not None and self._proxy_method is not None:
            self.auth_source = AuthSource.PROXY
            proxy = self.proxy_auth
            method = self._proxy_method
            request = AuthRequest(
                self.context,
                method,
                AuthSource.PROXY,
                name=proxy.name,
                password=proxy.response if method is AuthMethod.PAP else b"",
                chap_id=proxy.chap_id,
                chap_challenge=proxy.challenge,
                chap_response=proxy.response if method is AuthMethod.CHAP else b"",
            )
            return self._ask_aaa(request)
        if self.settings.no_proxy_auth == "iccid":
            return self._ask_aaa(AuthRequest(self.context, AuthMethod.ICCID, AuthSource.NONE))
        self.auth_source = AuthSource.PPP
        self._auth_deadline = now + self.settings.auth_timeout
        if self.lcp_policy.auth is AuthProtocol.CHAP:
            return [self._send_challenge(now)]
        return []  # PAP: the device speaks first

    def _ask_aaa(self, request: AuthRequest) -> list[Effect[LeaseT]]:
        self.phase = Phase.AUTHORIZE
        self._auth_deadline = None
        return [Authenticate(request)]

    def _send_challenge(self, now: float) -> SendFrame:
        self._challenge = self._rng.randbytes(chap.CHALLENGE_LENGTH)
        # RFC 1994 section 4.1: a new Identifier for every Challenge, retransmissions included.
        self._challenge_id = (
            self._rng_id() if self._challenges_sent == 0 else (self._challenge_id + 1) % 256
        )
        self._challenges_sent += 1
        self._auth_deadline = now + self.settings.restart_interval
        packet = chap.challenge(self._challenge_id, self._challenge, self.settings.hostname)
        return self._send(Protocol.CHAP, packet)

    def _chap_packet(self, packet: ControlPacket, now: float) -> list[Effect[LeaseT]]:
        if (
            self.phase is not Phase.AUTHENTICATE
            or self.lcp_policy.auth is not AuthProtocol.CHAP
            or packet.code != chap.ChapCode.RESPONSE
            or packet.identifier != self._challenge_id
        ):
            self.counters.discarded += 1
            return []
        answer = chap.decode_value(packet)
        request = AuthRequest(
            self.context,
            AuthMethod.CHAP,
            AuthSource.PPP,
            name=answer.name,
            chap_id=answer.identifier,
            chap_challenge=self._challenge,
            chap_response=answer.value,
        )
        return self._ask_aaa(request)

    def _pap_packet(self, packet: ControlPacket, now: float) -> list[Effect[LeaseT]]:
        if (
            self.phase is not Phase.AUTHENTICATE
            or self.lcp_policy.auth is not AuthProtocol.PAP
            or packet.code != pap.PapCode.AUTHENTICATE_REQUEST
        ):
            self.counters.discarded += 1
            return []
        credentials = pap.decode_request(packet)
        self._pap_id = credentials.identifier
        request = AuthRequest(
            self.context,
            AuthMethod.PAP,
            AuthSource.PPP,
            name=credentials.peer_id,
            password=credentials.password,
        )
        return self._ask_aaa(request)

    def _auth_reply(self, accepted: bool, message: str) -> list[Effect[LeaseT]]:
        if self.auth_source is not AuthSource.PPP:
            return []
        if self.lcp_policy.auth is AuthProtocol.CHAP:
            return [self._send(Protocol.CHAP, chap.result(self._challenge_id, accepted, message))]
        return [self._send(Protocol.PAP, pap.reply(self._pap_id, accepted, message))]

    def authenticated(self, decision: Decision, now: float) -> list[Effect[LeaseT]]:
        """AAA's answer to our Authenticate effect."""
        if self.phase is not Phase.AUTHORIZE:
            return []
        if not decision.accepted:
            out = self._auth_reply(False, "authentication failed")
            reason = decision.reason or "rejected"
            if not decision.reachable:
                return out + self.close(
                    TerminateCause.SERVICE_UNAVAILABLE,
                    f"authentication unavailable: {reason}",
                    now,
                    temporary=True,
                )
            return out + self.close(
                TerminateCause.USER_ERROR, f"authentication failed: {reason}", now
            )
        self.decision = decision
        self.phase = Phase.ADDRESS
        out = self._auth_reply(True, "welcome")
        out.append(
            AllocateAddress(self.context.iccid, decision.framed_pool, decision.framed_address)
        )
        return out

    # --- address and IPCP ------------------------------------------------------------------

    def address_assigned(
        self, address: IPv4, lease: LeaseT | None, now: float
    ) -> list[Effect[LeaseT]]:
        """The pool's answer; ``lease`` None for an address no pool manages."""
        if self.phase is not Phase.ADDRESS:
            # The session ended while the pool worked.
            return [] if lease is None else [ReleaseAddress(lease)]
        self.address = address
        self.lease = lease
        self.phase = Phase.NETWORK
        decision = self.decision
        dns = decision.dns if decision is not None and decision.dns else self.settings.dns
        self.ipcp_policy = IpcpPolicy(
            self.settings.local_address, address, dns, self.settings.max_failure
        )
        self.ipcp = self._automaton(self.ipcp_policy)
        out = self._handle_ipcp(self.ipcp.up(now), now)
        out += self._handle_ipcp(self.ipcp.open(now), now)
        early, self._early_ipcp = self._early_ipcp, None
        if early is not None and self.phase is Phase.NETWORK:
            out += self._ipcp_packet(early, now)
        return out

    def address_failed(self, reason: str, now: float) -> list[Effect[LeaseT]]:
        if self.phase is not Phase.ADDRESS:
            return []
        return self.close(
            TerminateCause.SERVICE_UNAVAILABLE, f"no address: {reason}", now, temporary=True
        )

    def _opened(self, now: float) -> list[Effect[LeaseT]]:
        assert self.address is not None
        assert self.decision is not None
        self.phase = Phase.OPENED
        self._echo_deadline = now + self.settings.echo_interval
        dns = self.ipcp_policy.dns_given if self.ipcp_policy is not None else ()
        return [SessionOpened(self.address, dns, self.decision)]

    # --- timers -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self.phase is Phase.CLOSED:
            return None
        candidates = [
            self.lcp.get_timer(),
            self.ipcp.get_timer() if self.ipcp is not None else None,
            self._auth_deadline,
            self._echo_deadline,
        ]
        times = [t for t in candidates if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Effect[LeaseT]]:
        out: list[Effect[LeaseT]] = []
        checks: list[tuple[float | None, Callable[[float], list[Effect[LeaseT]]]]] = [
            (self.lcp.get_timer(), lambda t: self._handle_lcp(self.lcp.handle_timer(t), t)),
            (self.ipcp.get_timer() if self.ipcp else None, self._ipcp_timer),
            (self._auth_deadline, self._auth_timer),
            (self._echo_deadline, self._echo_timer),
        ]
        for deadline, action in checks:
            if self.phase is Phase.CLOSED:
                break
            if deadline is not None and deadline <= now:
                out += action(now)
        return out

    def _ipcp_timer(self, now: float) -> list[Effect[LeaseT]]:
        assert self.ipcp is not None
        return self._handle_ipcp(self.ipcp.handle_timer(now), now)

    def _auth_timer(self, now: float) -> list[Effect[LeaseT]]:
        self._auth_deadline = None
        if self.phase is not Phase.AUTHENTICATE:
            return []
        if (
            self.lcp_policy.auth is AuthProtocol.CHAP
            and self._challenges_sent < self.settings.max_configure
        ):
            return [self._send_challenge(now)]
        return self.close(TerminateCause.USER_ERROR, "the device did not authenticate", now)

    def _echo_timer(self, now: float) -> list[Effect[LeaseT]]:
        if self._echo_outstanding >= self.settings.echo_failures:
            return self.close(
                TerminateCause.LOST_SERVICE,
                f"no reply to {self._echo_outstanding} LCP Echo-Requests",
                now,
            )
        self._echo_outstanding += 1
        self._echo_deadline = now + self.settings.echo_interval
        magic = self.lcp_policy.echo_magic.to_bytes(4, "big")
        return [self._lcp_send(ControlPacket(Code.ECHO_REQUEST, self._next_extra_id(), magic))]

    # --- teardown -----------------------------------------------------------------------------

    def close(
        self, cause: TerminateCause, message: str, now: float, temporary: bool = False
    ) -> list[Effect[LeaseT]]:
        """End the session from our side: LCP Terminate-Request, address released."""
        if self.phase is Phase.CLOSED:
            return []
        was_open = self.phase is Phase.OPENED
        self.phase = Phase.CLOSED
        out: list[Effect[LeaseT]] = []
        if self.lcp.state in _TERMINATE_STATES:
            for effect in self.lcp.close(now, message):
                if isinstance(effect, Send):
                    out.append(self._lcp_send(effect.packet))
        out += self._release()
        out.append(SessionClosed(cause, message, was_open, temporary))
        return out

    def call_cleared(self, now: float) -> list[Effect[LeaseT]]:
        """The L2TP call is gone (CDN from the LAC, tunnel down): release, nothing to send."""
        if self.phase is Phase.CLOSED:
            return []
        was_open = self.phase is Phase.OPENED
        self.phase = Phase.CLOSED
        return [
            *self._release(),
            SessionClosed(TerminateCause.LOST_CARRIER, "call cleared", was_open),
        ]

    def _release(self) -> list[Effect[LeaseT]]:
        if self.lease is None:
            return []
        lease, self.lease = self.lease, None
        return [ReleaseAddress(lease)]


__all__ = [
    "AllocateAddress",
    "Authenticate",
    "Effect",
    "LcpRenegotiation",
    "NoProxyAuth",
    "Phase",
    "PppSession",
    "PppSettings",
    "ReleaseAddress",
    "SendFrame",
    "SessionClosed",
    "SessionOpened",
]
