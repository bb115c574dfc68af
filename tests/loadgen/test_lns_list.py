"""The LAC's LNS list: preference order and down times (lns.testing.lacsim.lns_list)."""

from __future__ import annotations

import pytest

from lns.testing.lacsim.lns_list import LnsList


def test_the_most_preferred_lns_up_is_first():
    lns = LnsList(3, down_time=300)
    assert lns.first_up(0.0) == 0
    assert lns.mark_down(0, 10.0)
    assert lns.first_up(10.0) == 1
    assert lns.mark_down(1, 20.0)
    assert lns.first_up(20.0) == 2
    assert lns.mark_down(2, 30.0)
    assert lns.first_up(30.0) is None


def test_a_marked_down_lns_is_up_again_when_its_down_time_is_over():
    lns = LnsList(2, down_time=300)
    lns.mark_down(0, 10.0)
    assert not lns.is_up(0, 309.999)
    assert lns.first_up(309.999) == 1
    assert lns.is_up(0, 310.0)
    assert lns.first_up(310.0) == 0
    assert lns.down_until(0) == 310.0
    assert lns.down_until(1) is None


def test_marking_down_again_while_down_does_not_extend_the_down_time():
    lns = LnsList(1, down_time=300)
    assert lns.mark_down(0, 10.0)
    assert not lns.mark_down(0, 200.0)
    assert lns.down_until(0) == 310.0
    assert lns.mark_down(0, 400.0)  # a new failure after it came back
    assert lns.down_until(0) == 700.0


@pytest.mark.parametrize(
    ("count", "down_time", "message"),
    [(0, 300.0, "at least one LNS"), (1, 0.0, "not greater than 0"), (1, -1.0, "not greater")],
)
def test_nonsense_is_refused(count: int, down_time: float, message: str):
    with pytest.raises(ValueError, match=message):
        LnsList(count, down_time)
