"""lns.adapters.pool: the allocator behind Deferreds, on a real bounded thread pool and SQLite."""

from __future__ import annotations

import ipaddress

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from lns.adapters import pool as adapter
from lns.adapters.pool import AddressPoolService, SqlAddressPool
from lns.db import database
from lns.db.executor import SqlExecutor
from lns.pool import admin
from lns.pool.allocator import (
    AllocationRequest,
    Lease,
    LeaseOrigin,
    PoolExhausted,
    PoolUnavailable,
    UnknownPool,
    allocate,
)
from lns.testing.config import ConfigBuilder

ICCID = "8944200000000000017"


def iccid(n: int) -> str:
    return f"894420000000000{n:04d}"


def prepare(url: str, cidr: str = "10.0.0.0/29") -> None:
    engine = database.create_engine(url)
    with engine.begin() as connection:
        admin.add_range(connection, "default", cidr)
        admin.add_range(connection, "other", "10.1.0.0/30")
    engine.dispose()


def leases(url: str) -> list[Lease]:
    engine = database.create_engine(url)
    with engine.connect() as connection:
        found = admin.list_leases(connection)
    engine.dispose()
    return found


def pool_on(engine, node: str = "lns-1", threads: int = 4, **options) -> SqlAddressPool:
    """A pool on a started SQL executor of its own (stopped with it by `shut`)."""
    executor = SqlExecutor(engine, threads=threads, reactor=reactor)
    executor.start()
    return SqlAddressPool(executor, node, **options)


def make_pool(url: str, threads: int = 4) -> SqlAddressPool:
    return pool_on(database.create_engine(url, pool_size=threads), threads=threads)


def shut(pool: SqlAddressPool) -> defer.Deferred:
    return pool.stop().addCallback(lambda _: pool.executor.stop())


@pytest_twisted.inlineCallbacks
def test_allocate_and_release_through_the_thread_pool(sqlite_url):
    prepare(sqlite_url)
    pool = make_pool(sqlite_url)
    released = yield pool.start()
    assert released == 0
    try:
        lease = yield pool.allocate(AllocationRequest(ICCID, tunnel_id=5, session_id=9))
        assert isinstance(lease, Lease)
        assert (lease.pool, lease.address, lease.node) == (
            "default",
            ipaddress.IPv4Address("10.0.0.1"),  # the first after the network address
            "lns-1",
        )
        assert (lease.tunnel_id, lease.session_id, lease.origin) == (5, 9, LeaseOrigin.LRU)
        other = yield pool.allocate(AllocationRequest(iccid(2), 5, 10, pool="other"))
        assert other.pool == "other"
        assert leases(sqlite_url) == [lease, other]
        result = yield pool.release(lease)
        assert result is None
        yield pool.release(lease)  # again: already ended, logged, not an error
        assert leases(sqlite_url) == [other]
        again = yield pool.allocate(AllocationRequest(ICCID, 5, 11))
        assert (again.address, again.origin) == (lease.address, LeaseOrigin.STICKY)
    finally:
        yield shut(pool)


@pytest_twisted.inlineCallbacks
def test_refusals_arrive_as_typed_failures(sqlite_url):
    prepare(sqlite_url, "10.0.0.0/32")
    pool = make_pool(sqlite_url)
    yield pool.start()
    try:
        yield pool.allocate(AllocationRequest(iccid(1), 1, 1))
        with pytest.raises(PoolExhausted):
            yield pool.allocate(AllocationRequest(iccid(2), 1, 2))
        with pytest.raises(UnknownPool):
            yield pool.allocate(AllocationRequest(iccid(3), 1, 3, pool="nope"))
    finally:
        yield shut(pool)


@pytest_twisted.inlineCallbacks
def test_concurrent_allocations_get_distinct_addresses(sqlite_url):
    prepare(sqlite_url, "10.0.0.0/26")  # 62 addresses: its network and broadcast left out
    pool = make_pool(sqlite_url, threads=4)
    yield pool.start()
    try:
        results = yield defer.gatherResults(
            [pool.allocate(AllocationRequest(iccid(n), 1, n)) for n in range(62)]
        )
        assert len({lease.address for lease in results}) == 62
        with pytest.raises(PoolExhausted):
            yield pool.allocate(AllocationRequest(iccid(99), 1, 99))
        yield defer.gatherResults([pool.release(lease) for lease in results])
        assert leases(sqlite_url) == []
    finally:
        yield shut(pool)


