"""An LNS in memory for the load generator's tests: the project's own L2TP endpoint and
PPP sessions, with AAA and the address pool answering at once, on a fake clock.

The :class:`LoadRun` under test binds its socket through :class:`FakeReactor`,
whose UDP port hands what the run writes to this LNS; :func:`pump` moves
datagrams both ways and advances the clock to the next deadline of either
side, so a whole run (tunnels, sessions, HELLOs, teardown) takes no real time.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from lns.deadlines import Deadlines
from lns.l2tp.avp import ResultCode
from lns.l2tp.effects import CallCleared, CallEstablished, PppFrameReceived
from lns.loadgen.run import LoadRun
from lns.ppp.auth import CallContext, Decision
from lns.ppp.frame import Protocol, decode_frame, encode_frame
from lns.ppp.session import (
    AllocateAddress,
    Authenticate,
    PppSession,
    PppSettings,
    SendFrame,
    SessionClosed,
)
from lns.testing import packets
from lns.testing.l2tp_network import LAC_ADDRESS, make_endpoint

IPv4 = ipaddress.IPv4Address
Key = tuple[int, int]


class FakePort:
    """The UDP port of :class:`FakeReactor`: datagrams written go to ``written``."""

    def __init__(self, protocol: DatagramProtocol) -> None:
        self.protocol = protocol
        self.written: list[tuple[bytes, Any]] = []  # not yet delivered by pump()
        self.log: list[bytes] = []  # every datagram written
        self.sent: list[tuple[bytes, Any]] = []  # every datagram written, with its address
        self.listening = True

    def write(self, data: bytes, addr: Any = None) -> None:
        self.written.append((data, addr))
        self.log.append(data)
        self.sent.append((data, addr))

    def stopListening(self) -> None:
        self.listening = False

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", LAC_ADDRESS[0], LAC_ADDRESS[1])


class FakeReactor(Clock):
    """A fake clock that can also listen on (fake) UDP ports."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakePort] = []

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakePort:
        fake = FakePort(protocol)
        self.ports.append(fake)
        protocol.makeConnection(fake)  # type: ignore[arg-type]
        return fake


