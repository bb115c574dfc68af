"""Several nodes on one database (lns.db.nodes, aaa.radius.adoption, lns.adapters.nodes):
registration, heartbeat, claiming a dead node exactly once, and the Stops an adopter
writes for the dead node's sessions. On SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from aaa.radius import spool
from aaa.radius.adoption import adopt_dead, write_stops
from lns.adapters.nodes import register
from lns.db import database, nodes
from lns.db.models import NodeSession
from lns.pool import admin
from lns.pool.allocator import allocate
from lns.pool.models import PoolAddress
from lns.ppp.termination import TerminateCause

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEAD_AFTER = 30.0
GIGA = 1 << 32


def identity(name: str, instance: str = "run-1", pid: int = 4242) -> nodes.NodeIdentity:
    return nodes.NodeIdentity(name, instance, "127.0.0.2:1701", "0.1.0", "host-a", pid)


def never_gone(host: str, pid: int) -> bool:
    return False


def start_session(conn, node: str, acct_id: str, at: datetime, counters=(0, 0, 0, 0)) -> None:
    """What RadiusAccounting spools for a Start (and, with counters, an Interim)."""
    attributes = [
        ("Acct-Status-Type", 1),
        ("Acct-Session-Id", acct_id),
        ("User-Name", "8944200000000000001"),
        ("NAS-Identifier", node),
        ("Framed-IP-Address", ipaddress.IPv4Address("100.64.0.9")),
        ("Event-Timestamp", int(at.timestamp())),
    ]
    spool.enqueue_sessions(
        conn, node, [spool.SessionRecord(acct_id, 1, attributes, at, (0, 0, 0, 0))]
    )
    if counters != (0, 0, 0, 0):
        spool.enqueue_sessions(
            conn, node, [spool.SessionRecord(acct_id, 3, attributes, at, counters)]
        )


def test_register_refuses_a_live_twin_and_lets_a_gone_one_go(engine):
    with engine.begin() as conn:
        assert nodes.register(conn, identity("node-A"), T0, DEAD_AFTER, never_gone) is None
    twin = identity("node-A", instance="run-2", pid=999)
    with engine.begin() as conn, pytest.raises(nodes.NodeAlive, match="node 'node-A' is already"):
        nodes.register(conn, twin, T0 + timedelta(seconds=10), DEAD_AFTER, never_gone)
    # The holder's process is gone (a crash on this host): not live, whatever the clock.
    with engine.begin() as conn:
        previous = nodes.register(
            conn, twin, T0 + timedelta(seconds=10), DEAD_AFTER, lambda host, pid: pid == 4242
        )
    assert previous is not None
    assert previous.instance == "run-1"
    # Silent longer than the dead limit: not live either.
    with engine.begin() as conn:
        nodes.register(
            conn, identity("node-A", "run-3"), T0 + timedelta(seconds=60), DEAD_AFTER, never_gone
        )


def test_heartbeat_is_refused_once_the_row_is_someone_elses(engine):
    me = identity("node-A")
    with engine.begin() as conn:
        nodes.register(conn, me, T0, DEAD_AFTER, never_gone)
        assert nodes.heartbeat(conn, me, T0 + timedelta(seconds=5), 3)
        nodes.register(conn, identity("node-B"), T0, DEAD_AFTER, never_gone)
    with engine.begin() as conn:
        later = T0 + timedelta(seconds=40)
        nodes.heartbeat(conn, identity("node-B"), later, 0)
        assert [name for name, _ in nodes.claim_dead(conn, "node-B", later, DEAD_AFTER)] == [
            "node-A"
        ]
        assert not nodes.heartbeat(conn, me, later, 3)  # adopted: not ours to run any more


def test_a_dead_node_is_claimed_once_its_stops_written_and_leases_ended(engine):
    with engine.begin() as conn:
        admin.add_range(conn, "default", "100.64.0.0/29")
        for name in ("node-A", "node-B", "node-C"):
            nodes.register(conn, identity(name), T0, DEAD_AFTER, never_gone)
        start_session(conn, "node-A", "A-1", T0)
        start_session(conn, "node-A", "A-2", T0, counters=(3 * GIGA + 7, 11, 5, 6))
        for n in (1, 2):
            allocate(conn, "default", f"894420000000000000{n}", "node-A", 1, n)
    silent_since = T0 + timedelta(seconds=5)
    with engine.begin() as conn:
        nodes.heartbeat(conn, identity("node-A"), silent_since, 2)
    now = T0 + timedelta(seconds=60)
    with engine.begin() as conn:
        for name in ("node-B", "node-C"):
            nodes.heartbeat(conn, identity(name), now, 0)
    with engine.begin() as conn:
        [adopted] = adopt_dead(conn, "node-B", now, DEAD_AFTER)
    with engine.begin() as conn:
        assert adopt_dead(conn, "node-C", now, DEAD_AFTER) == []  # claimed once
    assert (adopted.name, adopted.heard_from, adopted.stops, adopted.leases) == (
        "node-A",
        silent_since,
        2,
        2,
    )
    with engine.begin() as conn:
        records = spool.due(conn, "node-A", now, 100)
        assert conn.execute(select(NodeSession)).all() == []
        assert admin.list_leases(conn) == []
        [state] = [n for n in nodes.list_nodes(conn) if n.name == "node-A"]
    assert [r.status for r in records] == [1, 1, 3, 2, 2]
    stop = dict(records[-1].attributes)
    assert records[-1].acct_session_id == "A-2"
    assert stop["Acct-Status-Type"] == 2
    assert stop["NAS-Identifier"] == "node-A"  # the dead node's records, as it made them
    assert stop["Framed-IP-Address"] == ipaddress.IPv4Address("100.64.0.9")
    assert (stop["Acct-Input-Octets"], stop["Acct-Input-Gigawords"]) == (7, 3)
    assert (stop["Acct-Output-Octets"], stop["Acct-Input-Packets"]) == (11, 5)
    assert stop["Acct-Session-Time"] == 5  # up to the last heartbeat
    assert stop["Event-Timestamp"] == int(silent_since.timestamp())
    assert stop["Acct-Terminate-Cause"] == TerminateCause.LOST_SERVICE
    assert records[-1].created_at == silent_since  # Acct-Delay-Time counts from then
    assert (state.adopted_by, state.status(now, DEAD_AFTER)) == ("node-B", "being adopted")
    assert state.spool_depth == 5
    with engine.begin() as conn:
        assert nodes.adoption_done(conn, "node-A", "node-B", now)
        assert not nodes.adoption_done(conn, "node-A", "node-C", now)


def test_an_adopter_that_dies_before_it_is_done_is_replaced_without_new_stops(engine):
    with engine.begin() as conn:
        for name in ("node-A", "node-B", "node-C"):
            nodes.register(conn, identity(name), T0, DEAD_AFTER, never_gone)
        start_session(conn, "node-A", "A-1", T0)
    t1 = T0 + timedelta(seconds=40)
    with engine.begin() as conn:
        nodes.heartbeat(conn, identity("node-B"), t1, 0)
        nodes.heartbeat(conn, identity("node-C"), t1, 0)
        assert len(adopt_dead(conn, "node-B", t1, DEAD_AFTER)) == 1
    t2 = t1 + timedelta(seconds=40)  # node-B went silent too, node-A's spool not delivered
    with engine.begin() as conn:
        nodes.heartbeat(conn, identity("node-C"), t2, 0)
        adopted = adopt_dead(conn, "node-C", t2, DEAD_AFTER)
    assert sorted((a.name, a.stops) for a in adopted) == [("node-A", 0), ("node-B", 0)]
    with engine.begin() as conn:
        assert [r.status for r in spool.due(conn, "node-A", t2, 100)] == [1, 2]  # one Stop


def test_a_node_restarting_after_a_crash_writes_its_own_stops_once(engine):
    first = identity("node-A")
    with engine.begin() as conn:
        nodes.register(conn, first, T0, DEAD_AFTER, never_gone)
        start_session(conn, "node-A", "A-1", T0)
        nodes.heartbeat(conn, first, T0 + timedelta(seconds=20), 1)
    # SIGKILL; the restarted process (on the same host) finds its predecessor gone.
    again = dataclasses.replace(first, instance="run-2", pid=5)
    crashed = lambda host, pid: (host, pid) == (first.host, first.pid)  # noqa: E731
    previous = register(engine, again, T0 + timedelta(seconds=22), DEAD_AFTER, crashed)
    assert previous is not None
    with engine.begin() as conn:
        [_, stop] = spool.due(conn, "node-A", T0 + timedelta(days=1), 100)
    assert dict(stop.attributes)["Acct-Session-Time"] == 20
    # A clean stop and another start: nothing more is written.
    with engine.begin() as conn:
        nodes.stopped(conn, again, T0 + timedelta(seconds=30))
    register(engine, identity("node-A", "run-3", pid=6), T0 + timedelta(seconds=31), DEAD_AFTER)
    with engine.begin() as conn:
        assert len(spool.due(conn, "node-A", T0 + timedelta(days=1), 100)) == 2
        assert write_stops(conn, "node-A", T0) == 0


def test_two_nodes_claiming_at_once_claim_once(url):
    """On PostgreSQL the claims race in two transactions at the same moment."""
    engine = database.create_engine(url, pool_size=2)
    try:
        with engine.begin() as conn:
            for name in ("node-A", "node-B", "node-C"):
                nodes.register(conn, identity(name), T0, DEAD_AFTER, never_gone)
            start_session(conn, "node-A", "A-1", T0)
        now = T0 + timedelta(seconds=40)
        with engine.begin() as conn:
            for name in ("node-B", "node-C"):
                nodes.heartbeat(conn, identity(name), now, 0)
        results: dict[str, int] = {}
        barrier = threading.Barrier(2)

        def claim(me: str) -> None:
            barrier.wait()
            with engine.begin() as conn:
                results[me] = sum(a.name == "node-A" for a in adopt_dead(conn, me, now, 30.0))

        threads = [threading.Thread(target=claim, args=(me,)) for me in ("node-B", "node-C")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results.values()) == [0, 1]
        with engine.begin() as conn:
            assert [r.status for r in spool.due(conn, "node-A", now, 100)] == [1, 2]
    finally:
        engine.dispose()


def test_allocation_taking_a_lease_over_records_where_from(engine):
    with engine.begin() as conn:
        admin.add_range(conn, "default", "100.64.0.0/29")
        first = allocate(conn, "default", "8944200000000000001", "node-A", 1, 1)
        again = allocate(conn, "default", "8944200000000000001", "node-B", 2, 2)
        [row] = conn.execute(
            select(PoolAddress.lease_taken_from, PoolAddress.lease_node).where(
                PoolAddress.lease_node.is_not(None)
            )
        ).all()
    assert again.taken_over == (first,)
    assert tuple(row) == ("node-A", "node-B")
