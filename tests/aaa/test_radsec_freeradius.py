"""RadSec (RFC 6614) against a real FreeRADIUS with TLS listeners.

FreeRADIUS 3.2.1 (Debian) runs with three RadSec listeners on loopback
(`lns.testing.freeradius.RadsecListener`), each presenting a certificate of a
throw-away CA made with `openssl` (`lns.testing.pki`): one valid for radius.test and
127.0.0.1, one expired, one not valid yet. Every listener requires our client
certificate. The node is the service as twistd builds it; sessions come from the
LAC simulator over real UDP.

Shown here: a session authenticated and accounted over RadSec (Start and Stop in
FreeRADIUS's detail file) with `require_message_authenticator` on (over TLS the
unsigned replies of this FreeRADIUS are fine); the wrong CA, another name, an
expired and a not-yet-valid certificate each refused with its log line; FreeRADIUS
restarted mid-run: the connection comes back and the Stop records spooled meanwhile
arrive in order; a RadSec server that is down fails over to a UDP server; and a
capture of the connection shows TLS only, no RADIUS attribute in the clear.
Waiting is on log events and on the detail file, polled with a deadline.
"""

from __future__ import annotations

import datetime
import ipaddress
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from aaa.radius.client import RadiusClient, RadiusUnavailable
from aaa.radius.packet import Code, access_request, accounting_request
from lns.adapters.services import make_service
from lns.testing import sims
from lns.testing.capture import Capture, tshark_available
from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius, RadsecListener, detail_records
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.device import Device
from lns.testing.lacsim.lac import Lac, SimulatedCall, default_proxy_lcp, proxy_chap
from lns.testing.pki import CertificateAuthority, Issued
from lns.testing.pools import sqlite_pool
from lns.testing.ports import free_tcp_port, free_udp_port

pytestmark = pytest.mark.integration

L2TP_SECRET = "radsec-l2tp-secret"
POOL = ipaddress.ip_network("100.64.32.0/28")


@dataclass
class Site:
    server: FreeRadius
    binary: str
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    client: Issued
    good: int  # listener ports
    expired: int
    future: int


@pytest.fixture(scope="module")
def site(freeradius_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("radsec-freeradius")
    ca = CertificateAuthority(base / "ca")
    other = CertificateAuthority(base / "other", name="other CA")
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    names = {"dns": ["radius.test"], "ips": ["127.0.0.1"]}
    good = ca.issue("radius.test", **names)
    expired = ca.issue("expired", **names, not_before=now - 10 * day, not_after=now - day)
    future = ca.issue("future", **names, not_before=now + day, not_after=now + 10 * day)
    ports = [free_tcp_port() for _ in range(3)]
    listeners = [
        RadsecListener(port, issued.cert, issued.key, ca.cert)
        for port, issued in zip(ports, (good, expired, future), strict=True)
    ]
    server = FreeRadius(
        sims.RADIUS_SECRET, sims.USERS, free_udp_port(), free_udp_port(), radsec=listeners
    )
    server.start(freeradius_binary)
    try:
        yield Site(server, freeradius_binary, ca, other, ca.issue("lns.test", client=True), *ports)
    finally:
        server.stop()


def tls_server(site: Site, port: int | None = None, **overrides: object) -> dict[str, object]:
    server: dict[str, object] = {
        "address": "127.0.0.1",
        "transport": "tls",
        "port": port or site.good,
        "ca": str(site.ca.cert),
        "cert": str(site.client.cert),
        "key": str(site.client.key),
        "server_name": "radius.test",
        "timeout": 2.0,
    }
    server.update(overrides)
    return server


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[str]]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(e) for e in events]
    globalLogPublisher.removeObserver(events.append)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> defer.Deferred:
    """Fires once ``condition()`` holds (checked every 50 ms); fails after ``timeout``."""

    def check(started: float) -> defer.Deferred | None:
        if condition():
            return None
        if reactor.seconds() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        return task.deferLater(reactor, 0.05, check, started)

    return defer.maybeDeferred(check, reactor.seconds())


def records(site: Site, node_name: str) -> list[dict[str, str]]:
    """The Start/Stop records of one node, in the order FreeRADIUS wrote them."""
    return [
        r
        for r in detail_records(site.server)
        if r.get("NAS-Identifier") == node_name and r.get("Acct-Status-Type") in ("Start", "Stop")
    ]


@dataclass
class Node:
    service: object
    lac: Lac
    client: LacClient
    tunnel: object

    def call(self, sim: sims.Sim, seed: int) -> SimulatedCall:
        call = self.lac.place_call(
            self.tunnel,  # type: ignore[arg-type]
            sim.iccid,
            proxy_lcp=default_proxy_lcp(self.lac.rng),
            proxy_auth=proxy_chap(sim.password.encode(), self.lac.rng),
            device=Device(rng=random.Random(seed)),
        )
        self.client.flush()
        return call

    def hang_up(self, call: SimulatedCall) -> None:
        self.lac.hang_up(call)
        self.client.flush()


