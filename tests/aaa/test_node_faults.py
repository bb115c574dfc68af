"""RADIUS outages seen by whole nodes: the node service as twistd builds it, and twistd
itself killed with SIGKILL, against the FreeRADIUS of the test session.

RADIUS servers are made to go down by putting a :class:`LossyRelay` between the node and
FreeRADIUS and setting its drop fraction to 1 (every datagram lost, both ways), which is
what a dead server or a cut link looks like from the NAS.
"""

from __future__ import annotations

import ipaddress
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from lns.adapters.services import make_service
from lns.ppp.frame import Protocol, decode_frame
from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius, detail_records
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.device import Device
from lns.testing.lacsim.lac import Lac, Phase, SimulatedCall, default_proxy_lcp, proxy_chap
from lns.testing.pools import sqlite_pool
from lns.testing.ports import free_udp_port
from lns.testing.processes import Twistd
from lns.testing.relay import LossyRelay
from lns.testing.sims import PLAIN, RADIUS_SECRET, STATIC

pytestmark = pytest.mark.integration  # nodes and twistd on loopback, the session's FreeRADIUS

L2TP_SECRET = "node-faults-l2tp-secret"
POOL = ipaddress.ip_network("100.64.31.0/28")
ECHO_REQUEST = 9


def echo_requests(call: SimulatedCall) -> int:
    """LCP Echo-Requests the LNS sent down this call (its keepalive)."""
    count = 0
    for frame in call.frames:
        protocol, payload = decode_frame(frame)
        if protocol == Protocol.LCP and payload[:1] == bytes([ECHO_REQUEST]):
            count += 1
    return count


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> defer.Deferred[None]:
    """Fires once ``condition()`` holds (checked every 50 ms); fails after ``timeout``."""

    def check(started: float) -> defer.Deferred[None] | None:
        if condition():
            return None
        if reactor.seconds() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        return task.deferLater(reactor, 0.05, check, started)

    return defer.maybeDeferred(check, reactor.seconds())


@pytest_twisted.inlineCallbacks
def test_all_radius_servers_down_refuses_new_sessions_and_keeps_established_ones(
    tmp_path: Path, freeradius: FreeRadius
):
    relays = [LossyRelay(("127.0.0.1", freeradius.auth_port), 0.0, seed=n) for n in (1, 2)]
    ports = [relay.start() for relay in relays]
    builder = (
        ConfigBuilder()
        .lns(node_name="outage-node")
        .l2tp(listen=f"127.0.0.1:{free_udp_port()}")
        .lac(name="sim", peer="127.0.0.0/8", secret=L2TP_SECRET)
        # A fast keepalive: two missed echoes would end the session.
        .ppp(echo_interval=0.5, echo_failures=2)
        .aaa(require_message_authenticator=False)
        .database(url=sqlite_pool(tmp_path / "lns.db", str(POOL)), migrate_on_start=False)
        .dataplane(mode="none")
    )
    for port in ports:
        builder.radius_server(freeradius, auth_port=port, timeout=0.3, retries=1)
    config = builder.config()
    node = make_service(config, reactor=reactor)
    node.startService()
    assert node.pool is not None
    assert node.l2tp.port is not None
    yield node.pool.ready
    lac = Lac(hostname="lac1", secret=L2TP_SECRET.encode(), rng=random.Random(5))
    client = LacClient(lac, ("127.0.0.1", node.l2tp.port.port), reactor)
    client.start()
    try:
        tunnel = lac.open_tunnel(reactor.seconds())
        up = lac.place_call(
            tunnel,
            PLAIN.iccid,
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_chap(PLAIN.password.encode(), lac.rng),
            device=Device(rng=random.Random(1)),
        )
        client.flush()
        yield client.until(lambda: up.device is not None and up.device.address is not None)

        # Both servers go silent.
        for relay in relays:
            relay.drop_fraction = 1.0
        echoes_before = echo_requests(up)
        refused = lac.place_call(
            tunnel,
            STATIC.iccid,
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_chap(STATIC.password.encode(), lac.rng),
            device=Device(rng=random.Random(2)),
        )
        client.flush()
        yield client.until(lambda: refused.phase is Phase.CLOSED, timeout=20)
        # The established session keeps answering its keepalive all along: many more
        # echoes than echo_failures pass and it stays up.
        yield client.until(lambda: echo_requests(up) >= echoes_before + 6, timeout=20)
        assert up.phase is Phase.ESTABLISHED  # the LNS never cleared it
        assert len(node.sessions.supervisor) == 1  # type: ignore[union-attr]
    finally:
        yield node.stopService()
        yield client.stop()
        for relay in relays:
            yield relay.stop()
    assert refused.result is not None
    assert refused.result.result == 4  # temporary lack of facilities (RFC 2661 4.4.2)
    assert "no RADIUS server answered" in refused.result.message
    assert refused.device is not None
    assert refused.device.address is None
    # Each server was tried: the relays saw requests and answered none.
    assert all(relay.dropped_to_server > 0 for relay in relays)


