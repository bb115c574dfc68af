"""The nodes sharing one database, and their liveness (DESIGN.md section 9): plain SQL.

Each node keeps a row in `node` and moves its `heartbeat_at` every heartbeat
interval. A node whose row is neither stopped cleanly nor fresh within the dead
limit is dead, and exactly one surviving node adopts it: :func:`claim_dead` is one
UPDATE per dead node, conditioned on nobody having claimed it, so two nodes racing
get one claim between them. The adopter then, in the same transaction, writes the
Stops of the dead node's sessions and ends its leases (the caller does that: it
knows RADIUS and the pool), and afterwards delivers the dead node's spool and marks
the adoption done. An adopter that dies before it is done is adopted in turn and its
unfinished adoptions are claimed again, as are those an operator's command made
(it writes the Stops but delivers nothing).

A node starting refuses to run under the name of a live one. A crashed predecessor
of its own on the same host (its process gone) is not live, however fresh its
heartbeat. Functions take a Connection inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from lns.db.models import AccountingSpool, Node, NodeSession

__all__ = [
    "NodeAlive",
    "NodeIdentity",
    "NodeState",
    "adoption_done",
    "claim",
    "claim_dead",
    "heartbeat",
    "list_nodes",
    "register",
    "stopped",
]

_NODE = cast(Table, Node.__table__)
_SESSIONS = cast(Table, NodeSession.__table__)
_SPOOL = cast(Table, AccountingSpool.__table__)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """This node's process, as its row says it."""

    name: str
    instance: str  # random, new at every start
    address: str
    version: str
    host: str
    pid: int


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node's row, with what `lns-admin node list` shows of it."""

    name: str
    instance: str
    address: str
    version: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    sessions: int
    stopped_at: datetime | None
    adopted_by: str | None
    adopted_at: datetime | None
    adoption_done_at: datetime | None
    spool_depth: int = 0

    def alive(self, now: datetime, dead_after: float) -> bool:
        """Running: not stopped, not adopted, heard from within `dead_after` seconds."""
        return (
            self.stopped_at is None
            and self.adopted_by is None
            and now - self.heartbeat_at <= timedelta(seconds=dead_after)
        )

    def status(self, now: datetime, dead_after: float) -> str:
        if self.alive(now, dead_after):
            return "alive"
        if self.stopped_at is not None:
            return "stopped"
        if self.adopted_by is not None:
            return "adopted" if self.adoption_done_at is not None else "being adopted"
        return "dead"


class NodeAlive(Exception):
    """Another process runs under this node name (its row is fresh)."""

    def __init__(self, state: NodeState, now: datetime) -> None:
        age = (now - state.heartbeat_at).total_seconds()
        super().__init__(
            f"node {state.name!r} is already running: pid {state.pid} on {state.host}, "
            f"listening on {state.address}, heard from {age:.0f} s ago"
        )
        self.state = state


def _state(row: object) -> NodeState:
    mapping = row._mapping  # type: ignore[attr-defined]
    fields = {name: mapping[name] for name in NodeState.__dataclass_fields__ if name in mapping}
    return NodeState(**fields)


def _get(conn: Connection, name: str) -> NodeState | None:
    row = conn.execute(select(_NODE).where(_NODE.c.name == name)).one_or_none()
    return _state(row) if row is not None else None


def register(
    conn: Connection,
    me: NodeIdentity,
    now: datetime,
    dead_after: float,
    process_gone: Callable[[str, int], bool],
) -> NodeState | None:
    """Write this node's row at start; the row it replaces (None the first time).

    Raises NodeAlive when a live process holds the name. `process_gone(host, pid)`
    says whether the previous holder's process is known to be gone (the caller can
    tell for its own host), which makes a crashed predecessor not live.
    """
    previous = _get(conn, me.name)
    if (
        previous is not None
        and previous.instance != me.instance
        and previous.alive(now, dead_after)
        and not process_gone(previous.host, previous.pid)
    ):
        raise NodeAlive(previous, now)
    values = {
        "instance": me.instance,
        "address": me.address,
        "version": me.version,
        "host": me.host,
        "pid": me.pid,
        "started_at": now,
        "heartbeat_at": now,
        "sessions": 0,
        "stopped_at": None,
    }
    if previous is None:
        conn.execute(insert(_NODE).values(name=me.name, **values))
    else:
        # An adoption of the previous run stays recorded until it is done (the caller
        # waits for it); a finished one is cleared: this run starts afresh.
        if previous.adoption_done_at is not None:
            values.update(adopted_by=None, adopted_at=None, adoption_done_at=None)
        conn.execute(update(_NODE).where(_NODE.c.name == me.name).values(**values))
    return previous


