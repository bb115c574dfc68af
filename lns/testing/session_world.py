"""The session supervisor wired to simulated devices, a stand-in pool and AAA, on a fake clock.

Everything the supervisor asks for is carried out here the way the adapters do it,
without Twisted: frames go to the device of the call, IP packets through the real
(pure) forwarder, leases come from a small in-memory pool that, like the SQL one,
hands a SIM's live lease over to its newest session. AAA and the pool answer at
once unless told to hold their answers, which a test then releases in any order.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lns.dataplane.forwarder import Forwarder
from lns.l2tp.result import CdnResult
from lns.pool.allocator import AllocationRequest, Lease, LeaseOrigin, PoolExhausted
from lns.ppp.auth import AuthRequest, CallContext, Decision
from lns.ppp.frame import Protocol, decode_frame, encode_frame
from lns.ppp.session import PppSettings
from lns.ppp.termination import TerminateCause
from lns.sessions import effects as fx
from lns.sessions.accounting import AcctSessionIds, RecordKind
from lns.sessions.supervisor import SessionSupervisor, SupervisorSettings
from lns.testing.lacsim.device import Device, DeviceBehaviour
from lns.testing.ppp_link import to_l2tp_proxy_auth, to_l2tp_proxy_lcp

IPv4 = ipaddress.IPv4Address
NODE = "lns-1"
LOCAL = IPv4("100.64.0.1")
POOL_BASE = int(IPv4("100.64.1.0"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def iccid(n: int) -> str:
    return f"89442{n:014d}"


FAR_END = IPv4("192.0.2.9")


def ip_packet(source: IPv4, destination: IPv4 = FAR_END, size: int = 100) -> bytes:
    """An IPv4/UDP packet of ``size`` octets (the forwarder checks the header, not sums)."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0, source.packed, destination.packed
    )
    return header + bytes(size - len(header))


