"""lns.adapters.nodes on a fake clock and a real SQLite database: the heartbeat, adopting a
dead node (its Stops spooled and delivered, the adoption marked done), being adopted, and
sessions whose lease another node took over."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from datetime import UTC, datetime

import pytest_twisted
from sqlalchemy import update
from twisted.internet import defer, reactor, task

from aaa.radius import spool
from lns.adapters.nodes import LeaseWatch, NodeLiveness, leases_of
from lns.db import database, nodes
from lns.db.executor import SqlExecutor
from lns.db.models import Node
from lns.pool import admin
from lns.pool.allocator import allocate, lease_notice
from lns.testing.session_world import NODE, World, iccid

HEARTBEAT, DEAD_AFTER = 5.0, 30.0


def identity(name: str) -> nodes.NodeIdentity:
    return nodes.NodeIdentity(name, f"{name}-run", "127.0.0.2:1701", "0.1.0", "host", 1)


class Pump:
    """A spool pump that 'delivers' by deleting what is due (RadiusAccounting's effect)."""

    def __init__(self, engine, node: str) -> None:
        self.engine = engine
        self.node = node
        self.delivered: list[int] = []

    def start(self):
        with self.engine.begin() as conn:
            records = spool.due(conn, self.node, datetime.max.replace(tzinfo=UTC), 1000)
            spool.acknowledged_many(conn, [r.id for r in records])
        self.delivered += [r.status for r in records]
        return defer.succeed(None)

    def stop(self):
        return defer.succeed(None)

    def pending(self):
        with self.engine.begin() as conn:
            return defer.succeed(spool.pending(conn, self.node))


def at(clock: task.Clock) -> datetime:
    return datetime.fromtimestamp(clock.seconds(), UTC)


@pytest_twisted.inlineCallbacks
def test_a_silent_node_is_adopted_by_the_beating_one(sqlite_url):
    engine = database.create_engine(sqlite_url)
    executor = SqlExecutor(engine, threads=1, reactor=reactor)
    executor.start()
    clock = task.Clock()
    clock.advance(1_800_000_000.0)
    pumps: list[Pump] = []

    def pump(name: str) -> Pump:
        pumps.append(Pump(engine, name))
        return pumps[-1]

    world = World()
    abandoned: list[str] = []
    with engine.begin() as conn:
        admin.add_range(conn, "default", "100.64.9.0/29")
        nodes.register(conn, identity("node-A"), at(clock), DEAD_AFTER, lambda h, p: False)
        nodes.register(conn, identity(NODE), at(clock), DEAD_AFTER, lambda h, p: False)
        start = spool.SessionRecord("A-1", 1, [("Acct-Session-Id", "A-1")], at(clock), (0,) * 4)
        spool.enqueue_sessions(conn, "node-A", [start])
        allocate(conn, "default", iccid(1), "node-A", 1, 1)
    liveness = NodeLiveness(
        executor,
        identity(NODE),
        clock,
        heartbeat_interval=HEARTBEAT,
        dead_after=DEAD_AFTER,
        supervisor=world.supervisor,
        abandon=abandoned.append,
        spool_pump=pump,
    )
    try:
        for _ in range(8):  # 40 s of heartbeats; node-A said nothing
            clock.advance(HEARTBEAT)
            yield liveness.beat()
        [adopted] = liveness.adopted
        assert (adopted.name, adopted.stops, adopted.leases) == ("node-A", 1, 1)
        yield liveness.deliver("node-A")
        assert pumps[0].delivered == [1, 2]  # its Start, then the Stop we wrote
        with engine.begin() as conn:
            [state] = [n for n in nodes.list_nodes(conn) if n.name == "node-A"]
            assert admin.list_leases(conn) == []
        assert state.adopted_by == NODE
        assert state.adoption_done_at is not None
        assert abandoned == []
        # The adopted node: its next heartbeat is refused, it abandons its sessions.
        with engine.begin() as conn:
            conn.execute(update(Node).where(Node.name == NODE).values(adopted_by="node-Z"))
        yield liveness.beat()
        assert abandoned == ["this node was declared dead and adopted by another node"]
    finally:
        liveness._running = False
        yield executor.stop()


def test_a_session_whose_lease_went_to_another_node_ends_without_a_release():
    world = World()
    key = world.attach(3)
    record = world.supervisor.get(key)
    assert record is not None
    assert record.lease is not None
    lost = []
    watch = LeaseWatch(None, NODE, task.Clock(), world.supervisor, lost.append, 10.0)  # type: ignore[arg-type]
    # The periodic check: the database no longer lists this lease as ours.
    watch._compare({(int(ipaddress.IPv4Address("100.64.1.99")), 1)}, [record])
    assert lost == [record]
    lost.clear()
    watch._compare({(int(record.lease.address), record.lease.generation)}, [record])
    assert lost == []
    # The NOTIFY of the node that took it over.
    taken = dataclasses.replace(record.lease, taken_over=())
    watch.notified(lease_notice(taken))
    assert lost == [record]
    watch.notified(lease_notice(dataclasses.replace(taken, node="node-B")))  # not ours
    watch.notified("{not json")
    watch.notified(json.dumps({"node": NODE, "address": "100.64.999.1", "generation": 1}))
    # An older lease of the same address (another generation): not this session's.
    stale = dataclasses.replace(taken, generation=taken.generation - 1)
    watch.notified(lease_notice(stale))
    assert lost == [record]
    # The supervisor ends it with a CDN and a Stop, and keeps the lease unreleased.
    world.run(world.supervisor.lease_lost(record, "the SIM attached again elsewhere", world.now))
    assert world.supervisor.get(key) is None
    assert world.pool.released == []
    assert world.cdns()[-1][2] == "the SIM attached again elsewhere"


def test_the_periodic_check_reads_this_node_s_leases_as_the_sessions_hold_them(sqlite_url):
    engine = database.create_engine(sqlite_url)
    with engine.begin() as conn:
        admin.add_range(conn, "default", "100.64.9.0/29")
        ours = allocate(conn, "default", iccid(1), NODE, 1, 1)
        allocate(conn, "default", iccid(2), "node-B", 1, 1)
        assert leases_of(conn, NODE) == {(int(ours.address), ours.generation)}
        # The SIM attaches on node-B: its lease moves there, this node holds none.
        moved = allocate(conn, "default", iccid(1), "node-B", 2, 2)
        assert moved.address == ours.address
        assert leases_of(conn, NODE) == set()