@pytest_twisted.inlineCallbacks
def test_start_migrates_when_asked_and_releases_the_leases_of_this_node(empty_sqlite_url):
    engine = database.create_engine(empty_sqlite_url)
    pool = pool_on(engine)
    yield pool.start(migrate=True)
    yield shut(pool)
    assert database.current(engine) == database.head()

    # Leases left behind by this node's previous run, and one of another node.
    prepare(empty_sqlite_url)
    with engine.begin() as connection:
        allocate(connection, "default", iccid(1), "lns-1", 1, 1)
        allocate(connection, "default", iccid(2), "lns-1", 1, 2)
        kept = allocate(connection, "default", iccid(3), "lns-2", 1, 3)
    restarted = pool_on(database.create_engine(empty_sqlite_url))
    released = yield restarted.start(migrate=True)
    yield shut(restarted)
    assert released == 2
    assert leases(empty_sqlite_url) == [kept]


@pytest_twisted.inlineCallbacks
def test_allocations_asked_before_start_finished_wait_for_it(sqlite_url):
    prepare(sqlite_url)
    engine = database.create_engine(sqlite_url)
    with engine.begin() as connection:
        stale = allocate(connection, "default", ICCID, "lns-1", 1, 1)
    pool = pool_on(engine)
    started = pool.start()
    # Asked at once: runs after the start-up release, so the ICCID's stale lease is gone.
    lease = yield pool.allocate(AllocationRequest(ICCID, 2, 2))
    assert (yield started) == 1
    assert (lease.address, lease.origin) == (stale.address, LeaseOrigin.STICKY)
    yield shut(pool)


@pytest_twisted.inlineCallbacks
def test_an_unmigrated_database_fails_start_and_every_allocation(empty_sqlite_url):
    pool = make_pool(empty_sqlite_url)
    waiting = pool.allocate(AllocationRequest(ICCID, 1, 1))  # before start: refused
    with pytest.raises(PoolUnavailable, match="is new"):
        yield waiting
    with pytest.raises(PoolUnavailable, match="run `lns-admin db upgrade`"):
        yield pool.start(migrate=False)
    with pytest.raises(PoolUnavailable, match="run `lns-admin db upgrade`"):
        yield pool.allocate(AllocationRequest(ICCID, 1, 1))
    yield shut(pool)
    with pytest.raises(PoolUnavailable, match="is stopped"):
        yield pool.allocate(AllocationRequest(ICCID, 1, 1))


@pytest_twisted.inlineCallbacks
def test_an_unreachable_database_is_a_pool_unavailable_failure():
    engine = database.create_engine("postgresql+psycopg://lns:pw@127.0.0.1:1/lns")
    pool = pool_on(engine, threads=1)
    with pytest.raises(PoolUnavailable, match="database error: connection failed") as failure:
        yield pool.start()
    assert "pw" not in str(failure.value)
    yield shut(pool)


@pytest_twisted.inlineCallbacks
def test_the_service_starts_the_pool_from_the_configuration(empty_sqlite_url):
    config = (
        ConfigBuilder()
        .lns(node_name="lns-7")
        .database(url=empty_sqlite_url, default_pool="other")
        .config()
    )
    pool = pool_on(
        database.create_engine(config.database.url),
        config.lns.node_name,
        threads=2,
        default_pool=config.database.default_pool,
    )
    assert (pool.node, pool.default_pool) == ("lns-7", "other")
    pool_service = AddressPoolService(pool, migrate=config.database.migrate_on_start)
    pool_service.startService()
    assert pool_service.ready is not None
    yield pool_service.ready
    prepare(empty_sqlite_url)
    lease = yield pool.allocate(AllocationRequest(ICCID, 1, 1))
    assert (lease.pool, lease.node) == ("other", "lns-7")
    yield pool_service.stopService()
    assert not pool_service.running
    yield pool.executor.stop()


