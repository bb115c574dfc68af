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
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select
from sqlalchemy.engine import Connection

from aaa.radius import spool
from aaa.radius.accounting import AcctStatus
from aaa.radius.packet import AttributeValue
from lns.db.models import NodeSession
from lns.ppp.termination import TerminateCause

__all__ = ["write_stops"]

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
