"""The data plane on Twisted: IP packets between PPP sessions and the host's network.

A session's IP packets (PPP protocol 0x0021) go through the
:class:`~lns.dataplane.forwarder.Forwarder` (anti-spoofing, MSS clamping, counters)
and are written to the TUN device; packets the kernel routes into the TUN device are
looked up by destination and sent down the session's L2TP call. While a session lives,
its address and its Framed-Routes are routed into the device; the routes go when it
ends.

``[dataplane] mode = "none"`` runs the same forwarder with no device: sessions come up,
their packets are checked and counted, and nothing is written anywhere.

Control traffic is never starved by data: the TUN reader and the L2TP socket each
drain a bounded batch per wake-up, so the reactor serves the other between batches,
and a HELLO waiting in the socket is answered before the next batch of data.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from twisted.application import service
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.logger import Logger

from lns.adapters.netlink_routes import RouteChanges
from lns.adapters.tun import RT_SCOPE_LINK, RTPROT_LNS, TunDevice, TunNetwork
from lns.dataplane.forwarder import Forwarder, SessionPath
from lns.runtime import RateLimit

# The PPP header put before every IP packet sent down a call: Address and Control
# (RFC 1662 section 3.1), then the uncompressed Protocol field for IP (RFC 1332).
PPP_IP_HEADER = b"\xff\x03\x00\x21"
ICMP_ERRORS_PER_SECOND = 100


class PppLink(Protocol):
    """What the data plane needs of the L2TP service."""

    def send_ppp(self, tunnel_id: int, session_id: int, frame: bytes) -> bool: ...


class SessionRoutes(Protocol):
    """Route changes while sessions come and go (lns.adapters.netlink_routes.RouteChanges)."""

    def add(self, network: ipaddress.IPv4Network) -> None: ...

    def remove(self, network: ipaddress.IPv4Network) -> None: ...


class DataPlane:
    """Packets both ways, routes while sessions live; a TUN device or none."""

    log = Logger()

    def __init__(
        self,
        local_address: ipaddress.IPv4Address,
        mss_clamp: bool,
        clock: IReactorTime,
        device: TunDevice | None = None,
        network: TunNetwork | None = None,
    ) -> None:
        self.forwarder = Forwarder(local_address, mss_clamp)
        self.clock = clock
        self.device = device
        self.network = network
        self.routes: SessionRoutes | None = None  # set once the device is up
        self.link: PppLink | None = None
        self.packets_written = 0
        self._drop_log = RateLimit()
        # RFC 1812 section 4.3.2.8: ICMP errors we originate are rate-limited.
        self._icmp = RateLimit(ICMP_ERRORS_PER_SECOND)

    # --- sessions ---------------------------------------------------------------------

    def session_opened(self, path: SessionPath) -> SessionPath:
        """Forward for this session from now on (its packets counted in its traffic)."""
        self.forwarder.attach(path)
        if self.routes is not None:
            for network in (ipaddress.IPv4Network(path.address), *path.networks):
                self.routes.add(network)
        return path

    def session_closed(self, path: SessionPath) -> None:
        if not self.forwarder.detach(path) or self.routes is None:
            return
        for network in (ipaddress.IPv4Network(path.address), *path.networks):
            if self.forwarder.owner(network) is None:  # no newer session routes it
                self.routes.remove(network)

    # --- packets ----------------------------------------------------------------------

    def from_session(self, path: SessionPath, packet: bytes) -> None:
        """An IP packet a session sent."""
        spoofed = path.spoofed
        out = self.forwarder.from_session(path, packet, self.clock.seconds())
        if out is None:
            self._dropped(path, packet, path.spoofed > spoofed)
        elif self.device is not None:
            self.device.write(out)
            self.packets_written += 1

    def _dropped(self, path: SessionPath, packet: bytes, spoofed: bool) -> None:
        if not self._drop_log.allow(self.clock.seconds()):
            return
        reason = "malformed IPv4 packet"
        if spoofed:
            source = ipaddress.IPv4Address(packet[12:16])
            reason = (
                f"spoofed source {source} (session address {ipaddress.IPv4Address(path.address)})"
            )
        self.log.warn(
            "dropped a packet from tunnel {tunnel} session {session}: {reason}"
            " [{suppressed} more not logged]",
            tunnel=path.key[0],
            session=path.key[1],
            reason=reason,
            suppressed=self._drop_log.suppressed,
        )

    def from_network(self, packets: list[bytes]) -> None:
        """A batch the TUN device read: each goes down its session (or back as ICMP)."""
        link = self.link
        forward = self.forwarder.from_network
        for packet in packets:
            path, out = forward(packet)
            if path is None:
                # ICMP fragmentation needed, back to the sender through the device.
                if out and self.device is not None and self._icmp.allow(self.clock.seconds()):
                    self.device.write(out[0])
                continue
            if link is not None:
                tunnel_id, session_id = path.key
                for piece in out:
                    link.send_ppp(tunnel_id, session_id, PPP_IP_HEADER + piece)


class DataPlaneService(service.Service):
    """Opens and configures the TUN device at start, closes it at stop.

    The device is opened and given its address in ``privilegedStartService``, while
    twistd may still be root (STYLE.md section 4): a node without CAP_NET_ADMIN stops
    there (lns.adapters.startup), before it starts anything else.
    """

    log = Logger()

    def __init__(
        self, dataplane: DataPlane, local_address: ipaddress.IPv4Address, mtu: int
    ) -> None:
        self.dataplane = dataplane
        self.local_address = local_address
        self.mtu = mtu
        self._opened = False
        self._stale_routes = 0

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._open()

    def _open(self) -> None:
        device, network = self.dataplane.device, self.dataplane.network
        if self._opened or device is None or network is None:
            return
        device.open()
        try:
            network.configure(self.local_address, self.mtu)
            self._stale_routes = network.flush_routes()
        except Exception:
            network.close()
            device.close()
            raise
        self._opened = True

    def startService(self) -> None:
        device, network = self.dataplane.device, self.dataplane.network
        if device is not None and network is not None:
            self._open()
            # Per-session routes without waiting on the reactor; TunNetwork's
            # synchronous netlink stays for start and stop.
            routes = RouteChanges(
                device.reactor, device.name, network.index, RTPROT_LNS, RT_SCOPE_LINK
            )
            routes.open()
            self.dataplane.routes = routes
            device.start_reading()
            self.log.info(
                "data plane: TUN device {name} up with {address}, MTU {mtu}"
                " ({stale} stale routes removed)",
                name=device.name,
                address=str(self.local_address),
                mtu=self.mtu,
                stale=self._stale_routes,
            )
        else:
            self.log.info("data plane: no TUN device (mode none): IP packets counted and dropped")
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        device, network = self.dataplane.device, self.dataplane.network
        if isinstance(self.dataplane.routes, RouteChanges):
            self.dataplane.routes.close()
        self.dataplane.routes = None
        if self._opened and network is not None:
            network.flush_routes()
        self._opened = False
        if network is not None:
            network.close()
        if device is not None:
            device.close()


def make_dataplane(
    mode: str,
    tun_name: str,
    local_address: ipaddress.IPv4Address,
    mss_clamp: bool,
    reactor: IReactorTime,
) -> DataPlane:
    if mode == "none":
        return DataPlane(local_address, mss_clamp, reactor)
    dataplane = DataPlane(local_address, mss_clamp, reactor)
    dataplane.device = TunDevice(tun_name, IReactorFDSet(reactor), dataplane.from_network)
    dataplane.network = TunNetwork(tun_name)
    return dataplane
