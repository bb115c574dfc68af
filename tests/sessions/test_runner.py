"""lns.adapters.sessions: the supervisor's effects carried out on a reactor (MemoryReactorClock).

AAA and the pool answer through Deferreds the test fires, frames go to a simulated
device behind a recording L2TP link, the data plane is the real one without a TUN
device, timers run on the fake clock.
"""

from __future__ import annotations

import random

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from lns.adapters.dataplane import DataPlane
from lns.adapters.sessions import SessionRunner
from lns.l2tp.effects import CallCleared, CallEstablished
from lns.l2tp.result import CdnResult
from lns.l2tp.session import CallState, IncomingCall
from lns.pool.allocator import AllocationRequest, PoolUnavailable
from lns.ppp.auth import Decision
from lns.ppp.frame import Protocol, encode_frame
from lns.ppp.session import PppSettings
from lns.sessions.accounting import AcctSessionIds
from lns.sessions.supervisor import SessionSupervisor, SupervisorSettings
from lns.testing.lacsim.device import Device
from lns.testing.ppp_link import to_l2tp_proxy_auth, to_l2tp_proxy_lcp
from lns.testing.session_world import LOCAL, NODE, FakePool, iccid, ip_packet

KEY = (7, 70)


class Link:
    """The L2TP service: frames to the device of the call, CDNs recorded."""

    def __init__(self) -> None:
        self.runner: SessionRunner | None = None
        self.devices: dict[tuple[int, int], Device] = {}
        self.cdns: list[tuple[tuple[int, int], int, str]] = []
        self.clock: MemoryReactorClock | None = None

    def send_ppp(self, tunnel_id: int, session_id: int, frame: bytes) -> bool:
        device = self.devices.get((tunnel_id, session_id))
        if device is None or self.runner is None or self.clock is None:
            return False
        for answer in device.frame_received(frame, self.clock.seconds()):
            self.runner.ppp_frame_received(tunnel_id, session_id, answer)
        return True

    def disconnect_call(self, tunnel_id, session_id, result, reason) -> None:
        self.cdns.append(((tunnel_id, session_id), result.result, reason))
        self.devices.pop((tunnel_id, session_id), None)


class Answers:
    """AAA, pool and accounting whose answers the test gives."""

    def __init__(self) -> None:
        self.auth: list[defer.Deferred] = []
        self.allocations: list[tuple[AllocationRequest, defer.Deferred]] = []
        self.released: list = []
        self.records: list[tuple[str, str]] = []
        self.pool = FakePool()

    def authenticate(self, request):
        d: defer.Deferred = defer.Deferred()
        self.auth.append(d)
        return d

    def allocate(self, request):
        d: defer.Deferred = defer.Deferred()
        self.allocations.append((request, d))
        return d

    def grant(self, index: int = 0) -> None:
        request, d = self.allocations.pop(index)
        d.callback(self.pool.allocate(request))

    def release(self, lease):
        self.released.append(lease)
        return defer.succeed(None)

    def session_started(self, info):
        self.records.append(("start", info.acct_session_id))
        return defer.succeed(None)

    def interim(self, info):
        self.records.append(("interim", info.acct_session_id))
        return defer.succeed(None)

    def session_stopped(self, info, cause):
        self.records.append((f"stop:{cause.name}", info.acct_session_id))
        return defer.succeed(None)


def make():
    clock = MemoryReactorClock()
    clock.advance(1_800_000_000.0)
    answers = Answers()
    supervisor = SessionSupervisor(
        SupervisorSettings(node_name=NODE),
        PppSettings(local_address=LOCAL),
        iter(AcctSessionIds(NODE, clock.seconds()), None),
        random.Random(1),
    )
    dataplane = DataPlane(LOCAL, mss_clamp=False, clock=clock)
    runner = SessionRunner(supervisor, answers, answers, dataplane, clock, answers)
    link = Link()
    link.runner, link.clock = runner, clock
    runner.link = link
    return clock, answers, runner, link, dataplane


