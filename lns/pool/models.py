"""The SQL schema of the address pools (DESIGN.md section 5), as SQLAlchemy 2 typed models.

One row per address (`pool_address`) carries everything about that address: the
range it comes from, its reservation, its live lease and what stickiness and
least-recently-used order need (the last holder and when it was released).
Keeping the live lease on the address row is what lets every allocation step be
one `UPDATE pool_address ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)`
(the shape of FreeRADIUS's sqlippool), and it makes "two live leases on one
address" unrepresentable; a partial unique index refuses two live leases for one
ICCID in one pool, another two reservations for one ICCID in one pool.

These models describe the schema for queries and for `alembic revision
--autogenerate`; the schema itself is created only by the migrations in
`migrations/versions/`, which must be kept equal to this module.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from lns.db.models import NODE_NAME_LENGTH, Base, UtcDateTime

__all__ = [
    "LIVE_SESSION",
    "LeaseOrigin",
    "Pool",
    "PoolAddress",
    "PoolRange",
    "RangeExclusion",
]

# Lengths shared with the migrations.
POOL_NAME_LENGTH = 64
ICCID_LENGTH = 32  # an ICCID is 19-20 digits; room for the operators' other identities
ADDRESS_LENGTH = 15  # dotted-quad IPv4
CIDR_LENGTH = 18


class LeaseOrigin(enum.StrEnum):
    """Which allocation rule gave the address (DESIGN.md section 5), in the order tried."""

    RESERVATION = "reservation"  # reserved for this ICCID with `lns-admin pool reserve`
    REQUESTED = "requested"  # asked for by name (RADIUS Framed-IP-Address)
    STICKY = "sticky"  # the address this ICCID held last
    LRU = "lru"  # the least recently used free address


class Pool(Base):
    """A named pool: Framed-Pool from RADIUS or `[database] default_pool`."""

    __tablename__ = "pool"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(POOL_NAME_LENGTH), unique=True)
    created_at: Mapped[datetime]


class PoolRange(Base):
    """One CIDR of a pool; `first`..`last` are its addresses as integers (overlap checks)."""

    __tablename__ = "pool_range"
    __table_args__ = (CheckConstraint("first_number <= last_number", name="order"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pool.id", ondelete="CASCADE"), index=True)
    cidr: Mapped[str] = mapped_column(String(CIDR_LENGTH))
    first_number: Mapped[int] = mapped_column(BigInteger)
    last_number: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class RangeExclusion(Base):
    """An address or CIDR of a range that is never handed out (it has no address row)."""

    __tablename__ = "range_exclusion"
    __table_args__ = (UniqueConstraint("range_id", "network"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    range_id: Mapped[int] = mapped_column(ForeignKey("pool_range.id", ondelete="CASCADE"))
    network: Mapped[str] = mapped_column(String(CIDR_LENGTH))


# A free address: neither leased nor reserved. The partial indexes below use the
# same predicate as the allocator's queries, so the planner can match them.
FREE_PREDICATE = text("lease_iccid IS NULL AND reserved_iccid IS NULL")
STICKY_PREDICATE = text("lease_iccid IS NULL AND reserved_iccid IS NULL AND last_iccid IS NOT NULL")
_LEASE_COLUMNS = (
    "lease_iccid",
    "lease_node",
    "lease_tunnel_id",
    "lease_session_id",
    "lease_started_at",
    "lease_origin",
)
_ALL_NULL = " AND ".join(f"{c} IS NULL" for c in _LEASE_COLUMNS)
_NONE_NULL = " AND ".join(f"{c} IS NOT NULL" for c in _LEASE_COLUMNS)
LEASE_COMPLETE = f"({_ALL_NULL}) OR ({_NONE_NULL})"
RESERVATION_COMPLETE = (
    "(reserved_iccid IS NULL AND reserved_at IS NULL)"
    " OR (reserved_iccid IS NOT NULL AND reserved_at IS NOT NULL)"
)
LEASE_ORIGIN_KNOWN = "lease_origin IN ({})".format(", ".join(f"'{o.value}'" for o in LeaseOrigin))
L2TP_IDS_IN_RANGE = "lease_tunnel_id BETWEEN 0 AND 65535 AND lease_session_id BETWEEN 0 AND 65535"


class PoolAddress(Base):
    """One allocatable address, its reservation and its live lease (all lease_* or none)."""

    __tablename__ = "pool_address"
    __table_args__ = (
        CheckConstraint(LEASE_COMPLETE, name="lease_complete"),
        CheckConstraint(RESERVATION_COMPLETE, name="reservation_complete"),
        CheckConstraint(LEASE_ORIGIN_KNOWN, name="lease_origin_known"),
        CheckConstraint(L2TP_IDS_IN_RANGE, name="l2tp_ids_in_range"),
        # One live lease per ICCID and pool (DESIGN.md section 5). Leading with
        # the ICCID also serves "which leases does this ICCID hold".
        Index(
            "uq_pool_address_live_lease_iccid",
            "lease_iccid",
            "pool_id",
            unique=True,
            sqlite_where=text("lease_iccid IS NOT NULL"),
            postgresql_where=text("lease_iccid IS NOT NULL"),
        ),
        Index(
            "uq_pool_address_reserved_iccid",
            "reserved_iccid",
            "pool_id",
            unique=True,
            sqlite_where=text("reserved_iccid IS NOT NULL"),
            postgresql_where=text("reserved_iccid IS NOT NULL"),
        ),
        # The least-recently-used order of the free addresses: never used first,
        # then oldest release, then lowest address. Only free rows are in it, so
        # the allocator's first index entry is its answer however full the pool.
        # PostgreSQL sorts NULL last unless told (the "ops" slot carries that);
        # SQLite sorts NULL first and rejects NULLS FIRST in an index.
        Index(
            "ix_pool_address_free_lru",
            "pool_id",
            "last_released_at",
            "number",
            sqlite_where=FREE_PREDICATE,
            postgresql_where=FREE_PREDICATE,
            postgresql_ops={"last_released_at": "NULLS FIRST"},
        ),
        # Sticky: the free addresses an ICCID held last. Only those ever held are
        # in it: a fresh pool's all-NULL last_iccid would otherwise make the
        # index look useless to the planner (SQLite's ANALYZE), which then sorts
        # every free address instead.
        Index(
            "ix_pool_address_free_last_iccid",
            "last_iccid",
            "pool_id",
            sqlite_where=STICKY_PREDICATE,
            postgresql_where=STICKY_PREDICATE,
        ),
        # Start-up release and `lease reclaim --node`.
        Index(
            "ix_pool_address_lease_node",
            "lease_node",
            sqlite_where=text("lease_node IS NOT NULL"),
            postgresql_where=text("lease_node IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pool.id", ondelete="CASCADE"), index=True)
    range_id: Mapped[int] = mapped_column(
        ForeignKey("pool_range.id", ondelete="CASCADE"), index=True
    )
    # Unique across all pools: overlapping ranges cannot both exist.
    address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH), unique=True)
    number: Mapped[int] = mapped_column(BigInteger)
    # Bumped by every allocation: a lease is (address, generation), so releasing a
    # lease that was reclaimed and handed out again touches nothing.
    generation: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_iccid: Mapped[str | None] = mapped_column(String(ICCID_LENGTH))
    last_released_at: Mapped[datetime | None]
    reserved_iccid: Mapped[str | None] = mapped_column(String(ICCID_LENGTH))
    reserved_at: Mapped[datetime | None]
    lease_iccid: Mapped[str | None] = mapped_column(String(ICCID_LENGTH))
    lease_node: Mapped[str | None] = mapped_column(String(NODE_NAME_LENGTH))
    lease_tunnel_id: Mapped[int | None] = mapped_column(Integer)
    lease_session_id: Mapped[int | None] = mapped_column(Integer)
    lease_started_at: Mapped[datetime | None]
    lease_origin: Mapped[str | None] = mapped_column(String(16))
    # The newest attach wins (DESIGN.md section 5): the node whose session's lease this
    # one took over, and when; kept with the live lease, cleared with it.
    lease_taken_from: Mapped[str | None] = mapped_column(String(NODE_NAME_LENGTH))
    lease_taken_at: Mapped[datetime | None]


# The live sessions of every node, for `lns-admin lease list` and the management
# API: a view created by the migrations, described here for typed queries. It is
# on its own MetaData so that create_all/autogenerate never mistake it for a table.
LIVE_SESSION = Table(
    "live_session",
    MetaData(),
    Column("pool", String(POOL_NAME_LENGTH)),
    Column("address", String(ADDRESS_LENGTH)),
    Column("number", BigInteger),
    Column("generation", Integer),
    Column("iccid", String(ICCID_LENGTH)),
    Column("node", String(NODE_NAME_LENGTH)),
    Column("tunnel_id", Integer),
    Column("session_id", Integer),
    Column("started_at", UtcDateTime()),
    Column("origin", String(16)),
)

LIVE_SESSION_VIEW_SQL = """\
CREATE VIEW live_session AS
SELECT pool.name AS pool,
       pool_address.address AS address,
       pool_address.number AS number,
       pool_address.generation AS generation,
       pool_address.lease_iccid AS iccid,
       pool_address.lease_node AS node,
       pool_address.lease_tunnel_id AS tunnel_id,
       pool_address.lease_session_id AS session_id,
       pool_address.lease_started_at AS started_at,
       pool_address.lease_origin AS origin
FROM pool_address JOIN pool ON pool.id = pool_address.pool_id
WHERE pool_address.lease_iccid IS NOT NULL
"""
