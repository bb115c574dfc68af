"""The accounting Stops of a dead node's sessions, written by the node that adopts it.

DESIGN.md section 9: when a node dies, one survivor writes a Stop for every session
the dead node had accounted (its `node_session` rows, kept with its Start and
Interim-Updates), into the dead node's own spool after whatever waits there, so the
dead node's records reach the RADIUS server in the order they were made. Each Stop
is the session's Start with Acct-Status-Type Stop, the counters of its last record,
Acct-Session-Time up to the dead node's last heartbeat, Event-Timestamp that
heartbeat, and Acct-Terminate-Cause Lost-Service (RFC 2866 section 5.10: the
service the user was using, the node, went away). The record's creation time is the
heartbeat too, so its Acct-Delay-Time tells the server when the session really ended.

A node that restarts after a crash does the same for its own previous sessions.
Plain SQL in the caller's transaction; the rows are removed as their Stops are
written, so a Stop is never written twice.

:func:`adopt_dead` is what a node runs at each heartbeat (claim whatever died, write
its Stops, end its leases, in one transaction); :func:`take_from` is what an
operator's command runs before it takes a lease or a pool away (`lns-admin lease
release`, `lease reclaim --node`, `pool remove --force`): it refuses while the
holding node is alive, and adopts it when it is dead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select
from sqlalchemy.engine import Connection

from aaa.radius import spool
from aaa.radius.accounting import AcctStatus
from aaa.radius.packet import AttributeValue
from lns.db import nodes
from lns.db.models import NodeSession
from lns.pool import allocator
from lns.pool.allocator import PoolError
from lns.ppp.termination import TerminateCause

__all__ = ["Adopted", "HolderAlive", "adopt_dead", "take_from", "write_stops"]

_SESSIONS = cast(Table, NodeSession.__table__)
_WORD = 1 << 32
# Replaced or added by the Stop; everything else of the Start stays.
_CHANGING = frozenset(
    {
        "Acct-Status-Type",
        "Event-Timestamp",
        "Acct-Session-Time",
        "Acct-Input-Octets",
        "Acct-Input-Gigawords",
        "Acct-Output-Octets",
        "Acct-Output-Gigawords",
        "Acct-Input-Packets",
        "Acct-Output-Packets",
        "Acct-Terminate-Cause",
    }
)


def write_stops(
    conn: Connection,
    node: str,
    ended_at: datetime,
    cause: TerminateCause = TerminateCause.LOST_SERVICE,
) -> int:
    """Spool a Stop for every accounted session of `node`, ended at `ended_at`; how many."""
    rows = conn.execute(
        select(_SESSIONS).where(_SESSIONS.c.node == node).order_by(_SESSIONS.c.started_at)
    ).all()
    for row in rows:
        start = spool.decode_attributes(row.attributes)
        attributes: list[tuple[str, AttributeValue]] = [("Acct-Status-Type", int(AcctStatus.STOP))]
        attributes += [(name, value) for name, value in start if name not in _CHANGING]
        seconds = max(0, int((ended_at - row.started_at).total_seconds()))
        attributes += [
            ("Acct-Session-Time", seconds),
            ("Acct-Input-Octets", row.octets_in % _WORD),
            ("Acct-Input-Gigawords", (row.octets_in // _WORD) % _WORD),
            ("Acct-Output-Octets", row.octets_out % _WORD),
            ("Acct-Output-Gigawords", (row.octets_out // _WORD) % _WORD),
            ("Acct-Input-Packets", row.packets_in % _WORD),
            ("Acct-Output-Packets", row.packets_out % _WORD),
            ("Acct-Terminate-Cause", int(cause)),
            ("Event-Timestamp", int(ended_at.timestamp())),
        ]
        spool.enqueue(conn, node, row.acct_session_id, int(AcctStatus.STOP), attributes, ended_at)
    conn.execute(delete(_SESSIONS).where(_SESSIONS.c.node == node))
    return len(rows)


@dataclass(frozen=True, slots=True)
class Adopted:
    """A dead node claimed: its Stops written, its leases ended."""

    name: str
    heard_from: datetime
    stops: int
    leases: int


def adopt_dead(conn: Connection, me: str, now: datetime, dead_after: float) -> list[Adopted]:
    """Claim the dead nodes nobody adopts, and in the same transaction write the Stops of
    their sessions into their spools and end their leases."""
    adopted = []
    for name, heard_from in nodes.claim_dead(conn, me, now, dead_after):
        stops = write_stops(conn, name, heard_from)
        leases = allocator.release_node(conn, name, now=now)
        adopted.append(Adopted(name, heard_from, stops, leases))
    return adopted


class HolderAlive(PoolError):
    """An operator's command would take a lease from a node that is running."""


def take_from(
    conn: Connection, node: str, by: str, now: datetime, dead_after: float
) -> Adopted | None:
    """Before an operator takes leases of `node` away: refuse (HolderAlive) while it is
    alive; adopt it when it is dead and nobody has (its Stops, its leases ended; a node
    that is running delivers its spool). A node stopped cleanly, or unknown, is neither:
    None, and the caller ends the leases itself."""
    state = nodes.adoption_state(conn, node)
    if state is None or state.stopped_at is not None:
        return None
    if state.alive(now, dead_after):
        age = (now - state.heartbeat_at).total_seconds()
        raise HolderAlive(
            f"node {node!r} is alive (heard from {age:.0f} s ago): its sessions hold "
            "these leases; end them on that node first (lns-admin session kill)"
        )
    if not nodes.claim(conn, node, by, now):
        return None  # adopted already
    stops = write_stops(conn, node, state.heartbeat_at)
    leases = allocator.release_node(conn, node, now=now)
    return Adopted(node, state.heartbeat_at, stops, leases)
