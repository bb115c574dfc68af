"""What the PPP layer asks of AAA, and what it gets back.

The PPP session emits :class:`Authenticate` with an :class:`AuthRequest`; an
AAA back end (RADIUS, in production) answers with a :class:`Decision`. The
PPP layer does not know which back end that is.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

IPv4 = ipaddress.IPv4Address


class AuthMethod(enum.Enum):
    PAP = "pap"
    CHAP = "chap"
    ICCID = "iccid"  # no PPP credentials: the ICCID alone decides


class AuthSource(enum.Enum):
    PROXY = "proxy"  # the LAC's proxy authentication AVPs
    PPP = "ppp"  # our own PAP/CHAP exchange with the device
    NONE = "none"  # no_proxy_auth = "iccid"


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the L2TP call says about the session, for AAA, accounting and logs.

    ``acct_session_id`` is given by the session's owner before PPP starts, so the
    Access-Request and the accounting records name the session alike.
    """

    iccid: str
    called_number: str = ""
    lac_name: str = ""
    lac_hostname: str = ""
    lac_address: str = ""
    tunnel_id: int = 0
    session_id: int = 0
    tx_connect_speed: int | None = None
    rx_connect_speed: int | None = None
    acct_session_id: str = ""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    context: CallContext
    method: AuthMethod
    source: AuthSource
    name: bytes = b""
    password: bytes = b""  # PAP
    chap_id: int | None = None
    chap_challenge: bytes = b""
    chap_response: bytes = b""
    # The RADIUS User-Name (the `[aaa] username` template), filled in by the session's owner.
    user_name: str = ""

    def __repr__(self) -> str:
        # The password and the CHAP response never reach a log line.
        return (
            f"AuthRequest(iccid={self.context.iccid!r}, method={self.method.value}, "
            f"source={self.source.value}, name={self.name!r})"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """AAA's answer: accept with an authorization, or reject with a reason."""

    accepted: bool
    reason: str = ""
    # False when no AAA server answered: the call is refused as a temporary condition.
    reachable: bool = True
    framed_address: IPv4 | None = None
    framed_pool: str | None = None
    framed_routes: tuple[ipaddress.IPv4Network, ...] = ()
    dns: tuple[IPv4, ...] = ()
    session_timeout: float | None = None
    idle_timeout: float | None = None
    interim_interval: float | None = None
    class_attribute: bytes | None = None
