"""Admission: how much work peers can make the node do, and when it says "not now".

UDP source addresses are trivially spoofed, so anything a datagram can cause
before its sender proved the secret (RFC 2661 section 5.1.1) is bounded per
second (:class:`PerSecond`): the messages taken from one source address, and
the replies sent without keeping state (a StopCCN to a refused SCCRQ, or to a
message for a tunnel this node does not know). Windows are whole seconds of
``now``; a table never holds more than ``max_keys`` keys (beyond that, new keys
share one allowance), so a flood from many addresses costs no memory either.

A LAC that did prove its secret can still bring more calls at once than the
node can set up (a mass re-attach: tens of thousands of SIMs within a minute).
:class:`SetupAdmission` bounds the session setups in progress node-wide; an ICRQ
beyond the bound is refused at once with a CDN (result 4, temporary lack of
facilities: section 4.4.2), which costs no more than an ICRP, so the LAC tries
again later or at another LNS, and the node's backlog, and with it the delay of
every tunnel's HELLO, stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from lns.l2tp.avp import ResultCode
from lns.l2tp.result import CdnResult, GeneralError

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


def _none() -> int:
    return 0


class SetupAdmission:
    """At most ``limit`` session setups in progress on the node (``[l2tp]
    max_setups_in_progress``).

    A setup is in progress from its ICRQ until its session is up or has failed:
    first as a call answered with an ICRP and waiting for its ICCN (``connecting``,
    kept by the tunnels), then as a session the layers above are setting up (LCP,
    authentication, the pool, IPCP), which ``elsewhere`` counts for them.
    """

    def __init__(self, limit: int, elsewhere: Callable[[], int] = _none) -> None:
        self.limit = limit
        self.elsewhere = elsewhere
        self.connecting = 0
        self.refused = 0  # ICRQs answered with a CDN for want of room

    @property
    def in_progress(self) -> int:
        return self.connecting + self.elsewhere()

    def refusal(self) -> ResultCode | None:
        """None when one more setup may begin; else the Result Code of its CDN (counted)."""
        in_progress = self.in_progress
        if in_progress < self.limit:
            return None
        self.refused += 1
        return ResultCode(
            CdnResult.TEMPORARY_LACK_OF_FACILITIES,
            GeneralError.INSUFFICIENT_RESOURCES,
            f"temporarily out of resources: {in_progress} session setups in progress,"
            " try again later",
        )
