"""Pool invariants under random sequences of operations (hypothesis rule-based state machine).

The machine drives the real allocator and pool administration on a migrated
SQLite file and keeps a plain-Python model of every address. Each rule predicts
its outcome from the model (which address, by which rule, or which refusal);
after each step the database must equal the model, no address holds two leases,
no ICCID two leases in one pool, and `pool list`'s counts add up.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from lns.db import database
from lns.pool import admin
from lns.pool.allocator import (
    AddressInUse,
    AddressOutsidePool,
    AddressReserved,
    Lease,
    LeaseOrigin,
    PoolError,
    PoolExhausted,
    UnknownPool,
    allocate,
    release,
    release_node,
)
from lns.pool.models import PoolAddress

IP = ipaddress.IPv4Address
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# name: (range, exclusions, keep its network and broadcast addresses)
POOLS = {
    "p": ("10.0.0.0/29", ("10.0.0.7",), False),  # 6 addresses: .0 and .7 left out
    "q": ("10.1.0.0/30", (), True),  # 4 addresses
}
ICCIDS = [f"89442000000000000{n:02d}" for n in range(6)]
NODES = ["lns-1", "lns-2"]
ADDRESSES = [IP(f"10.0.0.{n}") for n in range(8)] + [IP(f"10.1.0.{n}") for n in range(4)]
ADDRESSES.append(IP("192.0.2.1"))  # in no pool


@dataclass
class Address:
    """The model of one address row."""

    pool: str
    number: int
    lease: Lease | None = None
    generation: int = 0
    last_iccid: str | None = None
    last_released: datetime | None = None
    reserved: str | None = None

    @property
    def free(self) -> bool:
        return self.lease is None and self.reserved is None


def _seconds(moment: datetime | None) -> float:
    return (moment - T0).total_seconds() if moment is not None else 0.0


class PoolMachine(RuleBasedStateMachine):
    template: Path  # a migrated SQLite file, set by the test below

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="lns-pool-machine-"))
        path = self.directory / "lns.db"
        shutil.copyfile(self.template, path)
        self.engine = database.create_engine(f"sqlite:///{path}")
        self.now = T0
        self.addresses: dict[IP, Address] = {}
        with self.engine.begin() as connection:
            for name, (cidr, exclude, keep) in POOLS.items():
                admin.add_range(
                    connection, name, cidr, exclude, keep_network_broadcast=keep, now=self.tick()
                )
                network = ipaddress.IPv4Network(cidr)
                ends = () if keep else (network.network_address, network.broadcast_address)
                for address in network:
                    if str(address) not in exclude and address not in ends:
                        self.addresses[address] = Address(name, int(address))
        self.stale: list[Lease] = []  # leases that have ended

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.directory, ignore_errors=True)

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    # --- The model's predictions ---

    def leases_of(self, iccid: str) -> dict[str, Lease]:
        return {
            a.pool: a.lease
            for a in self.addresses.values()
            if a.lease is not None and a.lease.iccid == iccid
        }

    def expect_allocation(
        self, pool: str, iccid: str, requested: IP | None
    ) -> tuple[IP, LeaseOrigin] | type[PoolError]:
        held = self.leases_of(iccid)  # after the takeover: none in the pools drawn from
        known = pool in POOLS
        in_pool = [(ip, a) for ip, a in self.addresses.items() if a.pool == pool]
        if known:
            for ip, a in in_pool:
                if a.reserved == iccid and a.lease is None:
                    return ip, LeaseOrigin.RESERVATION
        if requested is not None:
            a = self.addresses.get(requested)
            if a is None:
                return AddressOutsidePool
            assert a.pool not in held
            if a.lease is not None:
                return AddressInUse
            if a.reserved not in (None, iccid):
                return AddressReserved
            return requested, LeaseOrigin.REQUESTED
        if not known:
            return UnknownPool
        sticky = [
            (ip, a) for ip, a in in_pool if a.free and a.last_iccid == iccid and a.last_released
        ]
        if sticky:
            ip, _ = min(sticky, key=lambda pair: (-_seconds(pair[1].last_released), pair[1].number))
            return ip, LeaseOrigin.STICKY
        free = [(ip, a) for ip, a in in_pool if a.free]
        if not free:
            return PoolExhausted
        ip, _ = min(
            free,
            key=lambda pair: (
                pair[1].last_released is not None,
                pair[1].last_released or T0,
                pair[1].number,
            ),
        )
        return ip, LeaseOrigin.LRU

    def end(self, address: IP, now: datetime) -> None:
        a = self.addresses[address]
        assert a.lease is not None
        self.stale.append(a.lease)
        a.lease = None
        a.last_released = now

    # --- Rules ---

    @rule(
        pool=st.sampled_from([*POOLS, "nope"]),
        iccid=st.sampled_from(ICCIDS),
        node=st.sampled_from(NODES),
        requested=st.none() | st.sampled_from(ADDRESSES),
        session=st.integers(0, 0xFFFF),
    )
    def allocate(
        self, pool: str, iccid: str, node: str, requested: IP | None, session: int
    ) -> None:
        now = self.tick()
        # The newest attach wins: the ICCID's live leases in the pools this allocation
        # draws from end first, in the same transaction (undone if it is refused).
        held = self.leases_of(iccid)
        targets = {pool} if pool in POOLS else set()
        if requested is not None and requested in self.addresses and held:
            targets.add(self.addresses[requested].pool)
        taken = tuple(held[name] for name in sorted(targets) if name in held)
        before = {t.address: dataclasses.replace(self.addresses[t.address]) for t in taken}
        for t in taken:
            self.end(t.address, now)
        expected = self.expect_allocation(pool, iccid, requested)
        if isinstance(expected, type):
            for address, saved in before.items():
                self.addresses[address] = saved
                self.stale.remove(saved.lease)  # type: ignore[arg-type]
        outcome: Lease | PoolError
        try:
            with self.engine.begin() as connection:
                outcome = allocate(connection, pool, iccid, node, 1, session, requested, now=now)
        except PoolError as exc:
            outcome = exc
        if isinstance(expected, type):
            assert type(outcome) is expected, (outcome, expected)
            return
        assert isinstance(outcome, Lease), (outcome, expected)
        lease = outcome
        assert (lease.address, lease.origin) == expected
        a = self.addresses[lease.address]
        a.generation += 1
        assert lease == Lease(
            a.pool, lease.address, iccid, node, 1, session, now, lease.origin, a.generation, taken
        )
        a.lease = dataclasses.replace(lease, taken_over=())
        a.last_iccid = iccid

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        live = [a.lease for a in self.addresses.values() if a.lease is not None]
        candidates = live + self.stale[-3:]
        if not candidates:
            return
        lease = data.draw(st.sampled_from(candidates))
        now = self.tick()
        with self.engine.begin() as connection:
            ended = release(connection, lease, now=now)
        assert ended == (lease in live)
        if ended:
            self.end(lease.address, now)

    @rule(node=st.sampled_from(NODES))
    def release_node(self, node: str) -> None:
        now = self.tick()
        with self.engine.begin() as connection:
            count = release_node(connection, node, now=now)
        mine = [
            ip for ip, a in self.addresses.items() if a.lease is not None and a.lease.node == node
        ]
        assert count == len(mine)
        for ip in mine:
            self.end(ip, now)

    @rule(address=st.sampled_from(ADDRESSES))
    def release_address(self, address: IP) -> None:
        now = self.tick()
        a = self.addresses.get(address)
        try:
            with self.engine.begin() as connection:
                ended = admin.release_address(connection, address, now=now)
        except admin.NoLease:
            assert a is not None
            assert a.lease is None
            return
        except AddressOutsidePool:
            assert a is None
            return
        assert a is not None
        assert ended == a.lease
        self.end(address, now)

    @rule(
        pool=st.sampled_from(list(POOLS)),
        address=st.sampled_from(ADDRESSES),
        iccid=st.sampled_from(ICCIDS),
    )
    def reserve(self, pool: str, address: IP, iccid: str) -> None:
        a = self.addresses.get(address)
        expected: type[Exception] | None = None
        if a is None or a.pool != pool:
            expected = AddressOutsidePool
        elif a.reserved == iccid:
            expected = None
        elif a.reserved is not None:
            expected = admin.AlreadyReserved
        elif a.lease is not None and a.lease.iccid != iccid:
            expected = AddressInUse
        elif any(b.pool == pool and b.reserved == iccid for b in self.addresses.values()):
            expected = admin.AlreadyReserved
        refusal: PoolError | None = None
        try:
            with self.engine.begin() as connection:
                admin.reserve(connection, pool, address, iccid, now=self.tick())
        except PoolError as exc:
            refusal = exc
        if expected is not None:
            assert isinstance(refusal, expected), (refusal, expected)
            return
        assert refusal is None, refusal
        assert a is not None
        a.reserved = iccid

    @rule(pool=st.sampled_from(list(POOLS)), address=st.sampled_from(ADDRESSES))
    def unreserve(self, pool: str, address: IP) -> None:
        a = self.addresses.get(address)
        try:
            with self.engine.begin() as connection:
                admin.unreserve(connection, pool, address)
        except AddressOutsidePool:
            assert a is None or a.pool != pool
            return
        except admin.NotReserved:
            assert a is not None
            assert a.reserved is None
            return
        assert a is not None
        assert a.reserved is not None
        a.reserved = None

    # --- Invariants ---

    @invariant()
    def database_equals_model(self) -> None:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(
                    PoolAddress.address,
                    PoolAddress.generation,
                    PoolAddress.last_iccid,
                    PoolAddress.last_released_at,
                    PoolAddress.reserved_iccid,
                    PoolAddress.lease_iccid,
                    PoolAddress.lease_node,
                )
            ).all()
            listed = admin.list_leases(connection)
            usage = {u.name: u for u in admin.pool_usage(connection)}
        actual = {IP(row.address): tuple(row[1:]) for row in rows}
        expected = {
            ip: (
                a.generation,
                a.last_iccid,
                a.last_released,
                a.reserved,
                a.lease.iccid if a.lease else None,
                a.lease.node if a.lease else None,
            )
            for ip, a in self.addresses.items()
        }
        assert actual == expected
        live = [a.lease for a in self.addresses.values() if a.lease is not None]
        assert sorted(listed, key=lambda x: int(x.address)) == sorted(
            live, key=lambda x: int(x.address)
        )
        assert len({(x.pool, x.iccid) for x in live}) == len(live)  # one per ICCID and pool
        for name, u in usage.items():
            mine = [a for a in self.addresses.values() if a.pool == name]
            assert u.size == len(mine)
            assert u.in_use == sum(a.lease is not None for a in mine)
            assert u.reserved == sum(a.reserved is not None for a in mine)
            assert u.free == sum(a.free for a in mine)


def test_pool_invariants(sqlite_template: Path) -> None:
    PoolMachine.template = sqlite_template
    run_state_machine_as_test(
        PoolMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            derandomize=True,
        ),
    )
