"""The mobile device's end of PPP, behind the simulated LAC.

The LAC already ran LCP (and usually authentication) with the device, so the
device starts with LCP open. It answers whatever the LNS does next: LCP
renegotiation, a CHAP challenge or PAP, IPCP as a client asking for 0.0.0.0
and DNS servers, Echo-Requests. Its :class:`DeviceBehaviour` can make it
misbehave the way real devices do (insist on its own address, refuse CHAP,
ignore echoes, speak IPv6CP).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from lns.ppp import chap, pap
from lns.ppp.automaton import Automaton, LayerDown, LayerFinished, LayerUp, Send, Verdict
from lns.ppp.automaton import State as AutomatonState
from lns.ppp.frame import MalformedFrame, Protocol, decode_frame, encode_frame
from lns.ppp.ipcp import IpcpOption, address_option
from lns.ppp.lcp import AuthProtocol, LcpOption, auth_protocol_of
from lns.ppp.packet import Code, ControlPacket, Option, decode_packet

IPv4 = ipaddress.IPv4Address
UNSPECIFIED = IPv4("0.0.0.0")


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class DeviceBehaviour:
    password: bytes = b"password"
    name: bytes = b""
    auth: tuple[AuthProtocol, ...] = (AuthProtocol.CHAP, AuthProtocol.PAP)
    ask_dns: bool = True
    insist_address: IPv4 | None = None  # keep asking for this address, whatever the Naks say
    answer_echo: bool = True
    mru: int = 1450
    extra_lcp_options: tuple[Option, ...] = ()  # e.g. an option the LNS must Nak or Reject
    nak_mru: int | None = None  # Nak the LNS's MRU with this value until it asks for it
    reject_lcp_options: tuple[int, ...] = ()  # option types of the LNS's request to Reject
    ask_nbns: bool = False  # also ask for NBNS servers (RFC 1877 options 130/132)


class _DeviceLcp:
    def __init__(self, behaviour: DeviceBehaviour, rng: random.Random) -> None:
        self.behaviour = behaviour
        self.rng = rng
        self.magic = rng.getrandbits(32) | 1
        self.mru = behaviour.mru
        self.extra = list(behaviour.extra_lcp_options)
        self.auth: AuthProtocol | None = None  # what the LNS asked for and we acked

    def request(self) -> list[Option]:
        return [
            Option(LcpOption.MRU, self.mru.to_bytes(2, "big")),
            Option(LcpOption.MAGIC_NUMBER, self.magic.to_bytes(4, "big")),
            *self.extra,
        ]

    def judge(self, options: list[Option]) -> Verdict:
        rejected = tuple(o for o in options if o.type in self.behaviour.reject_lcp_options)
        if rejected:
            return Verdict("reject", rejected)
        mru = self.behaviour.nak_mru
        for option in options:
            if option.type == LcpOption.MRU and mru is not None and option.data != _u16(mru):
                return Verdict("nak", (Option(LcpOption.MRU, _u16(mru)),))
        for option in options:
            if option.type == LcpOption.AUTH_PROTOCOL:
                wanted = auth_protocol_of(option)
                if wanted is None or wanted not in self.behaviour.auth:
                    if self.behaviour.auth:
                        return Verdict("nak", (self.behaviour.auth[0].option(),))
                    return Verdict("reject", (option,))
                self.auth = wanted
        return Verdict("ack", tuple(options))

    def nak_received(self, options: list[Option]) -> None:
        for option in options:
            if option.type == LcpOption.MRU:
                self.mru = int.from_bytes(option.data, "big")
            elif option.type == LcpOption.MAGIC_NUMBER:
                self.magic = self.rng.getrandbits(32) | 1

    def reject_received(self, options: list[Option]) -> None:
        rejected = {o.type for o in options}
        self.extra = [o for o in self.extra if o.type not in rejected]

    def acked(self, options: list[Option]) -> None:
        return None


class _DeviceIpcp:
    def __init__(self, behaviour: DeviceBehaviour) -> None:
        self.behaviour = behaviour
        self.address = behaviour.insist_address or UNSPECIFIED
        self.dns: dict[int, IPv4] = (
            {IpcpOption.PRIMARY_DNS: UNSPECIFIED, IpcpOption.SECONDARY_DNS: UNSPECIFIED}
            if behaviour.ask_dns
            else {}
        )
        self.nbns: dict[int, IPv4] = (
            {IpcpOption.PRIMARY_NBNS: UNSPECIFIED, IpcpOption.SECONDARY_NBNS: UNSPECIFIED}
            if behaviour.ask_nbns
            else {}
        )
        self.gateway: IPv4 | None = None

    def request(self) -> list[Option]:
        options = [address_option(IpcpOption.IP_ADDRESS, self.address)]
        options += [address_option(IpcpOption(kind), a) for kind, a in self.dns.items()]
        options += [address_option(IpcpOption(kind), a) for kind, a in self.nbns.items()]
        return options

    def judge(self, options: list[Option]) -> Verdict:
        for option in options:
            if option.type == IpcpOption.IP_ADDRESS and len(option.data) == 4:
                self.gateway = IPv4(option.data)
        return Verdict("ack", tuple(options))

    def nak_received(self, options: list[Option]) -> None:
        for option in options:
            if len(option.data) != 4:
                continue
            if option.type == IpcpOption.IP_ADDRESS and self.behaviour.insist_address is None:
                self.address = IPv4(option.data)
            elif option.type in self.dns:
                self.dns[option.type] = IPv4(option.data)
            elif option.type in self.nbns:
                self.nbns[option.type] = IPv4(option.data)

    def reject_received(self, options: list[Option]) -> None:
        for option in options:
            self.dns.pop(option.type, None)
            self.nbns.pop(option.type, None)

    def acked(self, options: list[Option]) -> None:
        return None


@dataclass
class DeviceState:
    """What a test asserts on."""

    lcp_packets_received: int = 0
    auth_result: str | None = None  # "success" / "failure" with the LNS's message
    auth_message: str = ""
    protocol_rejected: list[int] = field(default_factory=list)
    terminated: bool = False


class Device:
    """A device's PPP stack: feed it frames and time, it returns frames to send."""

    def __init__(
        self, behaviour: DeviceBehaviour | None = None, rng: random.Random | None = None
    ) -> None:
        self.behaviour = behaviour or DeviceBehaviour()
        self.rng = rng or random.Random(1994)
        self.state = DeviceState()
        self.lcp_policy = _DeviceLcp(self.behaviour, self.rng)
        self.lcp = Automaton(self.lcp_policy, first_identifier=self.rng.randrange(256))
        self.ipcp_policy = _DeviceIpcp(self.behaviour)
        self.ipcp = Automaton(self.ipcp_policy, first_identifier=self.rng.randrange(256))
        self._ipcp_started = False
        self._pap_id = 0
        self._pap_deadline: float | None = None

    # --- what a test reads ---------------------------------------------------------------

    @property
    def address(self) -> IPv4 | None:
        """The address IPCP gave us, once IPCP is open."""
        return self.ipcp_policy.address if self.ipcp.state is AutomatonState.OPENED else None

    @property
    def dns(self) -> list[IPv4]:
        return list(self.ipcp_policy.dns.values())

    @property
    def magic(self) -> int:
        return self.lcp_policy.magic

    # --- input ------------------------------------------------------------------

    def start(self, now: float) -> list[bytes]:
        """The LAC hands the call over: LCP is already open with the LAC."""
        return self._lcp_effects(self.lcp.force_opened(now), now)

    def frame_received(self, frame: bytes, now: float) -> list[bytes]:
        try:
            protocol, payload = decode_frame(frame)
            if protocol == Protocol.LCP:
                return self._lcp(decode_packet(payload), now)
            if protocol == Protocol.IPCP:
                return self._ipcp(decode_packet(payload), now)
            if protocol == Protocol.CHAP:
                return self._chap(decode_packet(payload))
            if protocol == Protocol.PAP:
                return self._pap(decode_packet(payload))
        except MalformedFrame:
            return []
        return []

    def _lcp(self, packet: ControlPacket, now: float) -> list[bytes]:
        self.state.lcp_packets_received += 1
        if packet.code == Code.ECHO_REQUEST:
            if not self.behaviour.answer_echo or self.lcp.state is not AutomatonState.OPENED:
                return []
            reply = ControlPacket(
                Code.ECHO_REPLY, packet.identifier, self.magic.to_bytes(4, "big") + packet.data[4:]
            )
            return [encode_frame(Protocol.LCP, reply.encode())]
        if packet.code == Code.PROTOCOL_REJECT:
            self.state.protocol_rejected.append(int.from_bytes(packet.data[:2], "big"))
            return []
        if packet.code in (Code.ECHO_REPLY, Code.DISCARD_REQUEST):
            return []
        if packet.code == Code.TERMINATE_REQUEST:
            self.state.terminated = True
        return self._lcp_effects(self.lcp.receive(packet, now), now)

    def _lcp_effects(self, effects: Sequence[object], now: float) -> list[bytes]:
        out = []
        for effect in effects:
            if isinstance(effect, Send):
                out.append(encode_frame(Protocol.LCP, effect.packet.encode()))
            elif isinstance(effect, LayerUp) and self.lcp_policy.auth is AuthProtocol.PAP:
                out.append(self._pap_request(now))
            elif isinstance(effect, (LayerDown, LayerFinished)):
                self.ipcp.down(now)
        return out

    def _ipcp(self, packet: ControlPacket, now: float) -> list[bytes]:
        out: list[bytes] = []
        if not self._ipcp_started:
            # The LNS reached its network phase: open IPCP too (passive open).
            self._ipcp_started = True
            out += self._ipcp_effects(self.ipcp.up(now))
            out += self._ipcp_effects(self.ipcp.open(now))
        return out + self._ipcp_effects(self.ipcp.receive(packet, now))

    def _ipcp_effects(self, effects: Sequence[object]) -> list[bytes]:
        return [
            encode_frame(Protocol.IPCP, e.packet.encode()) for e in effects if isinstance(e, Send)
        ]

    def _chap(self, packet: ControlPacket) -> list[bytes]:
        if packet.code == chap.ChapCode.CHALLENGE:
            challenge = chap.decode_value(packet)
            value = chap.md5_response(
                challenge.identifier, self.behaviour.password, challenge.value
            )
            answer = chap.response(challenge.identifier, value, self.behaviour.name)
            return [encode_frame(Protocol.CHAP, answer.encode())]
        if packet.code in (chap.ChapCode.SUCCESS, chap.ChapCode.FAILURE):
            success = packet.code == chap.ChapCode.SUCCESS
            self.state.auth_result = "success" if success else "failure"
            self.state.auth_message = packet.data.decode("utf-8", "replace")
        return []

    def _pap_request(self, now: float) -> bytes:
        self._pap_id = (self._pap_id + 1) % 256
        self._pap_deadline = now + 3.0
        request = pap.encode_request(self._pap_id, self.behaviour.name, self.behaviour.password)
        return encode_frame(Protocol.PAP, request.encode())

    def _pap(self, packet: ControlPacket) -> list[bytes]:
        if packet.code in (pap.PapCode.AUTHENTICATE_ACK, pap.PapCode.AUTHENTICATE_NAK):
            self._pap_deadline = None
            success = packet.code == pap.PapCode.AUTHENTICATE_ACK
            self.state.auth_result = "success" if success else "failure"
            text = packet.data[1 : 1 + packet.data[0]] if packet.data else b""
            self.state.auth_message = text.decode("utf-8", "replace")
        return []

    # --- timers -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        timers = (self.lcp.get_timer(), self.ipcp.get_timer(), self._pap_deadline)
        times = [t for t in timers if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[bytes]:
        out = self._lcp_effects(self.lcp.handle_timer(now), now)
        out += self._ipcp_effects(self.ipcp.handle_timer(now))
        if self._pap_deadline is not None and self._pap_deadline <= now:
            out.append(self._pap_request(now))
        return out
