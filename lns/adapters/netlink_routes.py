"""Per-session routes into the TUN device, changed without waiting, on the reactor.

A session that comes up needs a route for its address (and one per Framed-Route) and
loses them when it ends: two route changes per session, in the middle of a setup storm.
Through pyroute2's synchronous ``IPRoute.route()`` each one cost about 0.22 ms of the
reactor thread (request machinery, waiting for the answer): a sixth of the server's time
during a storm. Here the request is a pyroute2 ``rtmsg`` encoded once per kind of change
and prefix length, then copied with the sequence number and destination written in;
it goes out on a non-blocking rtnetlink socket of our own. The kernel applies a route
request inside the ``send`` call, so the route exists when ``send`` returns; its
acknowledgement is read later by the reactor, and a refusal is counted and logged with
the route it was about. Removing a route that is already gone is not an error.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections import Counter

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
RTA_DST = 1
RTN_UNICAST = 1
RECEIVE_BUFFER = 4 << 20

# struct nlmsghdr (length, type, flags, sequence, port id) and the error code that
# starts the payload of NLMSG_ERROR (0 for an acknowledgement): <linux/netlink.h>.
_HEADER = struct.Struct("=IHHII")
_ERROR_CODE = struct.Struct("=i")
_SEQUENCE_AT = 8
# After the header (16 bytes) and struct rtmsg (12), the first attribute: RTA_DST.
_DESTINATION_ATTRIBUTE_AT = 28
_DESTINATION_AT = 32
_DESTINATION_ATTRIBUTE = struct.pack("=HH", 8, RTA_DST)


def route_request(
    message_type: int, flags: int, prefix_length: int, device_index: int, protocol: int, scope: int
) -> bytes:
    """An rtnetlink route request for 0.0.0.0/``prefix_length`` out of the device."""
    message = rtmsg()
    message["family"] = socket.AF_INET
    message["dst_len"] = prefix_length
    message["table"] = 254  # RT_TABLE_MAIN
    message["proto"] = protocol
    message["scope"] = scope
    message["type"] = RTN_UNICAST
    message["attrs"] = [("RTA_DST", "0.0.0.0"), ("RTA_OIF", device_index)]
    message["header"]["type"] = message_type
    message["header"]["flags"] = flags
    message.encode()
    encoded = bytes(message.data)
    attribute = encoded[_DESTINATION_ATTRIBUTE_AT:_DESTINATION_AT]
    if attribute != _DESTINATION_ATTRIBUTE:  # the layout the copies below rely on
        raise RuntimeError(f"unexpected rtmsg layout: {encoded.hex()}")
    return encoded


@implementer(IReadDescriptor)
class RouteChanges:
    """Adds and removes routes out of one device; acknowledgements read by the reactor."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        device_name: str,
        device_index: int,
        protocol: int,
        scope: int,
    ) -> None:
        self.reactor = reactor
        self.device_name = device_name
        self.device_index = device_index
        self.protocol = protocol
        self.scope = scope
        self.sent = 0
        self.failures: Counter[str] = Counter()
        self._socket: socket.socket | None = None
        self._sequence = 0
        self._waiting: dict[int, tuple[str, ipaddress.IPv4Network]] = {}
        self._templates: dict[tuple[str, int], bytes] = {}

    def open(self) -> None:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((0, 0))
        self._socket = sock
        self.reactor.addReader(self)

    def close(self) -> None:
        if self._socket is not None:
            self.reactor.removeReader(self)
            self._socket.close()
            self._socket = None

    @property
    def waiting(self) -> int:
        """Requests sent whose acknowledgement has not been read yet."""
        return len(self._waiting)

    def add(self, network: ipaddress.IPv4Network) -> None:
        """Route ``network`` out of the device, replacing a route to the same prefix."""
        self._send("add", network)

    def remove(self, network: ipaddress.IPv4Network) -> None:
        self._send("remove", network)

    def _send(self, verb: str, network: ipaddress.IPv4Network) -> None:
        sock = self._socket
        if sock is None:
            self.failures["closed"] += 1
            return
        request = bytearray(self._template(verb, network.prefixlen))
        self._sequence = sequence = (self._sequence + 1) & 0xFFFFFFFF
        struct.pack_into("=I", request, _SEQUENCE_AT, sequence)
        request[_DESTINATION_AT : _DESTINATION_AT + 4] = network.network_address.packed
        try:
            sock.send(request)
        except OSError as exc:
            self._failed(verb, network, exc.errno or 0)
            return
        self.sent += 1
        self._waiting[sequence] = (verb, network)

    def _template(self, verb: str, prefix_length: int) -> bytes:
        key = (verb, prefix_length)
        template = self._templates.get(key)
        if template is None:
            if verb == "add":
                kind, flags = RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
            else:
                kind, flags = RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK
            template = route_request(
                kind, flags, prefix_length, self.device_index, self.protocol, self.scope
            )
            self._templates[key] = template
        return template

    # --- IReadDescriptor ---------------------------------------------------------

    def fileno(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self) -> str:
        return f"routes {self.device_name}"

    def doRead(self) -> None:
        sock = self._socket
        while sock is not None:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                # ENOBUFS: acknowledgements were lost; the routes themselves are in place.
                self.failures[errno.errorcode.get(exc.errno or 0, "error")] += 1
                self._waiting.clear()
                return
            self._answers(data)

    def _answers(self, data: bytes) -> None:
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, sequence, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                return
            request = self._waiting.pop(sequence, None)
            if kind == NLMSG_ERROR and request is not None:
                (code,) = _ERROR_CODE.unpack_from(data, offset + _HEADER.size)
                if code and not (request[0] == "remove" and -code == errno.ESRCH):
                    self._failed(request[0], request[1], -code)
            offset += (length + 3) & ~3

    def _failed(self, verb: str, network: ipaddress.IPv4Network, code: int) -> None:
        self.failures[errno.errorcode.get(code, str(code))] += 1
        self.log.error(
            "could not {verb} the route to {network} via {device}: {reason}",
            verb=verb,
            network=str(network),
            device=self.device_name,
            reason=os.strerror(code) if code else "unknown error",
        )

    def connectionLost(self, reason: Failure) -> None:
        self.close()
