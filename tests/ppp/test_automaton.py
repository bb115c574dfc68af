"""The RFC 1661 section 4 automaton in whole conversations.

Two automatons wired back to back, and one automaton against scripted peer
packets: negotiation with Nak and Reject, Max-Failure, the restart timer and
Max-Configure, termination both ways, Code-Reject, stale replies, force_opened.
Time is a number: ``now`` advances by hand and the tests read ``get_timer()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from lns.ppp.automaton import (
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
    Verdict,
)
from lns.ppp.packet import Code, ControlPacket, Option, decode_options, encode_options
from lns.testing.ppp_automaton import MRU, Policy, configure_request, mru, reply

MAGIC = 5  # RFC 1661 section 6.4


def mru_limit(limit: int) -> Callable[[list[Option]], Verdict]:
    """Ack an MRU up to ``limit``, Nak a larger one with ``limit``, Reject anything else."""

    def judging(options: list[Option]) -> Verdict:
        unknown = tuple(option for option in options if option.type != MRU)
        if unknown:
            return Verdict("reject", unknown)
        too_big = [o for o in options if int.from_bytes(o.data, "big") > limit]
        if too_big:
            return Verdict("nak", (mru(limit),))
        return Verdict("ack", tuple(options))

    return judging


def sent(effects: Sequence[Effect]) -> list[ControlPacket]:
    return [effect.packet for effect in effects if isinstance(effect, Send)]


def only_sent(effects: Sequence[Effect]) -> ControlPacket:
    packets = sent(effects)
    assert len(packets) == 1, effects
    return packets[0]


def signals(effects: Sequence[Effect]) -> list[Effect]:
    return [effect for effect in effects if not isinstance(effect, Send)]


def exchange(
    a: Automaton, b: Automaton, a_out: list[Effect], b_out: list[Effect], now: float = 0.0
) -> tuple[list[Effect], list[Effect]]:
    """Deliver every Send to the other side until both are quiet; all effects per side."""
    seen: dict[int, list[Effect]] = {id(a): list(a_out), id(b): list(b_out)}
    pending = [(b, p) for p in sent(a_out)] + [(a, p) for p in sent(b_out)]
    while pending:
        assert sum(len(v) for v in seen.values()) < 500, "the automatons do not converge"
        target, packet = pending.pop(0)
        other = a if target is b else b
        out = target.receive(packet, now)
        seen[id(target)] += out
        pending += [(other, p) for p in sent(out)]
    return seen[id(a)], seen[id(b)]


def started(policy: Policy | None = None, **kwargs: float) -> tuple[Automaton, ControlPacket]:
    """An automaton opened on an up link: in Req-Sent, with its first Configure-Request."""
    automaton = Automaton(policy or Policy(), **kwargs)  # type: ignore[arg-type]
    assert automaton.open(0.0) == [LayerStarted()]
    return automaton, only_sent(automaton.up(0.0))


def opened(policy: Policy | None = None, **kwargs: float) -> Automaton:
    automaton, request = started(policy, **kwargs)
    automaton.receive(reply(Code.CONFIGURE_ACK, request), 0.0)
    automaton.receive(configure_request(200, mru(1400)), 0.0)
    assert automaton.state is State.OPENED
    return automaton


# --- two automatons back to back -------------------------------------------------------


def test_back_to_back_both_reach_opened() -> None:
    a_policy = Policy([mru(1500)], mru_limit(1500))
    b_policy = Policy([mru(1450)], mru_limit(1400))
    a = Automaton(a_policy, first_identifier=10)
    b = Automaton(b_policy, first_identifier=100)
    a_out = a.open(0.0) + a.up(0.0)
    b_out = b.open(0.0) + b.up(0.0)
    a_seen, b_seen = exchange(a, b, a_out, b_out)

    assert a.state is State.OPENED
    assert b.state is State.OPENED
    assert signals(a_seen) == [LayerStarted(), LayerUp()]
    assert signals(b_seen) == [LayerStarted(), LayerUp()]
    # B Naked A's MRU 1500 down to its limit and A asked again with 1400; A accepts up
    # to 1500, so B's 1450 was acked at once.
    assert a_policy.naks == [[mru(1400)]]
    assert a_policy.acks == [[mru(1400)]]
    assert b_policy.acks == [[mru(1450)]]
    assert a.get_timer() is None
    assert b.get_timer() is None
    assert a.naks_sent == b.naks_sent == 0


def test_back_to_back_with_options_one_side_does_not_know() -> None:
    a_policy = Policy([mru(1450), Option(MAGIC, b"\x01\x02\x03\x04")], mru_limit(1500))
    b_policy = Policy([mru(1450)], mru_limit(1500))
    a, b = Automaton(a_policy), Automaton(b_policy)
    exchange(a, b, a.open(0.0) + a.up(0.0), b.open(0.0) + b.up(0.0))

    assert a.state is b.state is State.OPENED
    assert a_policy.rejects == [[Option(MAGIC, b"\x01\x02\x03\x04")]]
    assert a_policy.acks == [[mru(1450)]]


# --- negotiation against scripted packets ----------------------------------------------


def test_configure_request_on_up_and_timer() -> None:
    automaton, request = started(first_identifier=7)
    assert automaton.state is State.REQ_SENT
    assert request == configure_request(7, mru(1500))
    assert automaton.get_timer() == 3.0
    assert automaton.restart_counter == 9  # Max-Configure 10, one sent


def test_nak_then_ack() -> None:
    policy = Policy([mru(1500)])
    automaton, first = started(policy, first_identifier=1)
    second = only_sent(automaton.receive(reply(Code.CONFIGURE_NAK, first, mru(1400)), 0.5))
    assert policy.naks == [[mru(1400)]]
    assert second == configure_request(2, mru(1400))  # changed options: new Identifier
    assert automaton.state is State.REQ_SENT
    assert automaton.get_timer() == 3.5  # restarted with the new request

    assert automaton.receive(reply(Code.CONFIGURE_ACK, second), 1.0) == []
    assert automaton.state is State.ACK_RCVD
    assert policy.acks == [[mru(1400)]]

    effects = automaton.receive(configure_request(50, mru(1450)), 1.0)
    assert effects == [
        Send(ControlPacket(Code.CONFIGURE_ACK, 50, encode_options([mru(1450)]))),
        LayerUp(),
    ]
    assert automaton.state is State.OPENED
    assert automaton.get_timer() is None


def test_reject_then_ack() -> None:
    magic = Option(MAGIC, b"\xde\xad\xbe\xef")
    policy = Policy([mru(1500), magic])
    automaton, first = started(policy)
    second = only_sent(automaton.receive(reply(Code.CONFIGURE_REJECT, first, magic), 0.0))
    assert policy.rejects == [[magic]]
    assert decode_options(second.data) == [mru(1500)]
    assert second.identifier != first.identifier

    # Their request arrives first this time: Ack-Sent, then our Ack makes it Opened.
    automaton.receive(configure_request(9, mru(1500)), 0.0)
    assert automaton.state is State.ACK_SENT
    assert automaton.receive(reply(Code.CONFIGURE_ACK, second), 0.0) == [LayerUp()]
    assert automaton.state is State.OPENED


def test_our_nak_and_reject_of_their_request() -> None:
    automaton, _ = started(Policy(judging=mru_limit(1400)))
    naked = automaton.receive(configure_request(3, mru(1500)), 0.0)
    assert naked == [Send(ControlPacket(Code.CONFIGURE_NAK, 3, encode_options([mru(1400)])))]
    unknown = Option(0x42, b"x")
    rejected = automaton.receive(configure_request(4, mru(1400), unknown), 0.0)
    assert rejected == [Send(ControlPacket(Code.CONFIGURE_REJECT, 4, encode_options([unknown])))]
    assert automaton.naks_sent == 1  # Rejects do not count towards Max-Failure
    assert automaton.state is State.REQ_SENT


def test_max_failure_turns_naks_into_rejects() -> None:
    automaton, _ = started(Policy(judging=mru_limit(1400)), max_failure=3)
    codes = []
    for identifier in range(6):
        answer = only_sent(automaton.receive(configure_request(identifier, mru(1500)), 0.0))
        codes.append(answer.code)
    assert codes == [Code.CONFIGURE_NAK] * 3 + [Code.CONFIGURE_REJECT] * 3
    assert automaton.naks_sent == 3
    # The Reject carries the option as the peer sent it, not our suggestion.
    assert answer.data == encode_options([mru(1500)])

    # An acceptable request is acked and the failure count starts over.
    automaton.receive(configure_request(9, mru(1400)), 0.0)
    assert automaton.state is State.ACK_SENT
    assert automaton.naks_sent == 0
    again = only_sent(automaton.receive(configure_request(10, mru(1500)), 0.0))
    assert again.code == Code.CONFIGURE_NAK


def test_max_failure_keeps_a_nak_of_options_not_requested() -> None:
    # A Nak may suggest an option the peer did not ask for (RFC 1661 section 5.3);
    # nothing of the request can be rejected for it, so it stays a Nak.
    def want_dns(options: list[Option]) -> Verdict:
        return Verdict("nak", (Option(129, bytes(4)),))

    automaton, _ = started(Policy(judging=want_dns), max_failure=1)
    codes = [
        only_sent(automaton.receive(configure_request(i, mru(1500)), 0.0)).code for i in range(3)
    ]
    assert codes == [Code.CONFIGURE_NAK] * 3


def test_retransmission_and_max_configure() -> None:
    automaton, first = started(max_configure=3, restart_interval=2.0, first_identifier=20)
    assert automaton.get_timer() == 2.0
    assert automaton.handle_timer(1.999) == []  # not yet

    second = only_sent(automaton.handle_timer(2.0))
    assert second == first  # same options, unanswered: same Identifier (section 5.1)
    assert automaton.get_timer() == 4.0
    third = only_sent(automaton.handle_timer(4.5))
    assert third == first
    assert automaton.get_timer() == 6.5
    assert automaton.restart_counter == 0

    effects = automaton.handle_timer(6.5)
    assert effects == [LayerFinished("no answer to 3 Configure-Requests")]
    assert automaton.state is State.STOPPED
    assert automaton.get_timer() is None
    assert automaton.handle_timer(100.0) == []


def test_retransmission_takes_a_new_identifier_when_the_options_change() -> None:
    policy = Policy([mru(1500)])
    automaton, first = started(policy)
    policy.wanted = [mru(1492)]
    second = only_sent(automaton.handle_timer(3.0))
    assert second.identifier == (first.identifier + 1) % 256


def test_a_late_ack_to_a_retransmitted_request_counts() -> None:
    automaton, first = started()
    automaton.handle_timer(3.0)  # retransmitted with the same Identifier
    assert automaton.receive(reply(Code.CONFIGURE_ACK, first), 3.1) == []
    assert automaton.state is State.ACK_RCVD


def test_timeout_in_ack_rcvd_sends_a_new_request() -> None:
    automaton, first = started()
    automaton.receive(reply(Code.CONFIGURE_ACK, first), 0.0)
    again = only_sent(automaton.handle_timer(3.0))
    # The first one was answered, so this is a new request (section 5.1).
    assert again.identifier == (first.identifier + 1) % 256
    assert automaton.state is State.REQ_SENT


def test_a_peer_that_always_naks_runs_us_out_of_restarts() -> None:
    policy = Policy([mru(1500)])
    automaton, request = started(policy, max_configure=4)
    for _ in range(4):
        request = only_sent(automaton.receive(reply(Code.CONFIGURE_NAK, request, mru(1500)), 0))
    effects = automaton.receive(reply(Code.CONFIGURE_NAK, request, mru(1500)), 0.0)
    assert effects == [
        LayerFinished("peer answered 5 Configure-Requests in a row with Configure-Nak")
    ]
    assert automaton.state is State.STOPPED
    assert len(policy.naks) == 4


def test_an_ack_resets_the_nak_count() -> None:
    automaton, request = started(max_configure=2)
    for _ in range(2):
        request = only_sent(automaton.receive(reply(Code.CONFIGURE_NAK, request, mru(1400)), 0))
    automaton.receive(reply(Code.CONFIGURE_ACK, request), 0.0)
    assert automaton.naks_received == 0


# --- termination ------------------------------------------------------------------------


def test_we_terminate_and_the_peer_acks() -> None:
    automaton = opened(first_identifier=30)
    effects = automaton.close(10.0, "admin kill")
    assert effects == [
        LayerDown("admin kill"),
        Send(ControlPacket(Code.TERMINATE_REQUEST, 31, b"admin kill")),
    ]
    assert automaton.state is State.CLOSING
    assert automaton.get_timer() == 13.0
    # Configure packets are ignored while closing (the table's "4" cells).
    assert automaton.receive(configure_request(1, mru(1400)), 10.5) == []
    assert automaton.receive(ControlPacket(Code.TERMINATE_ACK, 31, b""), 11.0) == [
        LayerFinished("admin kill")
    ]
    assert automaton.state is State.CLOSED
    assert automaton.get_timer() is None


def test_we_terminate_and_the_peer_never_answers() -> None:
    automaton = opened(max_terminate=2)
    first = only_sent(automaton.close(0.0))
    second = only_sent(automaton.handle_timer(3.0))
    assert second.code == first.code == Code.TERMINATE_REQUEST
    assert second.identifier == (first.identifier + 1) % 256
    assert automaton.handle_timer(6.0) == [LayerFinished("administrative close")]
    assert automaton.state is State.CLOSED


def test_the_peer_terminates() -> None:
    automaton = opened()
    effects = automaton.receive(ControlPacket(Code.TERMINATE_REQUEST, 77, b"bye"), 5.0)
    reason = "peer sent Terminate-Request: bye"
    assert effects == [LayerDown(reason), Send(ControlPacket(Code.TERMINATE_ACK, 77, b""))]
    assert automaton.state is State.STOPPING
    # zrc: one restart interval for our Terminate-Ack to get there, then Stopped.
    assert automaton.get_timer() == 8.0
    assert automaton.restart_counter == 0
    # A retransmitted Terminate-Request is acked again.
    assert only_sent(automaton.receive(ControlPacket(Code.TERMINATE_REQUEST, 78, b""), 6.0)) == (
        ControlPacket(Code.TERMINATE_ACK, 78, b"")
    )
    assert automaton.handle_timer(8.0) == [LayerFinished(reason)]
    assert automaton.state is State.STOPPED


def test_terminate_request_during_negotiation() -> None:
    automaton, request = started()
    automaton.receive(reply(Code.CONFIGURE_ACK, request), 0.0)
    effects = automaton.receive(ControlPacket(Code.TERMINATE_REQUEST, 5, b""), 0.0)
    assert effects == [Send(ControlPacket(Code.TERMINATE_ACK, 5, b""))]
    assert automaton.state is State.REQ_SENT


def test_lower_layer_down_and_up_again() -> None:
    automaton = opened()
    assert automaton.down(1.0) == [LayerDown("lower layer down")]
    assert automaton.state is State.STARTING
    assert automaton.get_timer() is None
    request = only_sent(automaton.up(2.0))
    assert request.code == Code.CONFIGURE_REQUEST
    assert automaton.state is State.REQ_SENT


def test_renegotiation_in_opened() -> None:
    automaton = opened()
    effects = automaton.receive(configure_request(99, mru(1400)), 4.0)
    assert [type(e) for e in effects] == [LayerDown, Send, Send]
    assert effects[0] == LayerDown("peer renegotiates (Configure-Request)")
    assert [p.code for p in sent(effects)] == [Code.CONFIGURE_REQUEST, Code.CONFIGURE_ACK]
    assert automaton.state is State.ACK_SENT


def test_configure_request_in_closed_gets_terminate_ack() -> None:
    automaton = Automaton(Policy())
    automaton.up(0.0)
    assert automaton.state is State.CLOSED
    effects = automaton.receive(configure_request(8, mru(1500)), 0.0)
    assert effects == [Send(ControlPacket(Code.TERMINATE_ACK, 8, b""))]
    assert automaton.receive(ControlPacket(Code.TERMINATE_ACK, 1, b""), 0.0) == []


def test_configure_request_in_stopped_restarts_negotiation() -> None:
    automaton, _ = started(max_configure=1)
    automaton.handle_timer(3.0)
    assert automaton.state is State.STOPPED
    effects = automaton.receive(configure_request(8, mru(1500)), 10.0)
    assert [p.code for p in sent(effects)] == [Code.CONFIGURE_REQUEST, Code.CONFIGURE_ACK]
    assert automaton.state is State.ACK_SENT
    assert automaton.get_timer() == 13.0


# --- Code-Reject and unknown codes -----------------------------------------------------


def test_code_reject_of_a_needed_code_finishes_the_layer() -> None:
    automaton, request = started()
    rejected = ControlPacket(Code.CODE_REJECT, 1, request.encode())
    effects = automaton.receive(rejected, 0.0)
    assert effects == [LayerFinished("peer Code-Rejected code 1, which the protocol needs")]
    assert automaton.state is State.STOPPED


def test_code_reject_in_opened_terminates() -> None:
    automaton = opened()
    rejected = ControlPacket(Code.CODE_REJECT, 1, b"\x05\x01\x00\x04")  # our Terminate-Req
    effects = automaton.receive(rejected, 0.0)
    assert [type(e) for e in effects] == [LayerDown, Send]
    assert sent(effects)[0].code == Code.TERMINATE_REQUEST
    assert automaton.state is State.STOPPING


def test_code_reject_of_an_optional_code_is_harmless() -> None:
    automaton = opened()
    echo = ControlPacket(Code.ECHO_REQUEST, 3, b"\x00\x00\x00\x00").encode()
    assert automaton.receive(ControlPacket(Code.CODE_REJECT, 2, echo), 0.0) == []
    assert automaton.state is State.OPENED


def test_empty_code_reject_is_discarded() -> None:
    automaton = opened()
    effects = automaton.receive(ControlPacket(Code.CODE_REJECT, 2, b""), 0.0)
    assert effects == [Ignored("Code-Reject without the rejected packet")]
    assert automaton.state is State.OPENED


@pytest.mark.parametrize("code", [0, 8, 9, 12, 255])
def test_unknown_code_is_code_rejected(code: int) -> None:
    automaton = opened(first_identifier=40)
    packet = ControlPacket(code, 6, b"\x01\x02")
    effects = automaton.receive(packet, 0.0)
    # Section 5.6: a fresh Identifier, the rejected packet from its Code field on.
    assert effects == [Send(ControlPacket(Code.CODE_REJECT, 41, packet.encode()))]
    assert automaton.state is State.OPENED


# --- replies that do not answer our request --------------------------------------------


def test_stale_identifier_is_discarded() -> None:
    automaton, request = started()
    stale = ControlPacket(Code.CONFIGURE_ACK, (request.identifier - 1) % 256, request.data)
    effects = automaton.receive(stale, 0.0)
    assert len(effects) == 1
    assert isinstance(effects[0], Ignored)
    assert "answers no outstanding Configure-Request" in effects[0].reason
    assert automaton.state is State.REQ_SENT
    nak = ControlPacket(Code.CONFIGURE_NAK, request.identifier ^ 0x80, encode_options([mru(1)]))
    assert isinstance(automaton.receive(nak, 0.0)[0], Ignored)
    assert automaton.state is State.REQ_SENT


def test_ack_with_other_options_is_discarded() -> None:
    automaton, request = started()
    wrong = ControlPacket(Code.CONFIGURE_ACK, request.identifier, encode_options([mru(1400)]))
    assert automaton.receive(wrong, 0.0) == [
        Ignored("Configure-Ack options differ from our Configure-Request")
    ]
    assert automaton.state is State.REQ_SENT


def test_duplicate_ack_is_discarded() -> None:
    automaton, request = started()
    automaton.receive(reply(Code.CONFIGURE_ACK, request), 0.0)
    assert automaton.state is State.ACK_RCVD
    assert isinstance(automaton.receive(reply(Code.CONFIGURE_ACK, request), 0.0)[0], Ignored)
    assert automaton.state is State.ACK_RCVD


def test_reject_of_options_we_did_not_request_is_discarded() -> None:
    automaton, request = started()
    bogus = reply(Code.CONFIGURE_REJECT, request, Option(MAGIC, b"\x00\x00\x00\x01"))
    assert automaton.receive(bogus, 0.0) == [
        Ignored("Configure-Reject names options we did not request")
    ]


def test_malformed_options_are_discarded() -> None:
    automaton, request = started()
    broken = ControlPacket(Code.CONFIGURE_REQUEST, 1, b"\x01\x09\x05")
    assert isinstance(automaton.receive(broken, 0.0)[0], Ignored)
    broken_nak = ControlPacket(Code.CONFIGURE_NAK, request.identifier, b"\x01")
    assert isinstance(automaton.receive(broken_nak, 0.0)[0], Ignored)
    assert automaton.state is State.REQ_SENT


# --- proxy LCP, Echo, identifiers, illegal events --------------------------------------


def test_force_opened() -> None:
    policy = Policy()
    automaton = Automaton(policy)
    assert automaton.force_opened(0.0) == [LayerUp()]
    assert automaton.state is State.OPENED
    assert automaton.get_timer() is None
    assert policy.requests == 0  # nothing sent
    assert automaton.force_opened(0.0) == [Ignored("force_opened in state Opened")]
    # From there on it is a normal Opened layer.
    effects = automaton.receive(ControlPacket(Code.TERMINATE_REQUEST, 4, b""), 1.0)
    assert sent(effects) == [ControlPacket(Code.TERMINATE_ACK, 4, b"")]
    assert automaton.state is State.STOPPING


def test_echo_request_through_handle() -> None:
    automaton = opened()
    echo = ControlPacket(Code.ECHO_REQUEST, 12, b"\x00\x00\x00\x00")
    assert automaton.handle(Event.RXR, 0.0, echo) == [SendEchoReply(echo)]
    automaton.down(0.0)
    assert isinstance(automaton.handle(Event.RXR, 0.0, echo)[0], Ignored)


def test_protocol_reject_through_handle() -> None:
    automaton = opened()
    effects = automaton.handle(Event.RXJ_MINUS, 0.0, reason="peer rejected LCP")
    assert effects[0] == LayerDown("peer rejected LCP")
    assert sent(effects)[0] == ControlPacket(Code.TERMINATE_REQUEST, 2, b"peer rejected LCP")


def test_handle_refuses_configure_requests() -> None:
    automaton = opened()
    with pytest.raises(ValueError, match="use receive"):
        automaton.handle(Event.RCR_PLUS, 0.0)


def test_identifiers_wrap_modulo_256() -> None:
    automaton, first = started(first_identifier=255)
    assert first.identifier == 255
    second = only_sent(automaton.receive(reply(Code.CONFIGURE_NAK, first, mru(1400)), 0.0))
    assert second.identifier == 0


def test_illegal_events_are_reported_not_raised() -> None:
    automaton = Automaton(Policy())
    assert automaton.down(0.0) == [Ignored("event Down is illegal in state Initial")]
    automaton.up(0.0)
    assert automaton.up(0.0) == [Ignored("event Up is illegal in state Closed")]
    assert automaton.state is State.CLOSED


def test_close_before_up() -> None:
    automaton = Automaton(Policy())
    automaton.open(0.0)
    assert automaton.close(0.0, "no carrier") == [LayerFinished("no carrier")]
    assert automaton.state is State.INITIAL


def test_terminate_request_reason_is_bounded() -> None:
    automaton = opened()
    request = sent(automaton.close(0.0, "x" * 1000))[0]
    assert request.data == b"x" * 128
