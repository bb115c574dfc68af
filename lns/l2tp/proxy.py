"""RFC 2661 section 4.4.5: the proxy LCP and proxy authentication AVPs of an ICCN.

A LAC that already ran LCP and authentication with the device passes them
on, so the LNS can adopt them instead of negotiating again (the PPP layer
decides whether it does).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lns.l2tp.control import Iccn


class ProxyAuthenType(enum.IntEnum):
    """Proxy Authen Type AVP values (RFC 2661 section 4.4.5)."""

    RESERVED = 0
    TEXTUAL = 1
    CHAP = 2
    PAP = 3
    NONE = 4
    MSCHAP_V1 = 5


@dataclass(frozen=True, slots=True)
class ProxyLcp:
    """LCP Configure-Request options (no LCP header) the LAC exchanged with the device."""

    initial_received: bytes | None
    last_sent: bytes | None
    last_received: bytes | None


@dataclass(frozen=True, slots=True)
class ProxyAuth:
    """The device's PAP or CHAP exchange as the LAC saw it."""

    authen_type: ProxyAuthenType | int
    name: bytes
    challenge: bytes
    chap_id: int | None
    response: bytes


def proxy_lcp_from(iccn: Iccn) -> ProxyLcp | None:
    """The proxy LCP AVPs (26-28) of an ICCN, or None when the LAC sent none."""
    lcp = ProxyLcp(
        iccn.initial_received_lcp_confreq,
        iccn.last_sent_lcp_confreq,
        iccn.last_received_lcp_confreq,
    )
    if lcp.initial_received is None and lcp.last_sent is None and lcp.last_received is None:
        return None
    return lcp


def proxy_auth_from(iccn: Iccn) -> ProxyAuth | None:
    """The proxy authentication AVPs (29-33) of an ICCN, or None without a Proxy Authen Type."""
    authen_type = iccn.proxy_authen_type
    if authen_type is None:
        return None
    known = ProxyAuthenType._value2member_map_.get(authen_type)
    chap_id = iccn.proxy_authen_id
    return ProxyAuth(
        authen_type=ProxyAuthenType(authen_type) if known is not None else authen_type,
        name=iccn.proxy_authen_name or b"",
        challenge=iccn.proxy_authen_challenge or b"",
        # The ID travels in two octets with the CHAP identifier in the low one.
        chap_id=chap_id & 0xFF if chap_id is not None else None,
        response=iccn.proxy_authen_response or b"",
    )
