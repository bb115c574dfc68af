"""A histogram with fixed buckets, counted where a duration is measured (I/O-free).

The cores and the RADIUS client observe durations (setup latency, HELLO round trip,
RADIUS replies) into a :class:`Histogram`; the Prometheus exporter reads it at scrape
time (``lns.adapters.metrics``), so observing costs one bisection and three additions,
and nothing of Prometheus is imported where the measuring happens. The buckets follow
Prometheus's histogram: each counts the observations less than or equal to its upper
bound, with an implicit last bucket of +Inf.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

__all__ = ["LATENCY_BUCKETS", "SETUP_BUCKETS", "Histogram"]

# Seconds: a network round trip or a RADIUS reply, 1 ms to 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds: a session set-up (L2TP, PPP, RADIUS, the pool), 10 ms to 60 s.
SETUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Counts of observations per bucket, their sum and their number."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be distinct and in increasing order")
        self.bounds = tuple(float(bound) for bound in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, +Inf last."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None
