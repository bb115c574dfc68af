"""A Linux TUN device read by the reactor, and its address and routes set through netlink.

`TunDevice` owns the descriptor. The device is opened with ``IFF_TUN | IFF_NO_PI``:
each read returns one IP packet and each write injects one, with no 4-byte
packet-information header in front. Reads are drained in batches: one wake-up of
the reactor reads at most ``batch`` packets and hands them over in one call, then
returns, so the reactor serves its other descriptors (the L2TP control socket)
before the next batch. That is how a data flood never starves control traffic
(DESIGN.md section 6). Writes never raise: a packet the kernel refuses (EINVAL),
a full queue (EAGAIN, ENOBUFS) or a device that is down (EIO) is counted by errno
name and reported as ``False``.

`TunNetwork` gives the device its MTU, our local address (/32) and its routes
over rtnetlink with pyroute2, never by running ``ip``. Routes lns installs are
tagged with the route protocol `RTPROT_LNS` so operators can list them with
``ip route show proto 165``. Each call is a synchronous request and answer on one
netlink socket to the local kernel, well under a millisecond, so it runs on the
reactor thread. pyroute2's synchronous ``IPRoute`` runs a private asyncio event
loop and is bound to the thread that created it: create and use it on the
reactor thread of a non-asyncio reactor.

The device is not made persistent: when the descriptor is closed, or the process
dies, the kernel removes the device together with its address and routes.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable

from pyroute2 import IPRoute, NetlinkError
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

TUN_CLONE_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int), linux/if_tun.h
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16  # including the terminating NUL
_IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")  # struct ifreq: ifr_name, ifr_flags, rest of the union
MAX_PACKET = 65535

RTPROT_LNS = 0xA5  # route protocol of the routes lns installs; unassigned in linux/rtnetlink.h
RT_SCOPE_LINK = 253
RT_TABLE_MAIN = 254

# Hints for the errors an operator can fix, appended to the kernel's errno text.
_OPEN_HINTS = {
    errno.EPERM: "needs CAP_NET_ADMIN",
    errno.EACCES: f"check the permissions of {TUN_CLONE_DEVICE}",
    errno.ENOENT: "is the tun kernel module loaded?",
    errno.ENODEV: "is the tun kernel module loaded?",
    errno.EBUSY: "the device is in use by another process",
}


def errno_name(code: int | None) -> str:
    """``EAGAIN`` for 11: the key under which errors are counted."""
    if code is None:
        return "unknown"
    return errno.errorcode.get(code, str(code))


class TunError(OSError):
    """The TUN device or its network configuration failed; ``str()`` is one line for operators."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code

    @classmethod
    def opening(cls, name: str, code: int) -> TunError:
        reason = os.strerror(code)
        hint = _OPEN_HINTS.get(code)
        if hint is not None:
            reason = f"{reason} ({hint})"
        return cls(f"cannot open TUN device {name}: {reason}", code)


