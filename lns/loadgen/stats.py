"""What a load run measures: durations as samples with percentiles, outcomes by reason.

Kept compact for runs of tens of thousands of sessions: a duration is one
8-byte double in an ``array``, sorted once when a percentile is asked for; a
failure is one count under its reason, never a record per session.
"""

from __future__ import annotations

import ipaddress
import math
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Distribution:
    """Percentiles (nearest rank) of a set of durations, in seconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


class Samples:
    """Durations in seconds, for percentiles at the end (or of a recent window)."""

    __slots__ = ("_sorted", "_values")

    def __init__(self) -> None:
        self._values = array("d")
        self._sorted = True

    def add(self, value: float) -> None:
        if self._sorted and self._values and value < self._values[-1]:
            self._sorted = False
        self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        self._values = array("d")
        self._sorted = True

    def _ordered(self) -> array[float]:
        if not self._sorted:
            self._values = array("d", sorted(self._values))
            self._sorted = True
        return self._values

    def percentile(self, q: float) -> float | None:
        """The nearest-rank ``q``-th percentile (0 < q <= 100): the smallest sample with at
        least q% of the samples at or below it. None without samples."""
        if not 0 < q <= 100:
            raise ValueError(f"percentile {q} is not in (0, 100]")
        values = self._ordered()
        if not values:
            return None
        rank = math.ceil(q / 100 * len(values))
        return values[max(rank, 1) - 1]

    def distribution(self) -> Distribution | None:
        values = self._ordered()
        if not values:
            return None

        def at(q: float) -> float:
            found = self.percentile(q)
            assert found is not None
            return found

        return Distribution(
            count=len(values),
            p50=at(50),
            p90=at(90),
            p99=at(99),
            max=values[-1],
            mean=math.fsum(values) / len(values),
        )


# Long digit runs (ICCIDs, session IDs, addresses' octets stay short) make every message
# unique; folded, messages that differ only there count under one reason.
_DIGIT_RUN = re.compile(r"\d{5,}")


class Reasons:
    """Counts by reason, at most ``limit`` distinct reasons (then under "other reasons")."""

    OTHER = "other reasons"

    def __init__(self, limit: int = 30) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, count: int = 1) -> None:
        reason = _DIGIT_RUN.sub("N", " ".join(reason.split()))[:160]
        if reason not in self.counts and len(self.counts) >= self.limit:
            reason = self.OTHER
        self.counts[reason] += count

    def total(self) -> int:
        return sum(self.counts.values())

    def most_common(self) -> list[tuple[str, int]]:
        return self.counts.most_common()


@dataclass(eq=False)
class Failover:
    """One LNS marked down while SIMs were on it, and how the fleet came back.

    The fleet is the SIMs that were up (IPCP Opened) on a tunnel to the LNS when that
    tunnel was lost; a SIM is back when its device reaches IPCP Opened again on the
    LNS its tunnel moved to. Setups still in flight on a lost tunnel are simply placed
    again and are not counted here.
    """

    lns: str  # the LNS marked down
    reason: str  # why: no SCCRP, unacknowledged, StopCCN
    down_at: float  # when the LAC marked it down (the reactor's clock)
    to: str  # the LNS its tunnels were opened on again
    tunnels_lost: int = 0
    sims_lost: int = 0
    sims_back: int = 0
    kept_address: int = 0  # back with the address they had before
    first_lost_at: float | None = None
    last_back_at: float | None = None
    not_back: Reasons = field(default_factory=Reasons)
    # The SIMs lost and not yet back (or given up on): index -> the address they had.
    _before: dict[int, ipaddress.IPv4Address | None] = field(default_factory=dict, repr=False)

    def lost(self, sim: int, address: ipaddress.IPv4Address | None, now: float) -> None:
        self.sims_lost += 1
        self._before[sim] = address
        if self.first_lost_at is None:
            self.first_lost_at = now

    def back(self, sim: int, address: ipaddress.IPv4Address | None, now: float) -> None:
        before = self._before.pop(sim, None)
        self.sims_back += 1
        self.last_back_at = now
        if address is not None and address == before:
            self.kept_address += 1

    def given_up(self, sim: int, reason: str) -> None:
        """The SIM will not be back within the run."""
        self._before.pop(sim, None)
        self.not_back.add(reason)

    @property
    def complete(self) -> bool:
        return self.sims_back == self.sims_lost

    @property
    def recovery(self) -> float | None:
        """First SIM lost to the last one up again (so far, while not complete)."""
        if self.first_lost_at is None or self.last_back_at is None:
            return None
        return max(0.0, self.last_back_at - self.first_lost_at)


@dataclass
class RunStats:
    """Everything the summary reports; times are the reactor's clock (seconds)."""

    server: str  # the LNS list, most preferred first (as --lns takes it)
    tunnels_requested: int
    sessions_requested: int
    tunnels_established: int = 0
    tunnel_failures: Reasons = field(default_factory=Reasons)
    sessions_attempted: int = 0  # ICRQ handed to the LAC
    sessions_established: int = 0  # the device's IPCP reached Opened
    failures: Reasons = field(default_factory=Reasons)  # never established
    drops: Reasons = field(default_factory=Reasons)  # established, then cleared by the LNS
    sessions_hung_up: int = 0  # CDNs we sent at teardown
    interrupted: bool = False
    teardown_complete: bool = True  # every CDN/StopCCN acknowledged in time
    setup_latency: Samples = field(default_factory=Samples)
    hello_setup: Samples = field(default_factory=Samples)  # while sessions were being set up
    hello_hold: Samples = field(default_factory=Samples)  # while they were held
    hellos_skipped: int = 0  # the previous HELLO of the tunnel was still unacknowledged
    retransmissions: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    send_errors: int = 0
    malformed_received: int = 0
    datagrams_unexpected: int = 0  # from an address the run does not send to
    failovers: list[Failover] = field(default_factory=list)
    ping_target: str | None = None
    pings_sent: int = 0
    pings_answered: int = 0
    pings_misrouted: int = 0  # an echo reply for another session's address or identifier
    sessions_unanswered: int = 0  # established sessions that got no echo reply
    started_at: float = 0.0
    first_setup_at: float | None = None  # first ICRQ
    last_setup_at: float | None = None  # last session established
    setup_finished_at: float | None = None  # every session established or failed
    finished_at: float = 0.0
    cpu_seconds: float = 0.0
    max_rss_kib: int = 0

    @property
    def sessions_failed(self) -> int:
        return self.failures.total()

    @property
    def sessions_not_attempted(self) -> int:
        return self.sessions_requested - self.sessions_attempted

    @property
    def duration(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    @property
    def setup_duration(self) -> float | None:
        if self.first_setup_at is None or self.last_setup_at is None:
            return None
        return max(0.0, self.last_setup_at - self.first_setup_at)

    @property
    def setups_per_second(self) -> float | None:
        """Sessions established per second, first ICRQ to last session up."""
        span = self.setup_duration
        if span is None or span <= 0:
            return None
        return self.sessions_established / span

    @property
    def ok(self) -> bool:
        """Every tunnel and session came up and stayed up, and answered pings when asked to."""
        return not self.problems()

    def problems(self) -> list[str]:
        """What went wrong, one phrase each with its most frequent reason; [] for a good run."""
        problems = []
        if self.interrupted:
            problems.append("interrupted")
        tunnels_failed = self.tunnel_failures.total()
        # A run that failed over judges by its SIMs coming back (below): a tunnel to an
        # alternate that failed while the SIMs waited for another LNS cost no session.
        if tunnels_failed and not self.failovers:
            problems.append(
                f"{tunnels_failed} of {self.tunnels_requested} tunnels failed"
                f"{_top(self.tunnel_failures)}"
            )
        if self.sessions_failed:
            problems.append(
                f"{self.sessions_failed} of {self.sessions_requested} sessions failed"
                f"{_top(self.failures)}"
            )
        never = self.sessions_requested - self.sessions_established - self.sessions_failed
        if never > 0:
            problems.append(f"{never} sessions not attempted")
        dropped = self.drops.total()
        if dropped:
            problems.append(f"{dropped} sessions dropped after setup{_top(self.drops)}")
        for failover in self.failovers:
            if not failover.complete:
                missing = failover.sims_lost - failover.sims_back
                problems.append(
                    f"{missing} of {failover.sims_lost} SIMs not back after the failover "
                    f"from {failover.lns}{_top(failover.not_back)}"
                )
        if self.ping_target is not None and self.sessions_unanswered:
            problems.append(f"{self.sessions_unanswered} sessions got no echo reply")
        return problems


def _top(reasons: Reasons) -> str:
    """The most frequent reason after a colon, and how many others there are."""
    common = reasons.most_common()
    if not common:
        return ""
    others = len(common) - 1
    more = "" if not others else f" (and {others} other reason{'s' if others > 1 else ''})"
    return f": {common[0][0]}{more}"