def up(call: SimulatedCall) -> bool:
    return call.device is not None and call.device.address is not None


@pytest.fixture
def start_node(tmp_path: Path):
    """start_node(name, radius_servers, **aaa) -> Deferred[Node]; stopped at teardown."""
    running: list[Node] = []

    @defer.inlineCallbacks
    def start(name: str, servers: list[dict[str, object]], **aaa: object):
        builder = (
            ConfigBuilder()
            .lns(node_name=name)
            .l2tp(listen=f"127.0.0.1:{free_udp_port()}")
            .lac(name="sim", peer="127.0.0.0/8", secret=L2TP_SECRET)
            .aaa(nas_identifier=name, **aaa)
            .database(url=sqlite_pool(tmp_path / f"{name}.db", str(POOL)), migrate_on_start=False)
            .dataplane(mode="none")
        )
        for server in servers:
            builder.radius(**server)
        config = builder.config()
        service = make_service(config, reactor=reactor)
        service.startService()
        yield service.pool.ready
        lac = Lac(hostname="lac1", secret=L2TP_SECRET.encode(), rng=random.Random(name))
        client = LacClient(lac, ("127.0.0.1", service.l2tp.port.port), reactor)
        client.start()
        node = Node(service, lac, client, lac.open_tunnel(reactor.seconds()))
        running.append(node)
        return node

    yield start
    for node in running:
        pytest_twisted.blockon(defer.maybeDeferred(node.service.stopService))
        pytest_twisted.blockon(defer.maybeDeferred(node.client.stop))


# --- a session over RadSec ------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_session_authenticated_and_accounted_over_radsec(site, start_node, log_lines):
    # require_message_authenticator on: FreeRADIUS 3.2.1 signs no reply, which over
    # UDP would refuse every session; over TLS it is not needed.
    node = yield start_node("radsec-node", [tls_server(site)], require_message_authenticator=True)
    call = node.call(sims.PLAIN, 1)
    yield node.client.until(lambda: up(call), timeout=20)
    assert call.device.address in POOL
    yield wait_for(lambda: len(records(site, "radsec-node")) == 1, "Start in the detail file")
    node.hang_up(call)
    yield wait_for(lambda: len(records(site, "radsec-node")) == 2, "Stop in the detail file")
    start, stop = records(site, "radsec-node")
    assert (start["Acct-Status-Type"], stop["Acct-Status-Type"]) == ("Start", "Stop")
    assert start["Acct-Session-Id"] == stop["Acct-Session-Id"]
    assert start["Calling-Station-Id"] == sims.PLAIN.iccid
    assert stop["Framed-IP-Address"] == str(call.device.address)
    lines = log_lines()
    assert any(f"RadSec connection to 127.0.0.1:{site.good} open" in line for line in lines)
    assert not [line for line in lines if "RADIUS reply from" in line]  # none dropped


# --- certificates refused ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong CA", "certificate not issued by a CA in ca = "),
        ("other name", "certificate does not carry the name 'other.test'"),
        ("expired", "certificate expired on "),
        ("not yet valid", "certificate not valid before "),
    ],
)
@pytest_twisted.inlineCallbacks
def test_certificate_refused_with_the_reason(site, log_lines, case, expected):
    overrides: dict[str, object] = {
        "wrong CA": {"ca": str(site.other_ca.cert)},
        "other name": {"server_name": "other.test"},
        "expired": {"port": site.expired},
        "not yet valid": {"port": site.future},
    }[case]
    config = ConfigBuilder().radius(**tls_server(site, **overrides)).config()
    client = RadiusClient(config.aaa.radius, reactor, True)
    client.start()
    port = overrides.get("port", site.good)
    label = f"RadSec server 127.0.0.1:{port} "
    try:
        yield wait_for(lambda: any(label in line for line in log_lines()), "the refusal logged")
        [line] = [line for line in log_lines() if label in line]
        assert expected in line, line
        assert "radius.test" in line or "other.test" in line  # the name we expected
        with open(site.client.key) as f:
            assert f.read().splitlines()[1] not in "\n".join(log_lines())
        with pytest.raises(RadiusUnavailable, match=expected):
            yield client.send_auth(
                access_request([("User-Name", sims.PLAIN.iccid)], password=b"pw")
            )
        stats = client.stats()[f"127.0.0.1:{port}"]
        assert stats.connections == 0
        assert stats.requests == 0  # no RADIUS octet sent to that server
    finally:
        yield client.stop()


