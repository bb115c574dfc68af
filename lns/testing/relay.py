"""UDP relays on loopback that drop packets on purpose, for integration tests.

`LossyRelay` (on the reactor) loses a fraction of the datagrams; `LinkRelay` (on a
thread of its own) passes everything until a test cuts the link, then nothing.

Why this exists: the L2TP control channel (RFC 2661 section 5.8) promises reliable,
in-order delivery over UDP through sequence numbers, retransmission and acknowledgements.
That machinery only runs when packets go missing, so the integration tests must lose
packets. The usual tool, ``tc qdisc add ... netem loss``, is not available on this
machine (the kernel ships no netem module), and shaping ``lo`` would hit every other
process on the host anyway, so the loss is injected in user space instead: the LAC
simulator talks to this relay, and the relay talks to the LNS, dropping each datagram
with a fixed probability.

The drops come from seeded pseudo-random generators, one per direction, so a test run
is reproducible: the same seed and the same sequence of datagrams give the same drops.

Topology::

    LAC simulator  <->  client-facing port  [LossyRelay]  server-facing port  <->  LNS
                         (returned by start())              (sends to upstream)

Everything binds to 127.0.0.1, and the upstream must be a loopback address.
"""

from __future__ import annotations

import ipaddress
import random
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IAddress, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

__all__ = ["Direction", "LinkRelay", "LossyRelay", "RelayEvent"]

Direction = Literal["to_server", "to_client"]
Address = tuple[str, int]

_LOOPBACK_HOST = "127.0.0.1"


# zope.interface declares methods without ``self``, which mypy cannot call through without
# the mypy-zope plugin (not installed here), so the parts of the interfaces used are
# restated as typing Protocols and the interface-typed objects are cast to them.
class _UDPReactor(Protocol):
    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = ..., maxPacketSize: int = ...
    ) -> _ListeningPort: ...


class _ListeningPort(Protocol):
    def stopListening(self) -> defer.Deferred[None] | None: ...
    def getHost(self) -> IAddress: ...


class _UDPWriter(Protocol):
    def write(self, packet: bytes, addr: Address) -> None: ...


@dataclass(frozen=True)
class RelayEvent:
    """One datagram the relay handled: where it was going and whether it was dropped."""

    direction: Direction
    data: bytes
    dropped: bool


