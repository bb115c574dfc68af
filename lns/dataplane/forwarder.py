"""The data plane between PPP sessions and the TUN device, without the I/O.

Up (session to network): an IP packet from a session's PPP link (protocol 0x0021,
RFC 1332) goes to the TUN device when its header is sound and its source is the session's
own address or inside one of its Framed-Routes (RFC 2865 section 5.22); anything else is a
spoofed source and is dropped (ingress filtering, RFC 2827 / BCP 38).

Down (network to session): a packet read from the TUN device goes to the session that owns
its destination: the session's own address first, else the longest Framed-Route that
contains it (RFC 1812 section 5.2.4.3). When two sessions claim the same address or route,
the newest one wins; when it detaches, the route falls back to the newest remaining claimant.

The oversized-packet rule, for a packet from the network longer than the session's MRU
(the largest packet the peer agreed to receive, RFC 1661 section 6.1):

* DF set: it is dropped and answered with an ICMP Destination Unreachable, Fragmentation
  Needed (RFC 792 type 3 code 4) carrying the MRU as the next-hop MTU (RFC 1191), from the
  forwarder's local address, which the caller writes back to the TUN device so the sender's
  path MTU discovery learns it. No ICMP is sent about ICMP errors, non-first fragments or
  non-unicast sources (RFC 1812 section 4.3.2.7); the packet is then dropped silently.
  Rate-limiting those messages (RFC 1812 section 4.3.2.8) is the caller's business, as it
  owns the clock.
* DF clear: it is fragmented to the MRU (RFC 791 section 3.2) and the fragments go down.

An MRU below 68, the IPv4 minimum (RFC 791 section 3.2), is raised to 68.

With ``mss_clamp`` on, TCP SYN and SYN-ACK segments in both directions have their MSS
option lowered to the session's MRU minus 40 (RFC 6691), so TCP never builds segments
the PPP link cannot carry and neither fragmentation nor path MTU discovery is needed.

Packets longer than their Total Length (link padding) are cut to it. Counters count what
is forwarded; dropped packets count in their own counters, and do not reset the idle time.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from lns.dataplane.ipv4 import (
    ESSENTIALS,
    MINIMUM_MTU,
    TCP,
    clamp_mss,
    fragment,
    fragmentation_needed,
)
from lns.dataplane.routes import RouteTable

_TCP_SYN: Final = 0x02
_DF_BYTE: Final = 0x40  # DF in byte 6 of the header (RFC 791 section 3.1)
_IP_TCP_HEADERS: Final = 40  # RFC 6691: MSS = MTU - 20 (IPv4) - 20 (TCP), no options

COUNTERS: Final = (
    "malformed",  # no usable IPv4 header, either direction
    "no_route",  # from the network, to an address no session owns
    "spoofed",  # from a session, with a source outside its address and routes
    "too_big",  # from the network, longer than the MRU with DF set
    "icmp_sent",  # Fragmentation Needed messages returned for those
    "fragmented",  # from the network, longer than the MRU, fragmented
    "mss_clamped",  # TCP SYNs whose MSS was lowered, both directions
)

_Key = tuple[int, int]


@dataclass(slots=True, eq=False)
class Traffic:
    """What a session moved through the data plane: the session's one set of counters.

    Made by the session's owner and handed to :meth:`Forwarder.attach`, which counts into
    it; accounting and the Idle-Timeout read it. Unbounded Python ints (RADIUS accounting
    splits them into octets and gigawords).
    """

    packets_up: int = 0  # from the session to the network
    octets_up: int = 0
    packets_down: int = 0  # from the network to the session
    octets_down: int = 0
    last_up: float = 0.0  # time of the last packet forwarded from the session


@dataclass(slots=True, eq=False)
class SessionPath:
    """One session as the data plane sees it: where its packets may come from and go, and
    what went through.

    What it forwarded is counted in ``traffic``; what it dropped, here.
    """

    key: _Key  # (tunnel_id, session_id), opaque here
    address: int  # the session's assigned IPv4 address (u32)
    networks: tuple[ipaddress.IPv4Network, ...]  # its Framed-Routes
    mru: int  # the largest IP packet we may send down to it (the peer's MRU)
    mss: int  # mru - 40, the MSS clamp value
    traffic: Traffic
    spoofed: int = 0  # dropped: source neither its address nor inside its routes
    too_big: int = 0  # dropped or answered with ICMP Fragmentation Needed
    fragmented: int = 0  # packets fragmented on the way down
    # The Framed-Routes as (network, netmask) u32 pairs, for the source check.
    prefixes: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    attached: bool = False

    @classmethod
    def for_session(
        cls,
        key: _Key,
        address: ipaddress.IPv4Address,
        networks: Sequence[ipaddress.IPv4Network],
        mru: int,
        traffic: Traffic | None = None,
    ) -> SessionPath:
        """The path of a session with this address, Framed-Routes and peer MRU, counting
        what it forwards in ``traffic`` (a new one when None); attach it to forward."""
        mru = max(mru, MINIMUM_MTU)
        return cls(
            key=key,
            address=int(address),
            networks=tuple(networks),
            mru=mru,
            mss=mru - _IP_TCP_HEADERS,
            traffic=traffic if traffic is not None else Traffic(),
            prefixes=tuple(
                (int(network.network_address), int(network.netmask)) for network in networks
            ),
        )


class Forwarder:
    """Routes packets between sessions and the TUN device; see the module docstring."""

    def __init__(self, local_address: ipaddress.IPv4Address, mss_clamp: bool) -> None:
        self.local_address = local_address
        self.mss_clamp = mss_clamp
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._local = int(local_address)
        self._paths: dict[SessionPath, None] = {}  # attached, in order (an ordered set)
        self._routes: RouteTable[SessionPath] = RouteTable()
        # Every session claiming each route, oldest first: the route points at the last one.
        self._claims: dict[ipaddress.IPv4Network, list[SessionPath]] = {}

    # --- sessions ------------------------------------------------------------------------

    def attach(self, path: SessionPath) -> SessionPath:
        """Start forwarding for a session: its address and Framed-Routes now lead to it."""
        if path.attached:
            return path
        path.attached = True
        self._paths[path] = None
        for network in _routes_of(path):
            self._claims.setdefault(network, []).append(path)
            self._routes.add(network, path)
        return path

    def detach(self, path: SessionPath) -> bool:
        """Stop forwarding for a session; False when it was not attached.

        Its routes are removed, except those a newer session has taken over; a route it had
        taken over from a session still attached goes back to that session.
        """
        if not path.attached:
            return False
        path.attached = False
        del self._paths[path]
        for network in _routes_of(path):
            claimants = self._claims[network]
            claimants.remove(path)
            if not claimants:
                del self._claims[network]
                self._routes.remove(network, path)
            elif self._routes.get(network) is path:
                self._routes.add(network, claimants[-1])
        return True

    def owner(self, network: ipaddress.IPv4Network) -> SessionPath | None:
        """The session ``network`` is routed to, as an exact route (a /32 for an address).

        After :meth:`detach`, None tells the caller the route is gone from the table and may
        go from the kernel too; a session means another one still owns it.
        """
        return self._routes.get(network)

    def __iter__(self) -> Iterator[SessionPath]:
        return iter(list(self._paths))

    def __len__(self) -> int:
        return len(self._paths)

    # --- packets -------------------------------------------------------------------------

    def from_session(self, path: SessionPath, packet: bytes, now: float) -> bytes | None:
        """An IP packet from a session: the packet to write to the TUN device, or None."""
        try:
            version_ihl, total, protocol, sender, _ = ESSENTIALS.unpack_from(packet)
        except struct.error:
            self.counters["malformed"] += 1
            return None
        size = len(packet)
        header_length = (version_ihl & 0x0F) << 2
        if version_ihl >> 4 != 4 or header_length < 20 or not header_length <= total <= size:
            self.counters["malformed"] += 1
            return None
        if sender != path.address:
            for network, mask in path.prefixes:
                if sender & mask == network:
                    break
            else:
                path.spoofed += 1
                self.counters["spoofed"] += 1
                return None
        if total != size:
            packet = packet[:total]
            size = total
        if (
            protocol == TCP
            and self.mss_clamp
            and size > header_length + 13
            and packet[header_length + 13] & _TCP_SYN
        ):
            packet = self._clamp(packet, path.mss)
        traffic = path.traffic
        traffic.packets_up += 1
        traffic.octets_up += size
        traffic.last_up = now
        return packet

    def from_network(self, packet: bytes) -> tuple[SessionPath | None, list[bytes]]:
        """A packet read from the TUN device: the session to send it down and the packets.

        ``(path, packets)`` to send down ``path``; ``(None, [icmp])`` when the packet is too
        big with DF set, the ICMP message to write back to the TUN device; ``(None, [])``
        when it is dropped.
        """
        try:
            version_ihl, total, protocol, _, target = ESSENTIALS.unpack_from(packet)
        except struct.error:
            self.counters["malformed"] += 1
            return None, []
        size = len(packet)
        header_length = (version_ihl & 0x0F) << 2
        if version_ihl >> 4 != 4 or header_length < 20 or not header_length <= total <= size:
            self.counters["malformed"] += 1
            return None, []
        path = self._routes.lookup(target)
        if path is None:
            self.counters["no_route"] += 1
            return None, []
        if total != size:
            packet = packet[:total]
            size = total
        if size > path.mru and packet[6] & _DF_BYTE:
            path.too_big += 1
            self.counters["too_big"] += 1
            icmp = fragmentation_needed(packet, path.mru, self._local)
            if not icmp:
                return None, []
            self.counters["icmp_sent"] += 1
            return None, [icmp]
        if (
            protocol == TCP
            and self.mss_clamp
            and size > header_length + 13
            and packet[header_length + 13] & _TCP_SYN
        ):
            packet = self._clamp(packet, path.mss)
        if size <= path.mru:
            path.traffic.packets_down += 1
            path.traffic.octets_down += size
            return path, [packet]
        fragments = fragment(packet, path.mru)
        path.fragmented += 1
        self.counters["fragmented"] += 1
        path.traffic.packets_down += len(fragments)
        path.traffic.octets_down += sum(len(piece) for piece in fragments)
        return path, fragments

    def _clamp(self, packet: bytes, mss: int) -> bytes:
        clamped = clamp_mss(packet, mss)
        if clamped is not packet:
            self.counters["mss_clamped"] += 1
        return clamped


def _routes_of(path: SessionPath) -> list[ipaddress.IPv4Network]:
    """The session's own address as a host route, then its Framed-Routes, without repeats."""
    host = ipaddress.IPv4Network((path.address, 32))
    return list(dict.fromkeys((host, *path.networks)))
