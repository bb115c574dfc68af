"""ReliableChannel (RFC 2661 section 5.8): sequencing, acknowledgement, retransmission.

Time is a number: every test drives the channel with ``now`` and reads
``get_timer()`` for the next instant it has work to do.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lns.l2tp.reliable import (
    SEQUENCE_MODULUS,
    Outgoing,
    ReliableChannel,
    RetransmitPolicy,
    seq_distance,
)

ACK_DELAY = 0.05


def channel(**kwargs: object) -> ReliableChannel[bytes]:
    policy = kwargs.pop("policy", RetransmitPolicy())
    assert isinstance(policy, RetransmitPolicy)
    kwargs.setdefault("ack_delay", ACK_DELAY)
    return ReliableChannel(policy, **kwargs)  # type: ignore[arg-type]


def is_zlb(out: Outgoing) -> bool:
    return out.payload == b""


def run_timers(ch: ReliableChannel[bytes], until: float) -> list[tuple[float, Outgoing]]:
    """Fire every timer up to ``until``; the datagrams that come out, with their instants."""
    sent: list[tuple[float, Outgoing]] = []
    for _ in range(1000):
        deadline = ch.get_timer()
        if deadline is None or deadline > until:
            return sent
        ch.handle_timer(deadline)
        sent += [(deadline, out) for out in ch.datagrams_to_send(deadline)]
    raise AssertionError("the channel keeps asking for a timer at the same instant")


# --- sequence arithmetic -------------------------------------------------------------


def test_seq_distance_is_modulo_2_16() -> None:
    assert seq_distance(5, 3) == 2
    assert seq_distance(3, 5) == -2
    assert seq_distance(0, 65535) == 1
    assert seq_distance(65535, 0) == -1
    assert seq_distance(2, 65534) == 4


# --- receiving ---------------------------------------------------------------------


def test_in_order_delivery_advances_nr() -> None:
    ch = channel()
    assert ch.receive(0, 0, b"m0", 0.0) == [b"m0"]
    assert ch.receive(1, 0, b"m1", 0.0) == [b"m1"]
    assert ch.next_nr == 2
    # The ZLB that acknowledges both carries Nr 2 and our (unchanged) Ns.
    assert ch.datagrams_to_send(ACK_DELAY) == [Outgoing(0, 2, 0, b"")]


def test_zlb_only_after_the_ack_delay() -> None:
    ch = channel()
    ch.receive(0, 0, b"m0", 10.0)
    assert ch.datagrams_to_send(10.0) == []
    assert ch.get_timer() == pytest.approx(10.0 + ACK_DELAY)
    assert ch.datagrams_to_send(10.0 + ACK_DELAY / 2) == []
    assert ch.datagrams_to_send(10.0 + ACK_DELAY) == [Outgoing(0, 1, 0, b"")]
    # One ack is enough; nothing more is due.
    assert ch.get_timer() is None
    assert ch.datagrams_to_send(20.0) == []


def test_no_zlb_when_a_reply_carries_the_ack() -> None:
    ch = channel()
    ch.receive(0, 0, b"request", 0.0)
    ch.queue(b"reply")
    out = ch.datagrams_to_send(0.01)
    assert out == [Outgoing(0, 1, 0, b"reply")]
    # The reply's Nr acknowledged the request: no ZLB later.
    assert ch.datagrams_to_send(ACK_DELAY) == []
    assert ch.datagrams_to_send(0.5) == []
    assert ch.get_timer() == pytest.approx(0.01 + 1.0)  # only the reply's retransmission


def test_a_zlb_does_not_consume_an_ns_and_is_not_delivered() -> None:
    ch = channel()
    ch.queue(b"a")
    ch.datagrams_to_send(0.0)
    assert ch.receive(0, 1, None, 0.1) == []  # the peer's ZLB acknowledges our "a"
    assert ch.next_nr == 0
    assert ch.idle
    assert ch.get_timer() is None  # no ack for an ack


def test_duplicate_counted_not_delivered_and_acked_at_once() -> None:
    ch = channel()
    ch.receive(0, 0, b"m0", 0.0)
    ch.datagrams_to_send(ACK_DELAY)
    assert ch.receive(0, 0, b"m0", 2.0) == []
    assert ch.duplicates == 1
    assert ch.get_timer() == 2.0
    assert ch.datagrams_to_send(2.0) == [Outgoing(0, 1, 0, b"")]


def test_out_of_order_inside_the_window_is_held_then_delivered_in_order() -> None:
    ch = channel(receive_window=4)
    assert ch.receive(2, 0, b"m2", 0.0) == []
    assert ch.receive(1, 0, b"m1", 0.0) == []
    assert ch.next_nr == 0
    assert ch.receive(0, 0, b"m0", 0.0) == [b"m0", b"m1", b"m2"]
    assert ch.next_nr == 3
    assert ch.receive(3, 0, b"m3", 0.0) == [b"m3"]


def test_held_duplicate_is_counted_and_delivered_once() -> None:
    ch = channel()
    ch.receive(1, 0, b"m1", 0.0)
    ch.receive(1, 0, b"m1", 0.0)
    assert ch.duplicates == 1
    assert ch.receive(0, 0, b"m0", 0.0) == [b"m0", b"m1"]


def test_beyond_the_window_is_dropped() -> None:
    ch = channel(receive_window=4)
    assert ch.receive(4, 0, b"m4", 0.0) == []
    assert ch.out_of_window == 1
    assert ch.receive(3, 0, b"m3", 0.0) == []  # the last slot of the window: held
    assert ch.out_of_window == 1
    assert ch.receive(0, 0, b"m0", 0.0) == [b"m0"]
    ch.receive(1, 0, b"m1", 0.0)
    assert ch.receive(2, 0, b"m2", 0.0) == [b"m2", b"m3"]  # m4 was not kept
    assert ch.next_nr == 4


def test_sequence_numbers_wrap_from_65535_to_0() -> None:
    sender = channel()
    receiver = channel()
    sender.next_ns = receiver.next_nr = SEQUENCE_MODULUS - 2
    for payload in (b"a", b"b", b"c", b"d"):
        sender.queue(payload)
    out = sender.datagrams_to_send(0.0)
    assert [o.ns for o in out] == [65534, 65535, 0, 1]
    assert sender.next_ns == 2
    delivered: list[bytes] = []
    for o in reversed(out):  # in reverse: held across the wrap, then released in order
        delivered += receiver.receive(o.ns, o.nr, o.payload, 0.0)
    assert delivered == [b"a", b"b", b"c", b"d"]
    assert receiver.next_nr == 2
    # An old Ns from before the wrap is a duplicate, not a message far ahead.
    assert receiver.receive(65535, 0, b"b", 0.1) == []
    assert receiver.duplicates == 1
    # Nr 2 acknowledges 65534..1 across the wrap.
    [ack] = receiver.datagrams_to_send(0.1)
    assert ack.nr == 2
    sender.receive(ack.ns, ack.nr, None, 0.1)
    assert sender.idle


def test_peer_window_limits_messages_in_flight() -> None:
    ch = channel(peer_window=4)
    for i in range(10):
        ch.queue(b"m%d" % i)
    assert [o.ns for o in ch.datagrams_to_send(0.0)] == [0, 1, 2, 3]
    assert ch.datagrams_to_send(0.0) == []
    assert ch.unacknowledged == 10
    ch.receive(0, 2, None, 0.2)  # the peer acknowledges 0 and 1
    assert [o.ns for o in ch.datagrams_to_send(0.2)] == [4, 5]
    ch.receive(0, 6, None, 0.3)
    assert [o.ns for o in ch.datagrams_to_send(0.3)] == [6, 7, 8, 9]
    ch.receive(0, 10, None, 0.4)
    assert ch.idle


# --- retransmission ----------------------------------------------------------------


def test_retransmission_doubles_up_to_the_cap_then_fails() -> None:
    ch = channel(policy=RetransmitPolicy(initial=1.0, cap=8.0, max_retransmissions=5))
    ch.queue(b"hello")
    [first] = ch.datagrams_to_send(100.0)
    sent = run_timers(ch, 1000.0)
    times = [t for t, _ in sent]
    assert times == [101.0, 103.0, 107.0, 115.0, 123.0]
    assert [b - a for a, b in zip([100.0, *times], times, strict=False)] == [1, 2, 4, 8, 8]
    assert all(o == first for _, o in sent)  # the same Ns, payload (and here Nr)
    assert ch.retransmissions == 5
    assert ch.failed
    assert ch.get_timer() is None  # given up: no more work to do


def test_failure_comes_one_capped_interval_after_the_last_retransmission() -> None:
    ch = channel(policy=RetransmitPolicy(initial=1.0, cap=8.0, max_retransmissions=5))
    ch.queue(b"hello")
    ch.datagrams_to_send(0.0)
    run_timers(ch, 30.9)
    assert not ch.failed
    run_timers(ch, 31.0)
    assert ch.failed


def test_a_higher_cap_keeps_doubling() -> None:
    ch = channel(policy=RetransmitPolicy(initial=1.0, cap=16.0, max_retransmissions=6))
    ch.queue(b"x")
    ch.datagrams_to_send(0.0)
    assert [t for t, _ in run_timers(ch, 1000.0)] == [1, 3, 7, 15, 31, 47]


def test_an_ack_stops_retransmission() -> None:
    ch = channel()
    ch.queue(b"x")
    ch.datagrams_to_send(0.0)
    assert [t for t, _ in run_timers(ch, 2.0)] == [1.0]
    ch.receive(0, 1, None, 2.5)
    assert ch.get_timer() is None
    assert not ch.failed


def test_retransmissions_carry_the_current_nr() -> None:
    ch = channel()
    ch.queue(b"ours")
    [first] = ch.datagrams_to_send(0.0)
    assert first.nr == 0
    ch.receive(0, 0, b"theirs", 0.5)  # does not acknowledge "ours"
    [ack] = run_timers(ch, 0.9)
    assert ack == (0.5 + ACK_DELAY, Outgoing(1, 1, 0, b""))  # Ns: the next one, 1
    [(when, again)] = run_timers(ch, 1.0)
    assert when == 1.0
    assert again == Outgoing(0, 1, 0, b"ours")  # same Ns, the Nr it has now


def test_each_message_in_flight_has_its_own_timer() -> None:
    ch = channel()
    ch.queue(b"a")
    ch.datagrams_to_send(0.0)
    ch.queue(b"b")
    ch.datagrams_to_send(0.5)
    sent = run_timers(ch, 3.6)
    assert [(t, o.payload) for t, o in sent] == [
        (1.0, b"a"),
        (1.5, b"b"),
        (3.0, b"a"),
        (3.5, b"b"),
    ]


# --- two channels over a bad link --------------------------------------------------

_TICKS = (0.01, 0.05, 0.3, 1.0, 4.0)


class _Link:
    """Two channels, and the datagrams between them that the network still holds."""

    def __init__(self, a: ReliableChannel[bytes], b: ReliableChannel[bytes]) -> None:
        self.ends = {"a": a, "b": b}
        self.delivered: dict[str, list[bytes]] = {"a": [], "b": []}
        self.wire: list[tuple[str, Outgoing]] = []  # (destination, datagram)
        self.now = 0.0

    def collect(self) -> None:
        for name, other in (("a", "b"), ("b", "a")):
            for out in self.ends[name].datagrams_to_send(self.now):
                self.wire.append((other, out))

    def deliver(self, index: int) -> None:
        destination, out = self.wire.pop(index)
        item = out.payload or None
        ch = self.ends[destination]
        self.delivered[destination] += ch.receive(out.ns, out.nr, item, self.now)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for ch in self.ends.values():
            deadline = ch.get_timer()
            if deadline is not None and deadline <= self.now:
                ch.handle_timer(self.now)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    a_count=st.integers(min_value=1, max_value=30),
    b_count=st.integers(min_value=0, max_value=15),
    a_start=st.sampled_from([0, 100, SEQUENCE_MODULUS - 3]),
    b_start=st.sampled_from([0, SEQUENCE_MODULUS - 1]),
    a_window=st.integers(min_value=1, max_value=16),
    b_window=st.integers(min_value=1, max_value=16),
)
def test_lossy_link_delivers_every_message_once_in_order(
    data: st.DataObject,
    a_count: int,
    b_count: int,
    a_start: int,
    b_start: int,
    a_window: int,
    b_window: int,
) -> None:
    policy = RetransmitPolicy(initial=1.0, cap=8.0, max_retransmissions=1000)
    a = channel(policy=policy, receive_window=a_window, peer_window=b_window)
    b = channel(policy=policy, receive_window=b_window, peer_window=a_window)
    a.next_ns = b.next_nr = a_start
    b.next_ns = a.next_nr = b_start
    sent_by_a = [b"a%d" % i for i in range(a_count)]
    sent_by_b = [b"b%d" % i for i in range(b_count)]
    link = _Link(a, b)
    for payload in sent_by_a:
        a.queue(payload)
    for payload in sent_by_b:
        b.queue(payload)
    link.collect()

    # The hostile phase: drop, duplicate, reorder and delay, as hypothesis chooses.
    steps = data.draw(st.integers(min_value=0, max_value=120), label="hostile steps")
    for _ in range(steps):
        action = data.draw(st.sampled_from(["deliver", "drop", "duplicate", "tick"]))
        if action == "tick" or not link.wire:
            link.tick(data.draw(st.sampled_from(_TICKS)))
        else:
            index = data.draw(st.integers(min_value=0, max_value=len(link.wire) - 1))
            if action == "deliver":
                link.deliver(index)  # any index: reordering
            elif action == "drop":
                link.wire.pop(index)
            else:
                link.wire.insert(index, link.wire[index])
        link.collect()

    # Then the network heals: everything still in flight arrives, timers run.
    for _ in range(10_000):
        if not link.wire and a.idle and b.idle:
            break
        while link.wire:
            link.deliver(0)
            link.collect()
        link.tick(0.5)
        link.collect()
    assert not a.failed
    assert not b.failed
    assert link.delivered["b"] == sent_by_a
    assert link.delivered["a"] == sent_by_b
    assert a.idle
    assert b.idle
