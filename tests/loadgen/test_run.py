"""A whole load run against an LNS in memory (lns.testing.fake_lns), on a fake clock."""

from __future__ import annotations

import io
import ipaddress
from dataclasses import replace
from typing import Any

import pytest

from lns.l2tp.header import ControlPacket, decode_packet
from lns.l2tp.message import decode_message
from lns.loadgen.options import LoadOptions, ProxyAuth, Teardown
from lns.loadgen.progress import Progress
from lns.loadgen.run import LoadRun
from lns.loadgen.stats import RunStats
from lns.testing.fake_lns import FakeLns, FakeReactor, pump
from lns.testing.l2tp_network import SECRET

SERVER = ipaddress.ip_address("192.0.2.1")
BASE = LoadOptions(
    server=SERVER,
    tunnels=2,
    sessions=20,
    rate=0,
    secret=SECRET,
    iccid_start="8944990000000000001",
    hello_interval=0.1,
    timeout=10,
)


def run_against(lns: FakeLns, options: LoadOptions = BASE, **kw: Any):
    reactor = FakeReactor()
    out = io.StringIO()
    load = LoadRun(replace(options, **kw), reactor, Progress(out, tty=False))
    done = load.start()
    results: list[RunStats] = []
    done.addCallback(results.append)
    pump(reactor, lns, load)
    assert results, f"the run did not end (phase {load.phase})"
    return results[0], out.getvalue(), reactor


def control_types(lns: FakeLns, reactor: FakeReactor) -> list[int]:
    """Message types the run sent, in order (ZLBs left out)."""
    types = []
    for data in reactor.ports[0].log:
        packet = decode_packet(data)
        if isinstance(packet, ControlPacket) and packet.payload:
            types.append(int(decode_message(packet.payload, SECRET).message_type))
    return types


def test_every_session_comes_up_and_is_torn_down():
    lns = FakeLns(SECRET)
    stats, progress, reactor = run_against(lns)
    assert stats.ok
    assert stats.tunnels_established == 2
    assert stats.sessions_attempted == stats.sessions_established == 20
    assert stats.failures.total() == 0
    assert len(stats.setup_latency) == 20
    # Every session was hung up with a CDN, then each tunnel closed and acknowledged.
    assert stats.sessions_hung_up == 20
    assert stats.teardown_complete
    assert {c.by_peer for c in lns.cleared} == {True}
    assert len(lns.cleared) == 20
    assert lns.endpoint.tunnels == {} or all(t.channel.idle for t in lns.endpoint.tunnels.values())
    assert reactor.ports[0].listening is False
    # The sessions were spread over both tunnels.
    assert {len([c for c in lns.cleared if c.tunnel_id == t]) for t in lns.endpoint.tunnels} <= {10}
    assert "setup" in progress
    assert "done" in progress
    assert stats.datagrams_sent > 0
    assert stats.datagrams_received > 0


def test_hello_round_trips_are_timed_while_sessions_are_set_up_and_held():
    lns = FakeLns(SECRET)
    stats, _, _ = run_against(lns, rate=20, sessions=20, hold=1.0)
    # About 1 s of setup and 1 s of hold, two tunnels, a HELLO every 0.1 s on each.
    assert len(stats.hello_setup) >= 10
    assert len(stats.hello_hold) >= 10
    assert stats.hello_setup.percentile(99) is not None
    assert stats.ok


def test_rate_spaces_the_icrqs():
    lns = FakeLns(SECRET)
    stats, _, _ = run_against(lns, rate=10, sessions=11, tunnels=1)
    assert stats.first_setup_at is not None
    assert stats.last_setup_at is not None
    # Eleven sessions at 10/s: the last ICRQ leaves a second after the first.
    assert stats.last_setup_at - stats.first_setup_at >= 1.0
    assert stats.ok


