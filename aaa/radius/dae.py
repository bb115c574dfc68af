"""The Dynamic Authorization server (RFC 5176): Disconnect-Request and CoA-Request.

A :class:`DynamicAuthorizationServer` listens on `[aaa.dynauth] listen` (UDP 3799 by
default) and answers the clients of `[[aaa.dynauth.client]]` only:

- A datagram from an address that is no configured client, with a bad Request
  Authenticator or a wrong Message-Authenticator, or malformed, is dropped
  unanswered and counted (`counters`); nothing raises.
- Replay protection (RFC 5176 section 6.3): a request whose Event-Timestamp is
  more than `event_timestamp_window` seconds from our clock, in either direction,
  is dropped unanswered, as section 6.3 says it MUST be ("silently discarded"). Every
  request answered is remembered, by a digest of its bytes (Identifier, Request
  Authenticator, attributes; not its source port), until its Event-Timestamp leaves
  the window: the same bytes again from the same address and port are a
  retransmission and get the first answer again without acting twice (RFC 5176
  section 2.3, RFC 5080 section 2.2.2); from another port or address they are a
  replay, dropped unanswered. So a captured request cannot act twice: within the
  window it is remembered, after it its timestamp is stale. When the memory is full
  (`MAX_REMEMBERED` requests inside one window) new requests get a NAK 506
  (Resources-Unavailable) rather than go unprotected.
- Without `Event-Timestamp` while `require_event_timestamp` is on (section 6.3:
  "SHOULD be configurable to discard"), or without Message-Authenticator while
  `require_message_authenticator` is on, a request is refused with a NAK, Error-Cause
  402 (Missing-Attribute). A NAK rather than silence: its Request Authenticator
  proved it comes from the client holding the secret, so the answer can only help
  that client's operator see what is missing, and it acts on nothing.
- A request names sessions by Acct-Session-Id, User-Name, Calling-Station-Id and/or
  Framed-IP-Address; a session must match every one given (:class:`SessionMatch`).
  NAS-Identifier, NAS-IP-Address, NAS-IPv6-Address, Event-Timestamp, Proxy-State,
  Message-Authenticator (and Acct-Terminate-Cause in a Disconnect-Request) are
  accepted besides. A NAS-Identifier other than ours is a NAK 403.
- Disconnect-Request: every matching session is torn down
  (:meth:`SessionDirectory.disconnect`) and the answer is a Disconnect-ACK; no
  match is a Disconnect-NAK with Error-Cause 503 (Session-Context-Not-Found).
- CoA-Request: Session-Timeout and/or Idle-Timeout are applied to every matching
  session (:meth:`SessionDirectory.change`), CoA-ACK; no match is a CoA-NAK 503.
- A NAK 401 (Unsupported-Attribute) answers a request with any other attribute
  (one we cannot match on or cannot apply), 402 (Missing-Attribute) one without
  an identifying attribute or a CoA-Request without anything to change, 404
  (Invalid-Request) one with an attribute that does not decode or an identifying
  attribute (or Event-Timestamp) given twice.

The clock is the reactor's (`seconds()`, Unix time on the real reactor), so tests
drive the window with a `task.Clock`. The sessions themselves belong to the PPP
adapter, which implements :class:`SessionDirectory`.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from aaa.radius.packet import (
    AttributeValue,
    BadMessageAuthenticator,
    BadRequestAuthenticator,
    Code,
    DynauthRequest,
    ErrorCause,
    RadiusPacketError,
    decode_dynauth_request,
    encode_dynauth_reply,
)
from lns.config import Config, DynauthClient
from lns.runtime import RateLimit

__all__ = [
    "DEFAULT_EVENT_TIMESTAMP_WINDOW",
    "DynamicAuthorizationServer",
    "DynamicAuthorizationService",
    "SessionDirectory",
    "SessionMatch",
]

DEFAULT_EVENT_TIMESTAMP_WINDOW = 300.0  # seconds either side of our clock
MAX_REMEMBERED = 65536  # requests remembered for replay detection (about 200 bytes each)
MAX_DATAGRAM = 4096  # the largest RADIUS packet (RFC 2865 section 3)

_IDENTIFYING = ("Acct-Session-Id", "User-Name", "Calling-Station-Id", "Framed-IP-Address")
_IGNORED = frozenset(
    {"NAS-IP-Address", "NAS-IPv6-Address", "NAS-Identifier", "Event-Timestamp"}
)  # Proxy-State and Message-Authenticator never reach the attribute list
_CHANGES = ("Session-Timeout", "Idle-Timeout")
_ALLOWED = {
    Code.DISCONNECT_REQUEST: frozenset(_IDENTIFYING) | _IGNORED | {"Acct-Terminate-Cause"},
    Code.COA_REQUEST: frozenset(_IDENTIFYING) | _IGNORED | frozenset(_CHANGES),
}

COUNTERS = (
    "received",  # datagrams
    "unknown_client",  # dropped: source address not in [[aaa.dynauth.client]]
    "bad_authenticator",  # dropped: Request Authenticator wrong (other secret, forgery)
    "bad_message_authenticator",  # dropped: Message-Authenticator wrong or repeated
    "malformed",  # dropped: not a Disconnect-/CoA-Request, bad lengths
    "stale_timestamp",  # dropped: Event-Timestamp outside the window (past or future)
    "replays",  # dropped: a request already answered, from another address or port
    "duplicates",  # retransmissions answered again from memory
    "missing_message_authenticator",  # NAK 402: none while one is required
    "missing_event_timestamp",  # NAK 402: none while one is required
    "memory_full",  # NAK 506: too many requests inside one window to remember another
    "disconnect_requests",
    "coa_requests",
    "acks",
    "naks",
    "sessions_disconnected",
    "sessions_changed",
)

log = Logger()


@dataclass(frozen=True, slots=True)
class SessionMatch:
    """What a request names a session by; None for an attribute absent from it.

    A session matches when it agrees with every attribute that is not None; at
    least one is always given. `user_name` is the RADIUS User-Name of the session
    (the `[aaa] username` template's result), `calling_station_id` its ICCID.
    """

    acct_session_id: str | None = None
    user_name: str | None = None
    calling_station_id: str | None = None
    framed_ip_address: ipaddress.IPv4Address | None = None


class SessionDirectory(Protocol):
    """The live sessions, as the PPP adapter sees them."""

    def find(self, match: SessionMatch) -> list[object]:
        """Handles of the live sessions that match (empty when none does)."""
        ...

    def disconnect(self, handle: object) -> None:
        """Tear the session down: CDN, and an accounting Stop with Admin-Reset."""
        ...

    def change(
        self, handle: object, session_timeout: float | None, idle_timeout: float | None
    ) -> None:
        """Apply new limits in seconds; None leaves that limit as it is."""
        ...


class _Refused(Exception):
    def __init__(self, cause: ErrorCause, why: str) -> None:
        super().__init__(why)
        self.cause = cause
        self.why = why


@dataclass(slots=True)
class _Answered:
    """A request answered: who sent it, what we answered, until when it is remembered."""

    host: str
    port: int
    reply: bytes
    until: float


class DynamicAuthorizationServer(DatagramProtocol):
    """Answers Disconnect-Requests and CoA-Requests of the configured clients."""

    def __init__(
        self,
        clients: Iterable[DynauthClient],
        directory: SessionDirectory,
        clock: IReactorTime,
        *,
        nas_identifier: str | None = None,
        require_message_authenticator: bool = True,
        require_event_timestamp: bool = True,
        event_timestamp_window: float = DEFAULT_EVENT_TIMESTAMP_WINDOW,
        max_remembered: int = MAX_REMEMBERED,
    ) -> None:
        self.clients = {client.address: client for client in clients}
        self.directory = directory
        self.clock = clock
        self.nas_identifier = nas_identifier
        self.require_message_authenticator = require_message_authenticator
        self.require_event_timestamp = require_event_timestamp
        self.event_timestamp_window = event_timestamp_window
        self.max_remembered = max_remembered
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        # SHA-256 of a request's bytes -> how it was answered; and the same keys by
        # expiry, for forgetting them in order.
        self._answered: dict[bytes, _Answered] = {}
        self._expiries: list[tuple[float, bytes]] = []
        self._warn_limit = RateLimit(5)

    # --- datagrams ----------------------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.counters["received"] += 1
        host, port = addr[0], addr[1]
        client = self._client(host)
        if client is None:
            self._drop("unknown_client", host, port, "not a configured client")
            return
        try:
            request = decode_dynauth_request(datagram, client.secret.value)
        except BadRequestAuthenticator as exc:
            self._drop("bad_authenticator", host, port, str(exc))
            return
        except BadMessageAuthenticator as exc:
            self._drop("bad_message_authenticator", host, port, str(exc))
            return
        except RadiusPacketError as exc:
            self._drop("malformed", host, port, str(exc))
            return
        now = self.clock.seconds()
        self._forget(now)
        # The request's own bytes (without padding beyond its Length): Identifier,
        # Request Authenticator and attributes, whatever port they came from.
        (length,) = struct.unpack_from("!H", datagram, 2)
        digest = hashlib.sha256(datagram[:length]).digest()
        answered = self._answered.get(digest)
        if answered is not None:
            if (answered.host, answered.port) == (host, port):
                self.counters["duplicates"] += 1
                self._send(answered.reply, addr)
            else:
                self._refuse_silently(
                    "replays",
                    host,
                    port,
                    f"{request.code.name} already answered to {answered.host}:{answered.port}",
                )
            return
        timestamps = request.values("Event-Timestamp")
        timestamp = timestamps[0] if len(timestamps) == 1 else None
        if isinstance(timestamp, int) and abs(timestamp - now) > self.event_timestamp_window:
            self._refuse_silently(
                "stale_timestamp",
                host,
                port,
                f"{request.code.name} with Event-Timestamp {timestamp} is "
                f"{timestamp - now:+.0f} s from our clock (window "
                f"{self.event_timestamp_window:g} s)",
            )
            return
        if len(self._answered) >= self.max_remembered:
            self.counters["memory_full"] += 1
            self._warn(now, "{code} from {host} refused: {why}", request, host, "memory full")
            reply = self._nak(request, client, ErrorCause.RESOURCES_UNAVAILABLE)
            self._send(reply, addr)
            return
        reply = self._answer(request, client, host)
        start = float(timestamp) if isinstance(timestamp, int) else now
        self._remember(digest, _Answered(host, port, reply, start + self.event_timestamp_window))
        self._send(reply, addr)

    def _client(self, host: str) -> DynauthClient | None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return self.clients.get(address)

    def _drop(self, counter: str, host: str, port: int, why: str) -> None:
        self.counters[counter] += 1
        log.debug(
            "dynauth: dropped a datagram from {host}:{port}: {why}", host=host, port=port, why=why
        )

    def _refuse_silently(self, counter: str, host: str, port: int, why: str) -> None:
        """Drop an authenticated request that must not act, as a warning (rate-limited)."""
        self.counters[counter] += 1
        if self._warn_limit.allow(self.clock.seconds()):
            log.warn(
                "dynauth: dropped a request from {host}:{port}: {why}",
                host=host,
                port=port,
                why=why,
            )

    def _warn(self, now: float, text: str, request: DynauthRequest, host: str, why: str) -> None:
        if self._warn_limit.allow(now):
            log.warn("dynauth: " + text, code=request.code.name, host=host, why=why)

    def _remember(self, digest: bytes, answered: _Answered) -> None:
        self._answered[digest] = answered
        heapq.heappush(self._expiries, (answered.until, digest))

    def _forget(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] < now:
            until, digest = heapq.heappop(self._expiries)
            answered = self._answered.get(digest)
            if answered is not None and answered.until == until:
                del self._answered[digest]

    @property
    def remembered(self) -> int:
        """How many requests are remembered for replay detection now."""
        return len(self._answered)

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.write(reply, addr)

    # --- requests -----------------------------------------------------------------------

    def _answer(self, request: DynauthRequest, client: DynauthClient, host: str) -> bytes:
        kind = "disconnect_requests" if request.code == Code.DISCONNECT_REQUEST else "coa_requests"
        self.counters[kind] += 1
        try:
            self._check_protection(request)
            count = self._act(request)
        except _Refused as refused:
            log.info(
                "dynauth: {code} from {host} refused ({cause}): {why}",
                code=request.code.name,
                host=host,
                cause=int(refused.cause),
                why=refused.why,
            )
            return self._nak(request, client, refused.cause)
        self.counters["acks"] += 1
        log.info(
            "dynauth: {code} from {host} applied to {count} session(s)",
            code=request.code.name,
            host=host,
            count=count,
        )
        return encode_dynauth_reply(request, client.secret.value, ack=True)

    def _nak(self, request: DynauthRequest, client: DynauthClient, cause: ErrorCause) -> bytes:
        self.counters["naks"] += 1
        return encode_dynauth_reply(request, client.secret.value, ack=False, error_cause=cause)

    def _check_protection(self, request: DynauthRequest) -> None:
        """What the configuration requires of every request besides its authenticator."""
        if len(request.values("Event-Timestamp")) > 1:
            raise _Refused(ErrorCause.INVALID_REQUEST, "Event-Timestamp given more than once")
        if self.require_message_authenticator and not request.message_authenticator:
            self.counters["missing_message_authenticator"] += 1
            raise _Refused(
                ErrorCause.MISSING_ATTRIBUTE,
                "no Message-Authenticator (require_message_authenticator is on)",
            )
        if self.require_event_timestamp and not request.values("Event-Timestamp"):
            self.counters["missing_event_timestamp"] += 1
            raise _Refused(
                ErrorCause.MISSING_ATTRIBUTE, "no Event-Timestamp (require_event_timestamp is on)"
            )

    def _act(self, request: DynauthRequest) -> int:
        """Apply `request`; the number of sessions it applied to. Raises _Refused."""
        if request.unknown:
            raise _Refused(ErrorCause.UNSUPPORTED_ATTRIBUTE, "attribute not in our dictionary")
        if request.undecodable:
            raise _Refused(
                ErrorCause.INVALID_REQUEST, f"undecodable: {', '.join(request.undecodable)}"
            )
        unsupported = sorted(request.names() - _ALLOWED[request.code])
        if unsupported:
            raise _Refused(ErrorCause.UNSUPPORTED_ATTRIBUTE, f"unsupported: {unsupported}")
        nas_identifier = request.first("NAS-Identifier")
        if (
            self.nas_identifier is not None
            and nas_identifier is not None
            and _text(nas_identifier) != self.nas_identifier
        ):
            raise _Refused(ErrorCause.NAS_IDENTIFICATION_MISMATCH, "another NAS-Identifier")
        match = self._match(request)
        session_timeout: float | None = None
        idle_timeout: float | None = None
        if request.code == Code.COA_REQUEST:
            session_timeout = _seconds(request, "Session-Timeout")
            idle_timeout = _seconds(request, "Idle-Timeout")
            if session_timeout is None and idle_timeout is None:
                raise _Refused(ErrorCause.MISSING_ATTRIBUTE, "nothing to change")
        handles = self.directory.find(match)
        if not handles:
            raise _Refused(ErrorCause.SESSION_CONTEXT_NOT_FOUND, f"no session matches {match}")
        for handle in handles:
            if request.code == Code.DISCONNECT_REQUEST:
                try:
                    self.directory.disconnect(handle)
                except Exception:
                    log.failure("dynauth: disconnecting {handle!r} failed", handle=handle)
                    raise _Refused(
                        ErrorCause.SESSION_CONTEXT_NOT_REMOVABLE, "disconnect failed"
                    ) from None
                self.counters["sessions_disconnected"] += 1
            else:
                try:
                    self.directory.change(handle, session_timeout, idle_timeout)
                except Exception:
                    log.failure("dynauth: changing {handle!r} failed", handle=handle)
                    raise _Refused(ErrorCause.RESOURCES_UNAVAILABLE, "change failed") from None
                self.counters["sessions_changed"] += 1
        return len(handles)

    def _match(self, request: DynauthRequest) -> SessionMatch:
        for name in _IDENTIFYING:
            if len(request.values(name)) > 1:
                raise _Refused(ErrorCause.INVALID_REQUEST, f"{name} given more than once")
        framed = request.first("Framed-IP-Address")
        if framed is not None and not isinstance(framed, ipaddress.IPv4Address):
            raise _Refused(ErrorCause.INVALID_REQUEST, "Framed-IP-Address is no IPv4 address")
        match = SessionMatch(
            acct_session_id=_optional_text(request.first("Acct-Session-Id")),
            user_name=_optional_text(request.first("User-Name")),
            calling_station_id=_optional_text(request.first("Calling-Station-Id")),
            framed_ip_address=framed,
        )
        if match == SessionMatch():
            raise _Refused(ErrorCause.MISSING_ATTRIBUTE, "no session identification attribute")
        return match


def _text(value: AttributeValue) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _optional_text(value: AttributeValue | None) -> str | None:
    return None if value is None else _text(value)


def _seconds(request: DynauthRequest, name: str) -> float | None:
    values = request.values(name)
    if not values:
        return None
    if len(values) > 1:
        raise _Refused(ErrorCause.INVALID_REQUEST, f"{name} given more than once")
    value = values[0]
    if not isinstance(value, int):
        raise _Refused(ErrorCause.INVALID_ATTRIBUTE_VALUE, f"{name} is no integer")
    return float(value)


class DynamicAuthorizationService(service.Service):
    """Listens for dynamic authorization requests while the node runs."""

    def __init__(
        self,
        server: DynamicAuthorizationServer,
        reactor: IReactorUDP,
        host: str = "127.0.0.1",
        port: int = 3799,
    ) -> None:
        self.server = server
        self.reactor = reactor
        self.host = host
        self.port_number = port
        self.port: IListeningPort | None = None

    @classmethod
    def from_config(
        cls, config: Config, directory: SessionDirectory, reactor: IReactorUDP
    ) -> DynamicAuthorizationService:
        """The service of `[aaa.dynauth]`; ValueError when the section is absent.

        `reactor` must provide IReactorUDP and IReactorTime (the real reactor does).
        """
        section = config.aaa.dynauth
        if section is None:
            raise ValueError("no [aaa.dynauth] section: dynamic authorization is off")
        server = DynamicAuthorizationServer(
            section.clients,
            directory,
            IReactorTime(reactor),
            nas_identifier=config.aaa.nas_identifier,
            require_message_authenticator=section.require_message_authenticator,
            require_event_timestamp=section.require_event_timestamp,
            event_timestamp_window=section.event_timestamp_window,
        )
        return cls(server, reactor, section.listen_host, section.listen_port)

    def privilegedStartService(self) -> None:
        # Bound before the node starts anything else (lns.adapters.startup).
        service.Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        service.Service.startService(self)
        self._listen()

    def _listen(self) -> None:
        if self.port is None:
            self.port = self.reactor.listenUDP(
                self.port_number, self.server, interface=self.host, maxPacketSize=MAX_DATAGRAM
            )

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        done = defer.maybeDeferred(port.stopListening)
        return done.addCallback(lambda _: None)

    @property
    def counters(self) -> dict[str, int]:
        return self.server.counters
