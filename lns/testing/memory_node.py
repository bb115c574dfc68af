"""A whole node in memory, on a fake clock: the real L2TP service, session runner and
supervisor, data plane (no device) and management API, with simulated LACs.

AAA accepts every SIM unless told otherwise, the pool is the in-memory one of
:mod:`lns.testing.session_world`, accounting records are kept in a list. Datagrams
between the LACs and the node move in :meth:`MemoryNode.pump`; :meth:`advance`
runs both sides' timers up to a moment. Nothing touches a socket, so tests of the
management API, the metrics and reload run in milliseconds.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from lns.adapters.dataplane import DataPlane, DataPlaneService
from lns.adapters.l2tp import L2tpService
from lns.adapters.management import ManagementApi, ManagementService
from lns.adapters.metrics import MetricsExporter
from lns.adapters.node_state import NodeState
from lns.adapters.services import (
    NodeService,
    lac_matches,
    ppp_settings,
    supervisor_settings,
    tunnel_settings,
)
from lns.adapters.sessions import SessionRunner
from lns.config import Config, ManagementSection
from lns.l2tp.endpoint import LnsEndpoint
from lns.pool.allocator import AllocationRequest, Lease
from lns.ppp.auth import AuthRequest, Decision
from lns.ppp.termination import TerminateCause
from lns.sessions.accounting import AccountingSession, AcctSessionIds, RecordKind
from lns.sessions.supervisor import SessionSupervisor
from lns.testing.config import ConfigBuilder
from lns.testing.lacsim.device import Device
from lns.testing.lacsim.lac import Lac, SimulatedCall, default_proxy_lcp, proxy_chap
from lns.testing.session_world import LOCAL, NODE, FakePool

__all__ = ["LAC_NETWORK", "SECRET", "MemoryNode", "memory_config"]

SECRET = b"memory-node-secret"
LAC_NETWORK = ipaddress.ip_network("192.0.2.0/24")
LNS_ADDRESS = ("192.0.2.1", 1701)
EPOCH = 1_767_225_600.0  # 2026-01-01: the fake clock starts at a plausible wall time


class MemoryPort:
    """Stands in for the L2TP service's UDP port: what it sends waits in ``sent``."""

    port = LNS_ADDRESS[1]

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, peer: tuple[str, int], local: str | None = None) -> None:
        self.sent.append((data, peer))

    def stop(self) -> None:
        pass


@dataclass
class Records:
    """Accounting as the RADIUS back end would receive it: (kind, session, cause)."""

    records: list[tuple[RecordKind, AccountingSession, TerminateCause | None]] = field(
        default_factory=list
    )

    def session_started(self, info: AccountingSession) -> defer.Deferred[None]:
        self.records.append((RecordKind.START, info, None))
        return defer.succeed(None)

    def interim(self, info: AccountingSession) -> defer.Deferred[None]:
        self.records.append((RecordKind.INTERIM, info, None))
        return defer.succeed(None)

    def session_stopped(
        self, info: AccountingSession, cause: TerminateCause
    ) -> defer.Deferred[None]:
        self.records.append((RecordKind.STOP, info, cause))
        return defer.succeed(None)

    def of(self, acct_session_id: str) -> list[tuple[RecordKind, TerminateCause | None]]:
        return [
            (kind, cause)
            for kind, info, cause in self.records
            if info.context.acct_session_id == acct_session_id
        ]


class _Aaa:
    def __init__(self, decide: Callable[[AuthRequest], Decision]) -> None:
        self.decide = decide

    def authenticate(self, request: AuthRequest) -> defer.Deferred[Decision]:
        return defer.succeed(self.decide(request))


class _Pool:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    def allocate(self, request: AllocationRequest) -> defer.Deferred[Lease]:
        try:
            return defer.succeed(self.pool.allocate(request))
        except Exception as exc:
            return defer.fail(exc)

    def release(self, lease: Lease) -> defer.Deferred[None]:
        self.pool.release(lease)
        return defer.succeed(None)


def memory_config() -> ConfigBuilder:
    """The configuration a MemoryNode runs by default, to add to or change."""
    return (
        ConfigBuilder()
        .lns(node_name=NODE)
        .l2tp(listen=f"{LNS_ADDRESS[0]}:{LNS_ADDRESS[1]}", hello_interval=60.0)
        .lac(name="op-a", peer=str(LAC_NETWORK), secret=SECRET.decode())
        .ppp(local_address=str(LOCAL))
        .dataplane(mode="none")
        .management()
    )


