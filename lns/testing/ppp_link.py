"""A PPP session (LNS side) wired to a simulated device on a fake clock.

AAA and the address pool are stand-ins answering at once (or never): this
tests the PPP layer alone; the real RADIUS and SQL pool have their own tests.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import TypeVar

from lns.l2tp.proxy import ProxyAuth, ProxyLcp
from lns.ppp.auth import AuthRequest, CallContext, Decision
from lns.ppp.frame import decode_frame
from lns.ppp.packet import ControlPacket, decode_packet
from lns.ppp.session import (
    AllocateAddress,
    Authenticate,
    Effect,
    PppSession,
    PppSettings,
    ReleaseAddress,
    SendFrame,
    SessionClosed,
    SessionOpened,
)
from lns.testing.lacsim.device import Device, DeviceBehaviour
from lns.testing.lacsim.lac import default_proxy_lcp, proxy_chap, proxy_pap

_E = TypeVar("_E")

ICCID = "8944110000000000013"
PASSWORD = b"password"
ASSIGNED = ipaddress.IPv4Address("100.64.1.23")


def accept_password(request: AuthRequest) -> Decision:
    """Accepts the right CHAP/PAP password, or any ICCID-only request."""
    from lns.ppp.auth import AuthMethod
    from lns.ppp.chap import md5_response

    if request.method is AuthMethod.ICCID:
        return Decision(True)
    if request.method is AuthMethod.PAP:
        ok = request.password == PASSWORD
    else:
        assert request.chap_id is not None
        ok = request.chap_response == md5_response(
            request.chap_id, PASSWORD, request.chap_challenge
        )
    return Decision(ok, reason="" if ok else "wrong password")


def to_l2tp_proxy_lcp(rng: random.Random) -> ProxyLcp:
    spec = default_proxy_lcp(rng)
    return ProxyLcp(spec.initial_received, spec.last_sent, spec.last_received)


def to_l2tp_proxy_auth(kind: str, rng: random.Random, password: bytes = PASSWORD) -> ProxyAuth:
    spec = proxy_chap(password, rng) if kind == "chap" else proxy_pap(password)
    return ProxyAuth(spec.authen_type, spec.name, spec.challenge, spec.chap_id, spec.response)


def packets(frames: list[bytes], protocol: int) -> list[ControlPacket]:
    """The control packets of one PPP protocol among frames, decoded, in order."""
    decoded = (decode_frame(frame) for frame in frames)
    return [decode_packet(payload) for number, payload in decoded if number == protocol]


def protocols(frames: list[bytes]) -> list[int]:
    """The PPP protocol number of each frame."""
    return [decode_frame(frame)[0] for frame in frames]


class Link:
    def __init__(
        self,
        settings: PppSettings | None = None,
        proxy_lcp: ProxyLcp | None = None,
        proxy_auth: ProxyAuth | None = None,
        behaviour: DeviceBehaviour | None = None,
        aaa: Callable[[AuthRequest], Decision | None] = accept_password,
        pool: Callable[[AllocateAddress], ipaddress.IPv4Address | None] = lambda r: ASSIGNED,
    ) -> None:
        self.now = 0.0
        self.rng = random.Random(1661)
        self.session: PppSession[object] = PppSession(
            CallContext(ICCID), settings or PppSettings(), self.rng, proxy_lcp, proxy_auth
        )
        self.device = Device(behaviour, random.Random(1332))
        self.aaa = aaa
        self.pool = pool
        self.effects: list[Effect[object]] = []
        self.to_device: list[bytes] = []
        self.to_lns: list[bytes] = []
        self.auth_requests: list[AuthRequest] = []
        self.released: list[object] = []
        self.drop_to_device: Callable[[bytes], bool] = lambda f: False

    def start(self) -> None:
        frames = self.device.start(self.now)
        self._run(self.session.start(self.now))
        self._deliver_to_lns(frames)

    def _run(self, effects: list[Effect[object]]) -> None:
        for effect in effects:
            self.effects.append(effect)
            if isinstance(effect, SendFrame):
                self.to_device.append(effect.frame)
                if not self.drop_to_device(effect.frame):
                    self._deliver_to_lns(self.device.frame_received(effect.frame, self.now))
            elif isinstance(effect, Authenticate):
                self.auth_requests.append(effect.request)
                decision = self.aaa(effect.request)
                if decision is not None:
                    self._run(self.session.authenticated(decision, self.now))
            elif isinstance(effect, AllocateAddress):
                address = self.pool(effect)
                if address is None:
                    self._run(self.session.address_failed("pool exhausted", self.now))
                else:
                    self._run(self.session.address_assigned(address, ("lease", address), self.now))
            elif isinstance(effect, ReleaseAddress):
                self.released.append(effect.lease)

    def _deliver_to_lns(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.to_lns.append(frame)
            self._run(self.session.frame_received(frame, self.now))

    def send_from_device(self, frame: bytes) -> None:
        self._deliver_to_lns([frame])

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while True:
            timers = (self.session.get_timer(), self.device.get_timer())
            times = [t for t in timers if t is not None]
            due = min(times) if times else None
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self._run(self.session.handle_timer(self.now))
            self._deliver_to_lns(self.device.handle_timer(self.now))
        self.now = target

    def of_type(self, kind: type[_E]) -> list[_E]:
        return [e for e in self.effects if isinstance(e, kind)]

    @property
    def opened(self) -> SessionOpened | None:
        found = self.of_type(SessionOpened)
        return found[0] if found else None

    @property
    def closed(self) -> SessionClosed | None:
        found = self.of_type(SessionClosed)
        return found[0] if found else None