def test_concurrency_bounds_setups_in_flight():
    lns = FakeLns(SECRET)
    reactor = FakeReactor()
    load = LoadRun(replace(BASE, concurrency=3), reactor, Progress(io.StringIO(), tty=False))
    load.start()
    seen: list[int] = []
    original = load._place

    def place(*args: Any) -> None:
        original(*args)
        seen.append(len(load._in_flight))

    load._place = place  # type: ignore[method-assign]
    pump(reactor, lns, load)
    assert max(seen) == 3
    assert load.stats.sessions_established == 20


def test_refused_sessions_are_counted_by_the_cdn_result_and_message():
    lns = FakeLns(SECRET, refuse=lambda iccid: "barred" if int(iccid) % 4 == 0 else None)
    stats, _, _ = run_against(lns)
    assert not stats.ok
    refused = sum(1 for i in range(20) if int(BASE.iccid(i)) % 4 == 0)
    assert stats.sessions_established == 20 - refused
    reasons = dict(stats.failures.most_common())
    assert sum(reasons.values()) == refused
    (reason,) = reasons
    assert reason.startswith("CDN 2/0: ")


def test_sessions_that_never_open_time_out_and_are_hung_up():
    lns = FakeLns(SECRET)
    lns.refuse = lambda iccid: None
    # An LNS whose PPP side never answers: the device gets no IPCP.
    lns.sessions = _Blackhole()  # type: ignore[assignment]
    stats, _, _ = run_against(lns, sessions=4, timeout=3)
    assert stats.sessions_established == 0
    assert dict(stats.failures.most_common()) == {"timeout after 3 s: IPCP not opened": 4}
    assert not stats.ok
    # The timed-out calls were cleared by the LAC with a CDN.
    assert len([c for c in lns.cleared if c.by_peer]) == 4


class _Blackhole(dict[Any, Any]):
    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def test_a_tunnel_refused_by_the_lns_is_reported_and_nothing_is_attempted():
    lns = FakeLns(SECRET, hostname="another-lac")  # the LNS expects another Host Name
    stats, progress, _ = run_against(lns, tunnels=1)
    assert stats.tunnels_established == 0
    (reason,) = stats.tunnel_failures.counts
    assert reason.startswith("StopCCN 4/0: ")
    assert stats.sessions_attempted == 0
    assert stats.sessions_not_attempted == 20
    assert not stats.ok
    assert "StopCCN 4/0" in progress


def test_an_lns_with_another_secret_fails_our_challenge():
    lns = FakeLns(b"another-secret")
    stats, _, reactor = run_against(lns, tunnels=1)
    assert dict(stats.tunnel_failures.most_common()) == {"the LNS's Challenge Response is wrong": 1}
    assert control_types(lns, reactor) == [1, 4]  # SCCRQ, then StopCCN
    assert not stats.ok


def test_an_lns_that_never_answers_fails_the_tunnel_after_the_timeout():
    lns = FakeLns(SECRET)
    lns.mute = True
    stats, _, reactor = run_against(lns, tunnels=1, timeout=2)
    assert dict(stats.tunnel_failures.most_common()) == {"no SCCRP within 2 s": 1}
    assert not stats.ok
    assert reactor.seconds() < 10  # gave up on it, did not wait for the retransmissions


def test_stopccn_teardown_sends_no_cdn():
    lns = FakeLns(SECRET)
    stats, _, reactor = run_against(lns, teardown=Teardown.STOPCCN, sessions=6)
    assert stats.ok
    assert stats.sessions_hung_up == 0
    assert 14 not in control_types(lns, reactor)  # no CDN
    assert control_types(lns, reactor).count(4) == 2  # a StopCCN per tunnel
    assert len(lns.cleared) == 6  # the LNS cleared them with the tunnel


@pytest.mark.parametrize("auth", list(ProxyAuth))
def test_every_proxy_auth_kind_and_no_proxy_lcp(auth: ProxyAuth):
    lns = FakeLns(SECRET)
    stats, _, _ = run_against(lns, auth=auth, proxy_lcp=auth is not ProxyAuth.PAP, sessions=4)
    assert stats.ok


