"""How much work a peer that has not proven the tunnel secret can make the node do.

UDP source addresses are trivially spoofed, so anything a datagram can cause
before its sender proved the secret (RFC 2661 section 5.1.1) is bounded per
second here: the messages taken from one source address, and the replies sent
without keeping state (a StopCCN to a refused SCCRQ, or to a message for a
tunnel this node does not know). Windows are whole seconds of ``now``; a
table never holds more than ``max_keys`` keys (beyond that, new keys share
one allowance), so a flood from many addresses costs no memory either.
"""

from __future__ import annotations

from collections.abc import Hashable

_OVERFLOW = object()  # the key new sources share once the table is full


class PerSecond:
    """At most ``limit`` events per whole second of ``now``, per key."""

    def __init__(self, limit: int, max_keys: int = 4096) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self.refused = 0
        self._second: int | None = None
        self._counts: dict[Hashable, int] = {}

    def allow(self, now: float, key: Hashable = None) -> bool:
        second = int(now // 1)
        if second != self._second:
            self._second = second
            self._counts.clear()
        if key not in self._counts and len(self._counts) >= self.max_keys:
            key = _OVERFLOW
        count = self._counts.get(key, 0)
        if count >= self.limit:
            self.refused += 1
            return False
        self._counts[key] = count + 1
        return True

    def __len__(self) -> int:
        return len(self._counts)