STATUS_NAMES = {1: "Start", 2: "Stop", 3: "Interim-Update", 7: "Accounting-On", 8: "Accounting-Off"}


def spooled_statuses(database: Path) -> list[str]:
    """Acct-Status-Type of the records in the node's spool, oldest first."""
    connection = sqlite3.connect(database)
    try:
        query = "SELECT status_type FROM accounting_spool ORDER BY id"
        return [STATUS_NAMES[row[0]] for row in connection.execute(query)]
    finally:
        connection.close()


@pytest_twisted.inlineCallbacks
def test_records_spooled_by_a_killed_twistd_are_delivered_after_restart(
    tmp_path: Path, freeradius: FreeRadius
):
    """RADIUS accounting is unreachable while a session comes and goes; the server is
    killed with SIGKILL; the restarted server delivers the Start and Stop it spooled."""
    database_url = sqlite_pool(tmp_path / "lns.db", str(POOL))
    relay = LossyRelay(("127.0.0.1", freeradius.acct_port), 1.0, seed=3)
    acct_port = relay.start()
    l2tp_port = free_udp_port()
    config = (
        ConfigBuilder()
        .lns(node_name="killed-node")
        .l2tp(listen=f"127.0.0.1:{l2tp_port}")
        .lac(name="sim", peer="127.0.0.0/8", secret=L2TP_SECRET)
        .aaa(nas_identifier="killed-node", require_message_authenticator=False)
        .radius_server(freeradius, acct_port=acct_port, timeout=0.5, retries=0)
        .database(url=database_url)
        .dataplane(mode="none")
        .write(tmp_path / "lns.toml")
    )
    database = tmp_path / "lns.db"
    first = server = Twistd(config).spawn()
    client = None
    try:
        yield wait_for(first.listening, 30, "first start")
        lac = Lac(hostname="lac1", secret=L2TP_SECRET.encode(), rng=random.Random(8))
        client = LacClient(lac, ("127.0.0.1", l2tp_port), reactor)
        client.start()
        tunnel = lac.open_tunnel(reactor.seconds())
        call = lac.place_call(
            tunnel,
            PLAIN.iccid,
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_chap(PLAIN.password.encode(), lac.rng),
            device=Device(rng=random.Random(3)),
        )
        client.flush()
        yield client.until(lambda: call.device is not None and call.device.address is not None)
        lac.hang_up(call)
        client.flush()
        # Accounting-On, Start and Stop wait in the spool: nothing reaches FreeRADIUS.
        yield wait_for(
            lambda: spooled_statuses(database) == ["Accounting-On", "Start", "Stop"],
            20,
            "three records spooled",
        )
        first.kill()
        yield client.stop()
        client = None
        assert relay.forwarded_to_server == 0

        relay.drop_fraction = 0.0  # the accounting server is reachable again
        server = Twistd(config).spawn()
        yield wait_for(lambda: spooled_statuses(database) == [], 30, "spool delivered")
    finally:
        if client is not None:
            yield client.stop()
        server.stop(15)
        yield relay.stop()
    records = [r for r in detail_records(freeradius) if r.get("NAS-Identifier") == "killed-node"]
    statuses = [r["Acct-Status-Type"] for r in records]
    assert statuses[:3] == ["Accounting-On", "Start", "Stop"]
    start, stop = records[1], records[2]
    assert start["Acct-Session-Id"] == stop["Acct-Session-Id"]
    assert stop["Calling-Station-Id"] == PLAIN.iccid
    assert stop["Acct-Terminate-Cause"] == "Lost-Carrier"  # the LAC's CDN, result 1
    assert int(stop["Acct-Delay-Time"]) >= 0
    assert "Accounting-On" in statuses[3:]  # the restarted node's own
    output = first.log() + server.log()
    assert RADIUS_SECRET not in output
    assert L2TP_SECRET not in output
    assert "Traceback" not in output