@pytest_twisted.inlineCallbacks
def test_a_failed_start_is_tried_again_until_it_succeeds(empty_sqlite_url):
    clock = task.Clock()
    engine = database.create_engine(empty_sqlite_url)
    pool = pool_on(engine, clock=clock, retry_initial=2.0, retry_cap=3.0)
    with pytest.raises(PoolUnavailable, match=r"run `lns-admin db upgrade`"):
        yield pool.start()
    with pytest.raises(PoolUnavailable, match=r"not ready: .* \(trying again in 2 s\)"):
        yield pool.allocate(AllocationRequest(ICCID, 1, 1))
    ready = pool.when_ready()
    clock.advance(2.0)  # the second try: still not migrated
    while not clock.getDelayedCalls():  # its failure comes back from the pool thread
        yield task.deferLater(reactor, 0, lambda: None)
    assert [call.getTime() for call in clock.getDelayedCalls()] == [2.0 + 3.0]  # backed off
    assert not ready.called
    database.upgrade(engine)  # the operator runs `lns-admin db upgrade`
    prepare(empty_sqlite_url)
    clock.advance(3.0)
    yield ready
    lease = yield pool.allocate(AllocationRequest(ICCID, 1, 1))
    assert lease.address == ipaddress.IPv4Address("10.0.0.1")
    yield shut(pool)


@pytest_twisted.inlineCallbacks
def test_stop_fires_once_the_releases_asked_before_it_are_done(sqlite_url):
    """A stopping node ends its sessions, then stops the pool, then the executor: every
    lease those sessions held is ended first, however many batches that takes."""
    prepare(sqlite_url, "10.0.0.0/22")
    pool = make_pool(sqlite_url)
    yield pool.start()
    count = adapter.BATCH * 2 + 7
    held = yield defer.gatherResults(
        [pool.allocate(AllocationRequest(iccid(n), 1, n)) for n in range(1, count + 1)]
    )
    assert len(leases(sqlite_url)) == count
    releases = [pool.release(lease) for lease in held]
    stopped = pool.stop()
    with pytest.raises(PoolUnavailable, match="is stopped"):
        yield pool.release(held[0])  # nothing new once stopped
    yield stopped
    assert all(release.called for release in releases)
    yield pool.executor.stop()
    assert leases(sqlite_url) == []


@pytest_twisted.inlineCallbacks
def test_stopping_cancels_the_retry(empty_sqlite_url):
    clock = task.Clock()
    pool = pool_on(database.create_engine(empty_sqlite_url), clock=clock)
    with pytest.raises(PoolUnavailable):
        yield pool.start()
    assert len(clock.getDelayedCalls()) == 1
    ready = pool.when_ready()
    yield shut(pool)
    assert clock.getDelayedCalls() == []
    with pytest.raises(PoolUnavailable, match="is stopped"):
        yield ready
    yield shut(pool)  # twice is harmless


@pytest_twisted.inlineCallbacks
def test_a_database_gone_meanwhile_refuses_allocations_then_recovers_logging_each_once(
    sqlite_url,
):
    """Issue 16: the database file disappears under a running node (SQLite would write on
    into the deleted file); allocations are refused as unavailable, the outage and the
    recovery are logged once each, and the pool works again without a restart."""
    from pathlib import Path

    from sqlalchemy.engine import make_url
    from twisted.logger import globalLogPublisher

    prepare(sqlite_url)
    pool = make_pool(sqlite_url)
    yield pool.start()
    path = Path(make_url(sqlite_url).database)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        path.rename(path.with_suffix(".away"))
        for n in (1, 2, 3):
            with pytest.raises(PoolUnavailable, match="is gone"):
                yield pool.allocate(AllocationRequest(iccid(n), 1, n))
        path.with_suffix(".away").rename(path)
        lease = yield pool.allocate(AllocationRequest(iccid(4), 1, 4))
        assert lease.address == ipaddress.IPv4Address("10.0.0.1")
    finally:
        globalLogPublisher.removeObserver(events.append)
        yield shut(pool)
    lines = [e.get("log_format", "") for e in events]
    assert len([line for line in lines if "the database is unavailable" in line]) == 1
    assert len([line for line in lines if "usable again" in line]) == 1
