"""One re-armable reactor timer for a core that reports a single next deadline."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


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
