"""A RADIUS client on Twisted: identifiers, retransmission, failover (RFC 2865, RFC 5080).

One :class:`RadiusClient` serves every RADIUS exchange of the node: Access-Request
today, Accounting-Request and Status-Server through the same client
(:meth:`RadiusClient.send_auth`, :meth:`RadiusClient.send_acct`).
Nothing blocks: each server port has its own UDP sockets in the reactor, and the
timeouts are reactor timers (a `task.Clock` in tests).

- Identifiers are per socket: at most 256 requests in flight on one socket; when
  all are taken another socket is opened for that server (up to `max_sockets`).
  A reply is matched by (socket, Identifier) and must come from the server's
  address and port.
- A request goes to the first live server in `[[aaa.radius]]` order and is sent
  again with the same Identifier and authenticator every `timeout` seconds,
  `retries` times (RFC 5080 section 2.2.1: a retransmission is the same packet).
  When no reply came, that server is marked dead for `dead_time` seconds and the
  request goes to the next server, encoded anew with that server's secret.
- Dead servers are skipped while a live one remains; after them every dead server
  is still tried once, without retransmission, so that an outage ends as soon as
  a server answers and a request never waits for more than
  sum(timeout x (retries + 1)) over live servers plus one timeout per dead one.
  A server that answers is live again: requests go back to it first.
- Every reply is verified (`packet.decode_reply`): a bad Response Authenticator or
  Message-Authenticator, a malformed reply or one from elsewhere is dropped and
  counted, and the request keeps waiting for the real reply. With
  `require_message_authenticator`, a reply to an Access-Request or Status-Server
  without a valid Message-Authenticator is dropped as well (BlastRADIUS,
  CVE-2024-3596) and logged.
- When no server answered, the Deferred fails with :class:`RadiusUnavailable`,
  whose message says what happened on each server; it never holds a secret.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from aaa.radius.packet import (
    BadMessageAuthenticator,
    BadResponseAuthenticator,
    Code,
    EncodedRequest,
    RadiusPacketError,
    Reply,
    Request,
    decode_reply,
    encode_request,
)
from lns.config import RadiusServer
from lns.runtime import RateLimit

__all__ = [
    "DEFAULT_DEAD_TIME",
    "RadiusClient",
    "RadiusClientService",
    "RadiusUnavailable",
    "ServerStats",
]

DEFAULT_DEAD_TIME = 30.0
IDENTIFIERS = 256
MAX_DATAGRAM = 4096  # the largest RADIUS packet (RFC 2865 section 3)
# Requests whose replies must be signed when `require_message_authenticator` is on.
_SIGNED_REPLIES = frozenset({Code.ACCESS_REQUEST, Code.STATUS_SERVER})

log = Logger()


class RadiusUnavailable(Exception):
    """No RADIUS server answered the request (or the client is stopped).

    `str()` is one line: the reason, then what happened on each server tried.
    """

    def __init__(self, reason: str, attempts: Sequence[str] = ()) -> None:
        super().__init__(reason, tuple(attempts))
        self.reason = reason
        self.attempts = tuple(attempts)

    def __str__(self) -> str:
        if self.attempts:
            return f"{self.reason}: {'; '.join(self.attempts)}"
        return self.reason


@dataclass(slots=True)
class ServerStats:
    """Counters of one server port."""

    requests: int = 0  # requests sent there (first transmissions)
    retransmissions: int = 0
    timeouts: int = 0  # requests that got no reply there after every retransmission
    replies: int = 0  # replies accepted
    bad_authenticator: int = 0  # Response Authenticator wrong: other secret or forgery
    bad_message_authenticator: int = 0
    unsigned_dropped: int = 0  # no Message-Authenticator while one is required
    malformed: int = 0
    unmatched: int = 0  # no request in flight with that Identifier (late, duplicate)
    foreign: int = 0  # from an address or port other than the server's


class _Socket(DatagramProtocol):
    """One UDP socket towards one server port, with its 256 Identifiers."""

    def __init__(self, endpoint: _Endpoint) -> None:
        self.endpoint = endpoint
        self.outstanding: dict[int, _Attempt] = {}
        self.port: IListeningPort | None = None
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
        self.endpoint.received(self, datagram, addr)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data, self.endpoint.address)


class _Endpoint:
    """One server's authentication or accounting port: sockets, liveness, counters."""

    def __init__(self, client: RadiusClient, server: RadiusServer, port: int) -> None:
        self.client = client
        self.server = server
        self.address = (str(server.address), port)
        host = f"[{server.address}]" if server.address.version == 6 else str(server.address)
        self.label = f"{host}:{port}"
        self.sockets: list[_Socket] = []
        self.dead_until: float | None = None
        self.stats = ServerStats()
        self._drop_log = RateLimit(10)

    def alive(self, now: float) -> bool:
        return self.dead_until is None or now >= self.dead_until

    def allocate(self) -> tuple[_Socket, int] | None:
        for sock in self.sockets:
            identifier = sock.allocate()
            if identifier is not None:
                return sock, identifier
        if len(self.sockets) >= self.client.max_sockets:
            return None
        sock = self.open_socket()
        identifier = sock.allocate()
        assert identifier is not None
        return sock, identifier

    def open_socket(self) -> _Socket:
        sock = _Socket(self)
        interface = "::" if self.server.address.version == 6 else "0.0.0.0"
        sock.port = self.client.udp.listenUDP(
            0, sock, interface=interface, maxPacketSize=MAX_DATAGRAM
        )
        self.sockets.append(sock)
        return sock

    def received(self, sock: _Socket, datagram: bytes, addr: tuple[str, int]) -> None:
        now = self.client.clock.seconds()
        if not self._from_server(addr):
            self.stats.foreign += 1
            self._dropped(now, "reply from another address", source=f"{addr[0]}:{addr[1]}")
            return
        if len(datagram) < 20:
            self.stats.malformed += 1
            self._dropped(now, f"{len(datagram)}-octet datagram")
            return
        attempt = sock.outstanding.get(datagram[1])
        if attempt is None:
            self.stats.unmatched += 1
            return  # a late reply to a request already answered or given up: normal
        try:
            reply = decode_reply(datagram, attempt.encoded, self.server.secret.value)
        except BadResponseAuthenticator:
            self.stats.bad_authenticator += 1
            self._dropped(now, "bad Response Authenticator (wrong secret or forged)")
            return
        except BadMessageAuthenticator as exc:
            self.stats.bad_message_authenticator += 1
            self._dropped(now, f"{exc} (wrong secret or forged)")
            return
        except RadiusPacketError as exc:
            self.stats.malformed += 1
            self._dropped(now, str(exc))
            return
        if (
            self.client.require_message_authenticator
            and not reply.message_authenticator
            and attempt.encoded.code in _SIGNED_REPLIES
        ):
            self.stats.unsigned_dropped += 1
            self._dropped(
                now,
                f"{reply.code.name} without Message-Authenticator while "
                "require_message_authenticator is on (BlastRADIUS, CVE-2024-3596)",
            )
            return
        self.stats.replies += 1
        if self.dead_until is not None:
            self.dead_until = None
            log.info("RADIUS server {server} answers again", server=self.label)
        attempt.transaction.answered(attempt, reply)

    def _from_server(self, addr: tuple[str, int]) -> bool:
        try:
            host = ipaddress.ip_address(addr[0].split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
            host = host.ipv4_mapped
        return host == self.server.address and addr[1] == self.address[1]

    def _dropped(self, now: float, reason: str, source: str = "") -> None:
        if self._drop_log.allow(now):
            log.warn(
                "RADIUS reply from {server} dropped: {reason}",
                server=source or self.label,
                reason=reason,
            )

    def mark_dead(self, now: float) -> None:
        was_alive = self.alive(now)
        self.dead_until = now + self.client.dead_time
        if was_alive:
            log.warn(
                "RADIUS server {server} marked dead for {seconds:g} s: no reply",
                server=self.label,
                seconds=self.client.dead_time,
            )

    def close(self) -> list[defer.Deferred[None]]:
        stopped: list[defer.Deferred[None]] = []
        for sock in self.sockets:
            if sock.port is not None:
                result = sock.port.stopListening()
                if isinstance(result, defer.Deferred):
                    stopped.append(result)
        self.sockets = []
        return stopped


class _Attempt:
    """The request encoded for one server, on one socket with one Identifier."""

    def __init__(
        self,
        transaction: _Transaction,
        endpoint: _Endpoint,
        sock: _Socket,
        encoded: EncodedRequest,
        transmissions_allowed: int,
    ) -> None:
        self.transaction = transaction
        self.endpoint = endpoint
        self.sock = sock
        self.encoded = encoded
        self.transmissions = 0
        self.transmissions_allowed = transmissions_allowed
        self.timer: IDelayedCall | None = None

    def release(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.sock.outstanding.get(self.encoded.identifier) is self:
            del self.sock.outstanding[self.encoded.identifier]


class _Transaction:
    """One request from `send` to its reply or to RadiusUnavailable."""

    def __init__(
        self,
        client: RadiusClient,
        request: Request,
        candidates: list[tuple[_Endpoint, int]],
    ) -> None:
        self.client = client
        self.request = request
        self.candidates = candidates
        self.failures: list[str] = []
        self.attempt: _Attempt | None = None
        self.deferred: defer.Deferred[Reply] = defer.Deferred(self._cancel)
        self.done = False

    def start(self) -> None:
        self._next_server()

    def _next_server(self) -> None:
        while self.candidates:
            endpoint, transmissions = self.candidates.pop(0)
            slot = endpoint.allocate()
            if slot is None:
                self.failures.append(f"{endpoint.label}: all identifiers in use")
                continue
            sock, identifier = slot
            try:
                encoded = encode_request(self.request, identifier, endpoint.server.secret.value)
            except RadiusPacketError as exc:
                # The request itself is at fault: no other server would take it either.
                self._finish_error(exc)
                return
            attempt = _Attempt(self, endpoint, sock, encoded, transmissions)
            sock.outstanding[identifier] = attempt
            self.attempt = attempt
            endpoint.stats.requests += 1
            self._transmit(attempt)
            return
        self._finish_error(RadiusUnavailable("no RADIUS server answered", self.failures))

    def _transmit(self, attempt: _Attempt) -> None:
        attempt.transmissions += 1
        attempt.sock.send(attempt.encoded.data)
        attempt.timer = self.client.clock.callLater(
            attempt.endpoint.server.timeout, self._timed_out, attempt
        )

    def _timed_out(self, attempt: _Attempt) -> None:
        attempt.timer = None
        if self.done or attempt is not self.attempt:
            return
        endpoint = attempt.endpoint
        if attempt.transmissions < attempt.transmissions_allowed:
            endpoint.stats.retransmissions += 1
            self._transmit(attempt)
            return
        endpoint.stats.timeouts += 1
        attempt.release()
        self.attempt = None
        endpoint.mark_dead(self.client.clock.seconds())
        self.failures.append(
            f"{endpoint.label}: no reply after {attempt.transmissions} "
            f"transmission{'s' if attempt.transmissions > 1 else ''}"
        )
        self._next_server()

    def answered(self, attempt: _Attempt, reply: Reply) -> None:
        if self.done or attempt is not self.attempt:
            return
        self.done = True
        attempt.release()
        self.attempt = None
        self.client._finished(self)
        self.deferred.callback(reply)

    def abort(self, error: Exception) -> None:
        if not self.done:
            self._finish_error(error)

    def _finish_error(self, error: Exception) -> None:
        self.done = True
        if self.attempt is not None:
            self.attempt.release()
            self.attempt = None
        self.client._finished(self)
        self.deferred.errback(error)

    def _cancel(self, deferred: defer.Deferred[Reply]) -> None:
        # The caller gave up (the session went away): free the Identifier and timer.
        # Deferred.cancel then fails the Deferred with CancelledError.
        self.done = True
        if self.attempt is not None:
            self.attempt.release()
            self.attempt = None
        self.client._finished(self)


class RadiusClient:
    """RADIUS requests to the `[[aaa.radius]]` servers, in order, with failover.

    `reactor` must provide IReactorUDP (the sockets) and IReactorTime (timeouts);
    `clock` overrides the latter (tests drive timeouts with a `task.Clock`).
    Call :meth:`start` before sending (it opens one socket per server port so that
    a failure to open one shows at start) and :meth:`stop` at the end.
    """

    def __init__(
        self,
        servers: Iterable[RadiusServer],
        reactor: IReactorUDP,
        require_message_authenticator: bool,
        *,
        clock: IReactorTime | None = None,
        dead_time: float = DEFAULT_DEAD_TIME,
        max_sockets: int = 16,
    ) -> None:
        self.servers = tuple(servers)
        if not self.servers:
            raise ValueError("a RADIUS client needs at least one [[aaa.radius]] server")
        self.udp = reactor
        if clock is None:
            clock = IReactorTime(reactor)
        self.clock = clock
        self.require_message_authenticator = require_message_authenticator
        self.dead_time = dead_time
        self.max_sockets = max_sockets
        self.auth_endpoints = [_Endpoint(self, s, s.auth_port) for s in self.servers]
        self.acct_endpoints = [_Endpoint(self, s, s.acct_port) for s in self.servers]
        self.running = False
        self._transactions: set[_Transaction] = set()

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        for endpoint in self.auth_endpoints + self.acct_endpoints:
            if not endpoint.sockets:
                endpoint.open_socket()

    def stop(self) -> defer.Deferred[None]:
        """Fail every request in flight with RadiusUnavailable and close the sockets."""
        self.running = False
        for transaction in list(self._transactions):
            transaction.abort(RadiusUnavailable("RADIUS client stopped"))
        stopped: list[defer.Deferred[None]] = []
        for endpoint in self.auth_endpoints + self.acct_endpoints:
            stopped.extend(endpoint.close())
        done = defer.DeferredList(stopped, consumeErrors=True)
        return done.addCallback(lambda _: None)

    # --- requests ---------------------------------------------------------------------

    def send_auth(self, request: Request) -> defer.Deferred[Reply]:
        """Send an Access-Request (or Status-Server) to the authentication ports."""
        return self._send(request, self.auth_endpoints)

    def send_acct(self, request: Request) -> defer.Deferred[Reply]:
        """Send an Accounting-Request (or Status-Server) to the accounting ports."""
        return self._send(request, self.acct_endpoints)

    def _send(self, request: Request, endpoints: Sequence[_Endpoint]) -> defer.Deferred[Reply]:
        if not self.running:
            return defer.fail(RadiusUnavailable("RADIUS client not running"))
        now = self.clock.seconds()
        live = [(e, e.server.retries + 1) for e in endpoints if e.alive(now)]
        dead = [(e, 1) for e in endpoints if not e.alive(now)]
        transaction = _Transaction(self, request, live + dead)
        self._transactions.add(transaction)
        transaction.start()
        return transaction.deferred

    def _finished(self, transaction: _Transaction) -> None:
        self._transactions.discard(transaction)

    # --- introspection ----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._transactions)

    def stats(self) -> dict[str, ServerStats]:
        """Counters by server port ("127.0.0.1:1812")."""
        return {e.label: e.stats for e in self.auth_endpoints + self.acct_endpoints}


class RadiusClientService(service.Service):
    """Starts and stops a RadiusClient with the node's other services."""

    def __init__(self, client: RadiusClient) -> None:
        self.client = client

    def startService(self) -> None:
        service.Service.startService(self)
        self.client.start()

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        return self.client.stop()