class _Side(DatagramProtocol):
    """One of the relay's two sockets; hands every datagram back to the relay."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on_datagram = on_datagram

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        self._on_datagram(datagram, addr)

    def send(self, datagram: bytes, addr: Address) -> None:
        transport = cast("_UDPWriter | None", self.transport)
        if transport is None:  # the port was closed under us: nothing to send with
            return
        transport.write(datagram, addr)


class LossyRelay:
    """Relay UDP between one client and one server over loopback, dropping some datagrams.

    ``drop_fraction`` is the probability that a datagram is dropped, drawn independently
    for each datagram and each direction. Each direction has its own
    :class:`random.Random`, seeded from ``seed`` and the direction's name, so that the two
    directions do not drop in lockstep and adding traffic in one direction does not shift
    the drops of the other.

    Datagrams from the client go to ``upstream``. Every datagram that arrives on the
    server-facing port goes to the last client address seen (whatever its source port, as
    an LNS may answer from a new port); one that arrives before any client has spoken is
    counted in :attr:`unroutable_to_client` and discarded.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        drop_fraction: float,
        seed: int,
        reactor: IReactorUDP | None = None,
    ) -> None:
        host, port = upstream
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"upstream must be a loopback address, not {host!r}")
        if not 0 < port < 65536:
            raise ValueError(f"upstream port out of range: {port}")
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be within [0, 1], not {drop_fraction}")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast(IReactorUDP, default_reactor)
        self.upstream: Address = (host, port)
        self.drop_fraction = drop_fraction
        self.seed = seed
        self._reactor = cast(_UDPReactor, reactor)
        self._rng: dict[Direction, random.Random] = {
            "to_server": random.Random(f"LossyRelay/{seed}/to_server"),
            "to_client": random.Random(f"LossyRelay/{seed}/to_client"),
        }
        self._client_side = _Side(self._from_client)
        self._server_side = _Side(self._from_server)
        self._client_port: _ListeningPort | None = None
        self._server_port: _ListeningPort | None = None
        self._client_addr: Address | None = None
        self._observers: list[Callable[[RelayEvent], None]] = []

        self.forwarded_to_server = 0
        self.dropped_to_server = 0
        self.forwarded_to_client = 0
        self.dropped_to_client = 0
        self.unroutable_to_client = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> int:
        """Bind both sockets on 127.0.0.1 (ephemeral ports); return the client-facing port."""
        if self._client_port is not None:
            raise RuntimeError("LossyRelay already started")
        self._server_port = self._reactor.listenUDP(0, self._server_side, interface=_LOOPBACK_HOST)
        self._client_port = self._reactor.listenUDP(0, self._client_side, interface=_LOOPBACK_HOST)
        return self.client_facing_port

    def stop(self) -> defer.Deferred[None]:
        """Close both sockets; the Deferred fires once both are closed."""
        ports = [p for p in (self._client_port, self._server_port) if p is not None]
        self._client_port = self._server_port = None
        closing = [defer.maybeDeferred(p.stopListening) for p in ports]
        d: defer.Deferred[None] = defer.gatherResults(closing, consumeErrors=True).addCallback(
            lambda _: None
        )
        return d

    @property
    def client_facing_port(self) -> int:
        """The port the client (LAC simulator) sends to."""
        return _port_of(self._client_port)

    @property
    def server_facing_port(self) -> int:
        """The port the relay sends to ``upstream`` from; the server's replies arrive here."""
        return _port_of(self._server_port)

    @property
    def client_address(self) -> Address | None:
        """The last client address seen, where server datagrams are forwarded."""
        return self._client_addr

    def add_observer(self, observer: Callable[[RelayEvent], None]) -> None:
        """Call ``observer`` for every datagram handled, after the drop decision.

        Lets a test wait on an event ("this datagram was dropped", "the reply went out")
        instead of sleeping. Not called for :attr:`unroutable_to_client` datagrams.
        """
        self._observers.append(observer)

    # -- forwarding ------------------------------------------------------------------

    def _drop(self, direction: Direction) -> bool:
        # Always draw, even with drop_fraction 0 or 1, so the stream stays aligned with
        # the datagram count whatever the fraction.
        return self._rng[direction].random() < self.drop_fraction

    def _notify(self, direction: Direction, data: bytes, dropped: bool) -> None:
        event = RelayEvent(direction, data, dropped)
        for observer in list(self._observers):
            observer(event)

    def _from_client(self, data: bytes, addr: Address) -> None:
        self._client_addr = addr
        if self._drop("to_server"):
            self.dropped_to_server += 1
            self._notify("to_server", data, True)
            return
        self._server_side.send(data, self.upstream)
        self.forwarded_to_server += 1
        self._notify("to_server", data, False)

    def _from_server(self, data: bytes, addr: Address) -> None:
        client = self._client_addr
        if client is None:
            self.unroutable_to_client += 1
            return
        if self._drop("to_client"):
            self.dropped_to_client += 1
            self._notify("to_client", data, True)
            return
        self._client_side.send(data, client)
        self.forwarded_to_client += 1
        self._notify("to_client", data, False)

    def __repr__(self) -> str:
        return (
            f"<LossyRelay upstream={self.upstream} drop={self.drop_fraction} seed={self.seed}"
            f" to_server={self.forwarded_to_server}+{self.dropped_to_server}dropped"
            f" to_client={self.forwarded_to_client}+{self.dropped_to_client}dropped>"
        )


