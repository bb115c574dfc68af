"""RFC 1332 and RFC 1877: IPCP options and the LNS's policy for them.

We ask for our own address (``[ppp] local_address``). The device asks for
0.0.0.0 and is Nak'ed with the address assigned to it, and for DNS servers
(129/131) and is Nak'ed with ours; NBNS (130/132), IP-Compression-Protocol
and the old IP-Addresses option are rejected. A device that keeps insisting
on another address is given up on after Max-Failure Naks (``failure``).
"""

from __future__ import annotations

import enum
import ipaddress

from lns.ppp.automaton import Verdict
from lns.ppp.packet import Option

IPv4 = ipaddress.IPv4Address
UNSPECIFIED = IPv4("0.0.0.0")


class IpcpOption(enum.IntEnum):
    IP_ADDRESSES = 1  # deprecated (RFC 1332 appendix)
    IP_COMPRESSION_PROTOCOL = 2
    IP_ADDRESS = 3
    PRIMARY_DNS = 129
    PRIMARY_NBNS = 130
    SECONDARY_DNS = 131
    SECONDARY_NBNS = 132


def _address(option: Option) -> IPv4 | None:
    return IPv4(option.data) if len(option.data) == 4 else None


def address_option(kind: IpcpOption, address: IPv4) -> Option:
    return Option(kind, address.packed)


class IpcpPolicy:
    """Our side of IPCP option negotiation (an automaton OptionPolicy)."""

    # One per session: no per-instance __dict__ (memory per session, benchmarks/memory.py).
    __slots__ = (
        "_address_naks",
        "dns",
        "dns_given",
        "failure",
        "local_address",
        "max_failure",
        "peer_address",
    )

    def __init__(
        self,
        local_address: IPv4,
        peer_address: IPv4,
        dns: tuple[IPv4, ...] = (),
        max_failure: int = 5,
    ) -> None:
        self.local_address = local_address
        self.peer_address = peer_address
        self.dns = dns
        self.max_failure = max_failure
        self.failure: str | None = None
        self.dns_given: tuple[IPv4, ...] = ()
        self._address_naks = 0

    def request(self) -> list[Option]:
        return [address_option(IpcpOption.IP_ADDRESS, self.local_address)]

    def _dns_for(self, kind: int) -> IPv4 | None:
        index = 0 if kind == IpcpOption.PRIMARY_DNS else 1
        return self.dns[index] if index < len(self.dns) else None

    def judge(self, options: list[Option]) -> Verdict:
        naks: list[Option] = []
        rejects: list[Option] = []
        asked_address = False
        for option in options:
            kind = option.type
            if kind == IpcpOption.IP_ADDRESS:
                asked_address = True
                address = _address(option)
                if address is None:
                    rejects.append(option)
                elif address != self.peer_address:
                    naks.append(address_option(IpcpOption.IP_ADDRESS, self.peer_address))
                    if address != UNSPECIFIED:
                        self._address_naks += 1
                        if self._address_naks >= self.max_failure:
                            self.failure = (
                                f"the device insists on address {address}, "
                                f"not the assigned {self.peer_address}"
                            )
            elif kind in (IpcpOption.PRIMARY_DNS, IpcpOption.SECONDARY_DNS):
                ours = self._dns_for(kind)
                address = _address(option)
                if ours is None or address is None:
                    rejects.append(option)
                elif address != ours:
                    naks.append(address_option(IpcpOption(kind), ours))
            else:
                rejects.append(option)  # NBNS, compression, IP-Addresses, unknown
        if rejects:
            return Verdict("reject", tuple(rejects))
        if not asked_address:
            # RFC 1332 section 3.3: a Nak may carry an option the peer did not ask for.
            naks.append(address_option(IpcpOption.IP_ADDRESS, self.peer_address))
        if naks:
            return Verdict("nak", tuple(naks))
        self.dns_given = tuple(
            a
            for o in options
            if o.type in (IpcpOption.PRIMARY_DNS, IpcpOption.SECONDARY_DNS)
            and (a := _address(o)) is not None
        )
        return Verdict("ack", tuple(options))

    def nak_received(self, options: list[Option]) -> None:
        # Our own address is not negotiable: the peer's suggestion is ignored and
        # the automaton's Max-Configure ends a peer that never acks it.
        return None

    def reject_received(self, options: list[Option]) -> None:
        for option in options:
            if option.type == IpcpOption.IP_ADDRESS:
                self.failure = "the device rejected our IP-Address option"

    def acked(self, options: list[Option]) -> None:
        return None
