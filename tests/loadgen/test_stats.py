"""Percentiles, reasons and the run's verdict."""

from __future__ import annotations

import random

import pytest

from lns.loadgen.stats import Reasons, RunStats, Samples


def samples(values):
    found = Samples()
    for value in values:
        found.add(value)
    return found


def test_nearest_rank_percentiles_of_one_to_a_hundred():
    values = list(range(1, 101))
    random.Random(5).shuffle(values)
    found = samples(values)
    assert found.percentile(50) == 50
    assert found.percentile(90) == 90
    assert found.percentile(99) == 99
    assert found.percentile(100) == 100
    assert found.percentile(0.5) == 1
    distribution = found.distribution()
    assert distribution is not None
    assert (distribution.count, distribution.p50, distribution.p99, distribution.max) == (
        100,
        50,
        99,
        100,
    )
    assert distribution.mean == pytest.approx(50.5)


def test_percentile_of_few_samples_is_one_of_them():
    found = samples([0.3, 0.1, 0.2])
    assert found.percentile(50) == 0.2
    assert found.percentile(99) == 0.3
    assert samples([7.0]).percentile(1) == 7.0


def test_no_samples_no_percentile():
    assert Samples().percentile(50) is None
    assert Samples().distribution() is None


def test_samples_added_after_a_percentile_still_count():
    found = samples([3.0, 1.0])
    assert found.percentile(100) == 3.0
    found.add(2.0)
    found.add(5.0)
    assert found.percentile(100) == 5.0
    assert found.percentile(50) == 2.0
    found.clear()
    assert len(found) == 0


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_out_of_range_is_an_error(q):
    with pytest.raises(ValueError, match="percentile"):
        samples([1.0]).percentile(q)


def test_reasons_fold_long_numbers_and_whitespace():
    reasons = Reasons()
    reasons.add("CDN 2/0: authentication failed for 8944990000000000001")
    reasons.add("CDN 2/0: authentication failed for 8944990000000000002")
    reasons.add("CDN  2/0:\tauthentication failed for  8944990000000000003")
    assert reasons.most_common() == [("CDN 2/0: authentication failed for N", 3)]
    assert reasons.total() == 3


def test_reasons_beyond_the_limit_count_as_other():
    reasons = Reasons(limit=2)
    for text in ("a", "b", "c", "d", "a"):
        reasons.add(text)
    assert dict(reasons.counts) == {"a": 2, "b": 1, Reasons.OTHER: 2}


def make_stats(**kw):
    stats = RunStats(server="192.0.2.1:1701", tunnels_requested=1, sessions_requested=10)
    for key, value in kw.items():
        setattr(stats, key, value)
    return stats


def test_ok_only_when_every_session_came_up_and_stayed():
    assert make_stats(sessions_attempted=10, sessions_established=10).ok
    assert not make_stats(sessions_attempted=10, sessions_established=9).ok
    dropped = make_stats(sessions_established=10)
    dropped.drops.add("CDN 3")
    assert not dropped.ok
    assert not make_stats(sessions_established=10, interrupted=True).ok


def test_ok_with_pings_needs_a_reply_on_every_session():
    assert make_stats(sessions_established=10, ping_target="192.0.2.9").ok
    assert not make_stats(
        sessions_established=10, ping_target="192.0.2.9", sessions_unanswered=1
    ).ok


def test_setup_rate_from_first_icrq_to_last_session_up():
    stats = make_stats(sessions_established=10, first_setup_at=100.0, last_setup_at=102.0)
    assert stats.setup_duration == 2.0
    assert stats.setups_per_second == 5.0
    assert make_stats().setups_per_second is None
    same_instant = make_stats(sessions_established=1, first_setup_at=1.0, last_setup_at=1.0)
    assert same_instant.setups_per_second is None
