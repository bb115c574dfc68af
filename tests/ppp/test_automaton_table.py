"""Every state x event pair of RFC 1661 section 4.1, in the manner of h2's state machine tests.

For each of the 10 states x 16 events, the automaton is driven into the state
through its public API, the event is produced the way the outside world would
produce it (a method call, a timer expiry, a packet), and the outcome is
checked against :data:`TRANSITIONS`: the next state, and one effect per action
in the table's order. Cells the RFC marks '-' give a single :class:`Ignored`
and change nothing.

Pairs the public API cannot produce, and why:

* TO+ and TO- outside the timer states: the restart timer does not run there
  (section 4.2), so ``handle_timer`` has nothing to expire;
* RCA and RCN in Ack-Rcvd and Opened: a valid Ack already answered our last
  Configure-Request, so a further reply answers nothing outstanding and is
  discarded (sections 5.2-5.4).

Those cells are still run, through ``Automaton.handle``. Finally hypothesis
throws random event sequences at one automaton and checks the invariants.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lns.ppp.automaton import (
    TIMER_STATES,
    TRANSITIONS,
    Action,
    Automaton,
    Effect,
    Event,
    Ignored,
    LayerDown,
    LayerFinished,
    LayerStarted,
    LayerUp,
    Send,
    SendEchoReply,
    State,
    Transition,
    Verdict,
)
from lns.ppp.packet import Code, ControlPacket, Option
from lns.testing.ppp_automaton import Policy, ack_all, configure_request, mru, reply

MAX_CONFIGURE = 10
MAX_TERMINATE = 2
NOW = 100.0


def nak_all(options: list[Option]) -> Verdict:
    return Verdict("nak", (mru(1400),))


class Driven:
    """An automaton, its policy and the last Configure-Request it sent."""

    def __init__(self) -> None:
        self.policy = Policy()
        self.automaton = Automaton(
            self.policy, max_configure=MAX_CONFIGURE, max_terminate=MAX_TERMINATE
        )
        self.request: ControlPacket | None = None

    def apply(self, effects: list[Effect]) -> list[Effect]:
        for effect in effects:
            if isinstance(effect, Send) and effect.packet.code == Code.CONFIGURE_REQUEST:
                self.request = effect.packet
        return effects

    def peer_ack(self) -> list[Effect]:
        assert self.request is not None
        return self.apply(self.automaton.receive(reply(Code.CONFIGURE_ACK, self.request), 0.0))

    def peer_request(self) -> list[Effect]:
        self.policy.judging = ack_all
        return self.apply(self.automaton.receive(configure_request(200, mru(1400)), 0.0))


def code_reject(code: int) -> ControlPacket:
    return ControlPacket(Code.CODE_REJECT, 66, bytes((code, 1, 0, 4)))


def drive(state: State) -> Driven:
    """Reach ``state`` through the public API only."""
    d = Driven()
    a = d.automaton
    if state is State.INITIAL:
        return d
    if state is State.CLOSED:
        a.up(0.0)
        return d
    a.open(0.0)
    if state is State.STARTING:
        return d
    d.apply(a.up(0.0))
    if state is State.STOPPED:
        a.receive(code_reject(Code.CONFIGURE_REQUEST), 0.0)  # RXJ- in Req-Sent
    elif state is State.CLOSING:
        a.close(0.0)
    elif state is State.ACK_RCVD:
        d.peer_ack()
    elif state is State.ACK_SENT:
        d.peer_request()
    elif state in (State.OPENED, State.STOPPING):
        d.peer_ack()
        d.peer_request()
        if state is State.STOPPING:
            a.receive(code_reject(Code.TERMINATE_REQUEST), 0.0)  # RXJ- in Opened
    assert a.state is state
    return d


def expire(d: Driven, counter: int) -> list[Effect] | None:
    deadline = d.automaton.get_timer()
    if deadline is None:
        assert d.automaton.handle_timer(1e9) == []
        return None
    d.automaton.restart_counter = counter  # TO+ while the counter is positive, else TO-
    return d.automaton.handle_timer(deadline)


def configure_reply(d: Driven, code: Code) -> list[Effect] | None:
    a = d.automaton
    assert d.request is not None or a.state in (State.INITIAL, State.STARTING, State.CLOSED)
    request = d.request or configure_request(9, mru(1500))
    answered_already = a.state in (State.ACK_RCVD, State.OPENED)
    effects = a.receive(reply(code, request, mru(1400)), NOW)
    if answered_already:
        # Nothing outstanding there: the reply is discarded (module docstring).
        assert len(effects) == 1
        assert isinstance(effects[0], Ignored)
        return None
    return effects


def rcr(d: Driven, judging: Callable[[list[Option]], Verdict]) -> list[Effect]:
    d.policy.judging = judging
    return d.automaton.receive(configure_request(201, mru(1500)), NOW)


ECHO = ControlPacket(Code.ECHO_REQUEST, 5, b"\x00\x00\x00\x00")

STIMULI: dict[Event, Callable[[Driven], list[Effect] | None]] = {
    Event.UP: lambda d: d.automaton.up(NOW),
    Event.DOWN: lambda d: d.automaton.down(NOW),
    Event.OPEN: lambda d: d.automaton.open(NOW),
    Event.CLOSE: lambda d: d.automaton.close(NOW),
    Event.TO_PLUS: lambda d: expire(d, 1),
    Event.TO_MINUS: lambda d: expire(d, 0),
    Event.RCR_PLUS: lambda d: rcr(d, ack_all),
    Event.RCR_MINUS: lambda d: rcr(d, nak_all),
    Event.RCA: lambda d: configure_reply(d, Code.CONFIGURE_ACK),
    Event.RCN: lambda d: configure_reply(d, Code.CONFIGURE_NAK),
    Event.RTR: lambda d: d.automaton.receive(ControlPacket(Code.TERMINATE_REQUEST, 7, b""), NOW),
    Event.RTA: lambda d: d.automaton.receive(ControlPacket(Code.TERMINATE_ACK, 7, b""), NOW),
    Event.RUC: lambda d: d.automaton.receive(ControlPacket(0x33, 7, b"?"), NOW),
    Event.RXJ_PLUS: lambda d: d.automaton.receive(code_reject(Code.DISCARD_REQUEST), NOW),
    Event.RXJ_MINUS: lambda d: d.automaton.receive(code_reject(Code.CONFIGURE_ACK), NOW),
    Event.RXR: lambda d: d.automaton.handle(Event.RXR, NOW, ECHO),
}

# What each action shows in the effects; irc and zrc only touch the counter and timer.
ACTION_EFFECTS: dict[Action, object] = {
    Action.TLU: LayerUp,
    Action.TLD: LayerDown,
    Action.TLS: LayerStarted,
    Action.TLF: LayerFinished,
    Action.SCR: Code.CONFIGURE_REQUEST,
    Action.SCA: Code.CONFIGURE_ACK,
    Action.SCN: Code.CONFIGURE_NAK,  # the RCR- stimulus Naks
    Action.STR: Code.TERMINATE_REQUEST,
    Action.STA: Code.TERMINATE_ACK,
    Action.SCJ: Code.CODE_REJECT,
    Action.SER: SendEchoReply,
}


def shape(effect: Effect) -> object:
    return effect.packet.code if isinstance(effect, Send) else type(effect)


def check_cell(state: State, event: Event, d: Driven, effects: list[Effect]) -> None:
    a = d.automaton
    transition = TRANSITIONS.get((state, event))
    if transition is None:
        # (A Configure-Request the policy was not asked about is reported as RCR+.)
        assert len(effects) == 1
        assert isinstance(effects[0], Ignored)
        assert effects[0].reason.endswith(f"is illegal in state {state.value}")
        assert a.state is state
        return
    assert a.state is transition.next_state
    expected = [ACTION_EFFECTS[x] for x in transition.actions if x in ACTION_EFFECTS]
    assert [shape(effect) for effect in effects] == expected
    check_counter(transition, a)
    assert (a.get_timer() is not None) == (a.state in TIMER_STATES)


def check_counter(transition: Transition, a: Automaton) -> None:
    actions = transition.actions
    if Action.ZRC in actions:
        assert a.restart_counter == 0
        assert a.get_timer() == NOW + a.restart_interval
    elif Action.IRC in actions:
        closing = transition.next_state in (State.CLOSING, State.STOPPING)
        sends = sum(1 for x in actions if x in (Action.SCR, Action.STR))
        assert a.restart_counter == (MAX_TERMINATE if closing else MAX_CONFIGURE) - sends


PAIRS = [(state, event) for state in State for event in Event]
THROUGH_HANDLE_ONLY = {
    *(
        (state, event)
        for state in State
        if state not in TIMER_STATES
        for event in (Event.TO_PLUS, Event.TO_MINUS)
    ),
    (State.ACK_RCVD, Event.RCA),
    (State.ACK_RCVD, Event.RCN),
    (State.OPENED, Event.RCA),
    (State.OPENED, Event.RCN),
}


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=lambda x: x.value)
def test_every_state_and_event(state: State, event: Event) -> None:
    d = drive(state)
    effects = STIMULI[event](d)
    if effects is None:
        assert (state, event) in THROUGH_HANDLE_ONLY
        assert d.automaton.state is state
        effects = d.automaton.handle(event, NOW, configure_request(0, mru(1400)))
    else:
        assert (state, event) not in THROUGH_HANDLE_ONLY
    check_cell(state, event, d, effects)


@pytest.mark.parametrize(
    ("state", "event"),
    [pair for pair in PAIRS if pair[1] not in (Event.RCR_PLUS, Event.RCR_MINUS)],
    ids=lambda x: x.value,
)
def test_every_cell_through_handle(state: State, event: Event) -> None:
    d = drive(state)
    effects = d.automaton.handle(event, NOW, ControlPacket(Code.ECHO_REQUEST, 1, bytes(4)))
    if event not in (Event.TO_PLUS, Event.TO_MINUS):  # handle() bypasses the counter check
        check_cell(state, event, d, effects)
    else:
        transition = TRANSITIONS.get((state, event))
        assert d.automaton.state is (transition.next_state if transition else state)


def test_the_table_has_the_rfc_cells() -> None:
    # 160 pairs, 40 of them '-' in RFC 1661 section 4.1.
    assert len(TRANSITIONS) == 120
    assert all(isinstance(t, Transition) for t in TRANSITIONS.values())
    # Spot checks written out independently of the table, cell by cell.
    a = Action
    cells = {
        (State.STARTING, Event.UP): ((a.IRC, a.SCR), State.REQ_SENT),
        (State.STOPPED, Event.DOWN): ((a.TLS,), State.STARTING),
        (State.STOPPED, Event.RCR_PLUS): ((a.IRC, a.SCR, a.SCA), State.ACK_SENT),
        (State.CLOSING, Event.RTA): ((a.TLF,), State.CLOSED),
        (State.STOPPING, Event.TO_MINUS): ((a.TLF,), State.STOPPED),
        (State.REQ_SENT, Event.RCA): ((a.IRC,), State.ACK_RCVD),
        (State.ACK_RCVD, Event.RCR_PLUS): ((a.SCA, a.TLU), State.OPENED),
        (State.ACK_RCVD, Event.RXJ_PLUS): ((), State.REQ_SENT),
        (State.ACK_SENT, Event.RCA): ((a.IRC, a.TLU), State.OPENED),
        (State.ACK_SENT, Event.RCR_MINUS): ((a.SCN,), State.REQ_SENT),
        (State.OPENED, Event.RTR): ((a.TLD, a.ZRC, a.STA), State.STOPPING),
        (State.OPENED, Event.RXJ_MINUS): ((a.TLD, a.IRC, a.STR), State.STOPPING),
        (State.OPENED, Event.CLOSE): ((a.TLD, a.IRC, a.STR), State.CLOSING),
        (State.OPENED, Event.RXR): ((a.SER,), State.OPENED),
    }
    for key, (actions, next_state) in cells.items():
        assert TRANSITIONS[key] == Transition(actions, next_state), key
    illegal = [(State.INITIAL, Event.DOWN), (State.CLOSED, Event.UP), (State.OPENED, Event.TO_PLUS)]
    assert not any(pair in TRANSITIONS for pair in illegal)
    assert not any(
        (s, e) in TRANSITIONS
        for s in (State.INITIAL, State.STARTING)
        for e in (Event.RCR_PLUS, Event.RCA, Event.RTR, Event.RUC, Event.RXR)
    )


# --- random event sequences ------------------------------------------------------------

packets = st.builds(
    ControlPacket,
    st.integers(0, 12),
    st.integers(0, 255),
    st.binary(max_size=12),
)
steps = st.one_of(
    st.sampled_from(["up", "down", "open", "close", "force_opened", "ack", "nak", "reject"]),
    st.tuples(st.just("timer"), st.floats(0, 10)),
    st.tuples(st.just("request"), st.booleans(), st.integers(0, 255)),
    st.tuples(st.just("packet"), packets),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=40))
def test_random_sequences_keep_the_invariants(script: list[object]) -> None:
    d = Driven()
    a = d.automaton
    now = 0.0
    layer_up = False
    for step in script:
        if isinstance(step, str):
            if step in ("ack", "nak", "reject"):
                if d.request is None:
                    continue
                code = {
                    "ack": Code.CONFIGURE_ACK,
                    "nak": Code.CONFIGURE_NAK,
                    "reject": Code.CONFIGURE_REJECT,
                }[step]
                effects = a.receive(reply(code, d.request, mru(1500)), now)
            elif step == "close":
                effects = a.close(now, "script")
            else:
                effects = getattr(a, step)(now)
        elif isinstance(step, tuple) and step[0] == "timer":
            now += step[1]
            effects = a.handle_timer(now)
        elif isinstance(step, tuple) and step[0] == "request":
            d.policy.judging = ack_all if step[1] else nak_all
            effects = a.receive(configure_request(step[2], mru(1500)), now)
        else:
            assert isinstance(step, tuple)
            effects = a.receive(step[1], now)
        d.apply(effects)
        for effect in effects:
            if isinstance(effect, LayerUp):
                assert not layer_up
                layer_up = True
            elif isinstance(effect, LayerDown):
                assert layer_up
                layer_up = False
        # The layer is up exactly while Opened; the timer runs exactly in the timer states.
        assert layer_up == (a.state is State.OPENED)
        assert (a.get_timer() is not None) == (a.state in TIMER_STATES)
        assert 0 <= a.restart_counter <= max(MAX_CONFIGURE, MAX_TERMINATE)
        assert all(
            0 <= p.identifier <= 255 for p in (e.packet for e in effects if isinstance(e, Send))
        )
