"""Operating a live node: ``twistd -n lns`` with sessions brought up by the LAC simulator
through the test session's FreeRADIUS, looked at and acted on through its management API
(HTTP, and ``lns-admin session|tunnel|status``), its /metrics parsed by prometheus_client,
and its configuration reloaded with SIGHUP."""

from __future__ import annotations

import ipaddress
import json
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from lns.ppp.frame import Protocol, encode_frame
from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius, records_of
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.device import Device
from lns.testing.lacsim.lac import Lac, Phase, SimulatedCall, default_proxy_lcp, proxy_chap
from lns.testing.packets import udp_datagram
from lns.testing.pools import sqlite_pool
from lns.testing.ports import free_tcp_port, free_udp_port
from lns.testing.processes import Twistd, working_tree_env
from lns.testing.sims import RADIUS_SECRET, loadgen_iccid

pytestmark = pytest.mark.integration

TOKEN = "management-test-token"
SECRET_A = "management-lac-a-secret"
SECRET_A2 = "management-lac-a-new-secret"
SECRET_B = "management-lac-b-secret"
POOL = "100.64.40.0/25"
FAR_END = int(ipaddress.IPv4Address("192.0.2.99"))


# --- helpers ---------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> defer.Deferred[None]:
    """Fires once ``condition()`` holds (checked every 50 ms); fails after ``timeout``."""

    def check(started: float) -> defer.Deferred[None] | None:
        if condition():
            return None
        if reactor.seconds() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        return task.deferLater(reactor, 0.05, check, started)

    return defer.maybeDeferred(check, reactor.seconds())


@defer.inlineCallbacks
def http(method: str, url: str, token: str | None = TOKEN):
    headers = Headers()
    if token is not None:
        headers.addRawHeader(b"authorization", f"Bearer {token}".encode())
    response = yield Agent(reactor).request(method.encode(), url.encode(), headers)
    received: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_Body(received))
    body = yield received
    return response.code, response.headers, body


class _Body(protocol.Protocol):
    """Collects a response body (readBody warns about this transport)."""

    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.parts: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(b"".join(self.parts))


@defer.inlineCallbacks
def admin(config: Path, *args: str):
    """``lns-admin --config CONFIG ARGS``: (stdout, stderr, exit status)."""
    out, err, code = yield getProcessOutputAndValue(
        sys.executable,
        ["-m", "lns.cli", "--config", str(config), *args],
        env=working_tree_env(),
        path=str(config.parent),
        reactor=reactor,
    )
    return out.decode(), err.decode(), code


def place(lac: Lac, tunnel: Any, iccid: str, password: str | None = None) -> SimulatedCall:
    return lac.place_call(
        tunnel,
        iccid,
        proxy_lcp=default_proxy_lcp(lac.rng),
        proxy_auth=proxy_chap((password or iccid).encode(), lac.rng),
        device=Device(rng=random.Random(iccid)),
    )


def is_up(call: SimulatedCall) -> bool:
    return call.device is not None and call.device.address is not None


def send_ip(client: LacClient, call: SimulatedCall, size: int = 60) -> None:
    assert call.device is not None
    assert call.device.address is not None
    packet = udp_datagram(int(call.device.address), FAR_END, 4000, 5000, bytes(size))
    client.lac.send_ppp(call, encode_frame(Protocol.IP, packet))
    client.flush()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def node_config(
    database_url: str, freeradius: FreeRadius, l2tp_port: int, api_port: int
) -> ConfigBuilder:
    return (
        ConfigBuilder()
        .lns(node_name="managed-node")
        .l2tp(listen=f"127.0.0.1:{l2tp_port}", hello_interval=5.0)
        .lac(name="op-a", peer="127.0.0.1/32", secret=SECRET_A)
        .ppp(dns=["192.0.2.53"])
        .aaa(nas_identifier="managed-node", require_message_authenticator=False)
        .radius_server(freeradius, timeout=2.0, retries=2)
        .database(url=database_url, migrate_on_start=False)
        .dataplane(mode="none")
        .management(listen=f"127.0.0.1:{api_port}", token=TOKEN)
    )