# --- FreeRADIUS restarted -----------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_freeradius_restarted_connection_back_and_spooled_records_in_order(
    site, start_node, log_lines
):
    node = yield start_node("radsec-restart", [tls_server(site, keepalive_interval=1)])
    first, second = node.call(sims.PLAIN, 2), node.call(sims.STATIC, 3)
    yield node.client.until(lambda: up(first) and up(second), timeout=20)
    yield wait_for(lambda: len(records(site, "radsec-restart")) == 2, "both Starts")

    def opened() -> int:
        return sum(
            f"RadSec connection to 127.0.0.1:{site.good} open" in line for line in log_lines()
        )

    assert opened() == 1
    site.server.stop_process()
    try:
        yield wait_for(
            lambda: any(f"connection to 127.0.0.1:{site.good} lost" in s for s in log_lines()),
            "the connection lost",
        )
        # Both sessions end while the server is down: their Stops wait in the spool.
        node.hang_up(first)
        node.hang_up(second)
        yield wait_for(
            lambda: all(
                any(f"session down: ICCID {sim.iccid}" in s for s in log_lines())
                for sim in (sims.PLAIN, sims.STATIC)
            ),
            "both sessions down",
        )
        yield wait_for(lambda: any("not acknowledged" in s for s in log_lines()), "the spool tried")
        assert len(records(site, "radsec-restart")) == 2
    finally:
        yield threads.deferToThread(site.server.start_process, site.binary)
    yield wait_for(lambda: opened() == 2, "the connection back", timeout=40)
    yield wait_for(lambda: len(records(site, "radsec-restart")) == 4, "the Stops", timeout=60)
    written = [
        (r["Acct-Status-Type"], r["Calling-Station-Id"]) for r in records(site, "radsec-restart")
    ]
    # Each session's records in order; the spool sends different sessions side by side,
    # so only the Stops (spooled during the outage) are known to come after both Starts.
    for sim in (sims.PLAIN, sims.STATIC):
        assert [kind for kind, iccid in written if iccid == sim.iccid] == ["Start", "Stop"]
    assert [kind for kind, _ in written] == ["Start", "Start", "Stop", "Stop"]


# --- failover to UDP ----------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_radsec_server_down_fails_over_to_udp(site, start_node, log_lines):
    nobody = free_tcp_port()  # nothing listens there
    udp = {
        "address": "127.0.0.1",
        "auth_port": site.server.auth_port,
        "acct_port": site.server.acct_port,
        "secret": sims.RADIUS_SECRET,
        "timeout": 2.0,
        "retries": 1,
    }
    node = yield start_node(
        "radsec-failover",
        [tls_server(site, port=nobody), udp],
        require_message_authenticator=False,  # FreeRADIUS over UDP signs no reply
    )
    call = node.call(sims.PLAIN, 4)
    yield node.client.until(lambda: up(call), timeout=20)
    yield wait_for(lambda: len(records(site, "radsec-failover")) == 1, "Start over UDP")
    assert any(
        f"RadSec server 127.0.0.1:{nobody} (radius.test): cannot connect" in line
        for line in log_lines()
    )


# --- what the wire shows ------------------------------------------------------------------------


@pytest.mark.skipif(not tshark_available(), reason="tshark cannot capture on lo")
@pytest_twisted.inlineCallbacks
def test_capture_shows_tls_only(site, tmp_path):
    path = tmp_path / "radsec.pcapng"
    config = ConfigBuilder().radius(**tls_server(site)).config()
    client = RadiusClient(config.aaa.radius, reactor, True)
    with Capture(path, ports=[], tcp_ports=[site.good]):
        client.start()
        try:
            reply = yield client.send_auth(
                access_request(
                    [("User-Name", sims.PLAIN.iccid), ("NAS-Identifier", "radsec-capture")],
                    password=sims.PLAIN.password.encode(),
                )
            )
            assert reply.code is Code.ACCESS_ACCEPT
            reply = yield client.send_acct(
                accounting_request(
                    [
                        ("Acct-Status-Type", 1),
                        ("Acct-Session-Id", "radsec-capture-session"),
                        ("User-Name", sims.PLAIN.iccid),
                        ("NAS-Identifier", "radsec-capture"),
                    ]
                )
            )
            assert reply.code is Code.ACCOUNTING_RESPONSE
        finally:
            yield client.stop()
    raw = path.read_bytes()
    for clear in (sims.PLAIN.iccid, "radsec-capture", sims.PLAIN.password):
        assert clear.encode() not in raw, f"{clear!r} in the clear"
    tshark = shutil.which("tshark") or "tshark"

    def fields(*args: str) -> list[str]:
        done = subprocess.run(
            [tshark, "-n", "-r", str(path), "-d", f"tcp.port=={site.good},tls", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [line for line in done.stdout.splitlines() if line.strip()]

    # Every segment that carries data is TLS, application data after the handshake,
    # and nothing dissects as RADIUS.
    assert fields("-Y", "tcp.len > 0 and not tls") == []
    assert fields("-Y", "radius") == []
    content_types = {
        t
        for line in fields("-T", "fields", "-e", "tls.record.content_type")
        for t in line.split(",")
    }
    assert "22" in content_types  # handshake
    assert "23" in content_types  # application data: the RADIUS packets
