"""The supervisor's counters (lns/sessions/stats.py) on a fake clock: set-ups and their
latency, failures by the stage they reached, traffic of the sessions that ended."""

from __future__ import annotations

import random

import pytest

from lns.histogram import Histogram
from lns.ppp.auth import CallContext, Decision
from lns.ppp.session import Phase, PppSettings
from lns.ppp.termination import TerminateCause
from lns.sessions.stats import SetupFailure, setup_failure
from lns.testing.lacsim.device import Device, DeviceBehaviour
from lns.testing.ppp_link import to_l2tp_proxy_auth, to_l2tp_proxy_lcp
from lns.testing.session_world import LOCAL, FakePool, World


def test_a_session_that_opens_is_a_setup_with_its_latency_from_the_iccn():
    world = World(hold=True)
    world.attach(1)
    world.now += 0.3  # RADIUS answers after 300 ms
    world.deliver()
    world.now += 0.2  # the pool after 200 ms more
    world.deliver()
    stats = world.supervisor.stats
    assert (stats.calls, stats.setups, sum(stats.failures.values())) == (1, 1, 0)
    assert stats.setup_latency.count == 1
    assert stats.setup_latency.sum == pytest.approx(0.5)
    # 0.5 s falls in the bucket whose upper bound is 0.5 (Prometheus: "le").
    assert dict(stats.setup_latency.cumulative())[0.5] == 1
    assert dict(stats.setup_latency.cumulative())[0.25] == 0


def test_latency_counts_from_the_icrq_when_l2tp_gives_its_time():
    world = World()  # its attach() gives no ICRQ time: the call is made here
    context = CallContext("89442000000000000099", tunnel_id=3, session_id=4)
    device = world.devices[(3, 4)] = Device(DeviceBehaviour(), random.Random(4))
    frames = device.start(world.now)
    world.run(
        world.supervisor.call_established(
            context,
            to_l2tp_proxy_lcp(world.rng),
            to_l2tp_proxy_auth("chap", world.rng),
            world.now,
            requested_at=world.now - 2.0,  # the ICRQ came 2 s before its ICCN
        )
    )
    world.from_device((3, 4), frames)
    record = world.supervisor.get((3, 4))
    assert record is not None
    assert record.requested_at == world.now - 2.0
    assert world.supervisor.stats.setup_latency.sum == pytest.approx(2.0)


def test_failures_are_counted_by_the_stage_they_reached():
    def aaa(request):
        if request.context.iccid.endswith("2"):
            return Decision(False, reason="rejected")
        if request.context.iccid.endswith("3"):
            return Decision(False, reason="no server", reachable=False)
        return Decision(True)

    world = World(aaa=aaa, pool=FakePool(size=1))
    world.attach(1)  # up, and takes the only address
    world.attach(2, session=2)  # Access-Reject
    world.attach(3, session=3)  # RADIUS unreachable
    world.attach(4, session=4)  # no address left
    stats = world.supervisor.stats
    assert stats.setups == 1
    assert stats.calls == 4
    assert stats.failures == {
        SetupFailure.AUTH_REJECTED: 1,
        SetupFailure.AAA_UNAVAILABLE: 1,
        SetupFailure.NO_ADDRESS: 1,
    }


def test_a_call_cleared_while_waiting_for_aaa_is_a_call_cleared_failure():
    world = World(hold=True)
    key = world.attach(1)
    world.cleared(key)
    assert world.supervisor.stats.failures == {SetupFailure.CALL_CLEARED: 1}
    assert world.supervisor.stats.setups == 0


def test_a_session_that_goes_down_after_it_was_up_is_no_failure():
    world = World()
    key = world.attach(1)
    world.cleared(key)
    assert world.supervisor.stats.setups == 1
    assert not world.supervisor.stats.failures


def test_no_proxy_auth_reject_is_an_lcp_stage_failure():
    world = World(ppp=PppSettings(local_address=LOCAL, no_proxy_auth="reject"))
    context = CallContext("89442000000000000099", tunnel_id=3, session_id=4)
    world.run(world.supervisor.call_established(context, None, None, world.now))
    assert world.supervisor.stats.failures == {SetupFailure.LCP: 1}


def test_traffic_of_ended_sessions_is_kept():
    world = World()
    first = world.attach(1)
    second = world.attach(2, session=2)
    world.send_ip(first, size=100)
    world.send_ip(first, size=200)
    world.send_ip(second, size=50)
    world.cleared(first)
    ended = world.supervisor.stats.ended_traffic
    assert (ended.packets_up, ended.octets_up) == (2, 300)
    live = sum(record.traffic.octets_up for record in world.supervisor)
    assert live == 50  # the node's total is the two together


@pytest.mark.parametrize(
    ("phase", "cause", "expected"),
    [
        (Phase.ESTABLISH, TerminateCause.USER_ERROR, SetupFailure.LCP),
        (Phase.AUTHENTICATE, TerminateCause.USER_ERROR, SetupFailure.DEVICE_AUTHENTICATION),
        (Phase.AUTHORIZE, TerminateCause.USER_ERROR, SetupFailure.AUTH_REJECTED),
        (Phase.AUTHORIZE, TerminateCause.SERVICE_UNAVAILABLE, SetupFailure.AAA_UNAVAILABLE),
        (Phase.ADDRESS, TerminateCause.SERVICE_UNAVAILABLE, SetupFailure.NO_ADDRESS),
        (Phase.NETWORK, TerminateCause.USER_ERROR, SetupFailure.IPCP),
        (Phase.NETWORK, TerminateCause.LOST_CARRIER, SetupFailure.CALL_CLEARED),
        (Phase.AUTHORIZE, TerminateCause.ADMIN_RESET, SetupFailure.CLOSED_BY_NODE),
        (Phase.ADDRESS, TerminateCause.NAS_REQUEST, SetupFailure.CLOSED_BY_NODE),
    ],
)
def test_failure_reason(phase, cause, expected):
    assert setup_failure(phase, cause) is expected


def test_histogram_buckets_are_cumulative_with_inf_last():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert histogram.sum == pytest.approx(3.65)
    assert histogram.mean == pytest.approx(3.65 / 4)
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 0.5))
