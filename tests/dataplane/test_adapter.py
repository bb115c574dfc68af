"""The data plane's Twisted side: routes while sessions live, packets both ways, drops
logged; and the node in ``mode = "none"`` (no device), where IP packets of a real session
over loopback are checked, counted and dropped, and feed accounting and Idle-Timeout.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import LogEvent, globalLogPublisher

from lns.adapters.dataplane import PPP_IP_HEADER, DataPlane, make_dataplane
from lns.adapters.services import make_service
from lns.dataplane import ipv4
from lns.dataplane.forwarder import SessionPath
from lns.ppp.auth import AuthRequest, Decision
from lns.testing import packets
from lns.testing.config import ConfigBuilder
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.device import Device
from lns.testing.lacsim.lac import Lac, default_proxy_lcp, proxy_pap
from lns.testing.pools import sqlite_pool
from lns.testing.ports import free_udp_port

LOCAL = ipaddress.IPv4Address("100.64.0.1")
A = ipaddress.IPv4Address("100.64.1.10")
LAN = ipaddress.IPv4Network("172.20.5.0/24")
OUTSIDE = int(ipaddress.IPv4Address("192.0.2.80"))


class RecordingRoutes:
    """Stands in for RouteChanges (netlink): the routes it was told to keep."""

    def __init__(self) -> None:
        self.routes: set[ipaddress.IPv4Network] = set()

    def add(self, network: ipaddress.IPv4Network) -> None:
        self.routes.add(network)

    def remove(self, network: ipaddress.IPv4Network) -> None:
        self.routes.discard(network)


class RecordingDevice:
    """Stands in for TunDevice: the packets written to it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, packet: bytes) -> bool:
        self.written.append(packet)
        return True


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []

    def send_ppp(self, tunnel_id: int, session_id: int, frame: bytes) -> bool:
        self.sent.append((tunnel_id, session_id, frame))
        return True


def dataplane() -> tuple[DataPlane, RecordingRoutes, RecordingDevice, RecordingLink]:
    plane = DataPlane(LOCAL, True, task.Clock())
    network, device, link = RecordingRoutes(), RecordingDevice(), RecordingLink()
    plane.routes = network
    plane.device = device  # type: ignore[assignment]
    plane.link = link
    return plane, network, device, link


def test_routes_follow_the_sessions():
    plane, network, _, _ = dataplane()
    old = plane.session_opened(SessionPath.for_session((1, 1), A, [LAN], 1450))
    assert network.routes == {ipaddress.IPv4Network(A), LAN}
    # The same SIM again before its old session ended: the newer one owns the routes,
    # and the old one's end must not take them away.
    new = plane.session_opened(SessionPath.for_session((1, 2), A, [LAN], 1450))
    plane.session_closed(old)
    assert network.routes == {ipaddress.IPv4Network(A), LAN}
    plane.session_closed(new)
    assert network.routes == set()
    plane.session_closed(new)  # twice: nothing happens


def test_packets_both_ways():
    plane, _, device, link = dataplane()
    path = plane.session_opened(SessionPath.for_session((7, 9), A, [LAN], 1450))
    up = packets.udp_datagram(int(A), OUTSIDE, 4000, 53, b"q" * 20)
    plane.from_session(path, up)
    assert device.written == [up]
    from_lan = packets.udp_datagram(int(LAN[5]), OUTSIDE, 4000, 53, b"q")
    plane.from_session(path, from_lan)
    down = [
        packets.udp_datagram(OUTSIDE, int(A), 53, 4000, b"a" * 30),
        packets.udp_datagram(OUTSIDE, int(LAN[9]), 53, 4000, b"b"),
        packets.udp_datagram(OUTSIDE, int(A) + 1, 53, 4000, b"nobody"),
    ]
    plane.from_network(down)
    assert link.sent == [(7, 9, PPP_IP_HEADER + down[0]), (7, 9, PPP_IP_HEADER + down[1])]
    assert (path.traffic.packets_up, path.traffic.packets_down) == (2, 2)
    assert path.traffic.octets_up == len(up) + len(from_lan)
    assert plane.forwarder.counters["no_route"] == 1


