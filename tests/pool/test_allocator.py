"""The allocation rules of lns.pool.allocator, on SQLite and on PostgreSQL (DESIGN.md section 5).

Every test takes the time as an argument (`now=`), so least-recently-used order
is exact; each runs in a migrated database of its own, for each backend.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lns.pool import admin, allocator
from lns.pool.allocator import (
    AddressInUse,
    AddressOutsidePool,
    AddressReserved,
    AllocationRequest,
    Lease,
    LeaseOrigin,
    PoolExhausted,
    UnknownPool,
    allocate,
    reclaim_node,
    release,
    release_all,
    release_node,
    run_batch,
)
from lns.pool.models import PoolAddress

IP = ipaddress.IPv4Address
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def iccid(n: int) -> str:
    return f"894420000000000{n:04d}"


class Clock:
    """Strictly increasing times, one second apart."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def add(engine: Engine, pool: str, cidr: str, *exclude: str) -> None:
    """Every address of ``cidr`` less ``exclude``: the orders below count from the range's
    first address (skipping network and broadcast addresses is tested on its own)."""
    with engine.begin() as connection:
        admin.add_range(connection, pool, cidr, exclude, keep_network_broadcast=True)


def take(
    engine: Engine,
    clock: Clock,
    n: int,
    pool: str = "p",
    *,
    node: str = "lns-1",
    requested: str | None = None,
) -> Lease:
    with engine.begin() as connection:
        return allocate(connection, pool, iccid(n), node, 1, n, requested, now=clock())


def give_back(engine: Engine, clock: Clock, lease: Lease) -> bool:
    with engine.begin() as connection:
        return release(connection, lease, now=clock())


def reserve(engine: Engine, pool: str, address: str, n: int) -> None:
    with engine.begin() as connection:
        admin.reserve(connection, pool, IP(address), iccid(n))


