"""The RADIUS attributes that describe a session, built in one place (DESIGN.md section 4).

An Access-Request and every accounting record of a session share the attributes
that say which session it is: User-Name (the session's, formatted once by the
session supervisor), Acct-Session-Id, Calling-Station-Id (the ICCID),
Called-Station-Id (the APN), NAS-Identifier and NAS-IP-Address (or
NAS-IPv6-Address, RFC 3162), NAS-Port (our L2TP session ID), NAS-Port-Type =
Virtual, Service-Type = Framed-User, Framed-Protocol = PPP, and the tunnel
attributes of RFC 2868 with tag 1 (they all describe the one tunnel of the call):
Tunnel-Type = L2TP, Tunnel-Medium-Type = IPv4 (IPv6 for a LAC on IPv6),
Tunnel-Client-Endpoint = the LAC's address, Tunnel-Server-Endpoint = our address,
Tunnel-Client-Auth-ID = the LAC's Host Name.

NAS-IP-Address is the `[l2tp] listen` address when it is a specific one, else
127.0.0.1: the node cannot tell which of its addresses the RADIUS server knows it
by, and NAS-Identifier names it anyway. Tunnel-Server-Endpoint is sent only for a
specific listen address, for the same reason.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from aaa.radius.packet import AttributeValue
from lns.config import Config
from lns.ppp.auth import CallContext

__all__ = ["NasIdentity", "session_identity"]

Attribute = tuple[str, AttributeValue]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
_TAG = ":1"


@dataclass(frozen=True, slots=True)
class NasIdentity:
    """What every request of this node says about the node itself."""

    nas_identifier: str = "lns-1"
    nas_address: IPAddress = _LOOPBACK
    # Our tunnel endpoint address, when the node listens on a specific one.
    server_endpoint: IPAddress | None = None

    @classmethod
    def from_config(cls, config: Config) -> NasIdentity:
        listen = ipaddress.ip_address(config.l2tp.listen_host)
        specific = not listen.is_unspecified
        return cls(
            nas_identifier=config.aaa.nas_identifier,
            nas_address=listen if specific else _LOOPBACK,
            server_endpoint=listen if specific else None,
        )

    def attributes(self) -> list[Attribute]:
        """NAS-Identifier and NAS-IP-Address (or NAS-IPv6-Address)."""
        kind = "NAS-IP-Address" if self.nas_address.version == 4 else "NAS-IPv6-Address"
        return [("NAS-Identifier", self.nas_identifier), (kind, self.nas_address)]


def session_identity(nas: NasIdentity, context: CallContext, user_name: str) -> list[Attribute]:
    """The attributes naming a session, for its Access-Request and accounting records."""
    attributes: list[Attribute] = [("User-Name", user_name)]
    if context.acct_session_id:
        attributes.append(("Acct-Session-Id", context.acct_session_id))
    attributes.append(("Calling-Station-Id", context.iccid))
    if context.called_number:
        attributes.append(("Called-Station-Id", context.called_number))
    attributes += nas.attributes()
    attributes += [
        ("NAS-Port", context.session_id),
        ("NAS-Port-Type", "Virtual"),
        ("Service-Type", "Framed-User"),
        ("Framed-Protocol", "PPP"),
        ("Tunnel-Type" + _TAG, "L2TP"),
        ("Tunnel-Medium-Type" + _TAG, _medium(context.lac_address)),
    ]
    if context.lac_address:
        attributes.append(("Tunnel-Client-Endpoint" + _TAG, context.lac_address))
    if nas.server_endpoint is not None:
        attributes.append(("Tunnel-Server-Endpoint" + _TAG, str(nas.server_endpoint)))
    if context.lac_hostname:
        attributes.append(("Tunnel-Client-Auth-Id" + _TAG, context.lac_hostname))
    return attributes


@functools.lru_cache(maxsize=4096)
def _medium(lac_address: str) -> str:
    try:
        version = ipaddress.ip_address(lac_address).version
    except ValueError:
        version = 4
    return "IPv6" if version == 6 else "IPv4"
