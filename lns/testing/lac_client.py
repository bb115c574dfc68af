"""The LAC simulator (:mod:`lns.testing.lacsim.lac`) on a real UDP socket and the reactor's clock.

Tests and the load generator drive a :class:`~lns.testing.lacsim.lac.Lac` through
this: after every action call :meth:`LacClient.flush`; :meth:`LacClient.until`
returns a Deferred that fires once a condition holds, so nothing sleeps. A condition
is checked after every datagram and timer of the simulator, and every
`POLL_INTERVAL` while something waits, so it may also look at an LNS running in the
same process (a counter of the server that no datagram to the LAC announces).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

from lns.runtime import DeadlineTimer
from lns.testing.lacsim.lac import Lac

POLL_INTERVAL = 0.01  # seconds between checks of the awaited conditions


class ConditionTimeout(Exception):
    """A condition awaited with :meth:`LacClient.until` did not hold in time."""


class LacClient(DatagramProtocol):
    def __init__(
        self,
        lac: Lac,
        server: tuple[str, int],
        reactor: IReactorTime,
        local_host: str = "127.0.0.1",
    ) -> None:
        self.lac = lac
        self.server = server
        self.reactor = reactor
        self.local_host = local_host
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self._timer = DeadlineTimer(reactor, self._on_timer)
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None], IDelayedCall]] = []
        self._poll: IDelayedCall | None = None

    def start(self) -> int:
        """Bind an ephemeral port on ``local_host``; returns it."""
        port = IReactorUDP(self.reactor).listenUDP(0, self, self.local_host, 65535)
        host = port.getHost()
        assert isinstance(host, IPv4Address)
        return host.port

    def stop(self) -> defer.Deferred[None] | None:
        self._timer.cancel()
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None
        if self.transport is None:
            return None
        result = self.transport.stopListening()
        return result if isinstance(result, defer.Deferred) else None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.datagrams_received += 1
        self.lac.datagram_received(datagram, self.reactor.seconds())
        self.flush()

    def _on_timer(self) -> None:
        self.lac.handle_timer(self.reactor.seconds())
        self.flush()

    def flush(self) -> None:
        """Send what the simulator has queued, re-arm its timer, check the waiters."""
        if self.transport is not None:
            for data in self.lac.datagrams_to_send(self.reactor.seconds()):
                self.datagrams_sent += 1
                self.transport.write(data, self.server)
        self._timer.set(self.lac.get_timer())
        self._check()

    def until(self, condition: Callable[[], bool], timeout: float = 30.0) -> defer.Deferred[None]:
        """Fires when ``condition()`` is true; fails with ConditionTimeout after ``timeout``."""
        waiting: defer.Deferred[None] = defer.Deferred()
        if condition():
            waiting.callback(None)
            return waiting

        def expire() -> None:
            self._waiters = [w for w in self._waiters if w[1] is not waiting]
            waiting.errback(ConditionTimeout(f"condition not met within {timeout} s"))

        self._waiters.append((condition, waiting, self.reactor.callLater(timeout, expire)))
        if self._poll is None:
            self._poll = self.reactor.callLater(POLL_INTERVAL, self._polled)
        return waiting

    def _polled(self) -> None:
        self._poll = None
        self._check()
        if self._waiters:
            self._poll = self.reactor.callLater(POLL_INTERVAL, self._polled)

    def _check(self) -> None:
        ready = [w for w in self._waiters if w[0]()]
        if not ready:
            return
        self._waiters = [w for w in self._waiters if w not in ready]
        for _condition, waiting, expiry in ready:
            expiry.cancel()
            waiting.callback(None)
