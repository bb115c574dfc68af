"""lns-loadgen failing over between LNSs as a carrier's LAC does, on a fake clock.

Two or three LNSs in memory (lns.testing.fake_lns), each the project's own L2TP
endpoint and PPP sessions; the run is given them in order of preference.
"""

from __future__ import annotations

import io
import ipaddress
from dataclasses import replace
from typing import Any

from lns.l2tp.avp import ResultCode
from lns.l2tp.header import ControlPacket, decode_packet
from lns.l2tp.message import decode_message
from lns.loadgen.options import LoadOptions
from lns.loadgen.progress import Progress
from lns.loadgen.report import format_table, summarize
from lns.loadgen.run import LoadRun
from lns.loadgen.stats import RunStats
from lns.ppp.session import Phase
from lns.testing.fake_lns import FakeLns, FakeReactor, pump
from lns.testing.l2tp_network import SECRET

A = ("192.0.2.1", 1701)
B = ("192.0.2.2", 1701)
C = ("192.0.2.3", 1702)
SIMS = 12
BASE = LoadOptions(
    server=ipaddress.ip_address(A[0]),
    port=A[1],
    alternates=((ipaddress.ip_address(B[0]), B[1]),),
    tunnels=2,
    sessions=SIMS,
    rate=0,
    secret=SECRET,
    iccid_start="8944990000000000001",
    hello_interval=0.5,
    retransmit=1.0,
    retries=3,  # a lost LNS is noticed 1 + 2 + 4 + 8 = 15 s after what it left unacked
    timeout=30,
    hold=60,
    down_time=100,
)
SCCRQ = 1


def sticky(iccid: str) -> ipaddress.IPv4Address:
    """The address the shared pool gives a SIM, whichever LNS it attaches to."""
    return ipaddress.IPv4Address("100.64.0.0") + int(iccid[-4:])


class Rig:
    """A run and its LNSs, advanced on the fake clock."""

    def __init__(self, lnses: dict[tuple[str, int], FakeLns], **options: Any) -> None:
        self.lnses = lnses
        self.reactor = FakeReactor()
        self.output = io.StringIO()
        self.run = LoadRun(replace(BASE, **options), self.reactor, Progress(self.output, tty=False))
        self.results: list[RunStats] = []
        self.run.start().addCallback(self.results.append)

    def until(self, seconds: float) -> None:
        """Advance to ``seconds`` of fake time (or the end of the run)."""
        pump(self.reactor, self.lnses, self.run, limit=seconds)

    def until_phase(self, phase: str) -> None:
        while self.run.phase != phase:
            assert self.run.phase != "done", f"the run ended before {phase}"
            self.until(self.reactor.seconds() + 0.1)

    def finish(self) -> RunStats:
        self.until(3600)
        assert self.results, f"the run did not end (phase {self.run.phase})"
        return self.results[0]

    def now(self) -> float:
        return self.reactor.seconds()

    def sent_to(self, lns: tuple[str, int], since: int = 0) -> list[int]:
        """Types of the control messages the run sent to ``lns`` (ZLBs left out)."""
        types = []
        for data, addr in self.reactor.ports[0].sent[since:]:
            packet = decode_packet(data)
            if addr == lns and isinstance(packet, ControlPacket) and packet.payload:
                types.append(int(decode_message(packet.payload, SECRET).message_type))
        return types


def addresses_on(lns: FakeLns) -> dict[str, ipaddress.IPv4Address]:
    """ICCID -> address of every session up on ``lns``."""
    return {
        s.context.iccid: s.address
        for s in lns.sessions.values()
        if s.address is not None and s.phase is Phase.OPENED
    }


def test_an_lns_that_never_answers_sccrq_is_passed_over_for_the_next():
    a, b = FakeLns(SECRET), FakeLns(SECRET)
    a.mute = True
    rig = Rig({A: a, B: b}, hold=1)
    stats = rig.finish()
    assert stats.ok, format_table(summarize(stats))
    assert stats.sessions_established == SIMS
    # Each tunnel's SCCRQ went to A once and 3 times again, then a tunnel went to B.
    assert rig.sent_to(A) == [SCCRQ] * 2 * 4
    (failover,) = stats.failovers
    assert failover.lns == "192.0.2.1:1701"
    assert failover.to == "192.0.2.2:1701"
    assert failover.reason == "no SCCRP after 3 retransmissions of the SCCRQ"
    assert failover.down_at == 15.0
    assert failover.tunnels_lost == 2
    assert failover.sims_lost == 0
    assert not stats.tunnel_failures.counts
    assert stats.tunnels_established == 2
    assert len(b.cleared) == SIMS  # set up there, then torn down at the end


