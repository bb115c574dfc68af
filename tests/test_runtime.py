"""lns.runtime: the stop grace shared by a stopping node's waits, the backlog that
spreads a storm's work over the reactor's turns, and the garbage collector's settings
for a started node."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from lns.runtime import GC_THRESHOLDS, Backlog, StopGrace, settle_garbage_collector
from lns.testing.work_clock import WorkClock


def test_the_stop_grace_is_one_budget_from_its_first_use() -> None:
    clock = Clock()
    grace = StopGrace(clock, 2.0)
    clock.advance(10)  # nothing started it yet
    grace.begin()
    clock.advance(1.5)
    assert grace.remaining() == pytest.approx(0.5)
    grace.begin()  # a second begin changes nothing
    clock.advance(1.0)
    assert grace.remaining() == 0.0  # never negative


def test_remaining_starts_the_clock_when_nothing_did() -> None:
    clock = Clock()
    grace = StopGrace(clock, 2.0)
    assert grace.remaining() == 2.0
    clock.advance(0.5)
    assert grace.remaining() == pytest.approx(1.5)


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector")
def test_a_started_node_freezes_what_exists_and_collects_less_often() -> None:
    settle_garbage_collector()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0  # the objects that exist by now are never scanned


def next_turn(clock: Clock) -> None:
    """One turn of the reactor: the calls due now, not those they schedule."""
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.func(*call.args, **call.kw)


def test_work_runs_at_once_while_the_slice_lasts_and_the_rest_in_later_turns() -> None:
    clock = Clock()
    backlog = Backlog(clock, 0.0035, WorkClock())  # begun at 1 ms, over at 4.5 ms
    done: list[int] = []
    for n in range(10):
        backlog.add(lambda n=n: done.append(n))
    assert done == [0, 1, 2, 3]  # the readings at 1, 2, 3 and 4 ms
    assert len(backlog) == backlog.waited == 6
    next_turn(clock)  # begun at 6 ms: 4, then the readings at 7, 8 and 9 ms
    assert done == [0, 1, 2, 3, 4, 5, 6, 7]
    backlog.add(lambda: done.append(10))  # behind what waits, whatever the slice says
    next_turn(clock)
    assert done == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert len(backlog) == 0
    next_turn(clock)  # the turn that finds nothing left schedules no other
    assert clock.getDelayedCalls() == []


def test_a_turn_runs_one_item_at_least_and_what_an_item_asks_for_runs_inside_it() -> None:
    clock = Clock()
    backlog = Backlog(clock, 0.0, WorkClock())
    done: list[str] = []

    def first() -> None:
        done.append("first")
        backlog.add(lambda: done.append("asked by first"))

    backlog.add(first)
    backlog.add(lambda: done.append("second"))
    assert done == []
    next_turn(clock)
    assert done == ["first", "asked by first"]
    next_turn(clock)
    assert done == ["first", "asked by first", "second"]


def test_an_item_that_raises_raises_and_the_rest_run_at_the_next_turn() -> None:
    clock = Clock()
    backlog = Backlog(clock, 0.0, WorkClock())
    done: list[int] = []

    def broken() -> None:
        raise RuntimeError("bug")

    backlog.add(broken)
    backlog.add(lambda: done.append(1))
    with pytest.raises(RuntimeError):
        next_turn(clock)
    next_turn(clock)
    assert done == [1]


def test_without_a_slice_everything_runs_at_once() -> None:
    clock = Clock()
    backlog = Backlog(clock, None)
    done: list[int] = []
    for n in range(1000):
        backlog.add(lambda n=n: done.append(n))
    assert done == list(range(1000))
    assert clock.getDelayedCalls() == []
