"""RFC 1661 section 6: LCP options, the LNS's policy for them, and proxy LCP.

The LNS asks for its MRU, a Magic-Number and, when it authenticates the
device itself, an Authentication-Protocol (CHAP-MD5 per RFC 1994, or PAP per
RFC 1334). It accepts what a device usually asks for (MRU, ACCM, Magic-Number,
PFC, ACFC) and rejects the rest, including an Authentication-Protocol (the
LNS never authenticates itself to the device).

Proxy LCP (RFC 2661 section 4.4.5) is judged here too: :func:`judge_proxy_lcp`
says whether the options the LAC already negotiated can be adopted.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from lns.ppp.automaton import Verdict
from lns.ppp.frame import MalformedFrame, Protocol
from lns.ppp.packet import Option, decode_options


class LcpOption(enum.IntEnum):
    MRU = 1
    ACCM = 2
    AUTH_PROTOCOL = 3
    QUALITY_PROTOCOL = 4
    MAGIC_NUMBER = 5
    PFC = 7
    ACFC = 8


CHAP_MD5 = 5  # RFC 1994 algorithm number
DEFAULT_MRU = 1500
MIN_MRU = 128


class AuthProtocol(enum.Enum):
    CHAP = "chap"
    PAP = "pap"

    def option(self) -> Option:
        if self is AuthProtocol.CHAP:
            return Option(
                LcpOption.AUTH_PROTOCOL, Protocol.CHAP.to_bytes(2, "big") + bytes([CHAP_MD5])
            )
        return Option(LcpOption.AUTH_PROTOCOL, Protocol.PAP.to_bytes(2, "big"))


def auth_protocol_of(option: Option) -> AuthProtocol | None:
    """The protocol an Authentication-Protocol option names, None if we do not run it."""
    if option.data == Protocol.PAP.to_bytes(2, "big"):
        return AuthProtocol.PAP
    if option.data == Protocol.CHAP.to_bytes(2, "big") + bytes([CHAP_MD5]):
        return AuthProtocol.CHAP
    return None


def _u16(option: Option) -> int | None:
    return int.from_bytes(option.data, "big") if len(option.data) == 2 else None


def _u32(option: Option) -> int | None:
    return int.from_bytes(option.data, "big") if len(option.data) == 4 else None


class LcpPolicy:
    """Our side of LCP option negotiation (an automaton OptionPolicy)."""

    # One per session: no per-instance __dict__ (memory per session, benchmarks/memory.py).
    __slots__ = (
        "_ask_magic",
        "_ask_mru",
        "_rng",
        "auth_choices",
        "failure",
        "magic",
        "magic_negotiated",
        "mru",
        "peer_magic",
        "peer_mru",
    )

    def __init__(
        self,
        mru: int,
        rng: random.Random,
        auth: list[AuthProtocol] | None = None,
    ) -> None:
        self.mru = mru
        self._rng = rng
        self.magic = self._new_magic()
        # Protocols to offer, best first; empty: we do not authenticate in PPP.
        self.auth_choices = list(auth or [])
        self.peer_mru = DEFAULT_MRU
        self.peer_magic: int | None = None
        self.failure: str | None = None
        # RFC 1661 section 5.8: Echo and Discard carry our Magic-Number only once the
        # peer acked it, zero until then (and for good when it rejected the option).
        self.magic_negotiated = False
        self._ask_mru = True
        self._ask_magic = True

    def _new_magic(self) -> int:
        return self._rng.getrandbits(32) | 1  # never zero (RFC 1661 section 6.4)

    @property
    def auth(self) -> AuthProtocol | None:
        return self.auth_choices[0] if self.auth_choices else None

    def request(self) -> list[Option]:
        options = []
        if self._ask_mru:
            options.append(Option(LcpOption.MRU, self.mru.to_bytes(2, "big")))
        if self.auth is not None:
            options.append(self.auth.option())
        if self._ask_magic:
            options.append(Option(LcpOption.MAGIC_NUMBER, self.magic.to_bytes(4, "big")))
        return options

    def judge(self, options: list[Option]) -> Verdict:
        naks: list[Option] = []
        rejects: list[Option] = []
        for option in options:
            if option.type == LcpOption.MRU:
                value = _u16(option)
                if value is None:
                    rejects.append(option)
                elif value < MIN_MRU:
                    naks.append(Option(LcpOption.MRU, self.mru.to_bytes(2, "big")))
            elif option.type == LcpOption.ACCM:
                if _u32(option) is None:
                    rejects.append(option)
            elif option.type == LcpOption.MAGIC_NUMBER:
                value = _u32(option)
                if value is None or value == 0:
                    rejects.append(option)
                elif value == self.magic:
                    # Looped-back link or a collision: suggest another (section 6.4).
                    naks.append(
                        Option(LcpOption.MAGIC_NUMBER, self._new_magic().to_bytes(4, "big"))
                    )
            elif option.type in (LcpOption.PFC, LcpOption.ACFC):
                if option.data:
                    rejects.append(option)
            else:
                rejects.append(option)  # Authentication-Protocol, Quality, callback, MRRU...
        if rejects:
            return Verdict("reject", tuple(rejects))
        if naks:
            return Verdict("nak", tuple(naks))
        for option in options:
            if option.type == LcpOption.MRU:
                self.peer_mru = _u16(option) or DEFAULT_MRU
            elif option.type == LcpOption.MAGIC_NUMBER:
                self.peer_magic = _u32(option)
        return Verdict("ack", tuple(options))

    def nak_received(self, options: list[Option]) -> None:
        for option in options:
            if option.type == LcpOption.MRU:
                value = _u16(option)
                if value is not None and MIN_MRU <= value <= self.mru:
                    self.mru = value
            elif option.type == LcpOption.MAGIC_NUMBER:
                self.magic = self._new_magic()
            elif option.type == LcpOption.AUTH_PROTOCOL and self.auth_choices:
                suggested = auth_protocol_of(option)
                if suggested is not None and suggested in self.auth_choices:
                    self.auth_choices.remove(suggested)
                    self.auth_choices.insert(0, suggested)
                else:
                    self._drop_auth_choice()

    def _drop_auth_choice(self) -> None:
        refused = self.auth_choices.pop(0)
        if not self.auth_choices:
            self.failure = f"the device refused {refused.value.upper()} and we offer nothing else"

    def reject_received(self, options: list[Option]) -> None:
        for option in options:
            if option.type == LcpOption.MRU:
                self._ask_mru = False
            elif option.type == LcpOption.MAGIC_NUMBER:
                self._ask_magic = False
            elif option.type == LcpOption.AUTH_PROTOCOL and self.auth_choices:
                self.auth_choices.clear()
                self.failure = "the device rejected authentication"

    def acked(self, options: list[Option]) -> None:
        if any(option.type == LcpOption.MAGIC_NUMBER for option in options):
            self.magic_negotiated = True

    @property
    def echo_magic(self) -> int:
        """The Magic-Number field of our Echo-Request/Reply (RFC 1661 section 5.8)."""
        return self.magic if self.magic_negotiated else 0


# --- proxy LCP ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyLcpVerdict:
    """Whether the LAC's LCP can be adopted, and the state to adopt."""

    acceptable: bool
    reason: str
    our_magic: int | None = None
    peer_magic: int | None = None
    peer_mru: int = DEFAULT_MRU
    auth: AuthProtocol | None = None


