"""Pool administration behind `lns-admin pool` and `lns-admin lease` (DESIGN.md section 7).

Plain synchronous functions on a Connection, inside the caller's transaction,
like `lns.pool.allocator`; refusals are `PoolError`s with a one-line message.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    String,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from lns.pool.allocator import (
    AddressInUse,
    AddressOutsidePool,
    Lease,
    PoolError,
    UnknownPool,
    lease_from_row,
    release,
)
from lns.pool.models import (
    LIVE_SESSION,
    POOL_NAME_LENGTH,
    Pool,
    PoolAddress,
    PoolRange,
    RangeExclusion,
)

__all__ = [
    "AddressExcluded",
    "AddressNotInPool",
    "AlreadyReserved",
    "InvalidRange",
    "NoLease",
    "NotReserved",
    "OverlappingRange",
    "PoolDetail",
    "PoolHasLeases",
    "PoolUsage",
    "RangeInfo",
    "Reservation",
    "add_range",
    "list_leases",
    "pool_usage",
    "release_address",
    "remove_pool",
    "reserve",
    "show_pool",
    "unreserve",
]

# Larger pools are several ranges: each `pool add` stays one short transaction.
MIN_PREFIX_LENGTH = 16
_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


class InvalidRange(PoolError):
    """A malformed pool name, CIDR or exclusion."""


class OverlappingRange(PoolError):
    pass


class PoolHasLeases(PoolError):
    pass


class AlreadyReserved(PoolError):
    pass


class NotReserved(PoolError):
    pass


class NoLease(PoolError):
    pass


class AddressNotInPool(AddressOutsidePool):
    """The address is outside the pool's ranges; the message says where it is instead."""

    def __init__(self, address: ipaddress.IPv4Address, pool: str, detail: str) -> None:
        PoolError.__init__(self, f"{address} is not in pool {pool!r}: {detail}")
        self.address = address
        self.pool = pool


class AddressExcluded(AddressNotInPool):
    """The address is inside a range of the pool but excluded from it."""


@dataclass(frozen=True, slots=True)
class RangeInfo:
    cidr: str
    exclusions: tuple[str, ...]
    size: int  # addresses handed out from it (the CIDR less its exclusions)


@dataclass(frozen=True, slots=True)
class PoolUsage:
    name: str
    size: int
    in_use: int  # live leases
    reserved: int  # reservations, leased to their ICCID or not
    free: int  # neither leased nor reserved
    ranges: tuple[RangeInfo, ...]


@dataclass(frozen=True, slots=True)
class Reservation:
    pool: str
    address: ipaddress.IPv4Address
    iccid: str
    reserved_at: datetime
    in_use: bool


@dataclass(frozen=True, slots=True)
class PoolDetail:
    usage: PoolUsage
    reservations: tuple[Reservation, ...]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- Pools and ranges ---


def check_pool_name(name: str) -> str:
    if len(name) > POOL_NAME_LENGTH or not _POOL_NAME.fullmatch(name):
        raise InvalidRange(
            f"bad pool name {name!r}: 1 to {POOL_NAME_LENGTH} letters, digits and "
            "'_.:-', starting with a letter or digit"
        )
    return name


def parse_cidr(text: str) -> ipaddress.IPv4Network:
    """An IPv4 network with its host bits clear, at most a /16."""
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidRange(f"not a CIDR: {text!r}") from None
        raise InvalidRange(f"host bits set in {text!r}; did you mean {loose}?") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise InvalidRange(f"{text}: pools are IPv4 (IPCP assigns IPv4 addresses)")
    if network.prefixlen < MIN_PREFIX_LENGTH:
        raise InvalidRange(
            f"{network} is larger than a /{MIN_PREFIX_LENGTH}: add it as several "
            f"/{MIN_PREFIX_LENGTH} ranges"
        )
    return network