def open_tun(name: str) -> tuple[int, str]:
    """Create, or attach to, the TUN device ``name``.

    Returns the non-blocking descriptor and the name the kernel gave the device
    (the same name, unless it was a template such as ``lns%d``).
    """
    encoded = name.encode()
    if not 0 < len(encoded) < IFNAMSIZ:
        raise TunError(
            f"cannot open TUN device {name}: the name must be 1 to {IFNAMSIZ - 1} bytes long",
            errno.EINVAL,
        )
    try:
        fd = os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError.opening(name, exc.errno or errno.EIO) from exc
    try:
        answer = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(encoded, IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise TunError.opening(name, exc.errno or errno.EIO) from exc
    given, _flags = _IFREQ.unpack(answer)
    return fd, given.rstrip(b"\0").decode()


@implementer(IReadDescriptor)
class TunDevice:
    """A TUN device registered with the reactor as a reader; packets go out through `write`."""

    log = Logger()

    def __init__(
        self,
        name: str,
        reactor: IReactorFDSet,
        on_packets: Callable[[list[bytes]], None],
        batch: int = 64,
    ) -> None:
        self.name = name
        self.reactor = reactor
        self.on_packets = on_packets
        self.batch = batch
        self.packets_read = 0
        self.read_batches = 0
        self.packets_written = 0
        self.write_errors: Counter[str] = Counter()
        self._fd: int | None = None
        self._reading = False

    def open(self) -> None:
        """Create the device; raises `TunError` with a one-line reason when the kernel refuses."""
        if self._fd is not None:
            raise RuntimeError(f"TUN device {self.name} is already open")
        self._fd, self.name = open_tun(self.name)
        self.log.info("TUN device {name} open", name=self.name)

    def start_reading(self) -> None:
        if self._fd is not None and not self._reading:
            self.reactor.addReader(self)
            self._reading = True

    def stop_reading(self) -> None:
        if self._reading:
            self.reactor.removeReader(self)
            self._reading = False

    def close(self) -> None:
        self.stop_reading()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def write(self, packet: bytes) -> bool:
        """Inject one IP packet; a refused packet is counted, never raised."""
        fd = self._fd
        if fd is None:
            self.write_errors["EBADF"] += 1
            return False
        try:
            os.write(fd, packet)
        except OSError as exc:
            self.write_errors[errno_name(exc.errno)] += 1
            return False
        self.packets_written += 1
        return True

    # --- IReadDescriptor ---------------------------------------------------------

    def fileno(self) -> int:
        return self._fd if self._fd is not None else -1

    def logPrefix(self) -> str:
        return f"tun {self.name}"

    def doRead(self) -> Failure | None:
        fd = self._fd
        if fd is None:
            return None
        packets: list[bytes] = []
        failed: OSError | None = None
        while len(packets) < self.batch:
            try:
                packets.append(os.read(fd, MAX_PACKET))
            except BlockingIOError:
                break
            except OSError as exc:
                # A TUN read fails otherwise only when the device is gone (EBADFD).
                failed = exc
                break
        if packets:
            self.packets_read += len(packets)
            self.read_batches += 1
            try:
                self.on_packets(packets)
            except Exception:
                # Raised into the reactor, this would disconnect the device: one bad
                # packet must cost that batch, not the data plane.
                self.log.failure(
                    "dropped {count} packets from {name}", count=len(packets), name=self.name
                )
        if failed is not None:
            self._lost(failed.strerror or str(failed))
        return None

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw an error on the descriptor and has already removed us as a reader.
        self._reading = False
        self._lost(reason.getErrorMessage())

    def _lost(self, reason: str) -> None:
        self.log.error("TUN device {name} lost: {reason}", name=self.name, reason=reason)
        self.close()


class TunNetwork:
    """The MTU, local address and routes of one network device, over one rtnetlink socket."""

    log = Logger()

    def __init__(self, name: str) -> None:
        self.name = name
        self._ipr = IPRoute()
        self._index: int | None = None

    def configure(self, local_address: ipaddress.IPv4Address, mtu: int) -> None:
        """Set the MTU, add ``local_address/32`` and bring the device up; safe to repeat.

        IPv6 is switched off on the device first: sessions carry IPv4 only (IPV6CP is
        Protocol-Rejected), and an IPv6 device would send its own Router Solicitations
        into the data plane.
        """
        self._disable_ipv6()
        index = self._ifindex()
        try:
            self._ipr.link("set", index=index, mtu=mtu)
        except NetlinkError as exc:
            raise self._error(f"cannot set MTU {mtu} on {self.name}", exc) from exc
        try:
            self._ipr.addr("add", index=index, address=str(local_address), prefixlen=32)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise self._error(
                    f"cannot add address {local_address} to {self.name}", exc
                ) from exc
        try:
            self._ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise self._error(f"cannot bring {self.name} up", exc) from exc

    def _disable_ipv6(self) -> None:
        setting = f"/proc/sys/net/ipv6/conf/{self.name}/disable_ipv6"
        try:
            with open(setting, "w") as file:
                file.write("1")
        except FileNotFoundError:
            return  # a kernel without IPv6
        except OSError as exc:
            self.log.warn(
                "could not disable IPv6 on {name}: {reason}", name=self.name, reason=exc.strerror
            )

    def add_route(self, network: ipaddress.IPv4Network) -> None:
        """Route ``network`` out of the device, replacing any route to the same prefix."""
        try:
            self._ipr.route("replace", **self._route_keys(network))
        except NetlinkError as exc:
            raise self._error(f"cannot add route {network} via {self.name}", exc) from exc

    def remove_route(self, network: ipaddress.IPv4Network) -> None:
        """Remove our route to ``network``; a route that is not there is not an error."""
        try:
            self._ipr.route("del", **self._route_keys(network))
        except NetlinkError as exc:
            if exc.code != errno.ESRCH:
                raise self._error(f"cannot remove route {network} via {self.name}", exc) from exc

    def flush_routes(self) -> int:
        """Remove every route of ours on the device (left by a previous run); returns how many."""
        index = self._ifindex()
        try:
            dump = self._ipr.route(
                "dump", family=socket.AF_INET, table=RT_TABLE_MAIN, proto=RTPROT_LNS, oif=index
            )
        except NetlinkError as exc:
            raise self._error(f"cannot list the routes via {self.name}", exc) from exc
        ours = [
            ipaddress.IPv4Network(f"{route.get('dst') or '0.0.0.0'}/{route['dst_len']}")
            for route in dump
            if route["proto"] == RTPROT_LNS and route.get("oif") == index
        ]
        for network in ours:
            self.remove_route(network)
        return len(ours)

    def close(self) -> None:
        self._ipr.close()

    @property
    def index(self) -> int:
        """The device's interface index."""
        return self._ifindex()

    def _ifindex(self) -> int:
        if self._index is None:
            try:
                found = self._ipr.link_lookup(ifname=self.name)
            except NetlinkError as exc:
                raise self._error(f"cannot look up network device {self.name}", exc) from exc
            if not found:
                raise TunError(f"no network device {self.name}", errno.ENODEV)
            self._index = int(found[0])
        return self._index

    def _route_keys(self, network: ipaddress.IPv4Network) -> dict[str, object]:
        return {
            "dst": str(network.network_address),
            "dst_len": network.prefixlen,
            "oif": self._ifindex(),
            "scope": RT_SCOPE_LINK,
            "proto": RTPROT_LNS,
            "table": RT_TABLE_MAIN,
        }

    @staticmethod
    def _error(doing: str, exc: NetlinkError) -> TunError:
        code = exc.code if isinstance(exc.code, int) else None
        reason = os.strerror(code) if code is not None else str(exc)
        return TunError(f"{doing}: {reason}", code)