class MemoryNode:
    """The node ``config`` describes (sockets, RADIUS and the database aside)."""

    def __init__(
        self,
        config: Config | None = None,
        aaa: Callable[[AuthRequest], Decision] = lambda request: Decision(True),
        pool_size: int = 64,
    ) -> None:
        self.config = config if config is not None else memory_config().config()
        self.clock = MemoryReactorClock()  # type: ignore[no-untyped-call]
        self.clock.advance(EPOCH)
        self.supervisor = SessionSupervisor(
            supervisor_settings(self.config, accounting=True),
            ppp_settings(self.config),
            iter(AcctSessionIds(NODE, self.clock.seconds()), None),
            random.Random(2),
        )
        self.endpoint = LnsEndpoint(
            tunnel_settings(self.config),
            lac_matches(self.config),
            random.Random(1),
            setups_elsewhere=lambda: self.supervisor.setups_in_progress,
        )
        self.l2tp = L2tpService(self.endpoint, LNS_ADDRESS, reactor=self.clock)
        self.port = MemoryPort()
        self.l2tp.port = self.port  # type: ignore[assignment]
        self.pool = FakePool(pool_size)
        self.accounting = Records()
        self.dataplane = DataPlane(
            self.config.ppp.local_address, self.config.dataplane.mss_clamp, self.clock
        )
        self.runner = SessionRunner(
            self.supervisor,
            _Aaa(aaa),
            _Pool(self.pool),
            self.dataplane,
            self.clock,
            self.accounting,
        )
        self.runner.link = self.l2tp
        self.l2tp.calls = self.runner
        self.dataplane.link = self.l2tp
        self.state = NodeState(NODE, self.clock, self.runner, self.l2tp, self.dataplane)
        self.metrics = MetricsExporter(self.state)
        self.api = ManagementApi(
            self.state, self.config.management or ManagementSection(), self.metrics
        )
        config = self.config
        self.node = NodeService(
            self.l2tp,
            None,
            dataplane=DataPlaneService(self.dataplane, config.ppp.local_address, config.ppp.mru),
            sessions=self.runner,
            management=ManagementService(self.api, self.clock),
        )
        self.lacs: dict[tuple[str, int], Lac] = {}

    @property
    def now(self) -> float:
        return self.clock.seconds()

    # --- LACs ----------------------------------------------------------------------------

    def lac(self, address: tuple[str, int] = ("192.0.2.10", 1701), **kwargs: Any) -> Lac:
        """A simulated LAC sending from ``address`` (a new one, or the one there)."""
        if address not in self.lacs:
            kwargs.setdefault("secret", SECRET)
            kwargs.setdefault("rng", random.Random(address[0]))
            self.lacs[address] = Lac(**kwargs)
        return self.lacs[address]

    def session(self, lac: Lac, tunnel: Any, iccid: str) -> SimulatedCall:
        """Place a call with proxy LCP, proxy CHAP and a device, and run until it settles."""
        call = lac.place_call(
            tunnel,
            iccid,
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_chap(b"pw", lac.rng),
            device=Device(rng=random.Random(iccid)),
        )
        self.advance(1.0)
        return call

    # --- moving datagrams and time ---------------------------------------------------------

    def pump(self) -> None:
        """Deliver datagrams both ways until both sides are quiet."""
        for _ in range(10_000):
            moved = False
            for address, lac in self.lacs.items():
                for data in lac.datagrams_to_send(self.now):
                    moved = True
                    self.l2tp.datagram_received(data, address, LNS_ADDRESS[0])
            sent, self.port.sent = self.port.sent, []
            for data, peer in sent:
                moved = True
                receiver = self.lacs.get(peer)
                if receiver is not None:
                    receiver.datagram_received(data, self.now)
            if not moved:
                return
        raise AssertionError("datagrams never stopped moving")

    def advance(self, seconds: float) -> None:
        """Run both sides' timers, in order, up to ``seconds`` from now."""
        target = self.now + seconds
        self.pump()
        while True:
            times = [call.getTime() for call in self.clock.getDelayedCalls()]
            times += [t for lac in self.lacs.values() if (t := lac.get_timer()) is not None]
            due = min(times, default=None)
            if due is None or due > target:
                break
            self.clock.advance(max(0.0, due - self.now))
            for lac in self.lacs.values():
                timer = lac.get_timer()
                if timer is not None and timer <= self.now:
                    lac.handle_timer(self.now)
            self.pump()
        self.clock.advance(target - self.now)
        self.pump()
