"""PPP end to end over real UDP: 200 SIMs reach IPCP Opened against a running server.

The server is the node service as twistd builds it (real L2TP socket on
loopback, real SQLite address pool prepared with lns-admin), with a stand-in
authenticator injected in place of RADIUS. Each simulated device answers LCP,
authenticates when challenged and runs IPCP as a client; every one ends with
its own address. The capture of the exchange is dissected by tshark.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from lns.adapters.services import make_service
from lns.ppp.auth import AuthMethod, AuthRequest, Decision
from lns.testing.capture import Capture, pcap_check, tshark_available
from lns.testing.config import ConfigBuilder
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.device import Device
from lns.testing.lacsim.lac import Lac, default_proxy_lcp, proxy_chap, proxy_pap
from lns.testing.pools import sqlite_pool
from lns.testing.ports import free_udp_port

SECRET = "ppp-e2e-secret"
PASSWORD = b"password"
SESSIONS = 200
TUNNELS = 4
POOL = ipaddress.ip_network("100.64.8.0/23")


class PasswordAuthenticator:
    """Stands in for RADIUS: the right CHAP/PAP password, or any ICCID-only request."""

    def __init__(self) -> None:
        self.requests: list[AuthRequest] = []

    def authenticate(self, request: AuthRequest) -> defer.Deferred[Decision]:
        self.requests.append(request)
        if request.method is AuthMethod.CHAP:
            assert request.chap_id is not None
            expected = hashlib.md5(bytes([request.chap_id]) + PASSWORD + request.chap_challenge)
            ok = request.chap_response == expected.digest()
        elif request.method is AuthMethod.PAP:
            ok = request.password == PASSWORD
        else:
            ok = True
        return defer.succeed(Decision(ok, reason="" if ok else "wrong password"))


def iccid(n: int) -> str:
    return f"894470{n:013d}"


@pytest_twisted.inlineCallbacks
def test_two_hundred_sessions_reach_ipcp_opened_with_distinct_addresses(tmp_path: Path):
    if not tshark_available():
        pytest.skip("tshark is not installed: the capture cannot be checked")
    config = (
        ConfigBuilder()
        .lns(node_name="e2e")
        .l2tp(listen=f"127.0.0.1:{free_udp_port()}")
        .lac(name="sim", peer="127.0.0.0/8", secret=SECRET)
        .ppp(dns=["192.0.2.53", "192.0.2.54"], no_proxy_auth="challenge")
        .database(url=sqlite_pool(tmp_path / "lns.db", str(POOL)), migrate_on_start=False)
        .dataplane(mode="none")
        .config()
    )
    authenticator = PasswordAuthenticator()
    node = make_service(config, reactor=reactor, authenticator=authenticator)
    node.startService()
    assert node.pool is not None
    yield node.pool.ready
    assert node.l2tp.port is not None
    server_port = node.l2tp.port.port

    lac = Lac(hostname="sim-lac", secret=SECRET.encode(), rng=random.Random(3))
    client = LacClient(lac, ("127.0.0.1", server_port), reactor)
    lac_port = client.start()
    capture_path = tmp_path / "ppp.pcapng"
    try:
        with Capture(capture_path, ports=[server_port, lac_port]):
            tunnels = [lac.open_tunnel(reactor.seconds()) for _ in range(TUNNELS)]
            client.flush()
            calls = []
            for n in range(SESSIONS):
                kind = n % 4  # proxy CHAP, proxy PAP, no proxy auth (we challenge), PAP proxy
                proxy_auth = (
                    proxy_chap(PASSWORD, lac.rng)
                    if kind == 0
                    else proxy_pap(PASSWORD)
                    if kind in (1, 3)
                    else None
                )
                calls.append(
                    lac.place_call(
                        tunnels[n % TUNNELS],
                        iccid(n),
                        proxy_lcp=default_proxy_lcp(lac.rng),
                        proxy_auth=proxy_auth,
                        device=Device(rng=random.Random(n)),
                    )
                )
            client.flush()
            yield client.until(
                lambda: all(c.device is not None and c.device.address for c in calls), timeout=90
            )
            addresses = [c.device.address for c in calls if c.device is not None]
            assert len(set(addresses)) == SESSIONS
            assert all(a in POOL for a in addresses if a is not None)
            assert all(
                c.device is not None
                and c.device.dns
                == [
                    ipaddress.IPv4Address("192.0.2.53"),
                    ipaddress.IPv4Address("192.0.2.54"),
                ]
                for c in calls
            )
            # The sessions without proxy authentication were challenged with CHAP.
            challenged = [c for n, c in enumerate(calls) if n % 4 == 2]
            assert all(c.device is not None and c.device.state.auth_result == "success"
                       for c in challenged)  # fmt: skip
            assert len(node.sessions.supervisor) == SESSIONS  # type: ignore[union-attr]

            for call in calls:
                lac.hang_up(call)
            client.flush()
            yield client.until(
                lambda: (
                    not len(node.sessions.supervisor)  # type: ignore[union-attr]
                    and all(t.channel.idle for t in tunnels)
                ),
                timeout=60,
            )
    finally:
        yield node.stopService()  # StopCCN, acknowledged by the still-running LAC
        yield client.stop()

    result = pcap_check(capture_path, [server_port, lac_port], secret=SECRET)
    assert result.returncode == 0, result.stdout + result.stderr
    for protocol in ("0x8021", "0xc223"):  # IPCP, CHAP
        assert protocol in result.stdout, result.stdout


@pytest_twisted.inlineCallbacks
def test_a_sim_that_attaches_again_takes_over_its_address(tmp_path: Path):
    config = (
        ConfigBuilder()
        .l2tp(listen=f"127.0.0.1:{free_udp_port()}")
        .lac(name="sim", peer="127.0.0.0/8", secret=SECRET)
        .database(url=sqlite_pool(tmp_path / "lns.db", "100.64.9.0/29"), migrate_on_start=False)
        .dataplane(mode="none")
        .config()
    )
    node = make_service(config, reactor=reactor, authenticator=PasswordAuthenticator())
    node.startService()
    assert node.pool is not None
    yield node.pool.ready
    assert node.l2tp.port is not None
    lac = Lac(hostname="sim-lac", secret=SECRET.encode(), rng=random.Random(5))
    client = LacClient(lac, ("127.0.0.1", node.l2tp.port.port), reactor)
    client.start()
    try:
        tunnel = lac.open_tunnel(reactor.seconds())
        first = lac.place_call(
            tunnel,
            iccid(1),
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_pap(PASSWORD),
            device=Device(rng=random.Random(1)),
        )
        client.flush()
        yield client.until(lambda: first.device is not None and first.device.address is not None)
        assert first.device is not None
        address = first.device.address

        # The same SIM again (the LAC never sent a CDN for the first call).
        second = lac.place_call(
            tunnel,
            iccid(1),
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_pap(PASSWORD),
            device=Device(rng=random.Random(2)),
        )
        client.flush()
        yield client.until(lambda: second.device is not None and second.device.address is not None)
        assert second.device is not None
        assert second.device.address == address  # sticky: the SIM keeps its address
        assert first.result is not None  # the first call was cleared with a CDN
        assert "superseded" in first.result.message
        assert len(node.sessions.supervisor) == 1  # type: ignore[union-attr]
    finally:
        yield node.stopService()  # StopCCN, acknowledged by the still-running LAC
        yield client.stop()