def establish(runner: SessionRunner, link: Link, clock, n: int = 1, key=KEY) -> Device:
    rng = random.Random(n)
    call = IncomingCall(key[1], 900 + n, key[0], 90, n, iccid(n), "iot.apn")
    call.state = CallState.ESTABLISHED
    call.proxy_lcp = to_l2tp_proxy_lcp(rng)
    call.proxy_auth = to_l2tp_proxy_auth("chap", rng)
    device = Device(rng=random.Random(n))
    link.devices[key] = device
    frames = device.start(clock.seconds())
    runner.call_established(CallEstablished(key[0], call, "op-a", "lac1", "192.0.2.1"))
    for frame in frames:
        runner.ppp_frame_received(key[0], key[1], frame)
    return device


def test_a_call_through_aaa_and_the_pool_to_forwarding_and_accounting():
    clock, answers, runner, link, dataplane = make()
    device = establish(runner, link, clock)
    [auth] = answers.auth
    auth.callback(Decision(True, session_timeout=60))
    answers.grant()
    record = runner.supervisor.get(KEY)
    assert record is not None
    assert device.address == record.address
    assert answers.records == [("start", record.acct_session_id)]
    # An IP packet of the open session goes straight to the data plane.
    assert record.address is not None
    frame = encode_frame(Protocol.IP, ip_packet(record.address))
    runner.ppp_frame_received(*KEY, frame)
    assert record.traffic.packets_up == 1
    # Session-Timeout on the reactor's clock: CDN, Stop, release.
    clock.advance(59.9)
    assert link.cdns == []
    clock.advance(0.1)
    assert link.cdns == [(KEY, CdnResult.TIMEOUT, "Session-Timeout reached")]
    assert answers.records[-1] == ("stop:SESSION_TIMEOUT", record.acct_session_id)
    assert len(answers.released) == 1
    assert record.path is not None
    assert not record.path.attached
    assert len(dataplane.forwarder) == 0
    assert clock.getDelayedCalls() == []


def test_dynamic_authorization_finds_changes_and_disconnects():
    clock, answers, runner, link, _ = make()
    establish(runner, link, clock)
    answers.auth[0].callback(Decision(True))
    answers.grant()

    class Match:
        acct_session_id = None
        user_name = None
        calling_station_id = iccid(1)
        framed_ip_address = None

    [handle] = runner.find(Match())
    runner.change(handle, 100, None)
    assert [call.getTime() for call in clock.getDelayedCalls()]  # the new deadline is armed
    runner.disconnect(handle)
    assert link.cdns[0][1] is CdnResult.ADMINISTRATIVE
    assert "Disconnect-Request" in link.cdns[0][2]
    assert answers.records[-1][0] == "stop:ADMIN_RESET"
    assert runner.find(Match()) == []


def test_an_aaa_failure_refuses_the_call_as_temporary():
    clock, answers, runner, link, _ = make()
    establish(runner, link, clock)
    answers.auth[0].errback(RuntimeError("boom"))
    [(key, result, message)] = link.cdns
    assert key == KEY
    assert result is CdnResult.TEMPORARY_LACK_OF_FACILITIES
    assert "AAA back end error" in message


def test_a_pool_failure_refuses_the_call_and_a_late_lease_is_released():
    clock, answers, runner, link, _ = make()
    establish(runner, link, clock)
    answers.auth.pop().callback(Decision(True))
    _, d = answers.allocations.pop()
    d.errback(PoolUnavailable("address pool not ready"))
    assert link.cdns[0][1] is CdnResult.TEMPORARY_LACK_OF_FACILITIES
    # A second call whose allocation comes back after the LAC hung up.
    second = (7, 71)
    establish(runner, link, clock, n=2, key=second)
    answers.auth.pop().callback(Decision(True))
    runner.call_cleared(CallCleared(7, 71, iccid(2), None, "CDN", True, False))  # type: ignore[arg-type]
    answers.grant()
    assert len(answers.released) == 1
    assert runner.supervisor.get(second) is None


def test_a_sim_attaching_again_on_another_tunnel_supersedes_its_old_session():
    clock, answers, runner, link, _ = make()
    establish(runner, link, clock, n=5, key=(1, 10))
    answers.auth.pop().callback(Decision(True))
    answers.grant()
    establish(runner, link, clock, n=5, key=(2, 20))
    answers.auth.pop().callback(Decision(True))
    answers.grant()
    assert [cdn[0] for cdn in link.cdns] == [(1, 10)]
    assert "superseded" in link.cdns[0][2]
    assert answers.released == []  # the lease moved to the new session
    assert [kind for kind, _ in answers.records] == ["start", "stop:NAS_REQUEST", "start"]
