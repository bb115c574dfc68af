"""A bound per second on what an attacker or a broken peer can make us do at will
(log lines, ICMP errors)."""

from __future__ import annotations


class RateLimit:
    """At most ``rate`` events per second; the rest are counted in ``suppressed``."""

    def __init__(self, rate: int = 20) -> None:
        self.rate = rate
        self._second = -1
        self._logged = 0
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        second = int(now)
        if second != self._second:
            self._second = second
            self._logged = 0
        if self._logged < self.rate:
            self._logged += 1
            return True
        self.suppressed += 1
        return False