def test_too_big_with_df_is_answered_with_icmp_through_the_device():
    plane, _, device, link = dataplane()
    plane.session_opened(SessionPath.for_session((1, 1), A, [], 576))
    big = packets.datagram(OUTSIDE, int(A), ipv4.UDP, bytes(1000), dont_fragment=True)
    plane.from_network([big])
    assert link.sent == []
    (icmp,) = device.written
    assert ipv4.destination(icmp) == OUTSIDE
    assert icmp[20] == 3  # Destination Unreachable
    assert icmp[21] == 4  # fragmentation needed
    assert int.from_bytes(icmp[26:28], "big") == 576
    # Without DF it is fragmented to fit, every piece down the session.
    plane.from_network([packets.datagram(OUTSIDE, int(A), ipv4.UDP, bytes(1000))])
    assert len(link.sent) == 2
    assert all(len(frame) - len(PPP_IP_HEADER) <= 576 for _, _, frame in link.sent)


def test_spoofed_and_malformed_packets_are_dropped_counted_and_logged():
    plane, _, device, _ = dataplane()
    path = plane.session_opened(SessionPath.for_session((1, 1), A, [], 1450))
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        plane.from_session(path, packets.udp_datagram(OUTSIDE, OUTSIDE, 1, 2, b"x"))
        plane.from_session(path, b"\x45\x00")
        for _ in range(100):
            plane.from_session(path, packets.udp_datagram(int(A) + 1, OUTSIDE, 1, 2, b"x"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert device.written == []
    assert path.spoofed == 101
    assert plane.forwarder.counters["malformed"] == 1
    lines = [e for e in events if "dropped a packet" in e.get("log_format", "")]
    assert 1 < len(lines) <= 20  # rate-limited
    assert "spoofed source 192.0.2.80" in lines[0]["reason"]
    assert lines[1]["reason"] == "malformed IPv4 packet"


def test_mode_none_has_no_device():
    plane = make_dataplane("none", "lns0", LOCAL, True, task.Clock())
    assert plane.device is None
    assert plane.network is None
    path = plane.session_opened(SessionPath.for_session((1, 1), A, [], 1450))
    plane.from_session(path, packets.udp_datagram(int(A), OUTSIDE, 1, 2, b"x"))
    assert path.traffic.packets_up == 1


class AcceptAll:
    def authenticate(self, request: AuthRequest) -> defer.Deferred[Decision]:
        return defer.succeed(Decision(True, idle_timeout=600.0))


@pytest.mark.integration  # a node on loopback UDP, a LAC on another socket
@pytest_twisted.inlineCallbacks
def test_node_without_a_device_counts_a_sessions_ip_packets(tmp_path: Path):
    config = (
        ConfigBuilder()
        .l2tp(listen=f"127.0.0.1:{free_udp_port()}")
        .lac(name="sim", peer="127.0.0.0/8", secret="s")
        .database(url=sqlite_pool(tmp_path / "lns.db", "100.64.50.0/28"), migrate_on_start=False)
        .dataplane(mode="none")
        .config()
    )
    node = make_service(config, reactor=reactor, authenticator=AcceptAll())
    node.startService()
    assert node.pool is not None
    assert node.l2tp.port is not None
    yield node.pool.ready
    lac = Lac(secret=b"s", rng=random.Random(4))
    client = LacClient(lac, ("127.0.0.1", node.l2tp.port.port), reactor)
    client.start()
    assert node.sessions is not None
    supervisor = node.sessions.supervisor
    try:
        tunnel = lac.open_tunnel(reactor.seconds())
        call = lac.place_call(
            tunnel,
            "8944000000000000123",
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_pap(b"pw"),
            device=Device(rng=random.Random(1)),
        )
        client.flush()
        yield client.until(lambda: call.device is not None and call.device.address is not None)
        assert call.device is not None
        assert call.device.address is not None
        own = int(call.device.address)
        (record,) = supervisor
        path = record.path
        assert path is not None
        assert path.attached
        assert path.traffic is record.traffic  # the session's one set of counters
        before = record.last_activity()
        # A spoofed packet alone is dropped and does not count as activity.
        lac.send_ppp(call, PPP_IP_HEADER + packets.udp_datagram(own + 1, OUTSIDE, 1, 2, b"x"))
        client.flush()
        yield client.until(lambda: path.spoofed == 1)
        assert record.last_activity() == before
        good = packets.udp_datagram(own, OUTSIDE, 1000, 53, b"x" * 50)
        for form in (PPP_IP_HEADER, b"\x00\x21", b"\xff\x03\x21", b"\x21"):
            lac.send_ppp(call, form + good)
        client.flush()
        yield client.until(lambda: path.traffic.packets_up == 4)
    finally:
        yield node.stopService()
        yield client.stop()
    assert path.traffic.packets_up == 4
    assert path.traffic.octets_up == 4 * len(good)
    assert path.spoofed == 1
    assert record.last_activity() > before
    assert len(node.dataplane.dataplane.forwarder) == 0  # type: ignore[union-attr]
