"""A UDP socket that knows which of our addresses each datagram was sent to.

A LAC drops a reply that comes from another address than the one it sent to
(DESIGN.md section 3). With the socket bound to a wildcard address the kernel
would choose the reply's source, so we read the destination of every datagram
with IP_PKTINFO / IPV6_PKTINFO and send the reply from it. Reads are drained
in batches per wake-up of the reactor, and each batch is handed over whole, so
the receiver can answer its control messages before it starts the work they ask
for (the L2TP service does: DESIGN.md section 6).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Protocol

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

Address = tuple[str, int]
Received = tuple[bytes, Address, str | None]  # data, sender, our address it was sent to

# Linux values; Python's socket module does not export IP_PKTINFO.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
_ANCILLARY_SPACE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))
MAX_DATAGRAM = 65535


class DatagramSink(Protocol):
    def datagrams_received(self, batch: list[Received]) -> None:
        """The datagrams of one read, in arrival order."""


@implementer(IReadDescriptor)
class PktinfoUdpPort:
    """A non-blocking UDP socket registered with the reactor as a reader."""

    def __init__(
        self,
        host: str,
        port: int,
        sink: DatagramSink,
        reactor: IReactorFDSet,
        batch: int = 64,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.sink = sink
        self.reactor = reactor
        self.batch = batch
        self.send_errors = 0
        self.receive_errors = 0
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._wildcard = ipaddress.ip_address(host).is_unspecified
        # The ancillary data naming each local address we send from, made once each.
        self._source_options: dict[str, tuple[int, int, bytes]] = {}
        self._socket: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self._family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            _enlarge_buffers(sock)
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.reactor.addReader(self)

    @property
    def port(self) -> int:
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    def stop(self) -> None:
        if self._socket is None:
            return
        self.reactor.removeReader(self)
        self._socket.close()
        self._socket = None

    # --- IReadDescriptor ---------------------------------------------------------

    def fileno(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self) -> str:
        return "l2tp-udp"

    def connectionLost(self, reason: Failure) -> None:
        self.stop()

    def doRead(self) -> None:
        sock = self._socket
        if sock is None:
            return
        batch: list[Received] = []
        for _ in range(self.batch):
            try:
                data, ancillary, _flags, addr = sock.recvmsg(MAX_DATAGRAM, _ANCILLARY_SPACE)
            except BlockingIOError:
                break
            except OSError as exc:
                # ICMP errors from earlier sends surface here (ECONNREFUSED...).
                self.receive_errors += 1
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    break
                continue
            batch.append((data, (addr[0], addr[1]), self._destination(ancillary)))
        if batch:
            self.sink.datagrams_received(batch)

    def _destination(self, ancillary: list[tuple[int, int, bytes]]) -> str | None:
        for level, kind, data in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                _ifindex, _spec, addr = _IN_PKTINFO.unpack_from(data)
                return socket.inet_ntop(socket.AF_INET, addr)
            if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
                addr6, _ifindex6 = _IN6_PKTINFO.unpack_from(data)
                return socket.inet_ntop(socket.AF_INET6, addr6)
        return None

    # --- output ------------------------------------------------------------------

    def send(self, data: bytes, peer: Address, local: str | None = None) -> None:
        """Send ``data`` to ``peer`` from ``local`` (the address the peer wrote to)."""
        sock = self._socket
        if sock is None:
            self.send_errors += 1
            return
        try:
            if self._wildcard and local is not None:
                option = self._source_options.get(local)
                if option is None:
                    option = self._source_options[local] = self._source_option(local)
                sock.sendmsg([data], [option], 0, peer)
            else:
                sock.sendto(data, peer)
        except OSError:
            # A full socket buffer or an unreachable peer: the reliable layer retransmits.
            self.send_errors += 1

    def _source_option(self, local: str) -> tuple[int, int, bytes]:
        if self._family == socket.AF_INET:
            spec = socket.inet_pton(socket.AF_INET, local)
            return (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, spec, bytes(4)))
        addr6 = socket.inet_pton(socket.AF_INET6, local)
        return (socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(addr6, 0))


# Socket buffers for bursts: thousands of LACs' messages (or sessions' echoes) can arrive
# between two reads, and the kernel's default (about 208 KiB) then drops them, costing
# retransmissions and, for echoes, sessions. Root may exceed net.core.rmem_max/wmem_max
# (the FORCE options); anyone else gets what the limits allow.
SOCKET_BUFFER_BYTES = 8 << 20


def _enlarge_buffers(sock: socket.socket) -> None:
    for forced, plain in (
        (SO_RCVBUFFORCE, socket.SO_RCVBUF),
        (SO_SNDBUFFORCE, socket.SO_SNDBUF),
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER_BYTES)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)
