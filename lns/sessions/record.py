"""One session as the node knows it: identity, PPP, lease, counters, accounting, deadlines.

A :class:`SessionRecord` is made when an L2TP call is established (ICCN) and lives
until the session ends; everything the node keeps of a session is here, and nowhere
else. The supervisor (:mod:`lns.sessions.supervisor`) owns every record and is the
only code that changes one; the adapters and the management API read them.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping

from lns.dataplane.forwarder import SessionPath, Traffic
from lns.pool.allocator import Lease
from lns.ppp.auth import CallContext, Decision
from lns.ppp.session import PppSession

__all__ = ["SessionRecord", "SessionState", "format_user_name"]

IPv4 = ipaddress.IPv4Address


class SessionState(enum.Enum):
    SETTING_UP = "setting-up"  # LCP, authentication, AAA, the pool, IPCP
    UP = "up"  # IPCP opened: forwarding and accounted
    CLOSED = "closed"


def format_user_name(template: str, iccid: str, ppp_name: bytes) -> str:
    """The RADIUS User-Name of a session: the ``[aaa] username`` template.

    ``{iccid}`` is the SIM's ICCID, ``{name}`` the PPP name the device or the LAC
    gave (UTF-8, undecodable bytes replaced). The one place a User-Name is made:
    the Access-Request, the accounting records and Disconnect/CoA matching all use
    the record's :attr:`SessionRecord.user_name`.
    """
    return template.format(iccid=iccid, name=ppp_name.decode("utf-8", "replace"))


class SessionRecord:
    """Everything about one session; see the module docstring."""

    __slots__ = (
        "accounted",
        "address",
        "call_gone",
        "context",
        "created_at",
        "decision",
        "idle_timeout",
        "interim_at",
        "interim_interval",
        "lease_moved",
        "opened_at",
        "path",
        "phase",
        "ppp",
        "requested_at",
        "serial",
        "session_timeout",
        "state",
        "traffic",
        "user_name",
    )

    def __init__(
        self,
        serial: int,
        context: CallContext,
        ppp: PppSession[Lease],
        user_name: str,
        now: float,
        requested_at: float | None = None,
    ) -> None:
        self.serial = serial  # unique for the node's lifetime, unlike the L2TP IDs
        self.context = context
        self.ppp = ppp
        self.user_name = user_name
        self.state = SessionState.SETTING_UP
        self.created_at = now
        # When the LAC asked for the call (ICRQ): set-up latency counts from here.
        self.requested_at = now if requested_at is None else requested_at
        self.opened_at: float | None = None
        # The PPP phase the session had reached when it last ran (kept once PPP has
        # closed: how far a failed set-up got).
        self.phase = ppp.phase
        self.decision: Decision | None = None
        # The address the session was given: a pool lease's, or one RADIUS named
        # outside every pool (no lease then).
        self.address: IPv4 | None = None
        self.traffic = Traffic()  # the one set of counters, counted by the data plane
        self.path: SessionPath | None = None  # how the data plane forwards it, once up
        self.accounted = False  # a Start was recorded: a Stop is owed
        self.session_timeout: float | None = None  # seconds from opened_at, in force
        self.idle_timeout: float | None = None
        self.interim_interval = 0.0  # 0: no Interim-Updates
        self.interim_at: float | None = None
        self.call_gone = False  # the L2TP call ended first: no CDN to send
        self.lease_moved = False  # the lease went to a newer session: never release it

    @property
    def key(self) -> tuple[int, int]:
        """(our tunnel ID, our session ID): how L2TP and the data plane name the session."""
        return (self.context.tunnel_id, self.context.session_id)

    @property
    def iccid(self) -> str:
        return self.context.iccid

    @property
    def acct_session_id(self) -> str:
        return self.context.acct_session_id

    @property
    def lease(self) -> Lease | None:
        return self.ppp.lease

    def last_activity(self) -> float:
        """When the device last sent something that was forwarded (or the session opened)."""
        opened = self.opened_at if self.opened_at is not None else self.created_at
        return max(opened, self.traffic.last_up)

    def deadlines(self) -> Mapping[str, float]:
        """The record's own deadlines by name (the PPP automata keep theirs)."""
        found: dict[str, float] = {}
        if self.state is not SessionState.UP or self.opened_at is None:
            return found
        if self.session_timeout:
            found["session_timeout"] = self.opened_at + self.session_timeout
        if self.idle_timeout:
            found["idle_timeout"] = self.last_activity() + self.idle_timeout
        if self.interim_at is not None:
            found["interim"] = self.interim_at
        return found

    def next_deadline(self) -> float | None:
        if self.state is SessionState.CLOSED:
            return None
        times = [*self.deadlines().values()]
        ppp = self.ppp.get_timer()
        if ppp is not None:
            times.append(ppp)
        return min(times) if times else None
