"""What the L2TP core asks of the layers around it.

The core never performs I/O; it returns these frozen records, and the
adapter logs them, hands established calls to the PPP layer and delivers
PPP frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from lns.l2tp.avp import ResultCode
from lns.l2tp.session import IncomingCall


@dataclass(frozen=True, slots=True)
class TunnelEstablished:
    tunnel_id: int
    peer_tunnel_id: int
    lac_name: str
    peer_hostname: str
    peer: tuple[str, int]


@dataclass(frozen=True, slots=True)
class TunnelRefused:
    """An SCCRQ from a peer no ``[[l2tp.lac]]`` allows: answered with a StopCCN, nothing kept."""

    peer: tuple[str, int]
    peer_hostname: str
    reason: str


@dataclass(frozen=True, slots=True)
class TunnelClosed:
    tunnel_id: int
    lac_name: str
    reason: str
    by_peer: bool
    # False for a tunnel that never got past its SCCRQ: its peer may be anyone who
    # can send from a LAC's addresses, so its end is logged rate-limited.
    was_established: bool = True


@dataclass(frozen=True, slots=True)
class CallEstablished:
    """An ICCN arrived: the call is ready for PPP (``call`` carries the proxy AVPs)."""

    tunnel_id: int
    call: IncomingCall
    lac_name: str = ""
    lac_hostname: str = ""
    lac_address: str = ""


@dataclass(frozen=True, slots=True)
class CallCleared:
    tunnel_id: int
    session_id: int
    iccid: str
    result: ResultCode
    reason: str
    by_peer: bool
    was_established: bool


@dataclass(frozen=True, slots=True)
class PppFrameReceived:
    tunnel_id: int
    session_id: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class PacketDropped:
    """A datagram we could not use: counted under ``counter`` and logged."""

    peer: tuple[str, int]
    counter: str
    reason: str


@dataclass(frozen=True, slots=True)
class CallRefused:
    """An ICRQ we answered with a CDN instead of an ICRP."""

    tunnel_id: int
    calling_number: str
    result: ResultCode


Effect = (
    TunnelEstablished
    | TunnelRefused
    | TunnelClosed
    | CallEstablished
    | CallCleared
    | PppFrameReceived
    | PacketDropped
    | CallRefused
)