def _parse_exclusion(text: str, network: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    try:
        excluded = ipaddress.ip_network(text)
    except ValueError:
        raise InvalidRange(f"bad --exclude {text!r}: not an address or CIDR") from None
    if not isinstance(excluded, ipaddress.IPv4Network) or not excluded.subnet_of(network):
        raise InvalidRange(f"bad --exclude {text!r}: not inside {network}")
    return excluded


def _show_network(network: ipaddress.IPv4Network) -> str:
    """A /32 as its address, anything else as a CIDR."""
    return str(network.network_address) if network.prefixlen == 32 else str(network)


def network_and_broadcast(network: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """The range's network and broadcast addresses; none for a /31 or /32 (RFC 3021)."""
    if network.prefixlen >= 31:
        return []
    return [network.network_address, network.broadcast_address]


def add_range(
    connection: Connection,
    pool: str,
    cidr: str,
    exclude: Iterable[str] = (),
    *,
    keep_network_broadcast: bool = False,
    now: datetime | None = None,
) -> tuple[RangeInfo, bool]:
    """Add `cidr` (less `exclude`) to `pool`, creating the pool; (the range, pool created?).

    The range's network and broadcast addresses are excluded too, unless
    `keep_network_broadcast`: a PPP peer gets a /32 (RFC 1332), so nothing in the
    protocol makes them special, but embedded IP stacks reject an address ending
    in .0 or .255 often enough that operators expect them skipped (they show
    among the range's exclusions). Refuses a range that overlaps any range of
    any pool.
    """
    check_pool_name(pool)
    network = parse_cidr(cidr)
    given = {_parse_exclusion(text, network) for text in exclude}
    if not keep_network_broadcast:
        given |= {
            ipaddress.IPv4Network(address)
            for address in network_and_broadcast(network)
            if not any(address in e for e in given)
        }
    exclusions = sorted(given)
    excluded = sum(e.num_addresses for e in ipaddress.collapse_addresses(exclusions))
    size = network.num_addresses - excluded
    if size == 0:
        raise InvalidRange(f"{network} less its exclusions has no address left to hand out")
    now = _utcnow() if now is None else now
    first, last = int(network.network_address), int(network.broadcast_address)

    overlapping = connection.execute(
        select(PoolRange.cidr, Pool.name)
        .join(Pool, Pool.id == PoolRange.pool_id)
        .where(PoolRange.first_number <= last, PoolRange.last_number >= first)
        .limit(1)
    ).first()
    if overlapping is not None:
        raise OverlappingRange(
            f"{network} overlaps {overlapping.cidr} of pool {overlapping.name!r}"
        )

    pool_id = connection.scalar(select(Pool.id).where(Pool.name == pool))
    created = pool_id is None
    if pool_id is None:
        pool_id = connection.scalar(
            insert(Pool).values(name=pool, created_at=now).returning(Pool.id)
        )
    range_id = connection.scalar(
        insert(PoolRange)
        .values(
            pool_id=pool_id,
            cidr=str(network),
            first_number=first,
            last_number=last,
            created_at=now,
        )
        .returning(PoolRange.id)
    )
    if exclusions:
        connection.execute(
            insert(RangeExclusion),
            [{"range_id": range_id, "network": _show_network(e)} for e in exclusions],
        )
    # One INSERT ... SELECT over a recursive count, so the addresses are made by
    # the database: a /16 in well under a second on either backend.
    numbers = select(literal(first, BigInteger).label("n")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < last))
    n = numbers.c.n
    # PostgreSQL shifts a bigint by an integer only.
    octets = [
        n.bitwise_rshift(literal(shift, Integer)).bitwise_and(255) for shift in (24, 16, 8, 0)
    ]
    dotted: ColumnElement[str] = cast(octets[0], String)
    for octet in octets[1:]:
        dotted = dotted + "." + cast(octet, String)
    rows = select(literal(pool_id, Integer), literal(range_id, Integer), dotted, n).where(
        *(~n.between(int(e.network_address), int(e.broadcast_address)) for e in exclusions)
    )
    try:
        connection.execute(
            insert(PoolAddress).from_select(["pool_id", "range_id", "address", "number"], rows)
        )
    except IntegrityError:
        # Another `pool add` of an overlapping range committed since we looked.
        raise OverlappingRange(f"{network} overlaps a range added meanwhile") from None
    info = RangeInfo(str(network), tuple(_show_network(e) for e in exclusions), size)
    return info, created


def _pool_id(connection: Connection, pool: str) -> int:
    pool_id = connection.scalar(select(Pool.id).where(Pool.name == pool))
    if pool_id is None:
        raise UnknownPool(pool)
    return pool_id


def _ranges(connection: Connection, pool_ids: Sequence[int]) -> dict[int, list[RangeInfo]]:
    exclusions: dict[int, list[str]] = {}
    for range_id, network in connection.execute(
        select(RangeExclusion.range_id, RangeExclusion.network)
        .join(PoolRange, PoolRange.id == RangeExclusion.range_id)
        .where(PoolRange.pool_id.in_(pool_ids))
        .order_by(RangeExclusion.id)
    ):
        exclusions.setdefault(range_id, []).append(network)
    sizes: dict[int, int] = {
        range_id: count
        for range_id, count in connection.execute(
            select(PoolAddress.range_id, func.count())
            .where(PoolAddress.pool_id.in_(pool_ids))
            .group_by(PoolAddress.range_id)
        )
    }
    ranges: dict[int, list[RangeInfo]] = {}
    for range_id, pool_id, cidr in connection.execute(
        select(PoolRange.id, PoolRange.pool_id, PoolRange.cidr)
        .where(PoolRange.pool_id.in_(pool_ids))
        .order_by(PoolRange.first_number)
    ):
        info = RangeInfo(cidr, tuple(exclusions.get(range_id, ())), sizes.get(range_id, 0))
        ranges.setdefault(pool_id, []).append(info)
    return ranges


def pool_usage(connection: Connection, pool: str | None = None) -> list[PoolUsage]:
    """Size, leases, reservations and free addresses of every pool (or of `pool`)."""
    statement = (
        select(
            Pool.id,
            Pool.name,
            func.count(PoolAddress.id).label("size"),
            func.count(PoolAddress.lease_iccid).label("in_use"),
            func.count(PoolAddress.reserved_iccid).label("reserved"),
            func.coalesce(
                func.sum(
                    case(
                        (
                            and_(
                                PoolAddress.id.is_not(None),
                                PoolAddress.lease_iccid.is_(None),
                                PoolAddress.reserved_iccid.is_(None),
                            ),
                            1,
                        ),
                        else_=0,
                    )
                ),
                0,
            ).label("free"),
        )
        .outerjoin(PoolAddress, PoolAddress.pool_id == Pool.id)
        .group_by(Pool.id, Pool.name)
        .order_by(Pool.name)
    )
    if pool is not None:
        statement = statement.where(Pool.name == pool)
    rows = connection.execute(statement).all()
    if pool is not None and not rows:
        raise UnknownPool(pool)
    ranges = _ranges(connection, [row.id for row in rows])
    return [
        PoolUsage(
            name=row.name,
            size=row.size,
            in_use=row.in_use,
            reserved=row.reserved,
            free=int(row.free),
            ranges=tuple(ranges.get(row.id, ())),
        )
        for row in rows
    ]


def show_pool(connection: Connection, pool: str) -> PoolDetail:
    (usage,) = pool_usage(connection, pool)
    rows = connection.execute(
        select(
            PoolAddress.address,
            PoolAddress.reserved_iccid,
            PoolAddress.reserved_at,
            PoolAddress.lease_iccid,
        )
        .join(Pool, Pool.id == PoolAddress.pool_id)
        .where(Pool.name == pool, PoolAddress.reserved_iccid.is_not(None))
        .order_by(PoolAddress.number)
    )
    reservations = tuple(
        Reservation(
            pool=pool,
            address=ipaddress.IPv4Address(row.address),
            iccid=row.reserved_iccid,
            reserved_at=row.reserved_at,
            in_use=row.lease_iccid is not None,
        )
        for row in rows
    )
    return PoolDetail(usage, reservations)


def remove_pool(connection: Connection, pool: str, *, force: bool = False) -> int:
    """Delete the pool, its ranges and addresses; the number of live leases dropped.

    Refuses while leases are live, unless `force`: those sessions keep their
    address until they end, and their release then finds nothing to do.
    """
    pool_id = _pool_id(connection, pool)
    # Lock every address of the pool: no allocation can lease one between the
    # count and the delete (allocators skip these rows or wait for them).
    leased = sum(
        1
        for lease_iccid in connection.scalars(
            select(PoolAddress.lease_iccid).where(PoolAddress.pool_id == pool_id).with_for_update()
        )
        if lease_iccid is not None
    )
    if leased and not force:
        raise PoolHasLeases(
            f"pool {pool!r} has {leased} live lease(s); end those sessions first, or use --force"
        )
    range_ids = select(PoolRange.id).where(PoolRange.pool_id == pool_id).scalar_subquery()
    connection.execute(delete(PoolAddress).where(PoolAddress.pool_id == pool_id))
    connection.execute(delete(RangeExclusion).where(RangeExclusion.range_id.in_(range_ids)))
    connection.execute(delete(PoolRange).where(PoolRange.pool_id == pool_id))
    connection.execute(delete(Pool).where(Pool.id == pool_id))
    return leased


# --- Reservations ---


def _address_in_pool(
    connection: Connection, pool: str, address: ipaddress.IPv4Address
) -> tuple[int, str | None, str | None]:
    """(row id, reserved ICCID, leased ICCID) of `address` in `pool`, locked."""
    pool_id = _pool_id(connection, pool)
    row = connection.execute(
        select(PoolAddress.id, PoolAddress.reserved_iccid, PoolAddress.lease_iccid)
        .where(PoolAddress.pool_id == pool_id, PoolAddress.address == str(address))
        .with_for_update()
    ).one_or_none()
    if row is None:
        raise _not_in_pool(connection, pool_id, pool, address)
    return row.id, row.reserved_iccid, row.lease_iccid


def _not_in_pool(
    connection: Connection, pool_id: int, pool: str, address: ipaddress.IPv4Address
) -> AddressNotInPool:
    """Why `address` has no row in `pool`: excluded from one of its ranges, in another
    pool's range, or outside every range."""
    number = int(address)
    covering = (PoolRange.first_number <= number, PoolRange.last_number >= number)
    own = connection.execute(
        select(PoolRange.id, PoolRange.cidr).where(PoolRange.pool_id == pool_id, *covering)
    ).first()
    if own is not None:
        exclusions = connection.scalars(
            select(RangeExclusion.network).where(RangeExclusion.range_id == own.id)
        )
        for exclusion in exclusions:
            if address in ipaddress.ip_network(exclusion):
                return AddressExcluded(
                    address, pool, f"excluded from its range {own.cidr} (by {exclusion})"
                )
        return AddressExcluded(address, pool, f"excluded from its range {own.cidr}")
    other = connection.execute(
        select(Pool.name, PoolRange.cidr).join(Pool, Pool.id == PoolRange.pool_id).where(*covering)
    ).first()
    if other is not None:
        return AddressNotInPool(
            address, pool, f"it belongs to range {other.cidr} of pool {other.name!r}"
        )
    ranges = connection.scalars(
        select(PoolRange.cidr).where(PoolRange.pool_id == pool_id).order_by(PoolRange.first_number)
    ).all()
    inside = ", ".join(ranges) if ranges else "none"
    return AddressNotInPool(address, pool, f"outside its ranges ({inside})")


def reserve(
    connection: Connection,
    pool: str,
    address: ipaddress.IPv4Address,
    iccid: str,
    *,
    now: datetime | None = None,
) -> Reservation:
    """Keep `address` of `pool` for `iccid` alone (one reservation per ICCID and pool).

    Refused while another ICCID holds the address. Reserving it again for the
    same ICCID changes nothing.
    """
    now = _utcnow() if now is None else now
    row_id, reserved_iccid, lease_iccid = _address_in_pool(connection, pool, address)
    if reserved_iccid == iccid:
        return _reservation(connection, pool, address)
    if reserved_iccid is not None:
        raise AlreadyReserved(f"{address} is already reserved for ICCID {reserved_iccid}")
    if lease_iccid is not None and lease_iccid != iccid:
        raise AddressInUse(address, _live_lease(connection, address))
    other = connection.scalar(
        select(PoolAddress.address)
        .join(Pool, Pool.id == PoolAddress.pool_id)
        .where(Pool.name == pool, PoolAddress.reserved_iccid == iccid)
    )
    if other is not None:
        raise AlreadyReserved(
            f"ICCID {iccid} already has {other} reserved in pool {pool!r}; unreserve it first"
        )
    try:
        connection.execute(
            update(PoolAddress)
            .where(
                PoolAddress.id == row_id,
                PoolAddress.reserved_iccid.is_(None),
                or_(PoolAddress.lease_iccid.is_(None), PoolAddress.lease_iccid == iccid),
            )
            .values(reserved_iccid=iccid, reserved_at=now)
        )
    except IntegrityError:
        raise AlreadyReserved(
            f"ICCID {iccid} was given a reservation in pool {pool!r} meanwhile"
        ) from None
    return _reservation(connection, pool, address)


def unreserve(connection: Connection, pool: str, address: ipaddress.IPv4Address) -> Reservation:
    """Drop the reservation of `address`; returns it. A lease on it stays."""
    row_id, reserved_iccid, _lease_iccid = _address_in_pool(connection, pool, address)
    if reserved_iccid is None:
        raise NotReserved(f"{address} is not reserved")
    reservation = _reservation(connection, pool, address)
    connection.execute(
        update(PoolAddress)
        .where(PoolAddress.id == row_id)
        .values(reserved_iccid=None, reserved_at=None)
    )
    return reservation


def _reservation(connection: Connection, pool: str, address: ipaddress.IPv4Address) -> Reservation:
    row = connection.execute(
        select(PoolAddress.reserved_iccid, PoolAddress.reserved_at, PoolAddress.lease_iccid).where(
            PoolAddress.address == str(address)
        )
    ).one()
    return Reservation(
        pool, address, row.reserved_iccid, row.reserved_at, row.lease_iccid is not None
    )


# --- Leases ---


def list_leases(
    connection: Connection,
    *,
    pool: str | None = None,
    iccid: str | None = None,
    node: str | None = None,
) -> list[Lease]:
    """The live leases of every node (the live_session view), filtered."""
    statement = select(LIVE_SESSION).order_by(LIVE_SESSION.c.pool, LIVE_SESSION.c.number)
    if pool is not None:
        _pool_id(connection, pool)  # an unknown pool is an error, not an empty list
        statement = statement.where(LIVE_SESSION.c.pool == pool)
    if iccid is not None:
        statement = statement.where(LIVE_SESSION.c.iccid == iccid)
    if node is not None:
        statement = statement.where(LIVE_SESSION.c.node == node)
    return [lease_from_row(row.pool, row) for row in connection.execute(statement)]


def _live_lease(connection: Connection, address: ipaddress.IPv4Address) -> Lease | None:
    row = connection.execute(
        select(LIVE_SESSION).where(LIVE_SESSION.c.address == str(address))
    ).one_or_none()
    return None if row is None else lease_from_row(row.pool, row)


def release_address(
    connection: Connection, address: ipaddress.IPv4Address, *, now: datetime | None = None
) -> Lease:
    """End the live lease on `address`, whoever holds it (`lns-admin lease release`)."""
    lease = _live_lease(connection, address)
    if lease is None:
        if connection.scalar(select(PoolAddress.id).where(PoolAddress.address == str(address))):
            raise NoLease(f"{address} has no live lease")
        raise AddressOutsidePool(address)
    if not release(connection, lease, now=now):
        raise NoLease(f"the lease on {address} ended meanwhile")
    return lease
