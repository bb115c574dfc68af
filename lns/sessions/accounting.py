"""What an accounting record says about a session, and the accounting back end's contract.

The session supervisor decides when a session's Start, Interim-Updates and Stop are
due (RFC 2866 sections 5.1 and RFC 2869 section 5.16) and hands a snapshot of the
session to whatever does accounting (RADIUS through a durable spool, in production),
behind :class:`Accounting`. Acct-Session-Ids are made here, once per session, before
its Access-Request, so authentication and accounting name the session alike.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Protocol, TypeVar

from lns.ppp.auth import CallContext
from lns.ppp.termination import TerminateCause

__all__ = [
    "ACCT_SESSION_ID_LENGTH",
    "MIN_INTERIM_INTERVAL",
    "Accounting",
    "AccountingSession",
    "AcctSessionIds",
    "RecordKind",
]

# The longest Acct-Session-Id the spool's column holds.
ACCT_SESSION_ID_LENGTH = 64
# RFC 2869 section 5.16: an Acct-Interim-Interval below 60 s should not be used.
MIN_INTERIM_INTERVAL = 60.0

_Done = TypeVar("_Done", covariant=True)


class RecordKind(enum.Enum):
    START = "start"
    INTERIM = "interim"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class AccountingSession:
    """One session as an accounting record describes it, counters as of the record.

    ``context`` names the call (ICCID, LAC, our tunnel and session IDs, the
    Acct-Session-Id); ``user_name`` is the RADIUS User-Name the session was
    authenticated with; ``started_at`` the time it opened (IPCP up, epoch seconds).
    ``*_in`` count what the device sent, ``*_out`` what we sent it.
    """

    context: CallContext
    user_name: str
    started_at: float
    framed_address: ipaddress.IPv4Address | None = None
    class_attribute: bytes | None = None
    octets_in: int = 0
    octets_out: int = 0
    packets_in: int = 0
    packets_out: int = 0

    @property
    def acct_session_id(self) -> str:
        return self.context.acct_session_id

    @property
    def iccid(self) -> str:
        return self.context.iccid


class Accounting(Protocol[_Done]):
    """The accounting back end: each call hands over one record, in the session's order.

    What it returns (a Deferred, in production) says when the record is safely kept.
    """

    def session_started(self, info: AccountingSession) -> _Done: ...

    def interim(self, info: AccountingSession) -> _Done: ...

    def session_stopped(self, info: AccountingSession, cause: TerminateCause) -> _Done: ...


class AcctSessionIds:
    """Acct-Session-Ids unique across nodes and restarts: "{node}-{start ms hex}-{n hex}".

    ``started`` is when the node started (epoch seconds): a restarted node makes a
    new series. The node name is cut so that an id fits in 64 characters.
    """

    def __init__(self, node: str, started: float) -> None:
        self.prefix = f"{node[:36]}-{int(started * 1000):x}"
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"{self.prefix}-{self._next:x}"