class FakePool:
    """One pool: sticky per ICCID, the newest attach takes the live lease over."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.live: dict[IPv4, Lease] = {}
        self.last: dict[str, IPv4] = {}
        self.generation: dict[IPv4, int] = {}
        self.released: list[Lease] = []
        self.stale_releases = 0

    def allocate(self, request: AllocationRequest, node: str = NODE) -> Lease:
        taken = tuple(lease for lease in self.live.values() if lease.iccid == request.iccid)
        for lease in taken:
            del self.live[lease.address]
        if request.requested_address is not None:
            address = request.requested_address
        else:
            free = [IPv4(POOL_BASE + n) for n in range(self.size)]
            free = [a for a in free if a not in self.live]
            if not free:
                for lease in taken:  # the transaction rolls back
                    self.live[lease.address] = lease
                raise PoolExhausted("default")
            sticky = self.last.get(request.iccid)
            address = sticky if sticky in free else free[0]
        self.generation[address] = self.generation.get(address, 0) + 1
        lease = Lease(
            "default",
            address,
            request.iccid,
            node,
            request.tunnel_id,
            request.session_id,
            T0,
            LeaseOrigin.LRU,
            self.generation[address],
            taken,
        )
        self.live[address] = lease
        self.last[request.iccid] = address
        return lease

    def release(self, lease: Lease) -> None:
        self.released.append(lease)
        live = self.live.get(lease.address)
        if live is not None and live.generation == lease.generation:
            del self.live[lease.address]
        else:
            self.stale_releases += 1  # a newer generation: nothing changes


class World:
    def __init__(
        self,
        settings: SupervisorSettings | None = None,
        ppp: PppSettings | None = None,
        aaa: Callable[[AuthRequest], Decision] = lambda request: Decision(True),
        pool: FakePool | None = None,
        hold: bool = False,
    ) -> None:
        self.now = 1000.0
        self.supervisor = SessionSupervisor(
            settings or SupervisorSettings(node_name=NODE),
            ppp or PppSettings(echo_interval=30.0, local_address=LOCAL),
            iter(AcctSessionIds(NODE, self.now), None),
            random.Random(2661),
        )
        self.aaa = aaa
        self.pool = pool or FakePool()
        self.hold = hold  # AAA and pool answers wait in `pending` until delivered
        self.pending: list[tuple[str, Any]] = []
        self.forwarder = Forwarder(LOCAL, mss_clamp=False)
        self.devices: dict[tuple[int, int], Device] = {}
        self.effects: list[fx.Effect] = []
        self.requests: list[AuthRequest] = []
        self.rng = random.Random(1332)

    # --- events ------------------------------------------------------------------------

    def attach(
        self,
        n: int,
        tunnel: int = 1,
        session: int | None = None,
        behaviour: DeviceBehaviour | None = None,
        called: str = "iot.apn",
    ) -> tuple[int, int]:
        """A call of SIM ``n`` established (ICCN with proxy LCP and proxy CHAP)."""
        session = session if session is not None else n
        key = (tunnel, session)
        device = Device(behaviour or DeviceBehaviour(), random.Random(n))
        self.devices[key] = device
        context = CallContext(
            iccid(n),
            called_number=called,
            lac_name="op-a",
            lac_hostname="lac1",
            lac_address="192.0.2.1",
            tunnel_id=tunnel,
            session_id=session,
        )
        frames = device.start(self.now)
        proxy_lcp = to_l2tp_proxy_lcp(self.rng)
        proxy_auth = to_l2tp_proxy_auth("chap", self.rng)
        self.run(self.supervisor.call_established(context, proxy_lcp, proxy_auth, self.now))
        self.from_device(key, frames)
        return key

    def from_device(self, key: tuple[int, int], frames: list[bytes]) -> None:
        for frame in frames:
            protocol, payload = decode_frame(frame)
            record = self.supervisor.get(key)
            if protocol == Protocol.IP and record is not None and record.path is not None:
                self.forwarder.from_session(record.path, payload, self.now)
                continue
            self.run(self.supervisor.ppp_frame(key, frame, self.now))

    def send_ip(self, key: tuple[int, int], size: int = 100, source: IPv4 | None = None) -> None:
        record = self.supervisor.get(key)
        assert record is not None
        assert record.address is not None
        packet = ip_packet(source or record.address, size=size)
        self.from_device(key, [encode_frame(Protocol.IP, packet)])

    def cleared(self, key: tuple[int, int]) -> None:
        """CDN from the LAC."""
        self.run(self.supervisor.call_cleared(key, self.now))

    def deliver(self, index: int = 0) -> None:
        """Deliver one held answer of AAA or the pool."""
        kind, effect = self.pending.pop(index)
        if kind == "aaa":
            self.answer_aaa(effect)
        else:
            self.answer_pool(effect)

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while True:
            times = [self.supervisor.get_timer()]
            times += [device.get_timer() for device in self.devices.values()]
            due = min((t for t in times if t is not None), default=None)
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self.run(self.supervisor.handle_timer(self.now))
            for key, device in list(self.devices.items()):
                timer = device.get_timer()
                if timer is not None and timer <= self.now:
                    self.from_device(key, device.handle_timer(self.now))
        self.now = target

    # --- effects -----------------------------------------------------------------------

    def run(self, effects: list[fx.Effect]) -> None:
        for effect in effects:
            self.effects.append(effect)
            if isinstance(effect, fx.SendFrame):
                device = self.devices.get(effect.key)
                if device is not None:
                    self.from_device(effect.key, device.frame_received(effect.frame, self.now))
            elif isinstance(effect, fx.Authenticate):
                self.requests.append(effect.request)
                if self.hold:
                    self.pending.append(("aaa", effect))
                else:
                    self.answer_aaa(effect)
            elif isinstance(effect, fx.AllocateAddress):
                if self.hold:
                    self.pending.append(("pool", effect))
                else:
                    self.answer_pool(effect)
            elif isinstance(effect, fx.ReleaseAddress):
                self.pool.release(effect.lease)
            elif isinstance(effect, fx.OpenPath):
                self.forwarder.attach(effect.path)
            elif isinstance(effect, fx.ClosePath):
                self.forwarder.detach(effect.path)
            elif isinstance(effect, fx.ClearCall):
                self.devices.pop(effect.key, None)

    def answer_aaa(self, effect: fx.Authenticate) -> None:
        decision = self.aaa(effect.request)
        self.run(self.supervisor.authenticated(effect.serial, decision, self.now))

    def answer_pool(self, effect: fx.AllocateAddress) -> None:
        try:
            lease = self.pool.allocate(effect.request)
        except Exception as exc:
            self.run(self.supervisor.address_refused(effect.serial, exc, self.now))
        else:
            self.run(self.supervisor.address_assigned(effect.serial, lease, self.now))

    # --- what happened -----------------------------------------------------------------

    def of_type(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    def accounting(self) -> list[tuple[RecordKind, str, TerminateCause | None]]:
        return [(a.kind, a.session.acct_session_id, a.cause) for a in self.of_type(fx.Account)]

    def cdns(self) -> list[tuple[tuple[int, int], CdnResult, str]]:
        return [(c.key, c.result, c.message) for c in self.of_type(fx.ClearCall)]

    def down(self) -> list[fx.SessionDown]:
        return self.of_type(fx.SessionDown)
