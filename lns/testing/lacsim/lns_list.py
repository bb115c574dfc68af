"""The LAC's list of LNSs in order of preference, and which of them it has marked down.

A mobile operator's portal takes one to five LNS addresses per APN, each with a
preference (DESIGN.md sections 1 and 9). The LAC (a GGSN/PGW) opens its tunnels to
the most preferred LNS that is up. An LNS that does not answer SCCRQ, stops
acknowledging (a HELLO or any control message unacknowledged after the LAC's
retransmissions, RFC 2661 section 5.8) or sends StopCCN is marked down for a fixed
time, five minutes at the carriers we know of; meanwhile no new tunnel goes to it,
and once the time is over it is a candidate again. Tunnels that still work stay
where they are: the list decides only where new tunnels go.

I/O-free: LNSs are indexes into the caller's list, time is ``now`` in seconds.
"""

from __future__ import annotations

DEFAULT_DOWN_TIME = 300.0  # seconds: five minutes, as carriers mark an LNS down


class LnsList:
    """Which of ``count`` LNSs (index 0 the most preferred) is up at a given time."""

    def __init__(self, count: int, down_time: float = DEFAULT_DOWN_TIME) -> None:
        if count < 1:
            raise ValueError("an LNS list holds at least one LNS")
        if down_time <= 0:
            raise ValueError(f"down time {down_time} is not greater than 0")
        self.count = count
        self.down_time = down_time
        self._down_until: list[float | None] = [None] * count

    def mark_down(self, index: int, now: float) -> bool:
        """Marks the LNS down for ``down_time`` from ``now``; False when it already was
        (its down time is not extended: the LAC learnt nothing new about it)."""
        if not self.is_up(index, now):
            return False
        self._down_until[index] = now + self.down_time
        return True

    def is_up(self, index: int, now: float) -> bool:
        until = self._down_until[index]
        return until is None or now >= until

    def down_until(self, index: int) -> float | None:
        """When the LNS's latest down time ends (or ended); None if never marked down."""
        return self._down_until[index]

    def first_up(self, now: float) -> int | None:
        """The most preferred LNS that is up, or None when every one is marked down."""
        for index in range(self.count):
            if self.is_up(index, now):
                return index
        return None