def _port_of(port: _ListeningPort | None) -> int:
    if port is None:
        raise RuntimeError("LossyRelay is not started")
    host = port.getHost()
    assert isinstance(host, IPv4Address)
    number: int = host.port
    return number


class LinkRelay:
    """The UDP path between a LAC and one node, on loopback, that a test can cut.

    Why this exists: a node that is alive but that the LAC can no longer reach (a
    broken link, a firewall) must look, to the LAC, exactly like a dead node, while
    the node itself keeps running (DESIGN.md section 9, issue 13). The LAC is given
    the relay's address instead of the node's; :meth:`cut` then silently drops every
    datagram both ways until :meth:`mend`.

    Unlike :class:`LossyRelay` it needs no reactor: it forwards on a thread of its own,
    so a test that drives processes (twistd, lns-loadgen) from plain code can use it.
    Datagrams from the client go to ``upstream`` from one socket (the node sees that
    address as the LAC's); whatever the node sends back goes to the last client
    address seen.
    """

    BUFFER = 4 * 1024 * 1024  # bytes per socket: a setup storm's bursts pass

    def __init__(self, upstream: Address, listen: str = _LOOPBACK_HOST) -> None:
        for host in (upstream[0], listen):
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"{host!r} is not a loopback address")
        self.upstream = upstream
        self.forwarded_to_server = 0
        self.forwarded_to_client = 0
        self.dropped = 0
        self.send_errors = 0
        self._cut = False
        self._client: Address | None = None
        self._client_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._server_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock, host in ((self._client_side, listen), (self._server_side, _LOOPBACK_HOST)):
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, self.BUFFER)
            sock.bind((host, 0))
        self._wake_read, self._wake_write = socket.socketpair()
        self._running = False
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> Address:
        """Where the LAC sends to, instead of the node."""
        host, port = self._client_side.getsockname()[:2]
        return str(host), int(port)

    @property
    def lac_address(self) -> Address:
        """The address the node sees the LAC's datagrams come from."""
        host, port = self._server_side.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> Address:
        """Starts forwarding; returns :attr:`address`."""
        if self._thread is not None:
            raise RuntimeError("LinkRelay already started")
        self._running = True
        self._thread = threading.Thread(target=self._forward, name="link-relay", daemon=True)
        self._thread.start()
        return self.address

    def cut(self) -> None:
        """From now on every datagram, either way, is dropped without a word."""
        self._cut = True

    def mend(self) -> None:
        self._cut = False

    @property
    def is_cut(self) -> bool:
        return self._cut

    def stop(self) -> None:
        self._running = False
        self._wake_write.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for sock in (self._client_side, self._server_side, self._wake_read, self._wake_write):
            sock.close()

    def __enter__(self) -> LinkRelay:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _forward(self) -> None:
        sockets = [self._client_side, self._server_side, self._wake_read]
        while self._running:
            readable, _, _ = select.select(sockets, [], [])
            for sock in readable:
                if sock is self._wake_read:
                    continue
                try:
                    data, source = sock.recvfrom(65535)
                except OSError:
                    continue
                if sock is self._client_side:
                    self._client = (str(source[0]), int(source[1]))
                    target: Address | None = self.upstream
                    out = self._server_side
                else:
                    target, out = self._client, self._client_side
                if target is None:
                    continue
                if self._cut:
                    self.dropped += 1
                    continue
                # Counted before it leaves, so a reader that has it sees the count.
                if sock is self._client_side:
                    self.forwarded_to_server += 1
                else:
                    self.forwarded_to_client += 1
                try:
                    out.sendto(data, target)
                except OSError:
                    self.send_errors += 1  # a full buffer: the protocol's retransmission recovers

    def __repr__(self) -> str:
        state = "cut" if self._cut else "open"
        return (
            f"<LinkRelay {self.address} -> {self.upstream} {state} "
            f"to_server={self.forwarded_to_server} to_client={self.forwarded_to_client} "
            f"dropped={self.dropped}>"
        )
