"""Small Twisted helpers shared by the adapters and the AAA back ends.

Everything here sits between the I/O-free cores and the services: a reactor
timer kept at a core's single next deadline, blocking work on a bounded thread
pool with its calls tracked for a clean stop, a per-second bound on what a peer
can make us do (log lines, ICMP errors), the one time budget of a stopping node's
waits for its peers, the backlog that spreads a storm's work over the reactor's
turns, the garbage collector's settings for a node holding many
sessions, and the global reactor as the default for code that accepts
``reactor=None`` (it is imported only when asked for, never at module level:
Twisted's coding standard).
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar, cast

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

__all__ = [
    "DeadlineTimer",
    "RateLimit",
    "StopGrace",
    "default_reactor",
    "run_tracked",
    "settle_garbage_collector",
]

_T = TypeVar("_T")
_R = TypeVar("_R")


def default_reactor(reactor: _R | None) -> _R:
    """``reactor``, or the global reactor when it is None."""
    if reactor is not None:
        return reactor
    from twisted.internet import reactor as global_reactor

    return cast(_R, global_reactor)


class DeadlineTimer:
    """Keeps one IDelayedCall at the core's ``get_timer()`` deadline, moved only when it changes."""

    def __init__(self, clock: IReactorTime, fire: Callable[[], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._call: IDelayedCall | None = None
        self._deadline: float | None = None

    def set(self, deadline: float | None) -> None:
        if deadline == self._deadline and (self._call is None or self._call.active()):
            return
        self.cancel()
        self._deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock.seconds())
            self._call = self._clock.callLater(delay, self._run)

    def _run(self) -> None:
        self._call = None
        self._deadline = None
        self._fire()

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._deadline = None


def run_tracked(
    reactor: IReactorFromThreads,
    threadpool: ThreadPool,
    in_flight: set[defer.Deferred[Any]],
    work: Callable[..., _T],
    *args: Any,
) -> defer.Deferred[_T]:
    """``work(*args)`` on ``threadpool``; its Deferred sits in ``in_flight`` until it fires."""
    d: defer.Deferred[_T] = deferToThreadPool(reactor, threadpool, work, *args)
    in_flight.add(d)

    def done(result: object) -> object:
        in_flight.discard(d)
        return result

    d.addBoth(done)
    return d


class RateLimit:
    """At most ``rate`` events per second; the rest are counted in ``suppressed``.

    A bound on what an attacker or a broken peer can make us do at will.
    """

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


class StopGrace:
    """How long a stopping node waits for its peers, one budget for every wait.

    The LACs' acknowledgements of the StopCCNs and RADIUS's of the last accounting
    records are waited for in the same few seconds, not one after the other: the first
    to ask starts the clock (the node, as it begins to stop), each wait takes what is
    left.
    """

    def __init__(self, clock: IReactorTime, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self._ends: float | None = None

    def begin(self) -> None:
        if self._ends is None:
            self._ends = self.clock.seconds() + self.seconds

    def remaining(self) -> float:
        """Seconds left; the clock starts now if nothing started it."""
        self.begin()
        assert self._ends is not None
        return max(0.0, self._ends - self.clock.seconds())


class Backlog:
    """The node's work, a slice per reactor turn, in the order it was asked for.

    A storm hands the reactor more work in one read than it can do before the next
    HELLO is due: a read of 512 datagrams, 200 addresses from one commit, a socket full
    of RADIUS answers. A slice begins with the first item (`add`) of a reactor turn
    and lasts ``slice_`` seconds of `work_clock`: items run at once while it lasts and
    nothing waits; the rest wait for the reactor's next turn, which comes after the
    reactor has read its sockets again and runs one item at least. So control traffic
    is answered within about a slice however far behind the rest is. ``slice_`` None:
    everything at once (tests on a fake clock, tools).

    What an item asks for while it runs belongs to it and runs at once, before the
    items queued behind it, as if called directly. An item that raises raises to the
    reactor, as it would have without the backlog; the rest run at the next turn.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        slice_: float | None,
        work_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.reactor = reactor
        self.slice = slice_
        self.work_clock = work_clock
        self._queued: deque[Callable[[], object]] = deque()
        self._running = False
        self._slice_ends: float | None = None  # of the current turn's slice, once begun
        self.waited = 0  # items that waited for a later turn, since the start

    def __len__(self) -> int:
        """Items waiting for a later turn."""
        return len(self._queued)

    def add(self, work: Callable[[], object]) -> None:
        if self._running:
            work()
        elif not self._queued and self._within_slice():
            self._run(work)
        else:
            self._queued.append(work)
            self.waited += 1

    def _within_slice(self) -> bool:
        """Whether this turn's slice lasts; the first call of a turn begins it."""
        if self.slice is None:
            return True
        now = self.work_clock()
        if self._slice_ends is None:
            self._slice_ends = now + self.slice
            self.reactor.callLater(0, self._next_turn)
        return now < self._slice_ends

    def _next_turn(self) -> None:
        self._slice_ends = None
        queued = self._queued
        if queued:  # at least one item a turn, however short the slice
            self._within_slice()
            self._run(queued.popleft())
        while queued and self._within_slice():
            self._run(queued.popleft())

    def _run(self, work: Callable[[], object]) -> None:
        self._running = True
        try:
            work()
        finally:
            self._running = False


# CPython's defaults are (700, 10, 10). A node holds tens of thousands of sessions of
# long-lived objects, and every full collection walks them all: hundreds of milliseconds
# each, HELLOs waiting meanwhile. Collections of the young generation run over a hundred
# times less often, full ones far less often still; memory per session is unchanged (cyclic
# garbage is rare here: reference counting frees almost everything).
GC_THRESHOLDS = (100_000, 50, 1_000)


def settle_garbage_collector() -> None:
    """For a started node: what exists by now (modules, configuration, the services) is
    never scanned again (`gc.freeze`), and collections run at `GC_THRESHOLDS`."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
