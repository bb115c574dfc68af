"""Authentication through RADIUS: the PPP layer's Authenticator (DESIGN.md section 4).

:class:`RadiusAuthenticator` turns an :class:`~lns.ppp.auth.AuthRequest` into an
Access-Request (RFC 2865, with the tunnel attributes of RFC 2868 and
Message-Authenticator of RFC 2869), sends it with the :class:`RadiusClient`, and
turns the answer into a :class:`~lns.ppp.auth.Decision`:

- Access-Accept: accepted, with Framed-IP-Address (255.255.255.254 or
  255.255.255.255 mean "the NAS chooses": the pool), Framed-Pool, Framed-Route,
  Session-Timeout, Idle-Timeout, Acct-Interim-Interval, Class and
  MS-Primary/Secondary-DNS-Server;
- Access-Reject: refused, the reason being the Reply-Message (or "Access-Reject");
- no server answered: refused as a temporary condition (`reachable=False`).

The Access-Request carries the attributes naming the session
(:func:`aaa.radius.attributes.session_identity`: User-Name, Acct-Session-Id, the
ICCID as Calling-Station-Id, NAS and tunnel attributes), then CHAP-Password +
CHAP-Challenge (CHAP), User-Password (PAP; for ICCID-only authentication the
`[aaa] iccid_password` template, with `{iccid}` and `{name}`), Connect-Info = the
connect speeds ("TX/RX" in bit/s, RFC 2869 section 5.11) and Message-Authenticator.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.logger import Logger
from twisted.python.failure import Failure

from aaa.radius.attributes import NasIdentity, session_identity
from aaa.radius.client import RadiusClient, RadiusUnavailable
from aaa.radius.packet import (
    Code,
    RadiusPacketError,
    Reply,
    Request,
    access_request,
)
from lns.config import Config
from lns.ppp.auth import AuthMethod, AuthRequest, Decision
from lns.runtime import Backlog

__all__ = [
    "AccessRequestSettings",
    "RadiusAuthenticator",
    "decision_from_reply",
    "parse_framed_route",
]

# Framed-IP-Address values that leave the choice to the NAS (RFC 2865 section 5.8).
_NAS_CHOOSES = (
    ipaddress.IPv4Address("255.255.255.254"),
    ipaddress.IPv4Address("255.255.255.255"),
)

log = Logger()


@dataclass(frozen=True, slots=True)
class AccessRequestSettings:
    """What the node's Access-Requests say besides the session itself."""

    nas: NasIdentity = field(default_factory=NasIdentity)
    iccid_password: str = "{iccid}"  # [aaa] iccid_password

    @classmethod
    def from_config(cls, config: Config) -> AccessRequestSettings:
        return cls(NasIdentity.from_config(config), config.aaa.iccid_password)


