"""The durable accounting spool (DESIGN.md section 4): records wait here until acknowledged.

Plain synchronous functions on a SQLAlchemy Connection, run by the caller on its
SQL thread pool (no Twisted here). The caller owns the transaction: every
function is one statement, or two for `enqueue`, meant for `engine.begin()`.

One row of `accounting_spool` per Accounting-Request. `id` is the global order
of the records of one node (they are sent in that order); `seq` numbers the
records of one Acct-Session-Id still in the spool. Attributes are kept as JSON
with their types, so that they come back as the values they went in as:
`[[name, type, value], ...]` with type "str", "int", "bytes" (hex),
"ipv4", "ipv6" or "ipv6net" (text).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from aaa.radius.packet import AttributeValue
from lns.db.models import AccountingSpool, NodeSession

__all__ = [
    "SpoolError",
    "SpooledRecord",
    "acknowledged",
    "decode_attributes",
    "due",
    "encode_attributes",
    "enqueue",
    "pending",
    "postpone",
    "summary",
]

_TABLE = cast(Table, AccountingSpool.__table__)
_SESSIONS = cast(Table, NodeSession.__table__)


class SpoolError(ValueError):
    """An attribute value the spool cannot keep, or a stored row it cannot read."""


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """One spooled Accounting-Request, as `due` returns it."""

    id: int
    node: str
    acct_session_id: str
    seq: int
    status: int  # Acct-Status-Type
    attributes: tuple[tuple[str, AttributeValue], ...]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime


# --- attributes as JSON ---------------------------------------------------------------


def encode_attributes(attributes: Iterable[tuple[str, AttributeValue]]) -> str:
    """The JSON text of `attributes`, each value with its type."""
    out: list[list[str]] = []
    for name, value in attributes:
        out.append([name, *_encode_value(name, value)])
    return json.dumps(out, separators=(",", ":"))


def _encode_value(name: str, value: AttributeValue) -> tuple[str, str]:
    # bool is an int but never a RADIUS value: refuse it rather than send 1.
    if isinstance(value, bool):
        raise SpoolError(f"{name}: a bool is not an attribute value")
    if isinstance(value, int):
        return "int", str(int(value))
    if isinstance(value, str):
        return "str", value
    if isinstance(value, bytes):
        return "bytes", value.hex()
    if isinstance(value, ipaddress.IPv4Address):
        return "ipv4", str(value)
    if isinstance(value, ipaddress.IPv6Address):
        return "ipv6", str(value)
    if isinstance(value, ipaddress.IPv6Network):
        return "ipv6net", str(value)
    raise SpoolError(f"{name}: cannot spool a {type(value).__name__}")


def decode_attributes(text: str) -> tuple[tuple[str, AttributeValue], ...]:
    """The attributes `encode_attributes` wrote, as the same typed values."""
    try:
        items = json.loads(text)
        return tuple((str(name), _decode_value(kind, raw)) for name, kind, raw in items)
    except (ValueError, TypeError) as exc:
        raise SpoolError(f"unreadable spooled attributes: {exc}") from None


def _decode_value(kind: str, raw: str) -> AttributeValue:
    if kind == "int":
        return int(raw)
    if kind == "str":
        return raw
    if kind == "bytes":
        return bytes.fromhex(raw)
    if kind == "ipv4":
        return ipaddress.IPv4Address(raw)
    if kind == "ipv6":
        return ipaddress.IPv6Address(raw)
    if kind == "ipv6net":
        return ipaddress.IPv6Network(raw)
    raise SpoolError(f"unknown spooled value type {kind!r}")


# --- the queue --------------------------------------------------------------------------


def enqueue(
    conn: Connection,
    node: str,
    acct_session_id: str,
    status: int,
    attributes: Sequence[tuple[str, AttributeValue]],
    created_at: datetime,
) -> int:
    """Spool one record, due at once; its id (the send order of this node's records).

    Records of one Acct-Session-Id must be enqueued one at a time (one writer per
    node): `seq` is the next after those of the session still spooled.
    """
    payload = encode_attributes(attributes)
    last = conn.execute(
        select(func.max(_TABLE.c.seq)).where(
            _TABLE.c.node == node, _TABLE.c.acct_session_id == acct_session_id
        )
    ).scalar()
    seq = int(last or 0) + 1
    result = conn.execute(
        insert(_TABLE)
        .values(
            node=node,
            acct_session_id=acct_session_id,
            seq=seq,
            status_type=int(status),
            attributes=payload,
            created_at=created_at,
            attempts=0,
            next_attempt_at=created_at,
        )
        .returning(_TABLE.c.id)
    )
    return int(result.scalar_one())


def enqueue_many(
    conn: Connection,
    node: str,
    records: Sequence[tuple[str, int, Sequence[tuple[str, AttributeValue]], datetime]],
) -> list[int]:
    """Spool several records, in this order, in the caller's one transaction (one commit
    for all: the records that arrive while a transaction runs go in the next one)."""
    return [
        enqueue(conn, node, acct_session_id, status, attributes, created_at)
        for acct_session_id, status, attributes, created_at in records
    ]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A Start, Interim-Update or Stop to spool, with the session's counters as of it.

    `seq`: its place among the session's records, when the caller keeps count (the
    node's accounting does, for the sessions it runs); None: the next after those of
    the session still spooled (one more query).
    """

    acct_session_id: str
    status: int  # Acct-Status-Type: 1 Start, 2 Stop, 3 Interim-Update
    attributes: Sequence[tuple[str, AttributeValue]]
    created_at: datetime
    counters: tuple[int, int, int, int]  # octets in, octets out, packets in, packets out
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """An Accounting-On or -Off: about the node, no session to keep."""

    acct_session_id: str
    status: int
    attributes: Sequence[tuple[str, AttributeValue]]
    created_at: datetime
    seq: int | None = 1  # its Acct-Session-Id is its own