def heartbeat(conn: Connection, me: NodeIdentity, now: datetime, sessions: int) -> bool:
    """Move this node's heartbeat; False when the row is no longer this run's (another
    process took the name, or the node was declared dead and adopted)."""
    result = conn.execute(
        update(_NODE)
        .where(
            _NODE.c.name == me.name,
            _NODE.c.instance == me.instance,
            _NODE.c.adopted_by.is_(None),
        )
        .values(heartbeat_at=now, sessions=sessions)
    )
    return result.rowcount == 1


def stopped(conn: Connection, me: NodeIdentity, now: datetime) -> None:
    """A clean stop: the node ended its sessions itself, there is nothing to adopt."""
    conn.execute(
        update(_NODE)
        .where(_NODE.c.name == me.name, _NODE.c.instance == me.instance)
        .values(stopped_at=now, heartbeat_at=now, sessions=0)
    )


def claim_dead(
    conn: Connection, me: str, now: datetime, dead_after: float
) -> list[tuple[str, datetime]]:
    """Claim every dead node nobody adopts (or whose adopter died before it was done).

    Returns the names claimed by this call, each with the node's last heartbeat (its
    sessions' Stops say they lasted until then). One UPDATE per candidate, so of two
    nodes claiming at once one wins.
    """
    deadline = now - timedelta(seconds=dead_after)
    dead = and_(_NODE.c.stopped_at.is_(None), _NODE.c.heartbeat_at < deadline)
    adopter = _NODE.alias("adopter")
    adopter_dead = (
        select(adopter.c.name)
        .where(
            adopter.c.name == _NODE.c.adopted_by,
            or_(
                adopter.c.stopped_at.is_not(None),
                adopter.c.heartbeat_at < deadline,
                adopter.c.adopted_by.is_not(None),
            ),
        )
        .exists()
    )
    # An adopter that is no node (an operator's command) wrote the Stops but cannot
    # deliver the spool: a running node takes that over.
    adopter_no_node = ~select(adopter.c.name).where(adopter.c.name == _NODE.c.adopted_by).exists()
    unclaimed = or_(
        _NODE.c.adopted_by.is_(None),
        and_(_NODE.c.adoption_done_at.is_(None), or_(adopter_dead, adopter_no_node)),
    )
    candidates = conn.execute(
        select(_NODE.c.name).where(_NODE.c.name != me, dead, unclaimed)
    ).scalars()
    claimed: list[tuple[str, datetime]] = []
    for name in list(candidates):
        row = conn.execute(
            update(_NODE)
            .where(_NODE.c.name == name, dead, unclaimed)
            .values(adopted_by=me, adopted_at=now, adoption_done_at=None)
            .returning(_NODE.c.heartbeat_at)
        ).one_or_none()
        if row is not None:
            claimed.append((name, row.heartbeat_at))
    return claimed


def claim(conn: Connection, name: str, adopter: str, now: datetime) -> bool:
    """Claim one node for `adopter` (an operator's command); False if already claimed."""
    result = conn.execute(
        update(_NODE)
        .where(_NODE.c.name == name, _NODE.c.adopted_by.is_(None))
        .values(adopted_by=adopter, adopted_at=now, adoption_done_at=None)
    )
    return result.rowcount == 1


def adoption_done(conn: Connection, name: str, adopter: str, now: datetime) -> bool:
    """The adopter delivered the dead node's spool; False if it was not the adopter."""
    result = conn.execute(
        update(_NODE)
        .where(_NODE.c.name == name, _NODE.c.adopted_by == adopter)
        .values(adoption_done_at=now)
    )
    return result.rowcount == 1


def adoption_state(conn: Connection, name: str) -> NodeState | None:
    return _get(conn, name)


def list_nodes(conn: Connection) -> list[NodeState]:
    """Every node, with its spool depth, by name."""
    depth = select(_SPOOL.c.node, func.count().label("depth")).group_by(_SPOOL.c.node).subquery()
    rows = conn.execute(
        select(_NODE, func.coalesce(depth.c.depth, 0).label("spool_depth"))
        .outerjoin(depth, depth.c.node == _NODE.c.name)
        .order_by(_NODE.c.name)
    ).all()
    return [_state(row) for row in rows]


def sessions_of(conn: Connection, name: str) -> int:
    """How many accounted sessions the node has (its `node_session` rows)."""
    return int(
        conn.execute(
            select(func.count()).select_from(_SESSIONS).where(_SESSIONS.c.node == name)
        ).scalar()
        or 0
    )