class RadiusAuthenticator:
    """The PPP layer's Authenticator, backed by RADIUS.

    Shares its :attr:`client` with whatever else speaks RADIUS on the node
    (accounting); the client must be started before the first request
    (:meth:`start`, or a :class:`~aaa.radius.client.RadiusClientService`).
    """

    def __init__(self, client: RadiusClient, settings: AccessRequestSettings) -> None:
        self.client = client
        self.settings = settings

    @classmethod
    def from_config(
        cls, config: Config, reactor: IReactorTime, backlog: Backlog | None = None
    ) -> RadiusAuthenticator:
        """From `[aaa]`, `[[aaa.radius]]` (at least one) and `[l2tp] listen`.

        `reactor` must provide IReactorUDP as well as IReactorTime (the real one does);
        `backlog` is the node's (`RadiusClient`).
        """
        client = RadiusClient(
            config.aaa.radius,
            IReactorUDP(reactor),
            config.aaa.require_message_authenticator,
            clock=reactor,
            backlog=backlog,
        )
        return cls(client, AccessRequestSettings.from_config(config))

    def start(self) -> None:
        self.client.start()

    def stop(self) -> defer.Deferred[None]:
        return self.client.stop()

    # --- Authenticator ----------------------------------------------------------------

    def authenticate(self, request: AuthRequest) -> defer.Deferred[Decision]:
        iccid = request.context.iccid
        try:
            radius_request = self.access_request(request)
        except (RadiusPacketError, ValueError) as exc:
            log.error(
                "cannot build the Access-Request for ICCID {iccid}: {reason}",
                iccid=iccid,
                reason=str(exc),
            )
            return defer.succeed(Decision(False, reason=f"cannot build the Access-Request: {exc}"))
        answer = self.client.send_auth(radius_request)
        return answer.addCallbacks(
            self._decided,
            self._unanswered,
            callbackArgs=(iccid,),
            errbackArgs=(iccid,),
        )

    def _decided(self, reply: Reply, iccid: str) -> Decision:
        decision = decision_from_reply(reply)
        if decision.accepted:
            log.info(
                "RADIUS accepted ICCID {iccid}: address {address}, pool {pool}",
                iccid=iccid,
                address=str(decision.framed_address) if decision.framed_address else "-",
                pool=decision.framed_pool or "-",
            )
        else:
            log.info("RADIUS refused ICCID {iccid}: {reason}", iccid=iccid, reason=decision.reason)
        return decision

    def _unanswered(self, failure: Failure, iccid: str) -> Decision | Failure:
        error = failure.value
        if isinstance(error, RadiusUnavailable):
            if error.attempts:
                reason = f"no RADIUS server answered ({'; '.join(error.attempts)})"
            else:
                reason = error.reason  # "RADIUS client stopped", "... not running"
            log.warn("ICCID {iccid} not authenticated: {reason}", iccid=iccid, reason=reason)
            return Decision(False, reason=reason, reachable=False)
        if isinstance(error, RadiusPacketError):
            log.error(
                "cannot send the Access-Request for ICCID {iccid}: {reason}",
                iccid=iccid,
                reason=str(error),
            )
            return Decision(False, reason=f"cannot build the Access-Request: {error}")
        return failure  # cancelled, or a bug: the caller's errback reports it

    # --- the Access-Request -----------------------------------------------------------

    def access_request(self, request: AuthRequest) -> Request:
        """The Access-Request for `request` (DESIGN.md section 4)."""
        context = request.context
        attributes = session_identity(self.settings.nas, context, request.user_name)
        connect_info = _connect_info(context.tx_connect_speed, context.rx_connect_speed)
        if connect_info:
            attributes.append(("Connect-Info", connect_info))
        if request.method is AuthMethod.CHAP:
            if request.chap_id is None:
                raise RadiusPacketError("CHAP request without a CHAP identifier")
            chap = (request.chap_id, request.chap_challenge, request.chap_response)
            return access_request(attributes, chap=chap)
        if request.method is AuthMethod.PAP:
            return access_request(attributes, password=request.password)
        password = self.settings.iccid_password.format(
            iccid=context.iccid, name=request.name.decode("utf-8", errors="replace")
        )
        return access_request(attributes, password=password.encode("utf-8"))


def _connect_info(tx: int | None, rx: int | None) -> str:
    if tx is None:
        return ""
    return f"{tx}/{rx}" if rx is not None else str(tx)


# --- the reply ------------------------------------------------------------------------------


def decision_from_reply(reply: Reply) -> Decision:
    """The PPP layer's Decision for a verified reply to an Access-Request."""
    if reply.code == Code.ACCESS_REJECT:
        message = " ".join(m.strip() for m in reply.strings("Reply-Message") if m.strip())
        return Decision(False, reason=message or "Access-Reject")
    if reply.code != Code.ACCESS_ACCEPT:
        # Access-Challenge: nothing of ours could answer it (no EAP, no second factor).
        return Decision(False, reason=f"{reply.code.name} is not supported")
    address = reply.ipv4("Framed-IP-Address")
    dns = tuple(
        server
        for server in (reply.ipv4("MS-Primary-DNS-Server"), reply.ipv4("MS-Secondary-DNS-Server"))
        if server is not None
    )
    return Decision(
        True,
        framed_address=None if address in _NAS_CHOOSES else address,
        framed_pool=reply.string("Framed-Pool") or None,
        framed_routes=_framed_routes(reply.strings("Framed-Route")),
        dns=dns,
        session_timeout=_seconds(reply.integer("Session-Timeout")),
        idle_timeout=_seconds(reply.integer("Idle-Timeout")),
        interim_interval=_seconds(reply.integer("Acct-Interim-Interval")),
        class_attribute=reply.octets("Class"),
    )


def _seconds(value: int | None) -> float | None:
    # 0 means no limit (and no interim updates), as most NASes read it.
    return float(value) if value else None


def _framed_routes(values: Sequence[str]) -> tuple[ipaddress.IPv4Network, ...]:
    routes: list[ipaddress.IPv4Network] = []
    for value in values:
        route = parse_framed_route(value)
        if route is None:
            log.warn("ignoring Framed-Route {route!r}: not understood", route=value)
        else:
            routes.append(route)
    return tuple(routes)


def parse_framed_route(value: str) -> ipaddress.IPv4Network | None:
    """The destination of a Framed-Route, None when it is not understood.

    RFC 2865 section 5.22: "destination prefix, optionally followed by a gateway
    address and metrics", e.g. "10.1.0.0/24 0.0.0.0 1" (gateway 0.0.0.0: the
    client's own address). The destination is "A.B.C.D/LEN", or "A.B.C.D" alone for
    a host route; host bits set in it are cleared. The gateway and metrics are not
    used: the route always points into the session.
    """
    words = value.split()
    if not words:
        return None
    try:
        return ipaddress.IPv4Network(words[0], strict=False)
    except ValueError:
        return None