def snapshot(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(select(PoolAddress).order_by(PoolAddress.id)).all()
        return [tuple(row) for row in rows]


# --- Least recently used ---


def test_a_fresh_pool_hands_out_its_lowest_address_first(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    first, second = take(engine, clock, 1), take(engine, clock, 2)
    assert (first.address, second.address) == (IP("10.0.0.0"), IP("10.0.0.1"))
    assert first.origin is LeaseOrigin.LRU
    assert (first.pool, first.iccid, first.node, first.tunnel_id, first.session_id) == (
        "p",
        iccid(1),
        "lns-1",
        1,
        1,
    )
    assert first.started_at > T0


def test_never_used_addresses_come_before_released_ones(engine, clock):
    add(engine, "p", "10.0.0.0/30")
    give_back(engine, clock, take(engine, clock, 1))  # 10.0.0.0 used and released
    assert take(engine, clock, 2).address == IP("10.0.0.1")


def test_released_addresses_come_back_oldest_release_first(engine, clock):
    add(engine, "p", "10.0.0.0/30")
    leases = [take(engine, clock, n) for n in (1, 2, 3, 4)]
    give_back(engine, clock, leases[2])  # 10.0.0.2 released first
    give_back(engine, clock, leases[0])  # then 10.0.0.0
    assert take(engine, clock, 5).address == IP("10.0.0.2")
    assert take(engine, clock, 6).address == IP("10.0.0.0")


def test_a_range_hands_out_neither_its_network_nor_its_broadcast_address(engine, clock):
    # Issue 14: the first SIM of 10.64.16.0/20 got 10.64.16.0, which embedded IP stacks
    # reject often enough; unless told to keep them, add_range leaves both out.
    with engine.begin() as connection:
        info, _created = admin.add_range(connection, "p", "10.0.0.0/29")
    assert (info.exclusions, info.size) == (("10.0.0.0", "10.0.0.7"), 6)
    leases = [take(engine, clock, n) for n in range(1, 7)]
    assert [lease.address for lease in leases] == [IP(f"10.0.0.{n}") for n in range(1, 7)]
    with pytest.raises(PoolExhausted):
        take(engine, clock, 7)
    with pytest.raises(AddressOutsidePool):
        take(engine, clock, 7, requested="10.0.0.7")


@pytest.mark.parametrize(
    ("cidr", "exclude", "exclusions", "size"),
    [
        # Already excluded by the operator: not excluded twice.
        ("10.0.0.0/29", ("10.0.0.0/30",), ("10.0.0.0/30", "10.0.0.7"), 3),
        # A /31 (RFC 3021) and a /32 have no network or broadcast address.
        ("10.0.0.0/31", (), (), 2),
        ("10.0.0.9/32", (), (), 1),
    ],
)
def test_what_a_range_leaves_out(engine, cidr, exclude, exclusions, size):
    with engine.begin() as connection:
        info, _created = admin.add_range(connection, "p", cidr, exclude)
    assert (info.exclusions, info.size) == (exclusions, size)


def test_told_to_keep_them_a_range_hands_out_every_address(engine, clock):
    with engine.begin() as connection:
        info, _created = admin.add_range(
            connection, "p", "10.0.0.0/30", keep_network_broadcast=True
        )
    assert (info.exclusions, info.size) == ((), 4)
    addresses = [take(engine, clock, n).address for n in range(1, 5)]
    assert addresses == [IP(f"10.0.0.{n}") for n in range(4)]


# --- Sticky ---


def test_an_iccid_gets_back_the_address_it_held_last(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    mine = take(engine, clock, 1)
    give_back(engine, clock, mine)
    take(engine, clock, 2)
    again = take(engine, clock, 1)
    assert again.address == mine.address  # although never-used addresses come first
    assert again.origin is LeaseOrigin.STICKY
    assert again.generation == mine.generation + 1


def test_sticky_prefers_the_address_held_most_recently(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    give_back(engine, clock, take(engine, clock, 1))  # ICCID 1 held 10.0.0.0
    give_back(engine, clock, take(engine, clock, 1, requested="10.0.0.5"))  # then 10.0.0.5
    again = take(engine, clock, 1)
    assert (again.address, again.origin) == (IP("10.0.0.5"), LeaseOrigin.STICKY)


def test_sticky_gives_way_when_the_address_was_taken(engine, clock):
    add(engine, "p", "10.0.0.0/31")
    give_back(engine, clock, take(engine, clock, 1))  # ICCID 1 last held 10.0.0.0
    take(engine, clock, 2)  # 10.0.0.1, never used
    taken = take(engine, clock, 3)  # 10.0.0.0, the only one left
    assert taken.address == IP("10.0.0.0")
    with pytest.raises(PoolExhausted):
        take(engine, clock, 1)
    give_back(engine, clock, taken)
    back = take(engine, clock, 1)
    # 10.0.0.0 was released by ICCID 3: it is free again but no longer ICCID 1's.
    assert (back.address, back.origin) == (IP("10.0.0.0"), LeaseOrigin.LRU)


def test_release_keeps_the_iccid_as_last_holder(engine, clock):
    add(engine, "p", "10.0.0.0/30")
    lease = take(engine, clock, 1)
    assert give_back(engine, clock, lease)
    with engine.connect() as connection:
        row = connection.execute(
            select(PoolAddress).where(PoolAddress.address == str(lease.address))
        ).one()
    assert row.last_iccid == iccid(1)
    assert row.last_released_at == clock.now
    assert row.lease_iccid is None
    assert row.lease_node is None
    assert row.lease_started_at is None


def test_release_all_ends_many_leases_and_says_which_had_already_ended(engine, clock, monkeypatch):
    """A stopping node's releases go a few statements for all: each result is what
    `release` would have said, in order; a stale lease (the address handed out again
    since) and a lease named twice end nothing more."""
    monkeypatch.setattr(allocator, "RELEASE_CHUNK", 3)  # several chunks
    add(engine, "p", "10.0.0.0/28")
    held = [take(engine, clock, n) for n in range(1, 9)]
    assert give_back(engine, clock, held[2])  # ended already
    again = take(engine, clock, 20, requested=str(held[2].address))  # and handed out again
    with engine.begin() as connection:
        results = release_all(connection, [*held, held[0]], now=clock())
    assert results == [True, True, False, True, True, True, True, True, False]
    with engine.connect() as connection:
        rows = connection.execute(
            select(PoolAddress.address, PoolAddress.lease_iccid, PoolAddress.last_iccid)
        ).all()
    holders = {row.address: (row.lease_iccid, row.last_iccid) for row in rows}
    assert holders[str(again.address)] == (iccid(20), iccid(20))  # untouched
    for n, lease in enumerate(held, start=1):
        if lease is not held[2]:
            assert holders[str(lease.address)] == (None, iccid(n))  # ended, still sticky


def test_a_batch_releases_in_runs_between_its_allocations(engine, clock):
    """run_batch keeps its items' order: the releases before an allocation are done
    before it (the allocation may get an address they freed)."""
    add(engine, "p", "10.0.0.0/31")  # two addresses
    first, second = take(engine, clock, 1), take(engine, clock, 2)
    with engine.begin() as connection:
        results = run_batch(
            connection, "lns-1", "p", [first, second, AllocationRequest(iccid(3), 1, 3), first]
        )
    assert results[:2] == [True, True]
    assert isinstance(results[2], Lease)
    assert results[3] is False


# --- Reservations ---


def test_a_reservation_comes_first(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    give_back(engine, clock, take(engine, clock, 1))  # sticky would say 10.0.0.0
    reserve(engine, "p", "10.0.0.5", 1)
    lease = take(engine, clock, 1, requested="10.0.0.6")  # and RADIUS says .6
    assert (lease.address, lease.origin) == (IP("10.0.0.5"), LeaseOrigin.RESERVATION)


def test_a_reserved_address_is_never_handed_to_another_iccid(engine, clock):
    add(engine, "p", "10.0.0.0/31")
    reserve(engine, "p", "10.0.0.1", 9)
    assert take(engine, clock, 1).address == IP("10.0.0.0")
    with pytest.raises(PoolExhausted):
        take(engine, clock, 2)
    with pytest.raises(AddressReserved, match=r"10\.0\.0\.1 is reserved for ICCID"):
        take(engine, clock, 2, requested="10.0.0.1")
    assert take(engine, clock, 9).address == IP("10.0.0.1")


# --- Requested (RADIUS Framed-IP-Address) ---


def test_a_requested_address_is_honoured_and_recorded(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    lease = take(engine, clock, 1, requested="10.0.0.6")
    assert (lease.address, lease.origin) == (IP("10.0.0.6"), LeaseOrigin.REQUESTED)
    with engine.connect() as connection:
        (listed,) = admin.list_leases(connection)
    assert listed == lease
    # Recorded: the least-recently-used rule never hands it out while it is held.
    others = {take(engine, clock, n).address for n in range(2, 9)}
    assert IP("10.0.0.6") not in others
    with pytest.raises(PoolExhausted):
        take(engine, clock, 9)


def test_a_requested_address_held_by_another_session_is_refused_with_the_holder(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    take(engine, clock, 1, requested="10.0.0.6", node="lns-2")
    with pytest.raises(AddressInUse) as refused:
        take(engine, clock, 2, requested="10.0.0.6")
    assert refused.value.holder is not None
    assert refused.value.holder.iccid == iccid(1)
    assert str(refused.value) == (
        f"10.0.0.6 is held by the live session of ICCID {iccid(1)} on node 'lns-2' "
        "(tunnel 1, session 1)"
    )


def test_a_requested_address_outside_every_pool_is_refused(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    with pytest.raises(AddressOutsidePool, match=r"192\.0\.2\.1 is not in any pool"):
        take(engine, clock, 1, requested="192.0.2.1")
    with engine.connect() as connection:
        assert connection.scalar(select(func.count(PoolAddress.lease_iccid))) == 0


def test_a_requested_address_of_another_pool_is_leased_there(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    add(engine, "static", "10.9.0.0/29")
    lease = take(engine, clock, 1, "p", requested="10.9.0.3")
    assert (lease.pool, lease.address) == ("static", IP("10.9.0.3"))
    # Framed-IP-Address with no pool configured at all: still recorded in its pool.
    other = take(engine, clock, 2, "no-such-pool", requested="10.9.0.4")
    assert other.pool == "static"


# --- Refusals ---


def test_an_unknown_pool_is_refused(engine, clock):
    with pytest.raises(UnknownPool, match="no pool named 'nope'"):
        take(engine, clock, 1, "nope")


def test_exhaustion_is_a_clear_error_with_nothing_written(engine, clock):
    add(engine, "p", "10.0.0.0/30", "10.0.0.3")
    for n in (1, 2, 3):
        take(engine, clock, n)
    before = snapshot(engine)
    with pytest.raises(PoolExhausted, match="pool 'p' has no free address"):
        take(engine, clock, 4)
    assert snapshot(engine) == before


def test_the_newest_attach_takes_the_live_lease_over(engine, clock):
    # DESIGN.md section 5: one live lease per ICCID and pool; a SIM that attaches
    # again (on this node or another) takes its lease over in the same transaction.
    add(engine, "p", "10.0.0.0/29")
    add(engine, "q", "10.1.0.0/29")
    first = take(engine, clock, 1)
    take(engine, clock, 2)
    again = take(engine, clock, 1, node="lns-2")
    assert again.address == first.address  # sticky: the address it had
    assert again.node == "lns-2"
    assert again.generation == first.generation + 1
    assert again.taken_over == (first,)
    # The old session's release finds a newer generation and changes nothing.
    assert give_back(engine, clock, first) is False
    assert live(engine) == {first.address: (iccid(1), "lns-2"), IP("10.0.0.1"): (iccid(2), "lns-1")}
    # The requested address takes over the lease held in the pool that holds it.
    moved = take(engine, clock, 1, requested="10.0.0.5")
    assert moved.address == IP("10.0.0.5")
    assert moved.taken_over == (dataclasses.replace(again, taken_over=()),)
    assert take(engine, clock, 1, "q").pool == "q"  # another pool is another matter
    assert take(engine, clock, 1, "q").taken_over[0].pool == "q"
    assert give_back(engine, clock, moved) is True


def live(engine: Engine) -> dict[IP, tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(PoolAddress.address, PoolAddress.lease_iccid, PoolAddress.lease_node).where(
                PoolAddress.lease_iccid.is_not(None)
            )
        ).all()
    return {IP(row.address): (row.lease_iccid, row.lease_node) for row in rows}


def test_malformed_arguments_are_refused_before_any_query(engine, clock):
    with engine.begin() as connection:
        with pytest.raises(ValueError, match="16 bits"):
            allocate(connection, "p", iccid(1), "lns-1", 70000, 1)
        with pytest.raises(ValueError, match="ICCID"):
            allocate(connection, "p", "", "lns-1", 1, 1)
        with pytest.raises(ValueError, match="not an IPv4 address"):
            allocate(connection, "p", iccid(1), "lns-1", 1, 1, "2001:db8::1")


# --- Release, start-up release, reclaim ---


def test_releasing_an_ended_lease_leaves_the_next_holder_alone(engine, clock):
    add(engine, "p", "10.0.0.0/32")
    stale = take(engine, clock, 1)
    with engine.begin() as connection:
        admin.release_address(connection, stale.address, now=clock())
    current = take(engine, clock, 2)
    assert current.address == stale.address
    assert not give_back(engine, clock, stale)
    with engine.connect() as connection:
        assert admin.list_leases(connection) == [current]


def test_a_restarting_node_releases_its_own_leases_only(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    mine = [take(engine, clock, n, node="lns-1") for n in (1, 2)]
    theirs = take(engine, clock, 3, node="lns-2")
    with engine.begin() as connection:
        assert release_node(connection, "lns-1", now=clock()) == 2
    with engine.connect() as connection:
        assert admin.list_leases(connection) == [theirs]
    # What they released is still theirs by stickiness.
    back = take(engine, clock, 1)
    assert (back.address, back.origin) == (mine[0].address, LeaseOrigin.STICKY)


def test_reclaim_ends_the_leases_of_a_vanished_node(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    take(engine, clock, 1, node="gone")
    take(engine, clock, 2, node="gone")
    kept = take(engine, clock, 3, node="lns-1")
    with engine.begin() as connection:
        assert reclaim_node(connection, "gone", now=clock()) == 2
        assert reclaim_node(connection, "gone", now=clock()) == 0
    with engine.connect() as connection:
        assert admin.list_leases(connection) == [kept]


# --- What the schema itself refuses ---


def test_the_database_refuses_a_second_live_lease_for_an_iccid_in_a_pool(engine, clock):
    add(engine, "p", "10.0.0.0/29")
    take(engine, clock, 1)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            update(PoolAddress)
            .where(PoolAddress.address == "10.0.0.5")
            .values(
                lease_iccid=iccid(1),
                lease_node="lns-1",
                lease_tunnel_id=1,
                lease_session_id=2,
                lease_started_at=clock(),
                lease_origin="lru",
            )
        )


def test_the_database_refuses_half_a_lease(engine):
    add(engine, "p", "10.0.0.0/29")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            update(PoolAddress).where(PoolAddress.address == "10.0.0.5").values(lease_iccid="x")
        )


def test_the_database_refuses_overlapping_ranges(engine):
    add(engine, "p", "10.0.0.0/29")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        # Bypassing add_range's own check: the address column is unique.
        connection.execute(
            text(
                "INSERT INTO pool_address (pool_id, range_id, address, number) "
                "SELECT pool_id, range_id, address, number FROM pool_address LIMIT 1"
            )
        )


def test_sticky_lookup_uses_the_last_holder_index_not_a_pool_scan(engine):
    """A regression seen under load: without statistics, SQLite answered "the free
    address this ICCID held last" by walking every free address of the pool (the
    pool_id-led LRU index), so a /16 pool allocated about 90 times a second. The query
    plan must start from the last-holder index (PostgreSQL plans from its statistics)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan is checked on SQLite, whose planner has no statistics here")
    from sqlalchemy.dialects import sqlite

    from lns.pool.allocator import _CLAIM_STICKY_OR_LRU

    sql = str(_CLAIM_STICKY_OR_LRU.compile(dialect=sqlite.dialect()))
    count = sql.count("?")
    with engine.connect() as connection:
        plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, (None,) * count).all()
    details = [row[3] for row in plan]
    assert any("ix_pool_address_free_last_iccid" in d for d in details), details


def test_a_batch_refusal_rolls_back_only_its_own_item(engine, clock):
    add(engine, "p", "10.0.0.0/30")  # four addresses
    first = take(engine, clock, 1)
    with engine.begin() as connection:
        results = run_batch(
            connection,
            "lns-1",
            "p",
            [
                AllocationRequest(iccid(2), 1, 2),
                AllocationRequest(iccid(3), 1, 3, pool="nope"),  # refused
                first,  # released
                AllocationRequest(iccid(4), 1, 4),
                AllocationRequest(iccid(5), 1, 5, requested_address=IP("10.0.0.1")),  # held
            ],
        )
    assert [type(r).__name__ for r in results] == [
        "Lease",
        "UnknownPool",
        "bool",
        "Lease",
        "AddressInUse",
    ]
    assert results[2] is True
    assert live(engine) == {
        results[0].address: (iccid(2), "lns-1"),
        results[3].address: (iccid(4), "lns-1"),
    }
