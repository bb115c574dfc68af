"""RADIUS over TLS to one server (RadSec, RFC 6614; RADIUS over TCP, RFC 6613).

- One TLS connection per server (TCP port 2083 by default), opened when the
  client starts and used for everything: Access-Request, Accounting-Request,
  Status-Server. The server's certificate is checked by `tls.RadsecTls`
  (`optionsForClientTLS`: the `ca` file, the dates, `server_name` through
  service_identity); a refused one is logged with the reason and the server is
  marked dead.
- Framing (RFC 6613 section 2.1): packets follow one another, each as long as its
  Length field says. A Length below 20 or above 4096 leaves no way to find the
  next packet: the connection is closed and opened anew.
- Identifiers belong to the connection (RFC 6613 section 2.6.5): at most 256
  requests in flight on it, the others wait in a queue for a free Identifier.
- No retransmission (RFC 6613 section 2.5, RFC 5080 section 2.2.1): a request is
  sent once on a connection. When its reply has not come within `timeout`, the
  server is marked dead and the exchange goes to the next server, as for UDP. A
  timeout says nothing sure about the connection (section 2.6.1), so it is kept,
  and a Status-Server (RFC 5997) probes it; when that goes unanswered for
  `timeout`, the connection is closed and opened anew.
- Kept alive: after `keepalive_interval` seconds without a packet from the
  server, a Status-Server; its answer also shows that the shared secret matches.
  A Status-Server is sent as soon as a connection opens, too, so a server marked
  dead is live again as soon as it answers.
- A connection that drops: the requests in flight on it wait for the next
  connection, opened at once, and are sent there again with new Identifiers,
  within their own `timeout`; when the new connection cannot be opened they go
  to the next server at once. Connections that fail are retried after 1, 2, 4 ...
  up to 30 s; the delay starts over once the server answers.
- Replies are verified as over UDP (Response Authenticator, a Message-Authenticator
  when present) but need no Message-Authenticator: TLS authenticates them, and
  BlastRADIUS (CVE-2024-3596) forges the MD5 of a reply sent in the clear.
"""

from __future__ import annotations

import contextlib
import random
from collections import deque

