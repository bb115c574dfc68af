"""The supervisor's invariants over random orders of events (hypothesis state machine).

SIMs attach and re-attach, AAA and pool answers come back in any order (also after
their session ended), the LAC clears calls, sessions are disconnected, devices
send traffic and time passes. Whatever the order: a session's accounting is one
Start, Interim-Updates, one Stop and nothing after; no Stop without a Start; two
open sessions never share an address; the indexes agree with the records; and once
everything is answered and every call cleared, no lease is left and every session
ended exactly once.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lns.ppp.auth import Decision
from lns.ppp.termination import TerminateCause
from lns.sessions import effects as fx
from lns.sessions.accounting import RecordKind
from lns.sessions.record import SessionState
from lns.testing.session_world import World


def decide(request) -> Decision:
    # Some SIMs get timeouts and interim updates, one is refused.
    n = int(request.context.iccid[-2:])
    if n == 4:
        return Decision(False, reason="unknown SIM")
    return Decision(True, session_timeout=900 if n == 2 else None, interim_interval=300)


class SupervisorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World(aaa=decide, hold=True)
        self.next_session = 1
        self.attached = 0
        self.lac_cleared: set[tuple[int, int]] = set()

    @property
    def live(self):
        return list(self.world.supervisor)

    @rule(sim=st.integers(1, 4), tunnel=st.integers(1, 2))
    def attach(self, sim: int, tunnel: int) -> None:
        self.world.attach(sim, tunnel=tunnel, session=self.next_session)
        self.next_session += 1
        self.attached += 1

    @precondition(lambda self: self.world.pending)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.world.pending) - 1))
        self.world.deliver(index)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def lac_clears(self, data: st.DataObject) -> None:
        record = data.draw(st.sampled_from(self.live))
        self.lac_cleared.add(record.key)
        self.world.cleared(record.key)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        record = data.draw(st.sampled_from(self.live))
        world = self.world
        world.run(world.supervisor.disconnect(record, TerminateCause.ADMIN_RESET, "k", world.now))

    @precondition(lambda self: any(r.state is SessionState.UP for r in self.live))
    @rule(data=st.data())
    def traffic(self, data: st.DataObject) -> None:
        record = data.draw(st.sampled_from([r for r in self.live if r.state is SessionState.UP]))
        self.world.send_ip(record.key)

    @rule(seconds=st.sampled_from([0.5, 3.0, 31.0, 301.0, 1000.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.advance(seconds)

    @invariant()
    def accounting_in_order(self) -> None:
        by_session: dict[str, list[RecordKind]] = defaultdict(list)
        for kind, acct_session_id, _ in self.world.accounting():
            by_session[acct_session_id].append(kind)
        for kinds in by_session.values():
            assert kinds[0] is RecordKind.START, kinds
            assert kinds.count(RecordKind.START) == 1, kinds
            assert RecordKind.STOP not in kinds[:-1], kinds

    @invariant()
    def indexes_agree(self) -> None:
        supervisor = self.world.supervisor
        addresses = [r.address for r in self.live if r.state is SessionState.UP]
        assert len(addresses) == len(set(addresses))
        for record in self.live:
            assert supervisor.get(record.key) is record
            assert supervisor.by_acct_session_id(record.acct_session_id) is record
            assert record in supervisor.by_iccid(record.iccid)
            if record.state is SessionState.UP:
                assert record.address is not None
                assert supervisor.by_address(record.address) is record
        ended = {d.key for d in self.world.down()}
        assert len(self.world.down()) + len(self.live) == self.attached
        assert not ended & {r.key for r in self.live}

    def teardown(self) -> None:
        world = self.world
        while world.pending:
            world.deliver()
        for record in self.live:
            self.lac_cleared.add(record.key)
            world.cleared(record.key)
        assert len(world.supervisor) == 0
        # A CDN of ours for every session we ended, none for those the LAC cleared.
        cdns = [key for key, _, _ in world.cdns()]
        assert len(cdns) == len(set(cdns))
        assert set(cdns) == {d.key for d in world.down()} - self.lac_cleared
        assert world.pool.live == {}  # every lease released or handed to a newer session
        assert len(world.down()) == self.attached
        ups = {e.acct_session_id for e in world.of_type(fx.SessionUp)}
        stops = {a for k, a, _ in world.accounting() if k is RecordKind.STOP}
        assert ups == stops  # every session that came up got its Stop


SupervisorMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, derandomize=True
)
test_supervisor_event_orders = SupervisorMachine.TestCase
