"""A set of keyed deadlines: the earliest in O(log n), any one moved or dropped cheaply.

Many objects (tunnels, PPP sessions) each have one next deadline; their owner
needs the earliest of them for its single timer, and the keys whose deadline
has come. A heap with lazy deletion: moving a deadline pushes a new entry and
the stale one is skipped when it surfaces.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class Deadlines(Generic[Key]):
    def __init__(self) -> None:
        self._current: dict[Key, float] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._order = 0  # ties never compare keys

    def set(self, key: Key, deadline: float | None) -> None:
        """Schedule ``key`` at ``deadline`` (None: unschedule it)."""
        if deadline is None:
            self._current.pop(key, None)
            return
        if self._current.get(key) == deadline:
            return
        self._current[key] = deadline
        self._order += 1
        heapq.heappush(self._heap, (deadline, self._order, key))

    def discard(self, key: Key) -> None:
        self._current.pop(key, None)

    def earliest(self) -> float | None:
        heap = self._heap
        while heap and self._current.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[Key]:
        """Every key whose deadline is at or before ``now``, unscheduled, earliest first."""
        due: list[Key] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _order, key = heapq.heappop(heap)
            if self._current.get(key) == deadline:
                del self._current[key]
                due.append(key)
        return due

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def __len__(self) -> int:
        return len(self._current)
