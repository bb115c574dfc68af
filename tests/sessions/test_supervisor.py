"""The session supervisor's lifecycle on a fake clock (lns/sessions/supervisor.py).

Attach, re-attach of a SIM on the same node, Session-/Idle-Timeout, Interim-Updates,
disconnect by each key, accounting in order, the one User-Name, and the answers of
AAA and the pool arriving after their session ended.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from lns.l2tp.result import CdnResult
from lns.pool.allocator import AddressOutsidePool, AllocationRequest, PoolExhausted, PoolUnavailable
from lns.ppp.auth import Decision
from lns.ppp.termination import TerminateCause
from lns.sessions import effects as fx
from lns.sessions.accounting import RecordKind
from lns.sessions.record import SessionState
from lns.sessions.supervisor import SupervisorSettings
from lns.testing.session_world import NODE, FakePool, World, iccid

IPv4 = ipaddress.IPv4Address
START, INTERIM, STOP = RecordKind.START, RecordKind.INTERIM, RecordKind.STOP


@dataclass(frozen=True)
class Query:
    acct_session_id: str | None = None
    user_name: str | None = None
    calling_station_id: str | None = None
    framed_ip_address: IPv4 | None = None


def up(world: World, n: int, **kwargs) -> tuple[int, int]:
    key = world.attach(n, **kwargs)
    record = world.supervisor.get(key)
    assert record is not None
    assert record.state is SessionState.UP, record.ppp.phase
    return key


# --- attach -------------------------------------------------------------------------------


def test_a_call_becomes_an_accounted_forwarding_session():
    world = World()
    key = up(world, 1)
    record = world.supervisor.get(key)
    assert record is not None
    assert record.address == IPv4("100.64.1.0")
    assert record.lease is not None
    assert record.lease.address == record.address
    assert world.devices[key].address == record.address
    # The Acct-Session-Id exists before the Access-Request and is the accounting one.
    [request] = world.requests
    assert request.context.acct_session_id == record.acct_session_id != ""
    assert request.user_name == iccid(1) == record.user_name
    assert world.accounting() == [(START, record.acct_session_id, None)]
    [opened] = world.of_type(fx.OpenPath)
    assert opened.path is record.path
    assert opened.path.traffic is record.traffic
    [session_up] = world.of_type(fx.SessionUp)
    assert session_up.acct_session_id == record.acct_session_id
    assert world.supervisor.find(Query(calling_station_id=iccid(1))) == [record]


def test_the_user_name_is_formatted_once_from_the_template_and_the_ppp_name():
    world = World(SupervisorSettings(node_name=NODE, username_template="{iccid}@{name}.iot"))
    key = up(world, 2)
    record = world.supervisor.get(key)
    assert record is not None
    # The proxy CHAP name of the simulated LAC is empty (the SIM's usual case).
    assert record.user_name == f"{iccid(2)}@.iot"
    assert world.requests[0].user_name == record.user_name
    [start] = world.of_type(fx.Account)
    assert start.session.user_name == record.user_name
    assert world.supervisor.find(Query(user_name=record.user_name)) == [record]


def test_counters_are_the_data_planes_and_reach_the_stop():
    world = World()
    key = up(world, 1)
    for _ in range(3):
        world.send_ip(key, size=120)
    world.send_ip(key, size=120, source=IPv4("10.9.9.9"))  # spoofed: dropped, not counted
    record = world.supervisor.get(key)
    assert record is not None
    assert (record.traffic.packets_up, record.traffic.octets_up) == (3, 360)
    world.cleared(key)
    [stop] = [a for a in world.of_type(fx.Account) if a.kind is STOP]
    assert (stop.session.packets_in, stop.session.octets_in) == (3, 360)
    assert stop.cause is TerminateCause.LOST_CARRIER
    [down] = world.down()
    assert (down.octets_in, down.was_up) == (360, True)


# --- the end of a session -------------------------------------------------------------------


def test_cdn_from_the_lac_ends_the_session_without_a_cdn_of_ours():
    world = World()
    key = up(world, 1)
    lease = world.supervisor.get(key).lease  # type: ignore[union-attr]
    world.cleared(key)
    assert world.supervisor.get(key) is None
    assert world.cdns() == []
    assert world.pool.released == [lease]
    kinds = [type(e) for e in world.effects if isinstance(e, (fx.ClosePath, fx.Account))]
    assert kinds[-2:] == [fx.ClosePath, fx.Account]  # forwarding stops before the Stop


def test_ended_sessions_answer_no_query_and_release_once():
    world = World()
    key = up(world, 1)
    record = world.supervisor.get(key)
    assert record is not None
    world.run(world.supervisor.disconnect(record, TerminateCause.ADMIN_RESET, "admin", world.now))
    world.run(world.supervisor.disconnect(record, TerminateCause.ADMIN_RESET, "again", world.now))
    world.cleared(key)
    assert len(world.pool.released) == 1
    assert [kind for kind, _, _ in world.accounting()] == [START, STOP]
    assert world.supervisor.find(Query(acct_session_id=record.acct_session_id)) == []
    assert world.supervisor.by_address(IPv4("100.64.1.0")) is None
    assert len(world.supervisor) == 0
    assert world.supervisor.get_timer() is None


@pytest.mark.parametrize(
    "query",
    [
        lambda r: Query(acct_session_id=r.acct_session_id),
        lambda r: Query(user_name=r.user_name),
        lambda r: Query(calling_station_id=r.iccid),
        lambda r: Query(framed_ip_address=r.address),
        lambda r: Query(calling_station_id=r.iccid, framed_ip_address=r.address),
    ],
    ids=["acct-session-id", "user-name", "calling-station-id", "framed-ip", "two-keys"],
)
def test_disconnect_by_each_key(query):
    world = World()
    keys = [up(world, n, session=n) for n in (1, 2, 3)]
    target = world.supervisor.get(keys[1])
    assert target is not None
    [found] = world.supervisor.find(query(target))
    assert found is target
    world.run(world.supervisor.disconnect(found, TerminateCause.ADMIN_RESET, "kicked", world.now))
    assert world.cdns() == [(keys[1], CdnResult.ADMINISTRATIVE, "kicked")]
    assert [a for a in world.accounting() if a[0] is STOP] == [
        (STOP, target.acct_session_id, TerminateCause.ADMIN_RESET)
    ]
    assert {r.key for r in world.supervisor} == {keys[0], keys[2]}


def test_a_query_that_disagrees_on_one_key_matches_nothing():
    world = World()
    key = up(world, 1)
    record = world.supervisor.get(key)
    assert record is not None
    assert world.supervisor.find(Query(calling_station_id=iccid(2))) == []
    assert (
        world.supervisor.find(
            Query(acct_session_id=record.acct_session_id, framed_ip_address=IPv4("10.0.0.1"))
        )
        == []
    )


# --- re-attach --------------------------------------------------------------------------------


def test_a_sim_that_attaches_again_takes_its_address_and_the_old_session_ends():
    world = World()
    old_key = up(world, 7, tunnel=1, session=100)
    old = world.supervisor.get(old_key)
    assert old is not None
    assert old.lease is not None
    old_lease = old.lease
    new_key = up(world, 7, tunnel=2, session=200)
    new = world.supervisor.get(new_key)
    assert new is not None
    assert new.lease is not None
    assert new.address == old.address  # the same address, sticky
    assert new.lease.taken_over == (old_lease,)
    assert world.supervisor.get(old_key) is None
    assert world.cdns() == [
        (old_key, CdnResult.ADMINISTRATIVE, "superseded by a new session of the same SIM")
    ]
    # The old session's lease is the new one's now: it is never released.
    assert world.pool.released == []
    assert world.accounting() == [
        (START, old.acct_session_id, None),
        (STOP, old.acct_session_id, TerminateCause.NAS_REQUEST),
        (START, new.acct_session_id, None),
    ]
    assert world.supervisor.by_address(new.address) is new  # type: ignore[arg-type]
    assert world.supervisor.find(Query(calling_station_id=iccid(7))) == [new]


def test_a_lease_taken_over_from_another_node_closes_nothing_here():
    # That node learns it through the database (DESIGN.md section 9); here a session with
    # the same L2TP IDs (another SIM) must not be taken for it.
    world = World()
    bystander = up(world, 8, tunnel=1, session=7)
    world.pool.allocate(AllocationRequest(iccid(7), 1, 7), node="lns-2")
    key = up(world, 7, tunnel=2, session=7)
    record = world.supervisor.get(key)
    assert record is not None
    assert record.lease is not None
    assert [t.node for t in record.lease.taken_over] == ["lns-2"]
    assert world.supervisor.get(bystander) is not None
    assert world.cdns() == []


def test_an_address_outside_every_pool_is_used_without_a_lease():
    class OutsidePool(FakePool):
        def allocate(self, request, node=NODE):
            raise AddressOutsidePool(request.requested_address)

    framed = IPv4("198.51.100.77")
    world = World(aaa=lambda request: Decision(True, framed_address=framed), pool=OutsidePool())
    key = up(world, 1)
    record = world.supervisor.get(key)
    assert record is not None
    assert (record.address, record.lease) == (framed, None)
    world.cleared(key)
    assert world.pool.released == []


def test_an_exhausted_pool_refuses_the_call_as_temporary():
    class Empty(FakePool):
        def allocate(self, request, node=NODE):
            raise PoolExhausted("default")

    world = World(pool=Empty())
    key = world.attach(1)
    assert world.supervisor.get(key) is None
    [(cleared, result, message)] = world.cdns()
    assert cleared == key
    assert result is CdnResult.TEMPORARY_LACK_OF_FACILITIES
    assert "no free address" in message
    assert world.accounting() == []


def test_setups_in_progress_count_sessions_from_their_call_until_up_or_failed():
    # What L2TP's admission control (max_setups_in_progress) adds to its waiting calls.
    world = World(aaa=lambda request: Decision(request.context.iccid != iccid(3)), hold=True)
    keys = [world.attach(n) for n in (1, 2, 3)]
    assert world.supervisor.setups_in_progress == 3
    while world.pending:
        world.deliver()
    world.advance(1.0)
    # Two came up, one was rejected: none is being set up any more.
    assert [world.supervisor.get(key) is not None for key in keys] == [True, True, False]
    assert world.supervisor.setups_in_progress == 0
    # A setup that fails after the call (the LAC hangs up) leaves the count too.
    key = world.attach(4)
    assert world.supervisor.setups_in_progress == 1
    world.cleared(key)
    assert world.supervisor.setups_in_progress == 0
    world.supervisor.shutdown(TerminateCause.ADMIN_REBOOT, "stop", world.now)
    assert world.supervisor.setups_in_progress == 0


# --- late answers ----------------------------------------------------------------------------


def test_an_address_that_arrives_after_the_session_ended_is_released():
    world = World(hold=True)
    key = world.attach(1)
    world.deliver()  # AAA accepts; the allocation waits
    world.cleared(key)
    world.deliver()  # the pool answers now
    assert len(world.pool.released) == 1
    assert world.pool.live == {}
    assert world.accounting() == []


def test_an_aaa_answer_for_an_ended_session_is_dropped():
    world = World(hold=True)
    key = world.attach(1)
    world.cleared(key)
    world.deliver()
    assert world.of_type(fx.AllocateAddress) == []


# --- timeouts and interim updates ---------------------------------------------------------------


def test_session_timeout_counts_from_ipcp_opened_and_ignores_traffic():
    world = World(aaa=lambda request: Decision(True, session_timeout=100))
    key = up(world, 1)
    opened = world.now
    for _ in range(9):
        world.advance(10)
        world.send_ip(key)
    world.advance(9.999)
    assert world.supervisor.get(key) is not None
    world.advance(0.001)
    assert world.supervisor.get(key) is None
    assert world.now == opened + 100
    assert world.cdns() == [(key, CdnResult.TIMEOUT, "Session-Timeout reached")]
    assert world.accounting()[-1][2] is TerminateCause.SESSION_TIMEOUT


def test_idle_timeout_counts_from_the_last_forwarded_packet():
    world = World(aaa=lambda request: Decision(True, idle_timeout=600))
    key = up(world, 1)
    world.advance(500)
    world.send_ip(key)
    last = world.now
    world.send_ip(key, source=IPv4("10.1.1.1"))  # spoofed: dropped, keeps nothing alive
    world.advance(599.999)
    assert world.supervisor.get(key) is not None
    world.advance(0.001)
    assert world.supervisor.get(key) is None
    assert world.now == last + 600
    assert world.accounting()[-1][2] is TerminateCause.IDLE_TIMEOUT


def test_echoes_are_not_traffic_for_the_idle_timeout():
    world = World(aaa=lambda request: Decision(True, idle_timeout=100))
    key = up(world, 1)
    world.advance(100)
    assert world.supervisor.get(key) is None
    assert world.down()[0].cause is TerminateCause.IDLE_TIMEOUT


def test_coa_changes_the_timeouts_session_timeout_from_the_start():
    world = World(aaa=lambda request: Decision(True, session_timeout=3600))
    key = up(world, 1)
    opened = world.now
    record = world.supervisor.get(key)
    assert record is not None
    world.advance(10)
    world.supervisor.change_timeouts(record, 60, None, world.now)
    world.advance(49.999)
    assert world.supervisor.get(key) is not None
    world.advance(0.001)
    assert world.supervisor.get(key) is None
    assert world.now == opened + 60


def test_coa_zero_removes_the_session_timeout_and_sets_an_idle_timeout():
    world = World(aaa=lambda request: Decision(True, session_timeout=100))
    key = up(world, 1)
    record = world.supervisor.get(key)
    assert record is not None
    world.supervisor.change_timeouts(record, 0, 500, world.now)
    world.advance(499)
    assert world.supervisor.get(key) is not None
    world.advance(1)
    assert world.down()[0].cause is TerminateCause.IDLE_TIMEOUT


def test_interim_updates_every_interval_with_fresh_counters_then_the_stop():
    world = World(aaa=lambda request: Decision(True, interim_interval=300))
    key = up(world, 1)
    world.send_ip(key, size=200)
    world.advance(300)
    world.send_ip(key, size=200)
    world.advance(300)
    world.cleared(key)
    records = world.of_type(fx.Account)
    assert [r.kind for r in records] == [START, INTERIM, INTERIM, STOP]
    assert [r.session.octets_in for r in records] == [0, 200, 400, 400]


def test_the_nodes_interim_interval_when_radius_gives_none_and_never_below_60_s():
    world = World(SupervisorSettings(node_name=NODE, interim_interval=10))
    key = up(world, 1)
    world.advance(59)
    assert [k for k, _, _ in world.accounting()] == [START]
    world.advance(1)
    assert [k for k, _, _ in world.accounting()] == [START, INTERIM]
    record = world.supervisor.get(key)
    assert record is not None
    assert record.interim_interval == 60


def test_without_accounting_no_records():
    world = World(SupervisorSettings(node_name=NODE, accounting=False))
    key = up(world, 1)
    world.advance(3600)
    world.cleared(key)
    assert world.accounting() == []


def test_shutdown_ends_every_session_with_its_stop_and_leaves_the_calls_to_the_stopccn():
    world = World()
    for n in range(1, 6):
        up(world, n, session=n)
    world.run(world.supervisor.shutdown(TerminateCause.ADMIN_REBOOT, "LNS is shutting down", 0))
    assert len(world.supervisor) == 0
    assert world.cdns() == []  # each tunnel's StopCCN clears its calls
    stops = [a for a in world.accounting() if a[0] is STOP]
    assert len(stops) == 5
    assert {cause for _, _, cause in stops} == {TerminateCause.ADMIN_REBOOT}
    assert len(world.pool.released) == 5


def test_a_late_lease_that_took_a_live_sessions_lease_ends_that_session_too():
    """Hypothesis found it: a SIM's second call ends while its allocation is pending; the
    pool, answering late, took the first call's live lease over. The first session's
    lease is gone, so it must end, or a third call would get the same address while the
    first still had it."""
    world = World(hold=True)
    first = world.attach(1, session=1)
    world.deliver()
    world.deliver()
    second = world.attach(1, session=2)
    world.deliver()  # its AAA; its allocation waits
    world.cleared(second)
    world.deliver()  # the late allocation: takes the first session's lease, released
    assert world.supervisor.get(first) is None
    assert world.cdns()[-1][0] == first
    world.hold = False
    third = up(world, 1, session=3)
    record = world.supervisor.get(third)
    assert record is not None
    assert [r.key for r in world.supervisor] == [third]


def test_a_database_outage_is_told_to_the_lac_as_temporary_without_its_detail():
    class Down(FakePool):
        def allocate(self, request, node=NODE):
            raise PoolUnavailable("database error: unable to open database file /var/lib/x")

    world = World(pool=Down())
    key = world.attach(1)
    [(cleared, result, message)] = world.cdns()
    assert cleared == key
    assert result is CdnResult.TEMPORARY_LACK_OF_FACILITIES
    assert message == "no address: address pool temporarily unavailable"
