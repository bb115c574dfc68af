"""Address allocation from the SQL pools (DESIGN.md section 5): plain synchronous functions.

Every function takes a SQLAlchemy Connection and works inside the caller's
transaction (`with engine.begin() as connection: allocate(connection, ...)`), so
that a refusal rolls back to nothing written. Only `lns.adapters.pool` knows
about threads.

The newest attach of a SIM wins (DESIGN.md section 5): when the ICCID already
holds a live lease in the pool it is allocated from (the pool named, or the one
holding the requested address), on this node or any other, that lease is ended in
the same transaction and handed back in `Lease.taken_over`, so the caller can
clear the old session; the steps below then usually give the same address back
(sticky). The old session's own release later finds a newer generation on the row
and changes nothing.

`allocate` then tries, in order (FreeRADIUS sqlippool's order, with reservations
first):

1. the address reserved for this ICCID in the pool (`lns-admin pool reserve`);
2. the requested address (RADIUS Framed-IP-Address), in whichever pool holds it,
   refused with a reason when another live session holds it or it is reserved
   for another ICCID;
3. the address this ICCID held last, if it is free (sticky);
4. the least recently used free address of the pool.

Each step is one `UPDATE pool_address SET lease... WHERE id = (SELECT id ...
FOR UPDATE [SKIP LOCKED] LIMIT 1) RETURNING ...` statement (steps 3 and 4 share
one, `WHERE id = COALESCE((sticky), (least recently used))`, to save a round
trip; the second subquery runs only when the first finds nothing). Before them,
one query finds the leases and reservations of the ICCID and one the pool, so
a typical allocation is three statements and a commit. On PostgreSQL the
row lock makes concurrent allocators (threads, nodes) pick different rows: the
sticky and least-recently-used steps skip rows another transaction is taking,
the steps naming one address wait for it. SQLite ignores FOR UPDATE; there
every transaction is `BEGIN IMMEDIATE` (see `lns.db.database`), which
serialises writers. Whatever the code does, the schema refuses two live leases
for one ICCID in one pool, and an address row holds one lease at most.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    ScalarSelect,
    String,
    Update,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from lns.db.models import NODE_NAME_LENGTH, UtcDateTime
from lns.pool.models import ICCID_LENGTH, LeaseOrigin, Pool, PoolAddress

__all__ = [
    "AddressInUse",
    "AddressOutsidePool",
    "AddressReserved",
    "AllocationRequest",
    "IccidHasLease",
    "Lease",
    "LeaseOrigin",
    "PoolError",
    "PoolExhausted",
    "PoolUnavailable",
    "UnknownPool",
    "allocate",
    "reclaim_node",
    "release",
    "release_node",
]


@dataclass(frozen=True, slots=True)
class AllocationRequest:
    """What the session layer asks for (the node is the allocating server's own)."""

    iccid: str
    tunnel_id: int  # our L2TP tunnel ID
    session_id: int  # our L2TP session ID
    pool: str | None = None  # Framed-Pool; None: `[database] default_pool`
    requested_address: ipaddress.IPv4Address | None = None  # Framed-IP-Address


@dataclass(frozen=True, slots=True)
class Lease:
    """A live lease. (address, generation) identifies it: see `release`.

    `taken_over`: the live leases of older sessions of the same ICCID that the
    allocation of this one ended (the newest attach wins).
    """

    pool: str
    address: ipaddress.IPv4Address
    iccid: str
    node: str
    tunnel_id: int
    session_id: int
    started_at: datetime
    origin: LeaseOrigin
    generation: int
    taken_over: tuple[Lease, ...] = ()


if TYPE_CHECKING:
    # A result row of any shape (SQLAlchemy 2.1 types rows by their columns).
    AnyRow: TypeAlias = Row[*tuple[Any, ...]]


# --- Refusals: typed, and `str()` is one line for people ---


class PoolError(Exception):
    """An allocation or pool administration request was refused."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt as it was (message and fields), not through __init__, whose
        # arguments differ per refusal: refusals cross from the SQL worker by pickle.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[PoolError], args: tuple[Any, ...], state: dict[str, Any]) -> PoolError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class UnknownPool(PoolError):
    def __init__(self, pool: str) -> None:
        super().__init__(f"no pool named {pool!r}")
        self.pool = pool


class PoolExhausted(PoolError):
    def __init__(self, pool: str) -> None:
        super().__init__(f"pool {pool!r} has no free address")
        self.pool = pool


class PoolUnavailable(PoolError):
    """The database cannot be used now (unreachable, not migrated): a temporary refusal."""


class AddressOutsidePool(PoolError):
    """The address is in no pool (`pool` None) or not in the named pool."""

    def __init__(self, address: ipaddress.IPv4Address, pool: str | None = None) -> None:
        where = f"pool {pool!r}" if pool is not None else "any pool"
        super().__init__(f"{address} is not in {where}")
        self.address = address
        self.pool = pool


class AddressInUse(PoolError):
    """Another live session holds the address; `holder` is its lease when known."""

    def __init__(self, address: ipaddress.IPv4Address, holder: Lease | None = None) -> None:
        if holder is None:
            detail = "another live session"
        else:
            detail = (
                f"the live session of ICCID {holder.iccid} on node {holder.node!r} "
                f"(tunnel {holder.tunnel_id}, session {holder.session_id})"
            )
        super().__init__(f"{address} is held by {detail}")
        self.address = address
        self.holder = holder


class AddressReserved(PoolError):
    def __init__(self, address: ipaddress.IPv4Address, iccid: str) -> None:
        super().__init__(f"{address} is reserved for ICCID {iccid}")
        self.address = address
        self.iccid = iccid


class IccidHasLease(PoolError):
    """The ICCID got a live lease in the pool from a concurrent allocation (one per
    ICCID and pool, enforced by the schema): the caller may try again, which takes
    that lease over.
    """

    def __init__(self, iccid: str, pool: str | None, lease: Lease | None = None) -> None:
        where = f"pool {pool!r}" if pool is not None else "that pool"
        held = f": {lease.address} on node {lease.node!r}" if lease is not None else ""
        super().__init__(f"ICCID {iccid} already holds a live lease in {where}{held}")
        self.iccid = iccid
        self.pool = pool
        self.lease = lease


# --- Helpers ---


def _utcnow() -> datetime:
    return datetime.now(UTC)


_FREE = and_(PoolAddress.lease_iccid.is_(None), PoolAddress.reserved_iccid.is_(None))

_CLEARED_LEASE: Mapping[str, Any] = {
    "lease_iccid": None,
    "lease_node": None,
    "lease_tunnel_id": None,
    "lease_session_id": None,
    "lease_started_at": None,
    "lease_origin": None,
    "lease_taken_from": None,
    "lease_taken_at": None,
}

_LEASE_COLUMNS = (
    PoolAddress.address,
    PoolAddress.generation,
    PoolAddress.lease_iccid,
    PoolAddress.lease_node,
    PoolAddress.lease_tunnel_id,
    PoolAddress.lease_session_id,
    PoolAddress.lease_started_at,
    PoolAddress.lease_origin,
)


def lease_from_row(pool: str, row: AnyRow) -> Lease:
    """A Lease from a row with the `_LEASE_COLUMNS` (or the live_session view's)."""
    mapping = row._mapping
    prefix = "lease_" if "lease_iccid" in mapping else ""
    return Lease(
        pool=pool,
        address=ipaddress.IPv4Address(mapping["address"]),
        iccid=mapping[f"{prefix}iccid"],
        node=mapping[f"{prefix}node"],
        tunnel_id=mapping[f"{prefix}tunnel_id"],
        session_id=mapping[f"{prefix}session_id"],
        started_at=mapping[f"{prefix}started_at"],
        origin=LeaseOrigin(mapping[f"{prefix}origin"]),
        generation=mapping["generation"],
    )


# --- The statements, built once: each call only binds its parameters ---

_ICCID = bindparam("iccid", type_=String())
_POOL_ID = bindparam("in_pool", type_=Integer())


def _candidate(
    conditions: Sequence[ColumnElement[bool]],
    order_by: Sequence[ColumnElement[Any]] = (),
    *,
    skip_locked: bool,
) -> ScalarSelect[int]:
    """The id of the first row matching `conditions`, locked.

    The steps naming one address wait for its row lock (so that a refusal
    reflects what the other transaction committed); the steps choosing among
    many skip the rows other transactions are taking.
    """
    return (
        select(PoolAddress.id)
        .where(*conditions)
        .order_by(*order_by)
        .limit(1)
        .with_for_update(skip_locked=skip_locked)
        .scalar_subquery()
    )


def _claim(candidate: ColumnElement[Any], origin: ColumnElement[str]) -> Update:
    """Lease the row `candidate` names; RETURNING what the Lease needs."""
    return (
        update(PoolAddress)
        # Checked again on the locked row: a lease is never overwritten.
        .where(PoolAddress.id == candidate, PoolAddress.lease_iccid.is_(None))
        .values(
            lease_iccid=_ICCID,
            lease_node=bindparam("node", type_=String()),
            lease_tunnel_id=bindparam("tunnel_id", type_=Integer()),
            lease_session_id=bindparam("session_id", type_=Integer()),
            lease_started_at=bindparam("now", type_=UtcDateTime()),
            # SET expressions see the row as it was: `origin` may read last_iccid.
            lease_origin=origin,
            lease_taken_from=bindparam("taken_from", type_=String()),
            lease_taken_at=bindparam("taken_at", type_=UtcDateTime()),
            last_iccid=_ICCID,
            generation=PoolAddress.generation + 1,
        )
        .returning(
            PoolAddress.pool_id,
            PoolAddress.address,
            PoolAddress.generation,
            PoolAddress.lease_origin,
        )
    )


# The leases and reservations this ICCID has, in every pool.
_ICCID_ROWS = (
    select(
        PoolAddress.pool_id,
        Pool.name.label("pool_name"),
        PoolAddress.reserved_iccid,
        *_LEASE_COLUMNS,
    )
    .join(Pool, Pool.id == PoolAddress.pool_id)
    .where(or_(PoolAddress.lease_iccid == _ICCID, PoolAddress.reserved_iccid == _ICCID))
)
_POOL_ID_OF = select(Pool.id).where(Pool.name == bindparam("pool", type_=String()))

# 1. This ICCID's reservation in the pool.
_CLAIM_RESERVED = _claim(
    _candidate(
        [
            PoolAddress.pool_id == _POOL_ID,
            PoolAddress.reserved_iccid == _ICCID,
            PoolAddress.lease_iccid.is_(None),
        ],
        skip_locked=False,
    ),
    literal(LeaseOrigin.RESERVATION.value, String()),
)
# 2. The requested address, in whichever pool holds it; not when it is reserved
# for another ICCID, nor in a pool where this ICCID holds a lease already.
_CLAIM_REQUESTED = _claim(
    _candidate(
        [
            PoolAddress.address == bindparam("the_address", type_=String()),
            PoolAddress.lease_iccid.is_(None),
            or_(PoolAddress.reserved_iccid.is_(None), PoolAddress.reserved_iccid == _ICCID),
            PoolAddress.pool_id.not_in(bindparam("held", expanding=True, type_=Integer())),
        ],
        skip_locked=False,
    ),
    literal(LeaseOrigin.REQUESTED.value, String()),
)
# 3. Sticky: the free address this ICCID held last (the latest, if several);
# 4. else the least recently used free address: never used first, then the
# oldest release (the order of the ix_pool_address_free_lru index).
# One statement for both, to save a round trip: COALESCE evaluates the second
# subquery (and takes its lock) only when the first finds nothing.
_CLAIM_STICKY_OR_LRU = _claim(
    func.coalesce(
        _candidate(
            # `pool_id + 0` keeps the planner off the pool_id-led LRU index, which would
            # walk every free address of the pool (SQLite without statistics chose it,
            # and a /16 pool allocated ~90 times a second): the last_iccid index finds
            # the one or two rows this ICCID held.
            [PoolAddress.pool_id + 0 == _POOL_ID, PoolAddress.last_iccid == _ICCID, _FREE],
            [PoolAddress.last_released_at.desc().nulls_last(), PoolAddress.number.asc()],
            skip_locked=True,
        ),
        _candidate(
            [PoolAddress.pool_id == _POOL_ID, _FREE],
            [PoolAddress.last_released_at.asc().nulls_first(), PoolAddress.number.asc()],
            skip_locked=True,
        ),
    ),
    case(
        (PoolAddress.last_iccid == _ICCID, LeaseOrigin.STICKY.value),
        else_=LeaseOrigin.LRU.value,
    ),
)
_RELEASE = (
    update(PoolAddress)
    .where(
        PoolAddress.address == bindparam("the_address", type_=String()),
        PoolAddress.generation == bindparam("the_generation", type_=Integer()),
        PoolAddress.lease_iccid.is_not(None),
    )
    .values(**_CLEARED_LEASE, last_released_at=bindparam("now", type_=UtcDateTime()))
    .returning(PoolAddress.id)
)


# --- Allocation and release ---


def allocate(
    connection: Connection,
    pool: str,
    iccid: str,
    node: str,
    tunnel_id: int,
    session_id: int,
    requested_address: ipaddress.IPv4Address | str | None = None,
    *,
    now: datetime | None = None,
) -> Lease:
    """Lease an address of `pool` to a session; see the module docstring for the rules.

    Raises UnknownPool, PoolExhausted, AddressOutsidePool (the requested
    address is in no pool: the caller may use it unmanaged), AddressInUse,
    AddressReserved or IccidHasLease (a concurrent allocation for the same
    ICCID won the race); ValueError for a malformed argument.
    """
    _check_session(iccid, node, tunnel_id, session_id)
    requested = None if requested_address is None else _ipv4(requested_address)
    now = _utcnow() if now is None else now
    held: dict[int, Lease] = {}  # pool id -> this ICCID's live lease there
    reserved: set[int] = set()  # pools where this ICCID has a reservation
    for row in connection.execute(_ICCID_ROWS, {"iccid": iccid}):
        if row.lease_iccid == iccid:
            held[row.pool_id] = lease_from_row(row.pool_name, row)
        if row.reserved_iccid == iccid:
            reserved.add(row.pool_id)
    pool_id = connection.scalar(_POOL_ID_OF, {"pool": pool})
    taken_over = _take_over(connection, held, pool_id, requested, now)
    parameters: dict[str, Any] = {
        "iccid": iccid,
        "node": node,
        "tunnel_id": tunnel_id,
        "session_id": session_id,
        "now": now,
        "in_pool": pool_id,
        "taken_from": taken_over[0].node if taken_over else None,
        "taken_at": now if taken_over else None,
    }

    def claim(statement: Update, **more: Any) -> Lease | None:
        try:
            row = connection.execute(statement, {**parameters, **more}).one_or_none()
        except IntegrityError:
            # Only the one-live-lease-per-ICCID-and-pool index can refuse this
            # update: another allocation for this ICCID committed since we looked.
            raise IccidHasLease(iccid, None) from None
        if row is None:
            return None
        owner = pool if row.pool_id == pool_id else _pool_name(connection, row.pool_id)
        return Lease(
            owner,
            ipaddress.IPv4Address(row.address),
            iccid,
            node,
            tunnel_id,
            session_id,
            now,
            LeaseOrigin(row.lease_origin),
            row.generation,
            taken_over,
        )

    if pool_id in reserved:
        lease = claim(_CLAIM_RESERVED)
        if lease is not None:
            return lease
    if requested is not None:
        lease = claim(_CLAIM_REQUESTED, the_address=str(requested), held=list(held))
        if lease is not None:
            return lease
        _refuse_requested(connection, requested, iccid, held)
    if pool_id is None:
        raise UnknownPool(pool)
    lease = claim(_CLAIM_STICKY_OR_LRU)
    if lease is None:
        raise PoolExhausted(pool)
    return lease


def _take_over(
    connection: Connection,
    held: dict[int, Lease],
    pool_id: int | None,
    requested: ipaddress.IPv4Address | None,
    now: datetime,
) -> tuple[Lease, ...]:
    """End the ICCID's live leases in the pools this allocation draws from; they leave
    `held`, and come back as the leases taken over."""
    pools = {pool_id} if pool_id is not None else set()
    if requested is not None and held:
        holder = connection.scalar(
            select(PoolAddress.pool_id).where(PoolAddress.address == str(requested))
        )
        if holder is not None:
            pools.add(holder)
    taken = tuple(held.pop(pool) for pool in sorted(pools) if pool in held)
    for lease in taken:
        release(connection, lease, now=now)
        if connection.dialect.name == "postgresql":
            # The node that held it learns at once (on commit) that its session lost
            # its lease; every node also checks its leases now and then.
            connection.execute(select(func.pg_notify(LEASE_CHANNEL, lease_notice(lease))))
    return taken


LEASE_CHANNEL = "lns_lease_taken"


def lease_notice(lease: Lease) -> str:
    """The NOTIFY payload saying that `lease` (its holder's) was taken over."""
    return json.dumps(
        {
            "node": lease.node,
            "address": str(lease.address),
            "generation": lease.generation,
            "iccid": lease.iccid,
        },
        separators=(",", ":"),
    )


def release(connection: Connection, lease: Lease, *, now: datetime | None = None) -> bool:
    """End `lease`; the ICCID stays the address's last holder (stickiness).

    False when the lease had already ended (released from the CLI, reclaimed,
    its pool removed): the address may be another session's by now, which the
    generation check leaves alone.
    """
    parameters = {
        "the_address": str(lease.address),
        "the_generation": lease.generation,
        "now": _utcnow() if now is None else now,
    }
    return connection.execute(_RELEASE, parameters).first() is not None


RELEASE_CHUNK = 500  # leases per UPDATE in `release_all` (two bound values each)


def release_all(
    connection: Connection, leases: Sequence[Lease], *, now: datetime | None = None
) -> list[bool]:
    """`release` for many leases, a few statements for all of them (a stopping node ends
    thousands at once); each result as `release`'s, a lease named twice ended once."""
    now = _utcnow() if now is None else now
    ended: set[tuple[str, int]] = set()
    for start in range(0, len(leases), RELEASE_CHUNK):
        keys = [
            (str(lease.address), lease.generation)
            for lease in leases[start : start + RELEASE_CHUNK]
        ]
        rows = connection.execute(
            update(PoolAddress)
            .where(
                tuple_(PoolAddress.address, PoolAddress.generation).in_(keys),
                PoolAddress.lease_iccid.is_not(None),
            )
            .values(**_CLEARED_LEASE, last_released_at=now)
            .returning(PoolAddress.address, PoolAddress.generation)
        )
        ended.update((address, generation) for address, generation in rows)
    results = []
    for lease in leases:
        key = (str(lease.address), lease.generation)
        results.append(key in ended)
        ended.discard(key)
    return results


def run_batch(
    connection: Connection,
    node: str,
    default_pool: str,
    items: Sequence[AllocationRequest | Lease],
) -> list[Lease | bool | PoolError]:
    """Several allocations (AllocationRequest) and releases (Lease) of `node` in the
    caller's one transaction, each allocation in a savepoint of its own: a refusal rolls
    back its own item only and comes back as its result (the PoolError); a release's
    result is `release`'s. The allocations and releases of sessions that arrive together share
    one commit (on SQLite, one fsync)."""
    results: list[Lease | bool | PoolError] = []
    releases: list[Lease] = []  # a run of releases in a row, ended together
    for item in items:
        if isinstance(item, Lease):
            releases.append(item)
            continue
        if releases:  # a release refuses nothing: no savepoint
            results += release_all(connection, releases)
            releases = []
        try:
            with connection.begin_nested():
                results.append(
                    allocate(
                        connection,
                        item.pool if item.pool is not None else default_pool,
                        item.iccid,
                        node,
                        item.tunnel_id,
                        item.session_id,
                        item.requested_address,
                    )
                )
        except PoolError as refusal:
            results.append(refusal)
    if releases:
        results += release_all(connection, releases)
    return results


def _pool_name(connection: Connection, pool_id: int) -> str:
    name = connection.scalar(select(Pool.name).where(Pool.id == pool_id))
    assert name is not None  # the address row we just leased references it
    return name


def _refuse_requested(
    connection: Connection,
    address: ipaddress.IPv4Address,
    iccid: str,
    held: Mapping[int, Lease],
) -> None:
    """Say why the requested address could not be leased (always raises)."""
    row = connection.execute(
        select(
            PoolAddress.pool_id,
            Pool.name.label("pool_name"),
            PoolAddress.reserved_iccid,
            *_LEASE_COLUMNS,
        )
        .join(Pool, Pool.id == PoolAddress.pool_id)
        .where(PoolAddress.address == str(address))
    ).one_or_none()
    if row is None:
        raise AddressOutsidePool(address)
    if row.pool_id in held:
        raise IccidHasLease(iccid, row.pool_name, held[row.pool_id])
    if row.lease_iccid is not None:
        raise AddressInUse(address, lease_from_row(row.pool_name, row))
    if row.reserved_iccid is not None and row.reserved_iccid != iccid:
        raise AddressReserved(address, row.reserved_iccid)
    # Changed between the two statements (released again already): say what we saw.
    raise AddressInUse(address)


def release_node(connection: Connection, node: str, *, now: datetime | None = None) -> int:
    """End every lease of `node`; the number ended.

    A node calls this for itself at start: its sessions died with its previous
    process (DESIGN.md section 5).
    """
    now = _utcnow() if now is None else now
    result = connection.execute(
        update(PoolAddress)
        .where(PoolAddress.lease_node == node)
        .values(**_CLEARED_LEASE, last_released_at=now)
        .returning(PoolAddress.id)
    )
    return len(result.all())


def reclaim_node(connection: Connection, node: str, *, now: datetime | None = None) -> int:
    """End every lease of another node that is gone for good (`lns-admin lease reclaim`).

    The same operation as `release_node`, named for its caller: only an
    operator knows that a node will not come back.
    """
    return release_node(connection, node, now=now)


# --- Argument checks ---


def _ipv4(address: ipaddress.IPv4Address | str) -> ipaddress.IPv4Address:
    if isinstance(address, ipaddress.IPv4Address):
        return address
    try:
        return ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(f"not an IPv4 address: {address!r}") from None


def _check_session(iccid: str, node: str, tunnel_id: int, session_id: int) -> None:
    if not 0 < len(iccid) <= ICCID_LENGTH:
        raise ValueError(f"an ICCID is 1 to {ICCID_LENGTH} characters, got {iccid!r}")
    if not 0 < len(node) <= NODE_NAME_LENGTH:
        raise ValueError(f"a node name is 1 to {NODE_NAME_LENGTH} characters, got {node!r}")
    for name, value in (("tunnel", tunnel_id), ("session", session_id)):
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"an L2TP {name} ID is 16 bits, got {value}")
