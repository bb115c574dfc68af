"""The management API's resources (lns/adapters/management.py, node_state.py, metrics.py)
over a whole node in memory: the real L2TP service, session runner and supervisor on a
fake clock, simulated LACs and devices (lns.testing.memory_node). Requests are
twisted.web's DummyRequest; the end-to-end HTTP test against twistd is in
tests/integration/test_management.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from lns.adapters import metrics
from lns.adapters.management import ManagementService
from lns.adapters.node_state import DatabaseFigures
from lns.config import ManagementSection, Secret
from lns.ppp.auth import Decision
from lns.ppp.termination import TerminateCause
from lns.sessions.accounting import RecordKind
from lns.testing.lacsim.lac import Phase
from lns.testing.memory_node import MemoryNode, memory_config

TOKEN = "management-unit-token"
ICCIDS = [f"8944500000000000{n:03d}" for n in range(1, 8)]


class Response:
    def __init__(self, request: DummyRequest) -> None:
        self.status = request.responseCode or 200
        self.headers = request.responseHeaders
        self.body = b"".join(request.written)

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    node: MemoryNode,
    method: str,
    path: str,
    token: str | None = TOKEN,
    **query: str,
) -> Response:
    request = DummyRequest([segment.encode() for segment in path.lstrip("/").split("/")])
    request.method = method.encode()
    request.args = {name.encode(): [value.encode()] for name, value in query.items()}
    if token is not None:
        request.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
    body = node.api.render(request)
    if body is NOT_DONE_YET:
        for _ in range(100):  # /metrics sums the sessions a slice per reactor turn
            if request.finished:
                break
            node.clock.advance(0)
        assert request.finished
    else:
        request.write(body)
    return Response(request)


@pytest.fixture
def node() -> MemoryNode:
    def aaa(request):
        if request.context.iccid == ICCIDS[-1]:
            return Decision(False, reason="barred")
        return Decision(True, session_timeout=3600)

    node = MemoryNode(memory_config().management(token=TOKEN).config(), aaa=aaa)
    lac = node.lac()
    tunnel = lac.open_tunnel(node.now)
    node.advance(0.5)
    for iccid in ICCIDS[:4]:
        node.session(lac, tunnel, iccid)
    other = node.lac(("192.0.2.20", 1701), hostname="lac2")
    second = other.open_tunnel(node.now)
    node.advance(0.5)
    for iccid in ICCIDS[4:]:
        node.session(other, second, iccid)
    node.advance(10.0)
    return node


def sessions(node: MemoryNode, **query: str) -> list[dict[str, Any]]:
    response = call(node, "GET", "/api/v1/sessions", **query)
    assert response.status == 200, response.body
    return response.json()["sessions"]


# --- sessions ------------------------------------------------------------------------------


def test_list_shows_every_session_with_what_an_operator_asks(node: MemoryNode):
    listed = sessions(node)
    assert [s["iccid"] for s in listed] == ICCIDS[:6]  # the barred SIM never came up
    first = listed[0]
    record = node.supervisor.by_iccid(ICCIDS[0])[0]
    assert first["acct_session_id"] == record.acct_session_id
    assert first["address"] == str(record.address)
    assert first["state"] == "up"
    assert first["lac"] == {"name": "op-a", "hostname": "lac1", "address": "192.0.2.10"}
    assert (first["tunnel_id"], first["session_id"]) == record.key
    lac_tunnel = next(iter(node.lacs[("192.0.2.10", 1701)].tunnels.values()))
    assert first["peer_tunnel_id"] == lac_tunnel.tunnel_id
    assert first["auth"] == "proxy"
    assert first["lcp"] == "proxy"
    assert first["session_timeout"] == 3600
    assert first["idle_timeout"] is None
    assert first["uptime"] == pytest.approx(node.now - record.opened_at)
    assert first["started_at"].startswith("2026-01-01T")
    assert first["octets_in"] == first["packets_in"] == 0


def test_traffic_counters_are_the_records(node: MemoryNode):
    record = node.supervisor.by_iccid(ICCIDS[1])[0]
    record.traffic.octets_up, record.traffic.packets_up = 1234, 5
    [shown] = sessions(node, iccid=ICCIDS[1])
    assert (shown["octets_in"], shown["packets_in"]) == (1234, 5)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"iccid": ICCIDS[2]}, [ICCIDS[2]]),
        ({"lac": "op-a"}, ICCIDS[:6]),  # both LACs match the one [[l2tp.lac]] entry
        ({"lac": "nobody"}, []),
        ({"state": "up"}, ICCIDS[:6]),
        ({"state": "setting-up"}, []),
    ],
)
def test_filters(node: MemoryNode, query, expected):
    assert [s["iccid"] for s in sessions(node, **query)] == expected


def test_filter_by_address_and_tunnel(node: MemoryNode):
    record = node.supervisor.by_iccid(ICCIDS[5])[0]
    assert [s["iccid"] for s in sessions(node, address=str(record.address))] == [ICCIDS[5]]
    tunnel = str(record.context.tunnel_id)
    assert [s["iccid"] for s in sessions(node, tunnel=tunnel)] == ICCIDS[4:6]


def test_paging_with_a_cursor_that_survives_sessions_ending(node: MemoryNode):
    first = call(node, "GET", "/api/v1/sessions", limit="4").json()
    assert [s["iccid"] for s in first["sessions"]] == ICCIDS[:4]
    assert first["total"] == 6
    assert first["next"] is not None
    # A session of the first page ends before the second page is asked for.
    call(node, "DELETE", f"/api/v1/sessions/{first['sessions'][0]['acct_session_id']}")
    second = call(node, "GET", "/api/v1/sessions", limit="4", after=first["next"]).json()
    assert [s["iccid"] for s in second["sessions"]] == ICCIDS[4:6]
    assert second["next"] is None
    assert second["total"] == 5


def test_show_one_session(node: MemoryNode):
    record = node.supervisor.by_iccid(ICCIDS[3])[0]
    response = call(node, "GET", f"/api/v1/sessions/{record.acct_session_id}")
    assert response.status == 200
    assert response.json()["iccid"] == ICCIDS[3]


def test_kill_clears_the_call_accounts_admin_reset_and_releases_the_lease(node: MemoryNode):
    record = node.supervisor.by_iccid(ICCIDS[0])[0]
    lease = record.lease
    assert lease is not None
    lac = node.lacs[("192.0.2.10", 1701)]
    call_at_lac = next(
        c for t in lac.tunnels.values() for c in t.calls.values() if c.iccid == ICCIDS[0]
    )
    response = call(node, "DELETE", f"/api/v1/sessions/{record.acct_session_id}")
    assert response.status == 200
    assert response.json()["cleared"]["iccid"] == ICCIDS[0]
    node.advance(1.0)
    assert call_at_lac.phase is Phase.CLOSED
    assert call_at_lac.result is not None
    assert call_at_lac.result.result == 3  # administrative (RFC 2661 section 4.4.2)
    assert node.accounting.of(record.acct_session_id) == [
        (RecordKind.START, None),
        (RecordKind.STOP, TerminateCause.ADMIN_RESET),
    ]
    assert lease in node.pool.released
    assert call(node, "GET", f"/api/v1/sessions/{record.acct_session_id}").status == 404
    assert node.supervisor.stats.failures == {"auth_rejected": 1}  # killed after it was up


# --- tunnels -------------------------------------------------------------------------------


def test_tunnels_list_and_show(node: MemoryNode):
    tunnels = call(node, "GET", "/api/v1/tunnels").json()["tunnels"]
    assert [t["sessions"] for t in tunnels] == [4, 2]
    first = tunnels[0]
    assert first["lac"] == "op-a"
    assert first["peer_hostname"] == "lac1"
    assert first["peer"] == {"address": "192.0.2.10", "port": 1701}
    assert first["state"] == "established"
    assert first["age"] > 10.0
    assert first["retransmissions"] == 0
    shown = call(node, "GET", f"/api/v1/tunnels/{first['tunnel_id']}").json()
    assert shown["tunnel_id"] == first["tunnel_id"]


def test_hello_round_trip_after_a_hello(node: MemoryNode):
    node.advance(70.0)  # hello_interval 60 s of silence: our HELLO goes and is acknowledged
    tunnels = call(node, "GET", "/api/v1/tunnels").json()["tunnels"]
    assert all(t["hello_rtt"] is not None for t in tunnels)


def test_kill_tunnel_sends_stopccn_and_accounts_admin_reset(node: MemoryNode):
    lac = node.lacs[("192.0.2.20", 1701)]
    tunnel_at_lac = next(iter(lac.tunnels.values()))
    records = [r for r in node.supervisor if r.context.lac_hostname == "lac2"]
    assert len(records) == 2
    response = call(node, "DELETE", f"/api/v1/tunnels/{tunnel_at_lac.peer_tunnel_id}")
    assert response.status == 200
    assert response.json()["cleared"]["sessions"] == 2
    node.advance(2.0)
    assert tunnel_at_lac.phase is Phase.CLOSED
    assert tunnel_at_lac.result is not None
    assert tunnel_at_lac.result.result == 1  # general request to clear the control connection
    for record in records:
        assert node.accounting.of(record.acct_session_id)[-1] == (
            RecordKind.STOP,
            TerminateCause.ADMIN_RESET,
        )
    assert len(node.supervisor) == 4
    # Gone (or closing): a second DELETE finds nothing to clear.
    again = call(node, "DELETE", f"/api/v1/tunnels/{tunnel_at_lac.peer_tunnel_id}")
    assert again.status == 404


# --- status and metrics ----------------------------------------------------------------------


def test_status_figures_match_what_happened(node: MemoryNode):
    status = call(node, "GET", "/api/v1/status").json()
    assert status["node"] == "lns-1"
    assert status["sessions"] == {"total": 6, "up": 6, "setting_up": 0}
    assert status["tunnels"] == {"total": 2, "established": 2}
    assert status["setups"]["calls"] == 7
    assert status["setups"]["up"] == 6
    assert status["setups"]["failed"] == {"auth_rejected": 1}
    assert status["radius"] == []
    assert status["accounting"] is None
    assert status["database"] == "no database"
    assert status["uptime"] > 0


def test_metrics_parse_and_count_the_sessions(node: MemoryNode):
    node.supervisor.by_iccid(ICCIDS[0])[0].traffic.octets_up = 1000
    response = call(node, "GET", "/metrics")
    assert response.status == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }
    assert samples[("lns_sessions", (("lac", "op-a"), ("state", "up")))] == 6
    assert samples[("lns_tunnels", (("lac", "op-a"), ("state", "established")))] == 2
    assert samples[("lns_session_calls_total", ())] == 7
    assert samples[("lns_session_setups_total", ())] == 6
    assert samples[("lns_session_setup_failures_total", (("reason", "auth_rejected"),))] == 1
    assert samples[("lns_session_setup_duration_seconds_count", ())] == 6
    assert samples[("lns_dataplane_bytes_total", (("direction", "up"),))] == 1000
    assert samples[("lns_database_up", ())] == 0
    assert ("process_resident_memory_bytes", ()) in samples


# --- errors and the token ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"iccid": "123"}, "iccid: not an ICCID"),
        ({"address": "300.1.2.3"}, "address: not an IPv4 address"),
        ({"tunnel": "0"}, "tunnel: expected an integer from 1 to 65535"),
        ({"tunnel": "x"}, "tunnel: expected an integer"),
        ({"state": "down"}, "state: expected one of setting-up, up"),
        ({"limit": "0"}, "limit: expected an integer from 1 to 1000"),
        ({"limit": "5000"}, "limit: expected an integer from 1 to 1000"),
        ({"after": "-1"}, "after: expected an integer"),
        ({"colour": "blue"}, "unknown parameter 'colour'"),
        ({"lac": ""}, "lac: must not be empty"),
    ],
)
def test_bad_filters_are_400(node: MemoryNode, query, message):
    response = call(node, "GET", "/api/v1/sessions", **query)
    assert response.status == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/nothing"),
        ("GET", "/api/v2/sessions"),
        ("GET", "/"),
        ("GET", "/api/v1/sessions/no-such-id"),
        ("DELETE", "/api/v1/sessions/no-such-id"),
        ("GET", "/api/v1/tunnels/9999"),
        ("GET", "/api/v1/tunnels/not-a-number"),
        ("DELETE", "/api/v1/tunnels/70000"),
        ("GET", "/api/v1/sessions/a/b"),
    ],
)
def test_unknown_paths_and_ids_are_404(node: MemoryNode, method, path):
    response = call(node, method, path)
    assert response.status == 404
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/api/v1/sessions", b"GET"),
        ("DELETE", "/api/v1/sessions", b"GET"),
        ("PUT", "/api/v1/sessions/x", b"GET, DELETE"),
        ("POST", "/api/v1/status", b"GET"),
        ("DELETE", "/metrics", b"GET"),
    ],
)
def test_wrong_methods_are_405(node: MemoryNode, method, path, allowed):
    response = call(node, method, path)
    assert response.status == 405
    assert response.headers.getRawHeaders(b"allow") == [allowed]
    assert "not allowed" in response.json()["error"]


@pytest.mark.parametrize("token", [None, "wrong", "", f"{TOKEN}x", TOKEN[:-1]])
@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/status", "/metrics", "/nothing"])
def test_no_or_wrong_token_is_401(node: MemoryNode, token, path):
    response = call(node, "GET", path, token=token)
    assert response.status == 401
    assert response.headers.getRawHeaders(b"www-authenticate") == [b'Bearer realm="lns"']
    assert "token" in response.json()["error"]
    assert TOKEN not in response.body.decode()


def test_other_authorization_schemes_are_401(node: MemoryNode):
    request = DummyRequest([b"api", b"v1", b"status"])
    request.requestHeaders.addRawHeader(b"authorization", f"Basic {TOKEN}".encode())
    node.api.render(request)
    assert request.responseCode == 401


def test_a_kill_without_the_token_does_nothing(node: MemoryNode):
    record = node.supervisor.by_iccid(ICCIDS[0])[0]
    response = call(node, "DELETE", f"/api/v1/sessions/{record.acct_session_id}", token="x")
    assert response.status == 401
    assert node.supervisor.by_acct_session_id(record.acct_session_id) is record


def test_metrics_public_needs_no_token_but_the_api_still_does(node: MemoryNode):
    node.api.settings = ManagementSection(token=Secret(TOKEN), metrics_public=True)
    assert call(node, "GET", "/metrics", token=None).status == 200
    assert call(node, "GET", "/api/v1/status", token=None).status == 401


def test_without_a_token_every_request_is_served():
    node = MemoryNode()
    assert call(node, "GET", "/api/v1/status", token=None).status == 200
    assert call(node, "GET", "/api/v1/sessions", token="anything").status == 200


def test_metrics_sum_the_sessions_a_slice_per_reactor_turn(node: MemoryNode, monkeypatch):
    monkeypatch.setattr(metrics, "SLICE", 2)
    node.supervisor.by_iccid(ICCIDS[5])[0].traffic.octets_up = 500
    request = DummyRequest([b"metrics"])
    request.requestHeaders.addRawHeader(b"authorization", f"Bearer {TOKEN}".encode())
    assert node.api.render(request) is NOT_DONE_YET
    assert not request.finished  # two records summed; the other four wait for the reactor
    # A session of the snapshot ends between two slices: not counted, its traffic kept once.
    gone = node.supervisor.by_iccid(ICCIDS[5])[0]
    node.runner.close(gone, TerminateCause.ADMIN_RESET, "test")
    for _ in range(3):
        node.clock.advance(0)
    assert request.finished
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(b"".join(request.written).decode())
        for sample in family.samples
    }
    assert found[("lns_sessions", (("lac", "op-a"), ("state", "up")))] == 5
    assert found[("lns_dataplane_bytes_total", (("direction", "up"),))] == 500


@pytest.mark.parametrize(
    ("section", "said"),
    [
        (ManagementSection(), "without a token: loopback only, no authentication"),
        (ManagementSection(token=Secret(TOKEN)), "(bearer token required, /metrics too)"),
        (
            ManagementSection(token=Secret(TOKEN), metrics_public=True),
            "(bearer token required, /metrics public)",
        ),
    ],
)
def test_the_listener_says_how_it_is_protected(section, said):
    node = MemoryNode()
    node.api.settings = section
    reactor = MemoryReactorClock()
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        service = ManagementService(node.api, reactor)
        service.privilegedStartService()  # bound before any other service starts
        assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
            (8080, "127.0.0.1")
        ]
        service.startService()
        service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [formatEvent(e) for e in events if "management API on" in formatEvent(e)]
    assert len(lines) == 1
    assert said in lines[0]
    assert TOKEN not in lines[0]


def test_a_scrape_waits_for_the_database_only_when_its_figures_are_old(node: MemoryNode):
    asked: list[defer.Deferred] = []

    def database_figures():
        asked.append(defer.Deferred())
        return asked[-1]

    node.state.database_figures = database_figures  # type: ignore[method-assign]
    exporter = node.metrics

    def scrape():
        done = exporter.scrape()
        for _ in range(5):
            node.clock.advance(0)
        return done

    first = scrape()
    assert len(asked) == 1
    assert not first.called  # nothing known yet: the first scrape waits
    asked[0].callback(DatabaseFigures(spool_depth=3))
    for _ in range(5):
        node.clock.advance(0)
    assert first.called
    assert b"lns_accounting_spool_records 3.0" in first.result

    node.clock.advance(2.0)
    assert scrape().called  # fresh: no database query
    assert len(asked) == 1
    node.clock.advance(4.0)
    second = scrape()
    assert second.called  # 6 s old: shown, and new ones asked for in the background
    assert len(asked) == 2
    assert scrape().called
    assert len(asked) == 2  # one question at a time
    node.clock.advance(30.0)
    late = scrape()
    assert not late.called  # too old to show: wait for the answer
    asked[1].callback(DatabaseFigures(spool_depth=7))
    for _ in range(5):
        node.clock.advance(0)
    assert b"lns_accounting_spool_records 7.0" in late.result
