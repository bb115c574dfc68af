"""A clock for `lns.runtime.Backlog`'s slices in tests: each reading is a millisecond of
work later than the one before, so how many items fit in a slice is known exactly."""

from __future__ import annotations

__all__ = ["WorkClock"]


class WorkClock:
    """A millisecond of work per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now