def test_pings_through_every_session_are_answered():
    lns = FakeLns(SECRET)
    ping = ipaddress.IPv4Address("198.51.100.1")
    stats, _, _ = run_against(lns, sessions=10, hold=2.5, ping=ping, ping_interval=1.0)
    assert stats.ok
    assert stats.pings_sent >= 20  # each session about once a second for 2.5 s
    assert stats.pings_answered == stats.pings_sent
    assert stats.pings_misrouted == 0
    assert stats.sessions_unanswered == 0


def test_pings_answered_to_the_wrong_session_fail_the_run():
    lns = FakeLns(SECRET)
    lns.misroute = True
    ping = ipaddress.IPv4Address("198.51.100.1")
    stats, _, _ = run_against(lns, sessions=4, hold=1.5, ping=ping)
    assert stats.pings_sent > 0
    assert stats.pings_answered == 0
    assert stats.pings_misrouted == stats.pings_sent
    assert stats.sessions_unanswered == 4
    assert not stats.ok


def test_a_session_cleared_by_the_lns_while_held_counts_as_dropped():
    lns = FakeLns(SECRET)
    reactor = FakeReactor()
    load = LoadRun(replace(BASE, sessions=4, hold=5.0), reactor, Progress(io.StringIO(), tty=False))
    done = load.start()
    pump(reactor, lns, load, limit=reactor.seconds() + 1.0)
    assert load.phase == "hold"
    tunnel_id, session_id = next(iter(lns.sessions))
    lns.endpoint.disconnect_call(tunnel_id, session_id, lns_result(), "admin", reactor.seconds())
    pump(reactor, lns, load)
    stats: list[RunStats] = []
    done.addCallback(stats.append)
    assert dict(stats[0].drops.most_common()) == {"CDN 3/0: kicked": 1}
    assert not stats[0].ok


def lns_result():
    from lns.l2tp.avp import ResultCode

    return ResultCode(3, 0, "kicked")


def test_interrupt_tears_down_and_marks_the_run():
    lns = FakeLns(SECRET)
    reactor = FakeReactor()
    out = io.StringIO()
    load = LoadRun(replace(BASE, sessions=40, rate=10), reactor, Progress(out, tty=False))
    done = load.start()
    pump(reactor, lns, load, limit=reactor.seconds() + 1.0)
    load.interrupt()
    pump(reactor, lns, load)
    stats: list[RunStats] = []
    done.addCallback(stats.append)
    (result,) = stats
    assert result.interrupted
    assert not result.ok
    assert 0 < result.sessions_attempted < 40
    # Established or still in flight, every session placed was hung up.
    assert result.sessions_hung_up == result.sessions_attempted
    assert result.failures.counts["interrupted before it was established"] == (
        result.sessions_attempted - result.sessions_established
    )
    assert "interrupted" in out.getvalue()


def test_a_tunnel_the_lns_closes_during_teardown_fails_the_run():
    # Every session came up, then the LNS stopped the tunnels (StopCCN 6) while the LAC
    # was still clearing its calls: not a run to call OK.
    lns = FakeLns(SECRET)
    reactor = FakeReactor()
    load = LoadRun(replace(BASE, sessions=4, hold=1.0), reactor, Progress(io.StringIO(), tty=False))
    done = load.start()
    pump(reactor, lns, load, limit=reactor.seconds() + 0.5)
    assert load.phase == "hold"
    while load.phase == "hold":
        reactor.advance(0.05)
    assert load.phase == "teardown"
    lns.endpoint.shutdown(reactor.seconds())
    pump(reactor, lns, load)
    stats: list[RunStats] = []
    done.addCallback(stats.append)
    (result,) = stats
    assert result.sessions_established == 4
    assert not result.ok
    (problem,) = result.problems()
    assert (
        problem
        == "2 of 2 tunnels failed: closed during teardown: StopCCN 6/0: LNS is shutting down"
    )


def test_problems_name_each_failure_with_its_most_frequent_reason():
    lns = FakeLns(SECRET, refuse=lambda iccid: "barred" if int(iccid) % 4 == 0 else None)
    stats, _, _ = run_against(lns)
    (problem,) = stats.problems()
    assert problem == "5 of 20 sessions failed: CDN 2/0: authentication failed: barred"
