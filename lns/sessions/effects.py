"""What the session supervisor asks of the adapters around it.

Each effect is one thing to do, in the order given: a PPP frame down an L2TP call, a
question to AAA or the address pool (whose answer comes back as an event carrying
the record's ``serial``), a lease to end, forwarding to start or stop, an accounting
record, a call to clear with a CDN, and the session's up and down lines for the log.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lns.dataplane.forwarder import SessionPath
from lns.l2tp.result import CdnResult
from lns.pool.allocator import AllocationRequest, Lease
from lns.ppp.auth import AuthRequest
from lns.ppp.termination import TerminateCause
from lns.sessions.accounting import AccountingSession, RecordKind

__all__ = [
    "Account",
    "AllocateAddress",
    "Authenticate",
    "ClearCall",
    "ClosePath",
    "Effect",
    "OpenPath",
    "ReleaseAddress",
    "SendFrame",
    "SessionDown",
    "SessionUp",
]

CallKey = tuple[int, int]


@dataclass(frozen=True, slots=True)
class SendFrame:
    key: CallKey
    frame: bytes


@dataclass(frozen=True, slots=True)
class Authenticate:
    serial: int
    request: AuthRequest


@dataclass(frozen=True, slots=True)
class AllocateAddress:
    serial: int
    request: AllocationRequest


@dataclass(frozen=True, slots=True)
class ReleaseAddress:
    lease: Lease


@dataclass(frozen=True, slots=True)
class OpenPath:
    """Forward the session's IP packets from now on (counted in its record's traffic)."""

    path: SessionPath


@dataclass(frozen=True, slots=True)
class ClosePath:
    path: SessionPath


@dataclass(frozen=True, slots=True)
class Account:
    kind: RecordKind
    session: AccountingSession
    cause: TerminateCause | None = None  # a Stop's Acct-Terminate-Cause


@dataclass(frozen=True, slots=True)
class ClearCall:
    """Clear the L2TP call with a CDN carrying ``result`` and ``message``."""

    key: CallKey
    result: CdnResult
    message: str


@dataclass(frozen=True, slots=True)
class SessionUp:
    key: CallKey
    iccid: str
    address: ipaddress.IPv4Address
    acct_session_id: str


@dataclass(frozen=True, slots=True)
class SessionDown:
    """A session ended: what the log line says about it."""

    key: CallKey
    iccid: str
    cause: TerminateCause
    message: str
    was_up: bool
    duration: float  # seconds since the call was established
    octets_in: int  # from the device, forwarded
    octets_out: int  # to the device


Effect = (
    SendFrame
    | Authenticate
    | AllocateAddress
    | ReleaseAddress
    | OpenPath
    | ClosePath
    | Account
    | ClearCall
    | SessionUp
    | SessionDown
)
