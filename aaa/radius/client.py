"""A RADIUS client on Twisted: failover across servers and transports (RFC 2865, RFC 5080,
RFC 6614).

One :class:`RadiusClient` serves every RADIUS exchange of the node: Access-Request,
Accounting-Request and Status-Server (:meth:`RadiusClient.send_auth`,
:meth:`RadiusClient.send_acct`). Nothing blocks: sockets and connections live in the
reactor, and timeouts are reactor timers (a `task.Clock` in tests).

A server of `[[aaa.radius]]` is reached over UDP (`transport = "udp"`, its
authentication and accounting ports: `udp.UdpServerPort`) or over TLS
(`transport = "tls"`, RadSec: one connection for everything, `radsec.RadsecServerPort`).
The rules below hold for both, in one order:

- A request goes to the first live server in `[[aaa.radius]]` order. Over UDP it is
  sent again with the same Identifier and authenticator every `timeout` seconds,
  `retries` times (RFC 5080 section 2.2.1: a retransmission is the same packet);
  over TLS it is sent once and waits `timeout` seconds (RFC 6613 section 2.5). When
  no reply came, that server is marked dead for `dead_time` seconds and the request
  goes to the next server, encoded anew with that server's secret.
- Dead servers are skipped while a live one remains; after them every dead server
  is still tried once, without retransmission, so that an outage ends as soon as
  a server answers and a request never waits for more than
  sum(timeout x (retries + 1)) over live UDP servers, plus one timeout per live TLS
  server and per dead server. A RadSec server whose connection is down is skipped
  at once, saying why ("not connected: certificate expired ..."). A server that
  answers is live again: requests go back to it first.
- Every reply is verified (`packet.decode_reply`): a bad Response Authenticator or
  Message-Authenticator, a malformed reply or one from elsewhere is dropped and
  counted, and the request keeps waiting for the real reply. With
  `require_message_authenticator`, a reply over UDP to an Access-Request or
  Status-Server without a valid Message-Authenticator is dropped as well
  (BlastRADIUS, CVE-2024-3596) and logged; over TLS it is not needed.
- When no server answered, the Deferred fails with :class:`RadiusUnavailable`,
  whose message says what happened on each server; it never holds a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IReactorUDP
from twisted.logger import Logger

from aaa.radius.exchange import Attempt, ClientSettings, ServerPort, ServerStats
from aaa.radius.packet import RadiusPacketError, Reply, Request
from aaa.radius.radsec import RadsecServerPort
from aaa.radius.tls import RadsecTls
from aaa.radius.udp import UdpServerPort
from lns.config import RadiusServer
from lns.runtime import Backlog

__all__ = [
    "DEFAULT_DEAD_TIME",
    "RadiusClient",
    "RadiusClientService",
    "RadiusUnavailable",
    "ServerStats",
]

DEFAULT_DEAD_TIME = 30.0

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


class _Transaction:
    """One request from `send` to its reply or to RadiusUnavailable: the failover."""

    def __init__(
        self,
        client: RadiusClient,
        request: Request,
        candidates: list[tuple[ServerPort, int]],
    ) -> None:
        self.client = client
        self.request = request
        self.candidates = candidates
        self.failures: list[str] = []
        self.attempt: Attempt | None = None
        self.deferred: defer.Deferred[Reply] = defer.Deferred(self._cancel)
        self.done = False

    def start(self) -> None:
        self._next_server()

    def _next_server(self) -> None:
        while self.candidates:
            port, transmissions = self.candidates.pop(0)
            try:
                started = port.begin(self, transmissions)
            except RadiusPacketError as exc:
                # The request itself is at fault: no other server would take it either.
                self._finish_error(exc)
                return
            if isinstance(started, str):
                self.failures.append(f"{port.label}: {started}")
                continue
            self.attempt = started
            return
        self._finish_error(RadiusUnavailable("no RADIUS server answered", self.failures))

    # --- what the transports report (aaa.radius.exchange.Exchange) --------------------------

    def answered(self, attempt: Attempt, reply: Reply) -> None:
        if self.done or attempt is not self.attempt:
            return
        self.done = True
        self.attempt = None
        self.client._finished(self)
        if self.client.backlog is None:
            self.deferred.callback(reply)
        else:  # the session goes on in its turn (unless it went away meanwhile)
            self.client.backlog.add(partial(self._deliver, reply))

    def _deliver(self, reply: Reply) -> None:
        if not self.deferred.called:
            self.deferred.callback(reply)

    def gave_up(self, attempt: Attempt, reason: str) -> None:
        if self.done or attempt is not self.attempt:
            return
        self.attempt = None
        self.failures.append(f"{attempt.port.label}: {reason}")
        self._next_server()

    def broken(self, attempt: Attempt, error: RadiusPacketError) -> None:
        if self.done or attempt is not self.attempt:
            return
        self.attempt = None
        self._finish_error(error)

    # --- the end ------------------------------------------------------------------------------

    def abort(self, error: Exception) -> None:
        if not self.done:
            self._finish_error(error)

    def _release(self) -> None:
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            attempt.port.cancel(attempt)

    def _finish_error(self, error: Exception) -> None:
        self.done = True
        self._release()
        self.client._finished(self)
        self.deferred.errback(error)

    def _cancel(self, deferred: defer.Deferred[Reply]) -> None:
        # The caller gave up (the session went away): free the Identifier and timer.
        # Deferred.cancel then fails the Deferred with CancelledError.
        self.done = True
        self._release()
        self.client._finished(self)


class RadiusClient:
    """RADIUS requests to the `[[aaa.radius]]` servers, in order, with failover.

    `reactor` must provide IReactorUDP (the UDP sockets), IReactorTCP when a server
    is `transport = "tls"`, and IReactorTime (timeouts); `clock` overrides the
    latter (tests drive timeouts with a `task.Clock`); `backlog`, the node's, is where
    each answer's requester goes on, in its turn (none: at once). Call :meth:`start` before
    sending (it opens one socket per UDP server port, so that a failure to open one
    shows at start, and the RadSec connections) and :meth:`stop` at the end.
    Building the client reads the RadSec credentials: a `tls.TlsSetupError` (a
    ValueError) names the key and the file when one cannot be used.
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
        backlog: Backlog | None = None,
    ) -> None:
        self.servers = tuple(servers)
        if not self.servers:
            raise ValueError("a RADIUS client needs at least one [[aaa.radius]] server")
        if clock is None:
            clock = IReactorTime(reactor)
        self.clock = clock
        self.require_message_authenticator = require_message_authenticator
        self.dead_time = dead_time
        settings = ClientSettings(clock, dead_time, require_message_authenticator)
        self.auth_endpoints: list[ServerPort] = []
        self.acct_endpoints: list[ServerPort] = []
        for server in self.servers:
            if server.transport == "tls":
                radsec = RadsecServerPort(settings, IReactorTCP(reactor), server, RadsecTls(server))
                self.auth_endpoints.append(radsec)
                self.acct_endpoints.append(radsec)
            else:
                for ports, number in (
                    (self.auth_endpoints, server.auth_port),
                    (self.acct_endpoints, server.acct_port),
                ):
                    ports.append(UdpServerPort(settings, reactor, server, number, max_sockets))
        self.running = False
        self._transactions: set[_Transaction] = set()
        # Where each answer's requester goes on, in its turn (None: at once).
        self.backlog = backlog

    @property
    def ports(self) -> list[ServerPort]:
        """Every server port once, in `[[aaa.radius]]` order (a RadSec server is one)."""
        unique: dict[int, ServerPort] = {}
        for port in self.auth_endpoints + self.acct_endpoints:
            unique.setdefault(id(port), port)
        return list(unique.values())

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        for port in self.ports:
            port.open()

    def stop(self) -> defer.Deferred[None]:
        """Fail every request in flight with RadiusUnavailable; close sockets and connections."""
        self.running = False
        for transaction in list(self._transactions):
            transaction.abort(RadiusUnavailable("RADIUS client stopped"))
        closed = [port.close() for port in self.ports]
        done = defer.DeferredList(closed, consumeErrors=True)
        return done.addCallback(lambda _: None)

    # --- requests ---------------------------------------------------------------------

    def send_auth(self, request: Request) -> defer.Deferred[Reply]:
        """Send an Access-Request (or Status-Server) to the authentication ports."""
        return self._send(request, self.auth_endpoints)

    def send_acct(self, request: Request) -> defer.Deferred[Reply]:
        """Send an Accounting-Request (or Status-Server) to the accounting ports."""
        return self._send(request, self.acct_endpoints)

    def _send(self, request: Request, ports: Sequence[ServerPort]) -> defer.Deferred[Reply]:
        if not self.running:
            return defer.fail(RadiusUnavailable("RADIUS client not running"))
        now = self.clock.seconds()
        live = [(p, p.server.retries + 1) for p in ports if p.alive(now)]
        dead = [(p, 1) for p in ports if not p.alive(now)]
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
        """Counters by server port ("127.0.0.1:1812"; a RadSec server's "127.0.0.1:2083")."""
        return {port.label: port.stats for port in self.ports}


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