_START, _STOP = 1, 2


def enqueue_sessions(
    conn: Connection, node: str, records: Sequence[SessionRecord | NodeRecord]
) -> None:
    """Spool the records (in order, in the caller's one transaction) and keep the node's
    accounted sessions (`node_session`) with them: a Start adds its session with the
    Start's attributes, an Interim-Update moves its counters, a Stop removes it. That
    table is what an adopter writes the Stops from if the node dies (DESIGN.md 9).

    A statement for many rows each (the records of sessions that arrive together share
    one transaction: this keeps that transaction short)."""
    rows = []
    for record in records:
        seq = record.seq
        if seq is None:
            last = conn.execute(
                select(func.max(_TABLE.c.seq)).where(
                    _TABLE.c.node == node, _TABLE.c.acct_session_id == record.acct_session_id
                )
            ).scalar()
            seq = int(last or 0) + 1
        rows.append(
            {
                "node": node,
                "acct_session_id": record.acct_session_id,
                "seq": seq,
                "status_type": int(record.status),
                "attributes": encode_attributes(record.attributes),
                "created_at": record.created_at,
                "attempts": 0,
                "next_attempt_at": record.created_at,
            }
        )
    if rows:
        conn.execute(insert(_TABLE), rows)
    sessions = [record for record in records if isinstance(record, SessionRecord)]
    starts = [
        {
            "acct_session_id": record.acct_session_id,
            "node": node,
            "started_at": record.created_at,
            "attributes": row["attributes"],
            **_counters(record),
        }
        for record, row in zip(records, rows, strict=True)
        if isinstance(record, SessionRecord) and record.status == _START
    ]
    if starts:
        conn.execute(insert(_SESSIONS), starts)
    interims = [
        {"the_id": record.acct_session_id, **_counters(record)}
        for record in sessions
        if record.status not in (_START, _STOP)
    ]
    if interims:
        conn.execute(_MOVE_COUNTERS, interims)
    stopped = [record.acct_session_id for record in sessions if record.status == _STOP]
    if stopped:
        conn.execute(delete(_SESSIONS).where(_SESSIONS.c.acct_session_id.in_(stopped)))


def _counters(record: SessionRecord) -> dict[str, Any]:
    octets_in, octets_out, packets_in, packets_out = record.counters
    return {
        "octets_in": octets_in,
        "octets_out": octets_out,
        "packets_in": packets_in,
        "packets_out": packets_out,
        "updated_at": record.created_at,
    }


_MOVE_COUNTERS = (
    update(_SESSIONS)
    .where(_SESSIONS.c.acct_session_id == bindparam("the_id"))
    .values(
        octets_in=bindparam("octets_in"),
        octets_out=bindparam("octets_out"),
        packets_in=bindparam("packets_in"),
        packets_out=bindparam("packets_out"),
        updated_at=bindparam("updated_at"),
    )
)


def due(conn: Connection, node: str, now: datetime, limit: int) -> list[SpooledRecord]:
    """This node's records whose next attempt is at or before `now`, oldest first."""
    rows = conn.execute(
        select(_TABLE)
        .where(_TABLE.c.node == node, _TABLE.c.next_attempt_at <= now)
        .order_by(_TABLE.c.id)
        .limit(limit)
    ).all()
    return [
        SpooledRecord(
            id=row.id,
            node=row.node,
            acct_session_id=row.acct_session_id,
            seq=row.seq,
            status=row.status_type,
            attributes=decode_attributes(row.attributes),
            created_at=row.created_at,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
        )
        for row in rows
    ]


def acknowledged(conn: Connection, record_id: int) -> bool:
    """A server acknowledged the record: it leaves the spool. False if it was gone."""
    result = conn.execute(delete(_TABLE).where(_TABLE.c.id == record_id))
    return result.rowcount == 1


def acknowledged_many(conn: Connection, record_ids: Sequence[int]) -> int:
    """Several records left the spool; how many were still there."""
    if not record_ids:
        return 0
    result = conn.execute(delete(_TABLE).where(_TABLE.c.id.in_(record_ids)))
    return int(result.rowcount)


def postpone(conn: Connection, record_id: int, next_attempt_at: datetime) -> bool:
    """No server acknowledged the record: count the attempt, try again at `next_attempt_at`."""
    result = conn.execute(
        update(_TABLE)
        .where(_TABLE.c.id == record_id)
        .values(attempts=_TABLE.c.attempts + 1, next_attempt_at=next_attempt_at)
    )
    return result.rowcount == 1


def pending(conn: Connection, node: str) -> int:
    """How many records of this node wait in the spool (due or not)."""
    return int(
        conn.execute(select(func.count()).select_from(_TABLE).where(_TABLE.c.node == node)).scalar()
        or 0
    )


def summary(conn: Connection, node: str) -> tuple[int, datetime | None]:
    """How many records of this node wait in the spool, and when the oldest was made."""
    count, oldest = conn.execute(
        select(func.count(), func.min(_TABLE.c.created_at)).where(_TABLE.c.node == node)
    ).one()
    return int(count or 0), oldest