class FakeLns:
    """Sessions reach IPCP Opened unless ``refuse(iccid)`` gives a reason to refuse them.

    Addresses are handed out in sequence from 100.64.1.1, or by ``address_of(iccid)``
    (several FakeLns sharing one, as nodes share a pool).
    """

    def __init__(
        self,
        secret: bytes | None,
        refuse: Callable[[str], str | None] = lambda iccid: None,
        answer_pings: bool = True,
        hostname: str | None = None,
        address_of: Callable[[str], IPv4] | None = None,
    ) -> None:
        self.endpoint = make_endpoint(
            secret=secret, authenticate=secret is not None, hostname=hostname
        )
        self.refuse = refuse
        self.address_of = address_of
        self.answer_pings = answer_pings
        self.misroute = False  # answer pings with another destination address
        self.rng = random.Random(7)
        self.sessions: dict[Key, PppSession[object]] = {}
        self.timers: Deadlines[Key] = Deadlines()
        self.next_address = int(IPv4("100.64.1.1"))
        self.outbox: list[bytes] = []
        self.received = 0
        self.opened = 0
        self.cleared: list[CallCleared] = []
        self.mute = False  # drop everything (an LNS that went away)

    def receive(self, data: bytes, now: float) -> None:
        if self.mute:
            return
        self.received += 1
        for effect in self.endpoint.datagram_received(data, LAC_ADDRESS, now):
            if isinstance(effect, CallEstablished):
                call = effect.call
                key = (effect.tunnel_id, call.session_id)
                session: PppSession[object] = PppSession(
                    CallContext(call.iccid),
                    PppSettings(),
                    self.rng,
                    call.proxy_lcp,
                    call.proxy_auth,
                )
                self.sessions[key] = session
                self._apply(key, session, session.start(now), now)
            elif isinstance(effect, PppFrameReceived):
                key = (effect.tunnel_id, effect.session_id)
                found = self.sessions.get(key)
                if found is not None and not self._ping(key, effect.frame):
                    self._apply(key, found, found.frame_received(effect.frame, now), now)
            elif isinstance(effect, CallCleared):
                self.cleared.append(effect)
                gone = self.sessions.pop((effect.tunnel_id, effect.session_id), None)
                if gone is not None:
                    self.timers.discard((effect.tunnel_id, effect.session_id))

    def _ping(self, key: Key, frame: bytes) -> bool:
        """Answers an ICMP echo from the device as the network behind the LNS would."""
        protocol, packet = decode_frame(frame)
        if protocol != Protocol.IP:
            return False
        echo = packets.parse_icmp_echo(packet)
        if self.answer_pings and echo is not None and echo.kind == packets.ECHO_REQUEST:
            source = echo.source
            if self.misroute:
                source ^= 1  # another session's address
            reply = packets.icmp_echo(
                echo.destination, source, echo.identifier, echo.sequence, reply=True
            )
            self._send_frame(key, encode_frame(Protocol.IP, reply))
        return True

    def _send_frame(self, key: Key, frame: bytes) -> None:
        datagram = self.endpoint.send_ppp(key[0], key[1], frame)
        if datagram is not None:
            self.outbox.append(datagram.data)

    def _apply(self, key: Key, session: PppSession[object], effects: list[Any], now: float) -> None:
        for effect in effects:
            if isinstance(effect, SendFrame):
                self._send_frame(key, effect.frame)
            elif isinstance(effect, Authenticate):
                reason = self.refuse(effect.request.context.iccid)
                decision = Decision(reason is None, reason=reason or "")
                self._apply(key, session, session.authenticated(decision, now), now)
            elif isinstance(effect, AllocateAddress):
                if self.address_of is not None:
                    address = self.address_of(session.context.iccid)
                else:
                    address = IPv4(self.next_address)
                    self.next_address += 1
                assigned = session.address_assigned(address, ("lease", address), now)
                self._apply(key, session, assigned, now)
            elif isinstance(effect, SessionClosed):
                self.sessions.pop(key, None)
                result = ResultCode(2, 0, effect.message[:200])
                self.endpoint.disconnect_call(key[0], key[1], result, effect.message, now)
        if key in self.sessions:
            self.timers.set(key, session.get_timer())
        else:
            self.timers.discard(key)

    def datagrams(self, now: float) -> list[bytes]:
        out, self.outbox = self.outbox, []
        out += [d.data for d in self.endpoint.datagrams_to_send(now)]
        return [] if self.mute else out

    def get_timer(self) -> float | None:
        times = [t for t in (self.endpoint.get_timer(), self.timers.earliest()) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        for key in self.timers.pop_due(now):
            session = self.sessions.get(key)
            if session is not None:
                self._apply(key, session, session.handle_timer(now), now)


def pump(
    reactor: FakeReactor,
    lns: FakeLns | Mapping[tuple[str, int], FakeLns],
    run: LoadRun,
    limit: float = 600.0,
) -> None:
    """Run until the run is done (or ``limit`` seconds of fake time passed).

    ``lns`` is the one LNS of the run, or the LNSs of a run with several by their
    ``(host, port)``: each gets what the run sends to its address and answers from it.
    """
    (port,) = reactor.ports
    if isinstance(lns, FakeLns):
        lnses = {(str(run.options.server), run.options.port): lns}
    else:
        lnses = dict(lns)
    while run.phase != "done" and reactor.seconds() < limit:
        moved = True
        while moved and run.phase != "done":
            now = reactor.seconds()
            written, port.written = port.written, []
            for data, addr in written:
                target = lnses.get(addr)
                if target is not None:
                    target.receive(data, now)
            back = [(data, addr) for addr, one in lnses.items() for data in one.datagrams(now)]
            for data, addr in back:
                run.datagram_received(data, addr)
            reactor.advance(0)  # the run's flush of this turn
            moved = bool(written or back or port.written)
        deadlines = [c.getTime() for c in reactor.getDelayedCalls()]
        deadlines += [t for one in lnses.values() if (t := one.get_timer()) is not None]
        if not deadlines:
            break
        step = max(0.0, min(deadlines) - reactor.seconds())
        reactor.advance(step)
        for one in lnses.values():
            one.handle_timer(reactor.seconds())