def test_an_lns_that_stops_acknowledging_in_the_hold_loses_its_sims_to_the_next():
    a = FakeLns(SECRET, address_of=sticky)
    b = FakeLns(SECRET, address_of=sticky)
    rig = Rig({A: a, B: b})
    rig.until_phase("hold")
    before = addresses_on(a)
    assert len(before) == SIMS
    rig.until(rig.now() + 5)
    killed_at = rig.now()
    a.mute = True  # SIGKILL: it answers nothing any more
    rig.until(killed_at + 30)
    after = addresses_on(b)
    assert after == before  # every SIM back on B, same ICCID, same address
    stats = rig.finish()
    assert stats.ok, format_table(summarize(stats))
    (failover,) = stats.failovers
    assert failover.reason == "the LNS stopped acknowledging"
    # The HELLO in flight at the kill and its 3 retransmissions: 15 s without an ack.
    assert killed_at + 14.5 <= failover.down_at <= killed_at + 15.5
    assert (failover.tunnels_lost, failover.sims_lost, failover.sims_back) == (2, SIMS, SIMS)
    assert failover.kept_address == SIMS
    # Both tunnels were lost at once; the in-memory LNS answers without delay.
    assert failover.first_lost_at == failover.down_at
    assert failover.last_back_at is not None
    assert failover.recovery == failover.last_back_at - failover.first_lost_at < 1.0
    assert stats.sessions_established == SIMS  # a SIM that came back is not counted twice
    assert stats.drops.total() == 0
    assert "192.0.2.1:1701 marked down for 100 s" in rig.output.getvalue()


def test_stopccn_from_the_lns_moves_its_sims_and_counts_those_with_another_address():
    a = FakeLns(SECRET, address_of=sticky)
    # B's pool gives the odd SIMs another address.
    b = FakeLns(
        SECRET,
        address_of=lambda iccid: sticky(iccid) + (1000 if int(iccid) % 2 else 0),
    )
    rig = Rig({A: a, B: b})
    rig.until_phase("hold")
    a.endpoint.shutdown(rig.now())  # StopCCN on every tunnel
    stats = rig.finish()
    (failover,) = stats.failovers
    assert failover.reason == "StopCCN 6/0: LNS is shutting down"
    assert failover.down_at == failover.first_lost_at
    assert (failover.sims_lost, failover.sims_back) == (SIMS, SIMS)
    assert failover.kept_address == SIMS // 2
    assert stats.ok


def test_sims_that_do_not_come_back_fail_the_run_with_the_reason():
    a = FakeLns(SECRET)
    b = FakeLns(SECRET, refuse=lambda iccid: "ICCID already holds a live lease on node-A")
    rig = Rig({A: a, B: b})
    rig.until_phase("hold")
    a.endpoint.shutdown(rig.now())
    stats = rig.finish()
    assert not stats.ok
    (failover,) = stats.failovers
    assert (failover.sims_lost, failover.sims_back) == (SIMS, 0)
    assert dict(failover.not_back.most_common()) == {
        "CDN 2/0: authentication failed: ICCID already holds a live lease on node-A": SIMS
    }
    summary = summarize(stats)
    assert not summary["ok"]
    assert summary["failovers"][0]["complete"] is False
    table = format_table(summary)
    assert f"0 of {SIMS} SIMs back" in table
    # The result line says why (and lns-loadgen exits 1: stats.ok is False).
    assert table.rstrip().splitlines()[-1].split(None, 1)[1] == (
        f"FAILED: {SIMS} of {SIMS} SIMs not back after the failover from 192.0.2.1:1701: "
        "CDN 2/0: authentication failed: ICCID already holds a live lease on node-A"
    )


def test_sims_still_away_when_the_hold_ends_are_not_back():
    a, b = FakeLns(SECRET), FakeLns(SECRET)
    b.mute = True  # B never answers: the SIMs wait for its tunnel until the run ends
    rig = Rig({A: a, B: b}, hold=20, retries=5)
    rig.until_phase("hold")
    a.endpoint.shutdown(rig.now())
    stats = rig.finish()
    (failover,) = stats.failovers
    assert failover.sims_back == 0
    assert dict(failover.not_back.most_common()) == {"not back when the run ended": SIMS}
    assert not stats.ok


def test_a_marked_down_lns_gets_no_tunnel_until_its_down_time_is_over():
    a, b = FakeLns(SECRET), FakeLns(SECRET)
    rig = Rig({A: a, B: b}, hold=400, down_time=100)
    rig.until_phase("hold")
    a.endpoint.shutdown(rig.now())
    rig.until(rig.now() + 1)
    (failover,) = rig.run.stats.failovers
    # B goes away before A's 100 s are over: nowhere to go, the sessions are dropped
    # and nothing is sent to A.
    sent = len(rig.reactor.ports[0].sent)
    rig.until(failover.down_at + 50)
    b.endpoint.shutdown(rig.now())
    rig.until(failover.down_at + 99)
    assert rig.sent_to(A, since=sent) == []
    assert rig.run.stats.drops.total() == SIMS
    assert len(rig.run.stats.failovers) == 1


