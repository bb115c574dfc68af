"""Connects a simulated LAC to the LNS endpoint in memory, on a fake clock.

Time is a number the test advances; nothing sleeps. ``drop`` decides, per
datagram, whether the "network" loses it.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import TypeVar

from lns.l2tp.effects import Effect
from lns.l2tp.endpoint import LacMatch, LnsEndpoint
from lns.l2tp.tunnel import LacPeer, TunnelSettings
from lns.testing.lacsim.lac import Lac

_E = TypeVar("_E")

LAC_ADDRESS = ("192.0.2.10", 1701)
SECRET = b"tunnel-secret"


def make_endpoint(
    secret: bytes | None = SECRET,
    authenticate: bool = True,
    hostname: str | None = None,
    network: str = "192.0.2.0/24",
    **settings: object,
) -> LnsEndpoint:
    peer = LacPeer("op-a", secret, authenticate, hostname)
    match = LacMatch(ipaddress.ip_network(network), peer)
    return LnsEndpoint(TunnelSettings(**settings), [match], random.Random(1))  # type: ignore[arg-type]


class Network:
    def __init__(
        self,
        endpoint: LnsEndpoint,
        lac: Lac,
        lac_address: tuple[str, int] = LAC_ADDRESS,
        now: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        self.lac = lac
        self.lac_address = lac_address
        self.now = now
        self.effects: list[Effect] = []
        self.to_lns: list[bytes] = []  # every datagram the LAC sent (before loss)
        self.to_lac: list[bytes] = []  # every datagram the LNS sent (before loss)
        self.drop_to_lns: Callable[[bytes], bool] = lambda data: False
        self.drop_to_lac: Callable[[bytes], bool] = lambda data: False

    def flush(self) -> None:
        """Deliver datagrams both ways until both sides are quiet."""
        while True:
            moved = False
            for data in self.lac.datagrams_to_send(self.now):
                moved = True
                self.to_lns.append(data)
                if not self.drop_to_lns(data):
                    self.effects += self.endpoint.datagram_received(
                        data, self.lac_address, self.now
                    )
            for datagram in self.endpoint.datagrams_to_send(self.now):
                moved = True
                self.to_lac.append(datagram.data)
                assert datagram.peer == self.lac_address
                if not self.drop_to_lac(datagram.data):
                    self.lac.datagram_received(datagram.data, self.now)
            if not moved:
                return

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, firing every timer on the way."""
        target = self.now + seconds
        self.flush()
        while True:
            deadlines = [
                t for t in (self.endpoint.get_timer(), self.lac.get_timer()) if t is not None
            ]
            due = min(deadlines) if deadlines else None
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.effects += self.endpoint.handle_timer(self.now)
            self.lac.handle_timer(self.now)
            self.flush()
        self.now = target
        self.flush()

    def of_type(self, kind: type[_E]) -> list[_E]:
        return [e for e in self.effects if isinstance(e, kind)]
