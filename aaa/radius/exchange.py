"""What the failover (`client.py`) and the transports (`udp.py`, `radsec.py`) share.

A request is tried on one server at a time: an :class:`Attempt`. The transport
owns how an attempt travels (UDP datagrams retransmitted on a timer; one TLS
connection's queue) and reports back to the :class:`Exchange` that made it:
answered, gave up (the next server is tried), or broken (the request itself
cannot be encoded, so no server would take it).

:class:`ServerPort` is what every transport's server port has in common: its
label and counters, whether it is dead (RFC 5080 section 2.2.1's "dead server"),
and the checks every reply passes (`decode_reply`, Message-Authenticator policy),
whichever transport brought it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
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
)
from lns.config import RadiusServer
from lns.histogram import Histogram
from lns.runtime import RateLimit

__all__ = ["Attempt", "ClientSettings", "Exchange", "RequestStats", "ServerPort", "ServerStats"]

# Requests whose replies must be signed when `require_message_authenticator` is on.
SIGNED_REPLIES = frozenset({Code.ACCESS_REQUEST, Code.STATUS_SERVER})

log = Logger()


@dataclass(slots=True)
class RequestStats:
    """One kind of request (Access-Request, Accounting-Request, Status-Server) at one server."""

    requests: int = 0  # attempts there (a failover to the next server is another)
    timeouts: int = 0  # attempts that got no reply there in time
    # Seconds from the first transmission there to the accepted reply, retransmissions
    # included: what the node waited.
    latency: Histogram = field(default_factory=Histogram)


@dataclass(slots=True)
class ServerStats:
    """Counters of one server port (a UDP port, or a RadSec server's connection)."""

    requests: int = 0  # requests sent there (first transmissions)
    retransmissions: int = 0  # UDP: the same packet again; TLS: sent again on a new connection
    timeouts: int = 0  # requests that got no reply there in time
    replies: int = 0  # replies accepted
    bad_authenticator: int = 0  # Response Authenticator wrong: other secret or forgery
    bad_message_authenticator: int = 0
    unsigned_dropped: int = 0  # no Message-Authenticator while one is required
    malformed: int = 0
    unmatched: int = 0  # no request in flight with that Identifier (late, duplicate)
    foreign: int = 0  # UDP: from an address or port other than the server's
    connections: int = 0  # TLS: connections opened (handshake and certificate check passed)
    connection_failures: int = 0  # TLS: refused, unreachable, or closed before it opened
    status_probes: int = 0  # TLS: Status-Server keepalives sent (RFC 5997)
    by_type: dict[Code, RequestStats] = field(default_factory=dict)

    def of_type(self, code: Code) -> RequestStats:
        found = self.by_type.get(code)
        if found is None:
            found = self.by_type[code] = RequestStats()
        return found

    def timed_out(self, attempt: Attempt) -> None:
        self.timeouts += 1
        self.of_type(attempt.exchange.request.code).timeouts += 1


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What every server port of one client shares."""

    clock: IReactorTime
    dead_time: float
    require_message_authenticator: bool


class Exchange(Protocol):
    """One request from `send` to its reply or to RadiusUnavailable, as a transport sees it."""

    @property
    def request(self) -> Request: ...

    def answered(self, attempt: Attempt, reply: Reply) -> None:
        """The server answered; the transport has already released the attempt."""
        ...

    def gave_up(self, attempt: Attempt, reason: str) -> None:
        """No reply from this server (released); `reason` says what happened there."""
        ...

    def broken(self, attempt: Attempt, error: RadiusPacketError) -> None:
        """The request cannot be encoded (released): no server would take it."""
        ...


class Attempt:
    """The request at one server: its encoding there, its timer, where its Identifier is held."""

    __slots__ = (
        "carrier",
        "encoded",
        "exchange",
        "port",
        "started_at",
        "timer",
        "transmissions",
        "transmissions_allowed",
    )

    def __init__(self, exchange: Exchange, port: ServerPort, transmissions_allowed: int) -> None:
        self.exchange = exchange
        self.port = port
        self.transmissions_allowed = transmissions_allowed
        self.transmissions = 0
        self.started_at = port.settings.clock.seconds()
        port.stats.of_type(exchange.request.code).requests += 1
        self.encoded: EncodedRequest | None = None
        self.timer: IDelayedCall | None = None
        # The UDP socket or the TLS connection that holds `encoded.identifier`.
        self.carrier: object | None = None

    def stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class ServerPort(abc.ABC):
    """What a server port of any transport is: label, counters, liveness, reply checks.

    Subclasses implement :meth:`begin`, :meth:`cancel`, :meth:`open` and :meth:`close`.
    """

    kind = "RADIUS"  # in log lines: "RADIUS server ...", "RadSec server ..."

    def __init__(self, settings: ClientSettings, server: RadiusServer, port: int) -> None:
        self.settings = settings
        self.server = server
        self.address = (str(server.address), port)
        host = f"[{server.address}]" if server.address.version == 6 else str(server.address)
        self.label = f"{host}:{port}"
        self.dead_until: float | None = None
        self.stats = ServerStats()
        self._drop_log = RateLimit(10)

    # --- the transport's part ---------------------------------------------------------------

    @abc.abstractmethod
    def begin(self, exchange: Exchange, transmissions: int) -> Attempt | str:
        """Start sending `exchange.request` here, `transmissions` times at most over UDP.

        Returns the attempt, or why this server cannot take it now (the exchange then
        tries the next one). Raises RadiusPacketError when the request cannot be
        encoded at all.
        """

    @abc.abstractmethod
    def cancel(self, attempt: Attempt) -> None:
        """The exchange is over (or went elsewhere): free the Identifier and the timer."""

    @abc.abstractmethod
    def open(self) -> None:
        """Make ready to send (sockets, the TLS connection); called by RadiusClient.start."""

    @abc.abstractmethod
    def close(self) -> defer.Deferred[None]:
        """Close sockets and connections; fires once they are closed."""

    # --- liveness ---------------------------------------------------------------------------

    def alive(self, now: float) -> bool:
        return self.dead_until is None or now >= self.dead_until

    def mark_dead(self, now: float, why: str = "no reply") -> None:
        was_alive = self.alive(now)
        self.dead_until = now + self.settings.dead_time
        if was_alive:
            log.warn(
                "{kind} server {server} marked dead for {seconds:g} s: {why}",
                kind=self.kind,
                server=self.label,
                seconds=self.settings.dead_time,
                why=why,
            )

    def revive(self) -> None:
        """A reply came: the server is live again, requests go back to it first."""
        if self.dead_until is not None:
            self.dead_until = None
            log.info("{kind} server {server} answers again", kind=self.kind, server=self.label)

    # --- replies ----------------------------------------------------------------------------

    def accept_reply(
        self, data: bytes, attempt: Attempt, now: float, *, require_signature: bool
    ) -> Reply | None:
        """The verified reply to `attempt`, or None when it must be dropped (counted, logged).

        `require_signature`: a reply to an Access-Request or Status-Server without a
        valid Message-Authenticator is dropped (BlastRADIUS, CVE-2024-3596).
        """
        assert attempt.encoded is not None
        try:
            reply = decode_reply(data, attempt.encoded, self.server.secret.value)
        except BadResponseAuthenticator:
            self.stats.bad_authenticator += 1
            self.dropped(now, "bad Response Authenticator (wrong secret or forged)")
            return None
        except BadMessageAuthenticator as exc:
            self.stats.bad_message_authenticator += 1
            self.dropped(now, f"{exc} (wrong secret or forged)")
            return None
        except RadiusPacketError as exc:
            self.stats.malformed += 1
            self.dropped(now, str(exc))
            return None
        if (
            require_signature
            and not reply.message_authenticator
            and attempt.encoded.code in SIGNED_REPLIES
        ):
            self.stats.unsigned_dropped += 1
            self.dropped(
                now,
                f"{reply.code.name} without Message-Authenticator while "
                "require_message_authenticator is on (BlastRADIUS, CVE-2024-3596)",
            )
            return None
        self.stats.replies += 1
        kind = self.stats.of_type(attempt.exchange.request.code)
        kind.latency.observe(now - attempt.started_at)
        self.revive()
        return reply

    def dropped(self, now: float, reason: str, source: str = "") -> None:
        if self._drop_log.allow(now):
            log.warn(
                "RADIUS reply from {server} dropped: {reason}",
                server=source or self.label,
                reason=reason,
            )
