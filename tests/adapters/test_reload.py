"""Reload (lns/adapters/reload.py) on a whole node in memory: what applies to new tunnels
and sessions, what keeps its running value, and that live tunnels and sessions go on.
The SIGHUP path itself, against twistd, is in tests/integration/test_management.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from aaa.radius.auth import AccessRequestSettings, RadiusAuthenticator
from aaa.radius.client import RadiusClient, RadiusClientService
from aaa.radius.packet import access_request
from lns.adapters.reload import ConfigReload, changes, key_name
from lns.config import parse_config
from lns.testing.config import ConfigBuilder
from lns.testing.lacsim.lac import Phase
from lns.testing.memory_node import SECRET, MemoryNode, memory_config
from lns.testing.radius_fakes import FakeUdpReactor, reply_bytes

IPv4 = ipaddress.IPv4Address
NEW_SECRET = "the-new-tunnel-secret"


@pytest.fixture
def log_lines():
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(e) for e in events if e.get("log_namespace", "").startswith("lns")]
    globalLogPublisher.removeObserver(events.append)


def reloader(node: MemoryNode, path: Path) -> ConfigReload:
    return ConfigReload(node.node, node.config, path, node.clock)


def base() -> ConfigBuilder:
    return memory_config().ppp(dns=["192.0.2.53"], echo_interval=10.0).management(token="t-one")


def up_sessions(node: MemoryNode, count: int):
    lac = node.lac()
    tunnel = lac.open_tunnel(node.now)
    node.advance(0.5)
    calls = [node.session(lac, tunnel, f"89445100000000000{n:03d}") for n in range(count)]
    assert all(c.device is not None and c.device.address for c in calls)
    return lac, tunnel, calls


def test_new_lac_new_secret_and_new_dns_apply_to_new_tunnels_and_sessions(tmp_path, log_lines):
    node = MemoryNode(base().config())
    lac, tunnel, calls = up_sessions(node, 5)
    path = tmp_path / "lns.toml"
    config = base()
    config.document["l2tp"]["lac"][0]["secret"] = NEW_SECRET
    config.lac(name="op-b", peer="198.51.100.0/24", secret="op-b-secret")
    config.ppp(dns=["203.0.113.53", "203.0.113.54"])
    outcome = reloader(node, config.write(path)).reload()
    assert outcome.error is None
    assert outcome.refused == []
    assert "[[l2tp.lac]]" in outcome.applied
    assert "[ppp] dns" in outcome.applied

    # The live tunnel and its sessions go on: HELLOs, LCP echoes (every 10 s) answered.
    node.advance(120.0)
    assert tunnel.phase is Phase.ESTABLISHED
    assert len(node.supervisor) == 5
    assert all(c.phase is Phase.ESTABLISHED for c in calls)
    # A new session on the old tunnel gets the new DNS; the old ones keep theirs.
    new_call = node.session(lac, tunnel, "89445100000000000099")
    assert new_call.device is not None
    assert new_call.device.dns == [IPv4("203.0.113.53"), IPv4("203.0.113.54")]
    assert calls[0].device is not None
    assert calls[0].device.dns == [IPv4("192.0.2.53")]

    # The new LAC's tunnel comes up; a tunnel of op-a with the old secret does not.
    op_b = node.lac(("198.51.100.7", 1701), secret=b"op-b-secret", hostname="lac-b")
    b_tunnel = op_b.open_tunnel(node.now)
    stale = node.lac(("192.0.2.30", 1701), secret=SECRET, hostname="stale")
    stale_tunnel = stale.open_tunnel(node.now)
    fresh = node.lac(("192.0.2.31", 1701), secret=NEW_SECRET.encode(), hostname="fresh")
    fresh_tunnel = fresh.open_tunnel(node.now)
    node.advance(2.0)
    assert b_tunnel.phase is Phase.ESTABLISHED
    assert fresh_tunnel.phase is Phase.ESTABLISHED
    assert stale_tunnel.phase is not Phase.ESTABLISHED
    lines = log_lines()
    assert any("reload: LAC op-b added" in line for line in lines)
    assert any("reload: LAC op-a changed" in line for line in lines)
    assert any(line.startswith("configuration reloaded from") for line in lines)
    assert not any(NEW_SECRET in line or "op-b-secret" in line for line in lines)


def test_keys_that_need_a_restart_keep_their_value_and_the_rest_applies(tmp_path, log_lines):
    node = MemoryNode(base().config())
    config = (
        base()
        .l2tp(listen="192.0.2.1:1702")
        .lns(node_name="renamed")
        .dataplane(tun_name="lns9", mss_clamp=False)
        .management(token="t-two")
    )
    outcome = reloader(node, config.write(tmp_path / "lns.toml")).reload()
    assert outcome.error is None
    assert outcome.refused == ["[dataplane] tun_name", "[l2tp] listen", "[lns] node_name"]
    assert outcome.applied == ["[dataplane] mss_clamp", "[management] token"]
    assert node.dataplane.forwarder.mss_clamp is False
    token = node.api.settings.token
    assert token is not None
    assert token.value == b"t-two"
    lines = log_lines()
    for key in ("[l2tp] listen", "[lns] node_name", "[dataplane] tun_name"):
        assert any(key in line and "cannot change while the node runs" in line for line in lines)


def test_an_invalid_file_changes_nothing(tmp_path, log_lines):
    node = MemoryNode(base().config())
    path = tmp_path / "lns.toml"
    path.write_text('[ppp]\ndns = ["203.0.113.53"]\nmru = "big"\n')
    before = (node.endpoint.lacs, node.supervisor.ppp_settings, node.api.settings)
    reload = reloader(node, path)
    outcome = reload.reload()
    assert outcome.error is not None
    assert "[ppp] mru" in outcome.error
    assert (node.endpoint.lacs, node.supervisor.ppp_settings, node.api.settings) == before
    assert reload.config == node.config
    errors = [line for line in log_lines() if line.startswith("reload refused")]
    assert len(errors) == 1
    assert "[ppp] mru" in errors[0]
    # A missing file is the same.
    assert reloader(node, tmp_path / "gone.toml").reload().error is not None


def test_a_removed_lac_keeps_its_live_tunnels(tmp_path, log_lines):
    node = MemoryNode(base().config())
    _, tunnel, _ = up_sessions(node, 2)
    config = base()
    config.document["l2tp"]["lac"] = [{"name": "op-c", "peer": "203.0.113.0/24", "secret": "c"}]
    reloader(node, config.write(tmp_path / "lns.toml")).reload()
    node.advance(200.0)
    assert tunnel.phase is Phase.ESTABLISHED
    assert len(node.supervisor) == 2
    assert any(
        "LAC op-a removed; its live tunnels stay until they end" in line for line in log_lines()
    )
    # A new tunnel from op-a's addresses is refused now.
    again = node.lac(("192.0.2.40", 1701), secret=SECRET)
    refused = again.open_tunnel(node.now)
    node.advance(2.0)
    assert refused.phase is Phase.CLOSED


def test_a_section_that_appears_needs_a_restart(tmp_path):
    node = MemoryNode(base().config())
    config = base().dynauth(listen="127.0.0.1:3799").dynauth_client(address="127.0.0.1", secret="x")
    config.ppp(echo_interval=20.0)
    outcome = reloader(node, config.write(tmp_path / "lns.toml")).reload()
    assert outcome.refused == ["[aaa.dynauth]"]
    assert outcome.applied == ["[ppp] echo_interval"]
    assert node.supervisor.ppp_settings.echo_interval == 20.0


def test_removing_the_token_of_a_non_loopback_listener_is_refused(tmp_path):
    running = base().management(listen="0.0.0.0:8080", token="t-one").config()
    node = MemoryNode(running)
    config = base().management(listen="127.0.0.1:8080")  # no token: loopback is required
    config.document["management"].pop("token")
    outcome = reloader(node, config.write(tmp_path / "lns.toml")).reload()
    assert outcome.error is not None
    assert "[management] token" in outcome.error
    assert node.api.settings.token is not None


def status_code(node: MemoryNode, token: str) -> int:
    request = DummyRequest([b"api", b"v1", b"status"])
    request.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
    node.api.render(request)
    return request.responseCode or 200


def test_the_token_changes_live(tmp_path):
    node = MemoryNode(base().config())
    assert status_code(node, "t-one") == 200
    reloader(node, base().management(token="t-two").write(tmp_path / "lns.toml")).reload()
    assert status_code(node, "t-one") == 401
    assert status_code(node, "t-two") == 200


def test_changes_classifies_each_key():
    old = parse_config({"l2tp": {"hello_interval": 60}})
    new = parse_config(
        {
            "l2tp": {"hello_interval": 30, "listen": "127.0.0.1:1702"},
            "database": {"url": "sqlite:////tmp/other.db"},
            "management": {},
        }
    )
    live, refused = changes(old, new)
    assert live == [("l2tp", "hello_interval")]
    assert list(dict.fromkeys(key_name(p) for p in refused)) == [
        "[database] url",
        "[l2tp] listen",
        "[management]",
    ]


def test_radius_servers_change_live_and_the_old_client_finishes_first(tmp_path):
    udp = FakeUdpReactor()
    running = base().radius(address="127.0.0.1", secret="first-secret", timeout=2.0).config()
    node = MemoryNode(running)
    old = RadiusClient(running.aaa.radius, udp, False, clock=udp)
    old.start()
    service = RadiusClientService(old)
    node.node.radius = service
    authenticator = RadiusAuthenticator(old, AccessRequestSettings.from_config(running))
    node.runner.authenticator = authenticator
    waiting = old.send_auth(access_request([("User-Name", "x")], password=b"pw"))
    [in_flight] = udp.take()

    config = base().radius(address="127.0.0.2", secret="second-secret", timeout=2.0)
    path = config.write(tmp_path / "lns.toml")
    outcome = ConfigReload(node.node, running, path, udp).reload()
    assert outcome.applied == ["[[aaa.radius]]"]
    new = service.client
    assert new is not old
    assert authenticator.client is new
    assert [port.label for port in new.ports] == ["127.0.0.2:1812", "127.0.0.2:1813"]
    # The request in flight on the old client is still answered there.
    udp.advance(1.0)
    assert old.running
    in_flight.port.deliver(reply_bytes(in_flight.data, b"first-secret"), in_flight.address)
    assert waiting.called
    udp.advance(1.0)
    assert not old.running  # idle: closed
    assert new.running