@pytest_twisted.inlineCallbacks
def test_sessions_alive_at_a_sigkill_get_their_stop_from_the_restart_and_only_one(
    tmp_path: Path, freeradius: FreeRadius
):
    """Issue 13: a node killed with live sessions writes their Stops when it starts again
    (Lost-Service, lasting until its last heartbeat), ahead of its Accounting-On; a
    clean restart after that sends no Stop twice."""
    l2tp_port = free_udp_port()
    config = (
        ConfigBuilder()
        .lns(node_name="crashing-node", heartbeat_interval=0.5, dead_after=2.0)
        .l2tp(listen=f"127.0.0.1:{l2tp_port}")
        .lac(name="sim", peer="127.0.0.0/8", secret=L2TP_SECRET)
        .aaa(nas_identifier="crashing-node", require_message_authenticator=False)
        .radius_server(freeradius, timeout=0.5, retries=1)
        .database(url=sqlite_pool(tmp_path / "lns.db", str(POOL)))
        .dataplane(mode="none")
        .write(tmp_path / "lns.toml")
    )
    first = server = Twistd(config).spawn()
    client = None
    try:
        yield wait_for(first.listening, 30, "first start")
        lac = Lac(hostname="lac1", secret=L2TP_SECRET.encode(), rng=random.Random(9))
        client = LacClient(lac, ("127.0.0.1", l2tp_port), reactor)
        client.start()
        tunnel = lac.open_tunnel(reactor.seconds())
        calls = [
            lac.place_call(
                tunnel,
                sim.iccid,
                proxy_lcp=default_proxy_lcp(lac.rng),
                proxy_auth=proxy_chap(sim.password.encode(), lac.rng),
                device=Device(rng=random.Random(n)),
            )
            for n, sim in enumerate((PLAIN, STATIC))
        ]
        client.flush()
        yield client.until(lambda: all(c.device is not None and c.device.address for c in calls))
        node_records = lambda: [  # noqa: E731
            r for r in detail_records(freeradius) if r.get("NAS-Identifier") == "crashing-node"
        ]
        yield wait_for(
            lambda: [r["Acct-Status-Type"] for r in node_records()].count("Start") == 2,
            20,
            "both Starts delivered",
        )
        yield task.deferLater(reactor, 1.0, lambda: None)  # a few heartbeats
        first.kill()
        yield client.stop()
        client = None
        server = Twistd(config).spawn()
        yield wait_for(
            lambda: [r["Acct-Status-Type"] for r in node_records()].count("Stop") == 2,
            30,
            "the Stops of the killed run",
        )
        server.stop(15)  # a clean stop, then a third run
        server = Twistd(config).spawn()
        yield wait_for(server.listening, 30, "third start")
        yield wait_for(
            lambda: [r["Acct-Status-Type"] for r in node_records()].count("Accounting-On") == 3,
            20,
            "the third run's Accounting-On",
        )
    finally:
        if client is not None:
            yield client.stop()
        server.stop(15)
    records = node_records()
    statuses = [r["Acct-Status-Type"] for r in records]
    assert statuses.count("Stop") == 2  # one per session, never twice
    stops = [r for r in records if r["Acct-Status-Type"] == "Stop"]
    starts = {r["Acct-Session-Id"]: r for r in records if r["Acct-Status-Type"] == "Start"}
    for stop in stops:
        start = starts[stop["Acct-Session-Id"]]
        assert stop["Acct-Terminate-Cause"] == "Lost-Service"
        assert stop["Framed-IP-Address"] == start["Framed-IP-Address"]
        assert 0 <= int(stop["Acct-Session-Time"]) <= 10  # until the last heartbeat
    # The second run's Stops came before its own Accounting-On.
    second_on = [i for i, s in enumerate(statuses) if s == "Accounting-On"][1]
    assert all(statuses.index("Stop") < second_on for _ in stops)
    assert "Traceback" not in first.log() + server.log()