from twisted.internet import defer
from twisted.internet.interfaces import (
    IConnector,
    IDelayedCall,
    IHandshakeListener,
    IReactorTCP,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from aaa.radius.exchange import Attempt, ClientSettings, Exchange, ServerPort
from aaa.radius.packet import (
    HEADER_LENGTH,
    MAX_PACKET_LENGTH,
    RadiusPacketError,
    Reply,
    encode_request,
    status_server,
)
from aaa.radius.tls import RadsecTls
from lns.config import RadiusServer
from lns.runtime import RateLimit

__all__ = ["BACKOFF_CAP", "RadsecServerPort"]

IDENTIFIERS = 256
BACKOFF_CAP = 30.0  # seconds between attempts to connect, at most
REPEAT_LOG = 300.0  # the same connection failure is logged again after this long

log = Logger()


@implementer(IHandshakeListener)
class _Connection(Protocol):
    """One TLS connection's RADIUS stream: framing and the Identifiers in flight."""

    def __init__(self, port: RadsecServerPort) -> None:
        self.port = port
        self.buffer = bytearray()
        self.outstanding: dict[int, Attempt] = {}  # in the order they were sent
        self.opened = False  # handshake done, certificate accepted
        self.answered = False  # the server answered on it at least once
        self.gone = False
        self._next = random.randrange(IDENTIFIERS)

    def handshakeCompleted(self) -> None:
        self.opened = True
        self.port.connection_opened(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4 and not self.gone:
            length = int.from_bytes(self.buffer[2:4], "big")
            if not HEADER_LENGTH <= length <= MAX_PACKET_LENGTH:
                self.port.malformed(self, length)
                return
            if len(self.buffer) < length:
                return
            packet = bytes(self.buffer[:length])
            del self.buffer[:length]
            self.port.received(self, packet)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone = True
        self.port.connection_lost(self, reason)

    def allocate(self) -> int | None:
        """A free Identifier of this connection, None when all 256 are in flight."""
        if len(self.outstanding) >= IDENTIFIERS:
            return None
        while self._next in self.outstanding:
            self._next = (self._next + 1) % IDENTIFIERS
        identifier = self._next
        self._next = (self._next + 1) % IDENTIFIERS
        return identifier

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.gone:
            self.transport.write(data)

    def abort(self) -> None:
        transport = self.transport
        if transport is not None and not self.gone:
            ITCPTransport(transport).abortConnection()


class _OnePacketPerRecord(TLSMemoryBIOFactory):
    """TLS that writes each RADIUS packet in a TLS record of its own.

    Twisted's default TLS transport gathers the small writes of one reactor turn
    into one record. RFC 6613 section 2.1 makes the stream the unit, but FreeRADIUS
    3.2 reads one RADIUS packet per record and closes the connection on a record
    holding two ("Received bad packet"), so every `write` here is one record.
    """

    protocol = TLSMemoryBIOProtocol
    noisy = False


class _Connector(ClientFactory):
    noisy = False

    def __init__(self, port: RadsecServerPort) -> None:
        self.port = port

    def buildProtocol(self, addr: object) -> _Connection:
        connection = _Connection(self.port)
        self.port.connection = connection
        return connection

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.port.connect_failed(reason)


class _Watchdog:
    """The Status-Server exchanges of a server's connection (RFC 5997)."""

    def __init__(self, port: RadsecServerPort) -> None:
        self.port = port
        self.request = status_server()

    def answered(self, attempt: Attempt, reply: Reply) -> None:
        self.port.probe_done(attempt)

    def gave_up(self, attempt: Attempt, reason: str) -> None:
        self.port.probe_done(attempt)
        self.port.watchdog_failed(reason)

    def broken(self, attempt: Attempt, error: RadiusPacketError) -> None:
        self.port.probe_done(attempt)


class RadsecServerPort(ServerPort):
    """A RadSec server: its connection, the requests waiting for it, reconnection."""

    kind = "RadSec"

    def __init__(
        self, settings: ClientSettings, tcp: IReactorTCP, server: RadiusServer, tls: RadsecTls
    ) -> None:
        super().__init__(settings, server, server.port)
        self.tcp = tcp
        self.tls = tls
        self.clock = settings.clock
        # idle -> connecting -> open; a failure -> waiting -> connecting; closed at the end.
        self.state = "idle"
        self.connection: _Connection | None = None  # being opened, or open
        self.connector: IConnector | None = None
        self.pending: deque[Attempt] = deque()  # waiting for a connection or an Identifier
        self.failures = 0  # consecutive failures since the server last answered
        self.last_error = "connecting"
        self._timer: IDelayedCall | None = None  # the handshake's deadline, or the backoff
        self._keepalive: IDelayedCall | None = None
        self._watchdog = _Watchdog(self)
        self._probe: Attempt | None = None
        self._abort_reason: str | None = None
        self._closed: defer.Deferred[None] | None = None
        self._logged: tuple[str, float] = ("", 0.0)
        self._malformed_log = RateLimit(1)

    # --- what the exchanges use -------------------------------------------------------------

    def alive(self, now: float) -> bool:
        return self.state in ("connecting", "open") and super().alive(now)

    def begin(self, exchange: Exchange, transmissions: int) -> Attempt | str:
        if self.state not in ("connecting", "open"):
            return f"not connected: {self.last_error}"
        attempt = Attempt(exchange, self, 1)
        attempt.timer = self.clock.callLater(self.server.timeout, self._timed_out, attempt)
        self.stats.requests += 1
        sent = False
        if self.state == "open" and not self.pending:
            try:
                sent = self._send(attempt)
            except RadiusPacketError:
                attempt.stop_timer()
                raise
        if not sent:
            self.pending.append(attempt)
        return attempt

    def cancel(self, attempt: Attempt) -> None:
        attempt.stop_timer()
        connection = attempt.carrier
        attempt.carrier = None
        if isinstance(connection, _Connection) and attempt.encoded is not None:
            if connection.outstanding.get(attempt.encoded.identifier) is attempt:
                del connection.outstanding[attempt.encoded.identifier]
                self._flush()  # an Identifier is free
            return
        with contextlib.suppress(ValueError):
            self.pending.remove(attempt)

    def _send(self, attempt: Attempt) -> bool:
        """Send `attempt` on the open connection; False when no Identifier is free."""
        connection = self.connection
        assert connection is not None
        identifier = connection.allocate()
        if identifier is None:
            return False
        encoded = encode_request(attempt.exchange.request, identifier, self.server.secret.value)
        attempt.encoded = encoded
        attempt.carrier = connection
        connection.outstanding[identifier] = attempt
        if attempt.transmissions:
            self.stats.retransmissions += 1  # again, on a new connection
        attempt.transmissions += 1
        connection.write(encoded.data)
        return True

    def _flush(self) -> None:
        while self.state == "open" and self.pending:
            attempt = self.pending[0]
            try:
                sent = self._send(attempt)
            except RadiusPacketError as exc:
                self.pending.popleft()
                attempt.stop_timer()
                attempt.exchange.broken(attempt, exc)
                continue
            if not sent:
                return
            self.pending.popleft()

    def _timed_out(self, attempt: Attempt) -> None:
        attempt.timer = None
        self.stats.timed_out(attempt)
        on_the_wire = attempt.carrier is not None
        self.cancel(attempt)
        if attempt.exchange is self._watchdog:
            attempt.exchange.gave_up(attempt, f"no reply to Status-Server within {self._seconds}")
            return
        if on_the_wire:
            reason = f"no reply within {self._seconds}"
            self.mark_dead(self.clock.seconds(), reason)
            self._start_probe()  # is it the server, or the connection?
        else:
            reason = f"no connection within {self._seconds} ({self.last_error})"
        attempt.exchange.gave_up(attempt, reason)

    @property
    def _seconds(self) -> str:
        return f"{self.server.timeout:g} s"

    # --- the connection -----------------------------------------------------------------------

    def open(self) -> None:
        if self.state == "idle":
            self._connect()

    def _connect(self) -> None:
        self._timer = None
        self.state = "connecting"
        self._abort_reason = None
        factory = _OnePacketPerRecord(self.tls.creator, True, _Connector(self), clock=self.clock)
        self.connector = self.tcp.connectTCP(
            self.address[0], self.address[1], factory, timeout=self.server.timeout
        )
        self._timer = self.clock.callLater(self.server.timeout, self._handshake_overdue)

    def _handshake_overdue(self) -> None:
        self._timer = None
        if self.state != "connecting":
            return
        self._abort_reason = f"no TLS connection within {self._seconds}"
        if self.connection is not None:
            self.connection.abort()
        elif self.connector is not None:
            self.connector.stopConnecting()

    def connection_opened(self, connection: _Connection) -> None:
        if connection is not self.connection or self.state != "connecting":
            connection.abort()  # closed meanwhile, or overdue
            return
        self._cancel_timer()
        self.state = "open"
        self.stats.connections += 1
        self.last_error = "connection open"
        log.info(
            "RadSec connection to {server} open ({name} verified)",
            server=self.label,
            name=self.tls.name,
        )
        self._arm_keepalive()
        self._flush()
        self._start_probe()

    def connect_failed(self, reason: Failure) -> None:
        self.connector = None
        if self.state == "closed":
            self._fire_closed()
            return
        self._failed(self._abort_reason or f"cannot connect: {reason.getErrorMessage()}")

    def connection_lost(self, connection: _Connection, reason: Failure) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.connector = None
        self._cancel_timer()
        self._cancel_keepalive()
        # Requests in flight wait for the next connection, in the order they were sent.
        in_flight = list(connection.outstanding.values())
        connection.outstanding.clear()
        for attempt in reversed(in_flight):
            attempt.carrier = None
            if attempt is self._probe:
                attempt.stop_timer()
                self._probe = None
            else:
                self.pending.appendleft(attempt)
        if self.state == "closed":
            self._fire_closed()
            return
        if not connection.opened:
            why = self._abort_reason or self.tls.refusal(connection.transport, reason)
            self._failed(why)
            return
        why = self._abort_reason or _loss(reason)
        log.warn("RadSec connection to {server} lost: {why}", server=self.label, why=why)
        if not connection.answered:
            # Closed before a single reply (a server refusing our certificate after
            # a TLS 1.3 handshake, one that dislikes what we sent): no quick retry.
            self.failures += 1
        if self.failures:
            self._wait(why)
        else:
            self._connect()  # it worked until now: at once

    def malformed(self, connection: _Connection, length: int) -> None:
        self.stats.malformed += 1
        if self._malformed_log.allow(self.clock.seconds()):
            log.warn(
                "RadSec server {server} sent a packet of Length {length}: closing the connection",
                server=self.label,
                length=length,
            )
        self.failures += 1
        self._abort_reason = f"malformed packet (Length {length})"
        connection.abort()

    def received(self, connection: _Connection, packet: bytes) -> None:
        if connection is not self.connection:
            return
        self._arm_keepalive()
        attempt = connection.outstanding.get(packet[1])
        if attempt is None:
            self.stats.unmatched += 1
            return
        now = self.clock.seconds()
        reply = self.accept_reply(packet, attempt, now, require_signature=False)
        if reply is None:
            return  # dropped; the request keeps waiting for its timeout
        connection.answered = True
        self.failures = 0
        self.cancel(attempt)
        attempt.exchange.answered(attempt, reply)

    def _failed(self, why: str) -> None:
        """The connection could not be opened: fail the waiting requests over, retry later."""
        self.connection = None
        self.connector = None
        self._cancel_timer()
        self.failures += 1
        self.stats.connection_failures += 1
        # Dead until it answers again (the Status-Server sent when a connection opens);
        # `_wait` logs why, so no second line here.
        self.dead_until = self.clock.seconds() + self.settings.dead_time
        self._wait(why)

    def _wait(self, why: str) -> None:
        """Connect again after the backoff; the requests waiting go to the next server."""
        self.state = "waiting"
        self.last_error = why
        delay = min(2.0 ** max(self.failures - 1, 0), BACKOFF_CAP)
        now = self.clock.seconds()
        last_why, last_time = self._logged
        if why != last_why or now - last_time >= REPEAT_LOG:
            self._logged = (why, now)
            log.warn(
                "RadSec server {server} ({name}): {why}; trying again in {delay:g} s",
                server=self.label,
                name=self.tls.name,
                why=why,
                delay=delay,
            )
        waiting, self.pending = list(self.pending), deque()
        for attempt in waiting:
            attempt.stop_timer()
            attempt.exchange.gave_up(attempt, f"not connected: {why}")
        self._timer = self.clock.callLater(delay, self._connect)

    # --- Status-Server ------------------------------------------------------------------------

    def _start_probe(self) -> None:
        if self.state != "open" or self._probe is not None:
            return
        attempt = Attempt(self._watchdog, self, 1)
        if not self._send(attempt):
            return  # every Identifier in flight: the connection is busy, not idle
        attempt.timer = self.clock.callLater(self.server.timeout, self._timed_out, attempt)
        self.stats.status_probes += 1
        self._probe = attempt

    def probe_done(self, attempt: Attempt) -> None:
        if attempt is self._probe:
            self._probe = None

    def watchdog_failed(self, reason: str) -> None:
        if self.connection is None or self.state != "open":
            return
        self.failures += 1
        self._abort_reason = reason
        self.mark_dead(self.clock.seconds(), reason)
        self.connection.abort()

    def _arm_keepalive(self) -> None:
        self._cancel_keepalive()
        self._keepalive = self.clock.callLater(self.server.keepalive_interval, self._keepalive_due)

    def _keepalive_due(self) -> None:
        self._keepalive = None
        self._start_probe()
        if self.state == "open":
            self._arm_keepalive()

    # --- the end ------------------------------------------------------------------------------

    def close(self) -> defer.Deferred[None]:
        previous = self.state
        self.state = "closed"
        self._cancel_timer()
        self._cancel_keepalive()
        for attempt in list(self.pending):
            attempt.stop_timer()
        self.pending.clear()
        if self._probe is not None:
            self._probe.stop_timer()
            self._probe = None
        self._closed = defer.Deferred()
        closed = self._closed
        if self.connection is not None:
            self.connection.abort()
        elif previous == "connecting" and self.connector is not None:
            self.connector.stopConnecting()
        else:
            self._fire_closed()
        return closed

    def _fire_closed(self) -> None:
        closed, self._closed = self._closed, None
        if closed is not None:
            closed.callback(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _cancel_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None


def _loss(reason: Failure) -> str:
    """Why an open connection ended, in words."""
    text = reason.getErrorMessage()
    return text.rstrip(".") or type(reason.value).__name__