def judge_proxy_lcp(
    last_sent: bytes | None,
    last_received: bytes | None,
    mru: int,
    accepted_auth: list[AuthProtocol],
) -> ProxyLcpVerdict:
    """Judge proxy LCP: the LAC's last Configure-Request (sent) and the device's (received)."""
    if last_sent is None or last_received is None:
        return ProxyLcpVerdict(False, "proxy LCP incomplete (AVP 27 or 28 missing)")
    try:
        ours = decode_options(last_sent)
        theirs = decode_options(last_received)
    except MalformedFrame as exc:
        return ProxyLcpVerdict(False, f"proxy LCP options malformed: {exc}")
    sent_mru = DEFAULT_MRU
    our_magic = None
    auth: AuthProtocol | None = None
    for option in ours:
        if option.type == LcpOption.MRU:
            sent_mru = _u16(option) or DEFAULT_MRU
        elif option.type == LcpOption.MAGIC_NUMBER:
            our_magic = _u32(option)
        elif option.type == LcpOption.AUTH_PROTOCOL:
            auth = auth_protocol_of(option)
            if auth is None or auth not in accepted_auth:
                return ProxyLcpVerdict(
                    False,
                    "proxy LCP negotiated an authentication protocol we do not accept "
                    f"({option.data.hex()})",
                )
    if sent_mru > mru:
        return ProxyLcpVerdict(False, f"proxy LCP MRU {sent_mru} is larger than ours ({mru})")
    peer_mru = DEFAULT_MRU
    peer_magic = None
    for option in theirs:
        if option.type == LcpOption.MRU:
            peer_mru = _u16(option) or DEFAULT_MRU
        elif option.type == LcpOption.MAGIC_NUMBER:
            peer_magic = _u32(option)
    return ProxyLcpVerdict(True, "adopted", our_magic, peer_magic, peer_mru, auth)
