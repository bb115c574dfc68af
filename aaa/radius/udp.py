"""RADIUS over UDP (RFC 2865): one server port's sockets, Identifiers and retransmissions.

- Identifiers are per socket: at most 256 requests in flight on one socket; when
  all are taken another socket is opened for that server port (up to
  `max_sockets`). A reply is matched by (socket, Identifier) and must come from
  the server's address and port.
- A request is sent again with the same Identifier and authenticator every
  `timeout` seconds, up to the number of transmissions its exchange allows (RFC
  5080 section 2.2.1: a retransmission is the same packet). When no reply came,
  the port is marked dead and the exchange tries the next server.
"""

from __future__ import annotations

import ipaddress
import random

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

from aaa.radius.exchange import Attempt, ClientSettings, Exchange, ServerPort
from aaa.radius.packet import encode_request
from lns.config import RadiusServer

__all__ = ["IDENTIFIERS", "MAX_DATAGRAM", "UdpServerPort"]

IDENTIFIERS = 256
MAX_DATAGRAM = 4096  # the largest RADIUS packet (RFC 2865 section 3)


class _Socket(DatagramProtocol):
    """One UDP socket towards one server port, with its 256 Identifiers."""

    def __init__(self, port: UdpServerPort) -> None:
        self.server_port = port
        self.outstanding: dict[int, Attempt] = {}
        self.listening: IListeningPort | None = None
        self._next = random.randrange(IDENTIFIERS)

    def allocate(self) -> int | None:
        """A free Identifier, None when all 256 are in flight."""
        if len(self.outstanding) >= IDENTIFIERS:
            return None
        # Round robin from a random start, so a recently freed Identifier is reused last
        # and a late reply to it is less likely to meet a new request.
        while self._next in self.outstanding:
            self._next = (self._next + 1) % IDENTIFIERS
        identifier = self._next
        self._next = (self._next + 1) % IDENTIFIERS
        return identifier

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.server_port.received(self, datagram, addr)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data, self.server_port.address)


class UdpServerPort(ServerPort):
    """One server's authentication or accounting port: sockets, retransmission, counters."""

    def __init__(
        self,
        settings: ClientSettings,
        udp: IReactorUDP,
        server: RadiusServer,
        port: int,
        max_sockets: int = 16,
    ) -> None:
        super().__init__(settings, server, port)
        self.udp = udp
        self.max_sockets = max_sockets
        self.sockets: list[_Socket] = []

    # --- sending ------------------------------------------------------------------------------

    def begin(self, exchange: Exchange, transmissions: int) -> Attempt | str:
        slot = self._allocate()
        if slot is None:
            return "all identifiers in use"
        sock, identifier = slot
        encoded = encode_request(exchange.request, identifier, self.server.secret.value)
        attempt = Attempt(exchange, self, transmissions)
        attempt.encoded = encoded
        attempt.carrier = sock
        sock.outstanding[identifier] = attempt
        self.stats.requests += 1
        self._transmit(attempt)
        return attempt

    def cancel(self, attempt: Attempt) -> None:
        attempt.stop_timer()
        sock = attempt.carrier
        if (
            isinstance(sock, _Socket)
            and attempt.encoded is not None
            and sock.outstanding.get(attempt.encoded.identifier) is attempt
        ):
            del sock.outstanding[attempt.encoded.identifier]
        attempt.carrier = None

    def _allocate(self) -> tuple[_Socket, int] | None:
        for sock in self.sockets:
            identifier = sock.allocate()
            if identifier is not None:
                return sock, identifier
        if len(self.sockets) >= self.max_sockets:
            return None
        sock = self._open_socket()
        identifier = sock.allocate()
        assert identifier is not None
        return sock, identifier

    def _transmit(self, attempt: Attempt) -> None:
        assert isinstance(attempt.carrier, _Socket)
        assert attempt.encoded is not None
        attempt.transmissions += 1
        attempt.carrier.send(attempt.encoded.data)
        attempt.timer = self.settings.clock.callLater(self.server.timeout, self._timed_out, attempt)

    def _timed_out(self, attempt: Attempt) -> None:
        attempt.timer = None
        if attempt.transmissions < attempt.transmissions_allowed:
            self.stats.retransmissions += 1
            self._transmit(attempt)
            return
        self.stats.timed_out(attempt)
        self.cancel(attempt)
        self.mark_dead(self.settings.clock.seconds())
        plural = "s" if attempt.transmissions > 1 else ""
        attempt.exchange.gave_up(
            attempt, f"no reply after {attempt.transmissions} transmission{plural}"
        )

    # --- receiving ----------------------------------------------------------------------------

    def received(self, sock: _Socket, datagram: bytes, addr: tuple[str, int]) -> None:
        now = self.settings.clock.seconds()
        if not self._from_server(addr):
            self.stats.foreign += 1
            self.dropped(now, "reply from another address", source=f"{addr[0]}:{addr[1]}")
            return
        if len(datagram) < 20:
            self.stats.malformed += 1
            self.dropped(now, f"{len(datagram)}-octet datagram")
            return
        attempt = sock.outstanding.get(datagram[1])
        if attempt is None:
            self.stats.unmatched += 1
            return  # a late reply to a request already answered or given up: normal
        reply = self.accept_reply(
            datagram, attempt, now, require_signature=self.settings.require_message_authenticator
        )
        if reply is None:
            return  # dropped; the request keeps waiting for the real reply
        self.cancel(attempt)
        attempt.exchange.answered(attempt, reply)

    def _from_server(self, addr: tuple[str, int]) -> bool:
        try:
            host = ipaddress.ip_address(addr[0].split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
            host = host.ipv4_mapped
        return host == self.server.address and addr[1] == self.address[1]

    # --- sockets ------------------------------------------------------------------------------

    def open(self) -> None:
        if not self.sockets:
            self._open_socket()

    def _open_socket(self) -> _Socket:
        sock = _Socket(self)
        interface = "::" if self.server.address.version == 6 else "0.0.0.0"
        sock.listening = self.udp.listenUDP(
            0, sock, interface=interface, maxPacketSize=MAX_DATAGRAM
        )
        self.sockets.append(sock)
        return sock

    def close(self) -> defer.Deferred[None]:
        stopped: list[defer.Deferred[None]] = []
        for sock in self.sockets:
            if sock.listening is not None:
                result = sock.listening.stopListening()
                if isinstance(result, defer.Deferred):
                    stopped.append(result)
        self.sockets = []
        done = defer.DeferredList(stopped, consumeErrors=True)
        return done.addCallback(lambda _: None)