def test_after_its_down_time_an_lns_takes_tunnels_again():
    a, b = FakeLns(SECRET), FakeLns(SECRET)
    rig = Rig({A: a, B: b}, hold=400, down_time=100)
    rig.until_phase("hold")
    a.endpoint.shutdown(rig.now())
    rig.until(rig.now() + 1)
    first = rig.run.stats.failovers[0]
    rig.until(first.down_at + 101)
    # A's down time is over; now B sends StopCCN and the SIMs go back to A.
    a.endpoint = FakeLns(SECRET).endpoint  # A restarted: a fresh endpoint
    b.endpoint.shutdown(rig.now())
    stats = rig.finish()
    assert stats.ok, format_table(summarize(stats))
    assert [(f.lns, f.to) for f in stats.failovers] == [
        ("192.0.2.1:1701", "192.0.2.2:1701"),
        ("192.0.2.2:1701", "192.0.2.1:1701"),
    ]
    assert stats.failovers[1].sims_back == SIMS


def test_the_next_lns_up_is_taken_in_order_of_preference():
    a, b, c = FakeLns(SECRET), FakeLns(SECRET), FakeLns(SECRET)
    b.mute = True
    rig = Rig(
        {A: a, B: b, C: c},
        alternates=(
            (ipaddress.ip_address(B[0]), B[1]),
            (ipaddress.ip_address(C[0]), C[1]),
        ),
        tunnels=1,
    )
    rig.until_phase("hold")
    a.endpoint.shutdown(rig.now())
    stats = rig.finish()
    assert stats.ok, format_table(summarize(stats))
    assert [(f.lns, f.to, f.sims_lost) for f in stats.failovers] == [
        ("192.0.2.1:1701", "192.0.2.2:1701", SIMS),
        # B never answered the SCCRQ of the tunnel that was to take A's SIMs.
        ("192.0.2.2:1701", "192.0.2.3:1702", 0),
    ]
    assert stats.failovers[0].sims_back == SIMS
    assert len(addresses_on(c)) == 0  # torn down at the end
    assert len(c.cleared) == SIMS


def test_a_failover_during_the_setup_places_the_sessions_in_flight_again():
    a, b = FakeLns(SECRET), FakeLns(SECRET)
    rig = Rig({A: a, B: b}, sessions=40, rate=10, hold=1)
    rig.until(2.0)
    assert rig.run.phase == "setup"
    a.endpoint.shutdown(rig.now())
    stats = rig.finish()
    assert stats.ok, format_table(summarize(stats))
    assert stats.sessions_attempted == stats.sessions_established == 40
    (failover,) = stats.failovers
    assert failover.sims_lost == failover.sims_back > 0
    assert len(b.cleared) == 40 - len([c for c in a.cleared if c.by_peer])


def test_the_summary_shows_each_failover():
    a = FakeLns(SECRET, address_of=sticky)
    b = FakeLns(SECRET, address_of=sticky)
    rig = Rig({A: a, B: b})
    rig.until_phase("hold")
    a.mute = True
    stats = rig.finish()
    summary = summarize(stats)
    assert summary["lns"] == ["192.0.2.1:1701", "192.0.2.2:1701"]
    (failover,) = summary["failovers"]
    recovery = stats.failovers[0].recovery
    assert recovery is not None
    assert failover == {
        "lns": "192.0.2.1:1701",
        "reason": "the LNS stopped acknowledging",
        "down_at_s": round(stats.failovers[0].down_at - stats.started_at, 3),
        "down_at_epoch": round(stats.failovers[0].down_at, 3),
        "to": "192.0.2.2:1701",
        "tunnels_lost": 2,
        "sims_lost": SIMS,
        "sims_back": SIMS,
        "kept_address": SIMS,
        "recovery_s": round(recovery, 3),
        "complete": True,
        "not_back": {},
    }
    table = format_table(summary)
    assert "failover" in table
    assert f"{SIMS} of {SIMS} SIMs back in {recovery:.2f} s" in table
    assert f"{SIMS} with the address they had" in table
    assert table.rstrip().endswith("OK")


def test_datagrams_from_an_address_not_given_are_dropped():
    a = FakeLns(SECRET)
    rig = Rig({A: a}, alternates=(), hold=0)
    rig.run.datagram_received(b"\xc8\x02\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x00", B)
    stats = rig.finish()
    assert stats.datagrams_unexpected == 1
    assert stats.ok


def test_sims_waiting_for_a_tunnel_go_to_the_first_lns_whose_down_time_is_over():
    a, b = FakeLns(SECRET), FakeLns(SECRET)
    b.mute = True
    # Two tunnels to A; one is lost (StopCCN), B never answers, A is down for 30 s.
    rig = Rig({A: a, B: b}, hold=200, down_time=30, retries=2)
    rig.until_phase("hold")
    first_tunnel = next(iter(a.endpoint.tunnels))
    a.endpoint.close_tunnel(first_tunnel, ResultCode(6, 0, "going"), "test", rig.now())
    stats = rig.finish()
    assert stats.ok, format_table(summarize(stats))
    (failover,) = stats.failovers
    assert failover.sims_lost == failover.sims_back == SIMS // 2
    # Back on A once its 30 s were over (B failed meanwhile, with nowhere else to go).
    assert failover.last_back_at is not None
    assert failover.last_back_at >= failover.down_at + 30
    assert dict(stats.tunnel_failures.most_common()) == {
        "no SCCRP after 2 retransmissions of the SCCRQ": 1
    }
