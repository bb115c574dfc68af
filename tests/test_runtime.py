"""lns.runtime: the stop grace shared by a stopping node's waits, and the garbage
collector's settings for a started node."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from lns.runtime import GC_THRESHOLDS, StopGrace, settle_garbage_collector


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