# --- the API and lns-admin -----------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_sessions_tunnels_status_and_metrics_of_a_running_node(
    tmp_path: Path, freeradius: FreeRadius
):
    l2tp_port, api_port = free_udp_port(), free_tcp_port()
    url = sqlite_pool(tmp_path / "lns.db", POOL)
    config = (
        node_config(url, freeradius, l2tp_port, api_port)
        .lac(name="op-b", peer="127.0.0.2/32", secret=SECRET_B)
        .write(tmp_path / "lns.toml")
    )
    base = f"http://127.0.0.1:{api_port}"
    server = Twistd(config).spawn()
    clients: list[LacClient] = []
    try:
        yield wait_for(lambda: "management API on" in server.log(), 60, "twistd started")
        lac_a = Lac(hostname="lac-a", secret=SECRET_A.encode(), rng=random.Random(1))
        lac_b = Lac(hostname="lac-b", secret=SECRET_B.encode(), rng=random.Random(2))
        client_a = LacClient(lac_a, ("127.0.0.1", l2tp_port), reactor)
        client_b = LacClient(lac_b, ("127.0.0.1", l2tp_port), reactor, local_host="127.0.0.2")
        clients += [client_a, client_b]
        for client in clients:
            client.start()
        tunnel_a = lac_a.open_tunnel(reactor.seconds())
        tunnel_b = lac_b.open_tunnel(reactor.seconds())
        calls_a = [place(lac_a, tunnel_a, loadgen_iccid(n)) for n in range(4)]
        calls_b = [place(lac_b, tunnel_b, loadgen_iccid(n)) for n in range(4, 6)]
        wrong = place(lac_a, tunnel_a, loadgen_iccid(6), password="not-the-password")
        for client in clients:
            client.flush()
        yield wait_for(
            lambda: all(is_up(c) for c in calls_a + calls_b) and wrong.phase is Phase.CLOSED,
            30,
            "six sessions up, one refused",
        )
        send_ip(client_a, calls_a[1], size=100)

        # --- lns-admin session list, filtered ----------------------------------------------
        out, err, code = yield admin(config, "session", "list", "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert sorted(s["iccid"] for s in listed) == [loadgen_iccid(n) for n in range(6)]
        assert {s["lac"]["name"] for s in listed} == {"op-a", "op-b"}
        for session in listed:
            assert session["state"] == "up"
            assert ipaddress.IPv4Address(session["address"]) in ipaddress.ip_network(POOL)
            assert session["auth"] == "proxy"
        by_iccid = {s["iccid"]: s for s in listed}
        assert by_iccid[loadgen_iccid(1)]["octets_in"] == 128  # the 100-byte UDP payload's packet
        out, err, code = yield admin(config, "session", "list", "--lac", "op-b", "--json")
        assert code == 0, err
        assert sorted(s["iccid"] for s in json.loads(out)) == [loadgen_iccid(4), loadgen_iccid(5)]
        out, err, code = yield admin(config, "session", "list", "--iccid", loadgen_iccid(2))
        assert code == 0, err
        table = out.splitlines()
        assert table[0].split()[:3] == ["ICCID", "ADDRESS", "LAC"]
        assert len(table) == 2
        assert loadgen_iccid(2) in table[1]
        victim = by_iccid[loadgen_iccid(2)]
        out, err, code = yield admin(config, "session", "show", victim["acct_session_id"])
        assert code == 0, err
        assert victim["address"] in out

        # --- kill by ICCID: CDN at the LAC, Admin-Reset Stop, lease released ---------------
        out, err, code = yield admin(config, "session", "kill", "--iccid", loadgen_iccid(2))
        assert code == 0, err
        assert f"cleared session {victim['acct_session_id']}" in out
        killed = calls_a[2]
        yield wait_for(lambda: killed.phase is Phase.CLOSED, 10, "CDN at the LAC")
        assert killed.result is not None
        assert killed.result.result == 3  # administrative

        def statuses(acct: str) -> list[str]:
            return [r["Acct-Status-Type"] for r in records_of(freeradius, acct)]

        yield wait_for(
            lambda: statuses(victim["acct_session_id"]) == ["Start", "Stop"],
            20,
            "Start and Stop at FreeRADIUS",
        )
        stop = records_of(freeradius, victim["acct_session_id"])[1]
        assert stop["Acct-Terminate-Cause"] == "Admin-Reset"
        out, err, code = yield admin(config, "lease", "list", "--json")
        assert code == 0, err
        leased = {lease["iccid"] for lease in json.loads(out)}
        assert loadgen_iccid(2) not in leased
        assert loadgen_iccid(3) in leased

        # --- tunnels: list, kill one ---------------------------------------------------------
        out, err, code = yield admin(config, "tunnel", "list", "--json")
        assert code == 0, err
        tunnels = {t["lac"]: t for t in json.loads(out)}
        assert tunnels["op-a"]["sessions"] == 3
        assert tunnels["op-b"]["sessions"] == 2
        assert tunnels["op-b"]["peer"]["address"] == "127.0.0.2"
        assert tunnels["op-b"]["peer_hostname"] == "lac-b"
        out, err, code = yield admin(config, "tunnel", "kill", str(tunnels["op-b"]["tunnel_id"]))
        assert code == 0, err
        assert "sent StopCCN" in out
        yield wait_for(lambda: tunnel_b.phase is Phase.CLOSED, 10, "StopCCN at LAC b")
        assert tunnel_b.result is not None
        assert tunnel_b.result.result == 1  # general request to clear the control connection
        for call in calls_b:
            acct = by_iccid[call.iccid]["acct_session_id"]
            yield wait_for(
                lambda acct=acct: len(records_of(freeradius, acct)) == 2, 20, "tunnel Stops"
            )
            assert records_of(freeradius, acct)[1]["Acct-Terminate-Cause"] == "Admin-Reset"

        # --- status and metrics: what this test did ------------------------------------------
        out, err, code = yield admin(config, "status", "--json")
        assert code == 0, err
        status = json.loads(out)
        assert status["node"] == "managed-node"
        assert status["sessions"] == {"total": 3, "up": 3, "setting_up": 0}
        assert status["tunnels"]["established"] == 1
        assert status["setups"]["calls"] == 7
        assert status["setups"]["up"] == 6
        assert status["setups"]["failed"] == {"auth_rejected": 1}
        [radius] = [s for s in status["radius"] if s["server"].endswith(f":{freeradius.auth_port}")]
        assert radius["state"] == "alive"
        assert radius["requests"] == 7
        [pool] = status["pools"]
        assert pool["in_use"] == 3
        assert status["database"] == "ok"
        assert status["accounting"]["spool_depth"] is not None
        out, err, code = yield admin(config, "status")
        assert code == 0, err
        assert "sessions: 3 (3 up, 0 setting up)" in out

        code, headers, body = yield http("GET", f"{base}/metrics")
        assert code == 200
        found = samples(body.decode())
        assert found[("lns_session_setups_total", ())] == 6
        assert found[("lns_session_calls_total", ())] == 7
        assert found[("lns_session_setup_failures_total", (("reason", "auth_rejected"),))] == 1
        assert found[("lns_session_setup_duration_seconds_count", ())] == 6
        assert found[("lns_sessions", (("lac", "op-a"), ("state", "up")))] == 3
        assert found[("lns_sessions", (("lac", "op-b"), ("state", "up")))] == 0
        auth = (("server", f"127.0.0.1:{freeradius.auth_port}"), ("type", "access_request"))
        assert found[("lns_radius_requests_total", auth)] == 7
        assert found[("lns_radius_request_duration_seconds_count", auth)] == 7
        assert found[("lns_pool_addresses", (("pool", "default"), ("state", "used")))] == 3
        assert found[("lns_dataplane_packets_total", (("direction", "up"),))] == 1
        assert found[("lns_database_up", ())] == 1

        # --- every error case of the API -----------------------------------------------------
        cases = [
            ("GET", "/api/v1/sessions", None, 401),
            ("GET", "/api/v1/sessions", "wrong-token", 401),
            ("GET", "/metrics", None, 401),
            ("GET", "/api/v1/sessions?iccid=12", TOKEN, 400),
            ("GET", "/api/v1/sessions?state=sleeping", TOKEN, 400),
            ("GET", "/api/v1/sessions?bogus=1", TOKEN, 400),
            ("GET", "/api/v1/sessions/no-such-session", TOKEN, 404),
            ("DELETE", "/api/v1/sessions/no-such-session", TOKEN, 404),
            ("DELETE", "/api/v1/tunnels/65000", TOKEN, 404),
            ("GET", "/api/v1/elsewhere", TOKEN, 404),
            ("GET", "/", TOKEN, 404),
            ("POST", "/api/v1/sessions", TOKEN, 405),
            ("PUT", "/api/v1/tunnels/1", TOKEN, 405),
        ]
        for method, path, token, expected in cases:
            code, headers, body = yield http(method, base + path, token)
            assert code == expected, (method, path, body)
            assert headers.getRawHeaders(b"content-type") == [b"application/json"]
            assert json.loads(body)["error"]

        # --- lns-admin's one-line errors -------------------------------------------------------
        wrong_token = (
            node_config(url, freeradius, l2tp_port, api_port)
            .management(token="not-the-token")
            .write(tmp_path / "wrong.toml")
        )
        out, err, code = yield admin(wrong_token, "session", "list")
        assert code == 1
        assert err.count("\n") == 1
        assert "refused the token" in err
        out, err, code = yield admin(config, "session", "show", "no-such-session")
        assert code == 1
        assert "no session with Acct-Session-Id 'no-such-session'" in err
        out, err, code = yield admin(config, "session", "kill", "--iccid", loadgen_iccid(100))
        assert code == 1
        assert f"no session of ICCID {loadgen_iccid(100)}" in err
        not_running = node_config(url, freeradius, l2tp_port, free_tcp_port()).write(
            tmp_path / "elsewhere.toml"
        )
        out, err, code = yield admin(not_running, "status")
        assert code == 1
        assert err.count("\n") == 1
        assert "connection refused (is it running" in err
    finally:
        for client in clients:
            yield client.stop()
        status = server.stop()
    log = server.log()
    assert status in (0, -signal.SIGTERM), log
    for secret in (TOKEN, SECRET_A, SECRET_B, RADIUS_SECRET):
        assert secret not in log
    assert "Traceback" not in log
    assert "cleared by an operator" in log


# --- SIGHUP ----------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_sighup_reloads_without_dropping_anything(tmp_path: Path, freeradius: FreeRadius):
    l2tp_port, api_port = free_udp_port(), free_tcp_port()
    url = sqlite_pool(tmp_path / "lns.db", POOL)
    path = tmp_path / "lns.toml"
    # Echoes every second, three missed end a session: a session not answered for long is gone.
    first = node_config(url, freeradius, l2tp_port, api_port).ppp(
        echo_interval=1.0, echo_failures=3
    )
    first.write(path)
    server = Twistd(path).spawn()
    clients: list[LacClient] = []
    try:
        yield wait_for(lambda: "management API on" in server.log(), 60, "twistd started")
        lac_a = Lac(hostname="lac-a", secret=SECRET_A.encode(), rng=random.Random(3))
        client_a = LacClient(lac_a, ("127.0.0.1", l2tp_port), reactor)
        clients.append(client_a)
        client_a.start()
        tunnel_a = lac_a.open_tunnel(reactor.seconds())
        calls = [place(lac_a, tunnel_a, loadgen_iccid(n)) for n in range(50)]
        client_a.flush()
        yield wait_for(lambda: all(is_up(c) for c in calls), 60, "50 sessions up")
        assert all(
            c.device is not None and c.device.dns == [ipaddress.IPv4Address("192.0.2.53")]
            for c in calls
        )

        # The configuration gains a second LAC, the first LAC's secret and the DNS change.
        second = node_config(url, freeradius, l2tp_port, api_port).ppp(
            echo_interval=1.0, echo_failures=3, dns=["203.0.113.53", "203.0.113.54"]
        )
        second.document["l2tp"]["lac"][0]["secret"] = SECRET_A2
        second.lac(name="op-b", peer="127.0.0.2/32", secret=SECRET_B)
        second.write(path)
        server.signal(signal.SIGHUP)
        yield wait_for(
            lambda: "configuration reloaded from" in server.log(), 20, "the reload logged"
        )
        assert server.process.poll() is None

        # The 50 sessions are still there and forwarding, seconds of keepalive later.
        yield task.deferLater(reactor, 5.0, lambda: None)
        for call in calls:
            send_ip(client_a, call)
        listed: list[dict[str, Any]] = []
        for _ in range(50):  # until the node has counted them (bounded)
            code, _, body = yield http("GET", f"http://127.0.0.1:{api_port}/api/v1/sessions")
            assert code == 200
            listed = json.loads(body)["sessions"]
            if all(s["packets_in"] >= 1 for s in listed):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        assert len(listed) == 50
        assert all(s["state"] == "up" and s["packets_in"] == 1 for s in listed)
        assert all(c.phase is Phase.ESTABLISHED for c in calls)
        assert tunnel_a.phase is Phase.ESTABLISHED

        # A tunnel from the second LAC comes up; a new session there gets the new DNS.
        lac_b = Lac(hostname="lac-b", secret=SECRET_B.encode(), rng=random.Random(4))
        client_b = LacClient(lac_b, ("127.0.0.1", l2tp_port), reactor, local_host="127.0.0.2")
        clients.append(client_b)
        client_b.start()
        tunnel_b = lac_b.open_tunnel(reactor.seconds())
        fresh = place(lac_b, tunnel_b, loadgen_iccid(60))
        client_b.flush()
        yield wait_for(lambda: is_up(fresh), 20, "a session on the new LAC")
        assert fresh.device is not None
        new_dns = [ipaddress.IPv4Address("203.0.113.53"), ipaddress.IPv4Address("203.0.113.54")]
        assert fresh.device.dns == new_dns

        # An invalid file on the next SIGHUP changes nothing.
        path.write_text('[ppp]\ndns = ["198.51.100.1"]\nmru = "large"\n')
        server.signal(signal.SIGHUP)
        yield wait_for(lambda: "reload refused, nothing changed" in server.log(), 20, "refusal")
        later = place(lac_b, tunnel_b, loadgen_iccid(61))
        client_b.flush()
        yield wait_for(lambda: is_up(later), 20, "a session after the refused reload")
        assert later.device is not None
        assert later.device.dns == new_dns
        assert len([c for c in calls if c.phase is Phase.ESTABLISHED]) == 50
        assert server.process.poll() is None
    finally:
        for client in clients:
            yield client.stop()
        status = server.stop()
    log = server.log()
    assert status in (0, -signal.SIGTERM), log
    assert "reload: LAC op-b added" in log
    assert "reload: LAC op-a changed" in log
    refusal = next(line for line in log.splitlines() if "reload refused" in line)
    assert "[ppp] mru" in refusal
    for secret in (TOKEN, SECRET_A, SECRET_A2, SECRET_B, RADIUS_SECRET):
        assert secret not in log
    assert "Traceback" not in log
