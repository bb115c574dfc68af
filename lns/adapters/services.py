"""The service tree of one LNS node, built from its configuration."""

from __future__ import annotations

import gc
import random
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import (
    IReactorFDSet,
    IReactorFromThreads,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
)

from aaa.radius.accounting import RadiusAccounting, RadiusAccountingService
from aaa.radius.attributes import NasIdentity
from aaa.radius.auth import RadiusAuthenticator
from aaa.radius.client import RadiusClientService
from aaa.radius.dae import DynamicAuthorizationService
from lns.adapters.dataplane import DataPlaneService, make_dataplane
from lns.adapters.l2tp import READ_BATCH, STOP_GRACE, L2tpService
from lns.adapters.management import ManagementService, make_management
from lns.adapters.node_state import NodeState
from lns.adapters.nodes import (
    LeaseNotices,
    LeaseWatch,
    NodeLiveness,
    NodeLivenessService,
    identity_of,
)
from lns.adapters.pool import AddressPoolService, SqlAddressPool
from lns.adapters.sessions import SessionRunner
from lns.adapters.startup import Startup, StartupError
from lns.config import Config
from lns.db import database
from lns.db.executor import Executor, ProcessSqlExecutor, SqlExecutor, SqlExecutorService
from lns.db.nodes import NodeAlive
from lns.l2tp.endpoint import LacMatch, LnsEndpoint
from lns.l2tp.reliable import RetransmitPolicy
from lns.l2tp.tunnel import LacPeer, TunnelSettings
from lns.ppp.auth import AuthRequest, Decision
from lns.ppp.lcp import AuthProtocol
from lns.ppp.session import LcpRenegotiation, NoProxyAuth, PppSettings
from lns.runtime import Backlog, StopGrace, default_reactor
from lns.sessions.accounting import AcctSessionIds
from lns.sessions.backends import AddressAllocator, Authenticator
from lns.sessions.supervisor import SessionSupervisor, SupervisorSettings

NO_AAA = "no AAA back end: no [[aaa.radius]] server is configured"
SQL_THREADS = 4
# Seconds of the backlog's work per reactor turn before the sockets are read again.
WORK_SLICE = 0.005
_T = TypeVar("_T")


class NoAuthenticator:
    """Refuses every session: the server runs without an AAA back end configured."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def authenticate(self, request: AuthRequest) -> defer.Deferred[Decision]:
        return defer.succeed(Decision(False, reason=self.reason, reachable=False))


def tunnel_settings(config: Config) -> TunnelSettings:
    l2tp = config.l2tp
    return TunnelSettings(
        hostname=l2tp.hostname,
        hello_interval=l2tp.hello_interval,
        receive_window=l2tp.receive_window,
        retransmit=RetransmitPolicy(
            l2tp.retransmit_initial, l2tp.retransmit_cap, l2tp.retransmit_max
        ),
        hide_avps=l2tp.hide_avps,
        max_tunnels=l2tp.max_tunnels,
        max_tunnels_setting_up=l2tp.max_tunnels_setting_up,
        max_connecting_calls=l2tp.max_connecting_calls,
        max_setups_in_progress=l2tp.max_setups_in_progress,
    )


def ppp_settings(config: Config) -> PppSettings:
    ppp = config.ppp
    return PppSettings(
        mru=ppp.mru,
        local_address=ppp.local_address,
        dns=ppp.dns,
        echo_interval=ppp.echo_interval,
        echo_failures=ppp.echo_failures,
        lcp_renegotiation=LcpRenegotiation(ppp.lcp_renegotiation),
        no_proxy_auth=NoProxyAuth(ppp.no_proxy_auth),
        auth=tuple(AuthProtocol(name) for name in ppp.auth),
        hostname=config.l2tp.hostname.encode(),
    )


def supervisor_settings(config: Config, accounting: bool) -> SupervisorSettings:
    return SupervisorSettings(
        node_name=config.lns.node_name,
        username_template=config.aaa.username,
        interim_interval=config.aaa.interim_interval,
        accounting=accounting,
    )


def lac_matches(config: Config) -> list[LacMatch]:
    return [
        LacMatch(
            lac.peer,
            LacPeer(
                name=lac.name,
                secret=lac.secret.value if lac.secret is not None else None,
                authenticate=lac.authenticate,
                hostname=lac.hostname,
                max_tunnels=lac.max_tunnels,
                max_tunnels_setting_up=lac.max_tunnels_setting_up,
            ),
        )
        for lac in config.l2tp.lacs
    ]


class NodeService(service.MultiService):
    """Starts the database, pool, RADIUS, accounting, dynamic authorization and the data
    plane before L2TP; stops in the reverse order, L2TP first (StopCCN to every LAC,
    sessions closed, routes removed, Stop records spooled, leases released), the
    database last.

    With a `Startup` (lns.adapters.startup), a socket or device that cannot be opened
    and an unusable database are a StartupError, raised before any thread starts.
    """

    def __init__(
        self,
        l2tp: L2tpService,
        pool: service.Service | None,
        radius: service.Service | None = None,
        accounting: service.Service | None = None,
        dynauth: service.Service | None = None,
        dataplane: DataPlaneService | None = None,
        database: service.Service | None = None,
        sessions: SessionRunner | None = None,
        management: ManagementService | None = None,
        liveness: NodeLivenessService | None = None,
        startup: Startup | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.startup = startup
        self.l2tp = l2tp
        self.pool = pool
        self.radius = radius
        self.accounting = accounting
        self.dynauth = dynauth
        self.dataplane = dataplane
        self.database = database
        self.sessions = sessions
        self.management = management
        self.liveness = liveness
        # Stopped in reverse: L2TP first (sessions end, their Stops are spooled), then the
        # node row says it stopped cleanly, then accounting flushes (the pool finishing
        # its releases meanwhile), the database last.
        order = (
            database,
            pool,
            radius,
            accounting,
            liveness,
            dynauth,
            dataplane,
            l2tp,
            management,
        )
        self._order = [c for c in order if c is not None]
        for child in self._order:
            child.setServiceParent(self)

    def privilegedStartService(self) -> None:
        # Sockets and the TUN device, while twistd may still be root (STYLE.md section 4).
        service.Service.privilegedStartService(self)
        for child in self._order:
            try:
                child.privilegedStartService()
            except Exception as exc:
                if self.startup is None:
                    raise
                raise self.startup.failure(child, exc) from exc

    def startService(self) -> None:
        if self.startup is not None:
            self.startup.begin()  # the database, before any service starts a thread
        if self.liveness is not None:
            pool = self.pool
            if isinstance(pool, AddressPoolService) and pool.migrate:
                database.upgrade(pool.pool.engine)  # the node table must exist to register in
            try:
                self.liveness.register()  # before anything serves: a live twin stops us here
            except NodeAlive as exc:
                if self.startup is None:
                    raise
                raise StartupError(f"[lns] node_name: {exc}") from exc
        super().startService()  # type: ignore[no-untyped-call]
        if self.startup is not None:
            self.startup.started()

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        # No cyclic garbage collection while the node stops: its full passes over every
        # session's objects cost more than the stop itself (10,000 sessions: about 5 s, not 3).
        collecting = gc.isenabled()
        gc.disable()
        stopped = defer.ensureDeferred(self._stop_in_order())
        if collecting:
            stopped.addBoth(_collecting_again)
        return stopped

    async def _stop_in_order(self) -> None:
        early: dict[service.IService, defer.Deferred[None]] = {}
        for child in reversed(self._order):
            if child is self.accounting and self.pool is not None:
                # The pool finishes the releases of the sessions just ended while accounting
                # sends its last records: both need only the database, which stops after.
                early[self.pool] = _stopping(self.pool)
            await (early.pop(child, None) or _stopping(child))


def _stopping(child: service.IService) -> defer.Deferred[None]:
    """`child` stopping; a failure is its own to log: the others stop all the same."""
    return defer.maybeDeferred(child.stopService).addErrback(lambda _: None)


def _collecting_again(result: _T) -> _T:
    gc.enable()
    return result


def make_service(
    config: Config,
    reactor: IReactorTime | None = None,
    authenticator: Authenticator[defer.Deferred[Decision]] | None = None,
    allocator: AddressAllocator[defer.Deferred[Any]] | None = None,
) -> NodeService:
    """Every service of the node. Tests inject their own AAA or allocator."""
    reactor = default_reactor(reactor)
    acct_session_ids = AcctSessionIds(config.lns.node_name, reactor.seconds())
    # The work a storm starts (calls and frames read, RADIUS answers, addresses from a
    # commit, accounting records to send), a slice per reactor turn: the L2TP socket is
    # read again between slices.
    backlog = Backlog(reactor, WORK_SLICE)
    radius: RadiusAuthenticator | None = None
    radius_service: RadiusClientService | None = None
    if authenticator is None and config.aaa.radius:
        radius = RadiusAuthenticator.from_config(config, reactor, backlog)
        radius_service = RadiusClientService(radius.client)
        authenticator = radius
    executor: Executor | None = None
    pool_service: AddressPoolService | None = None
    if allocator is None:
        try:
            engine = database.create_engine(config.database.url, pool_size=SQL_THREADS)
        except database.DatabaseUrlError as exc:
            raise StartupError(f"[database] url {exc}") from None
        if config.database.worker == "process":
            executor = ProcessSqlExecutor(
                engine, config.database.url, IReactorProcess(reactor), threads=SQL_THREADS
            )
        else:
            executor = SqlExecutor(
                engine, threads=SQL_THREADS, reactor=IReactorFromThreads(reactor)
            )
        pool = SqlAddressPool(
            executor,
            config.lns.node_name,
            default_pool=config.database.default_pool,
            clock=reactor,
            backlog=backlog,
        )
        pool_service = AddressPoolService(pool, migrate=config.database.migrate_on_start)
        allocator = pool
    accounting: RadiusAccounting | None = None
    spool_of: Callable[[str], RadiusAccounting] | None = None
    if radius is not None and executor is not None:
        # Records are spooled in the node's database before they are sent.
        client, nas = radius.client, NasIdentity.from_config(config)

        def pump(node: str) -> RadiusAccounting:
            """The pump of a node's spool: this node's, or an adopted dead node's."""
            return RadiusAccounting(
                client, executor, node, nas, acct_session_ids, reactor, backlog=backlog
            )

        spool_of = pump
        accounting = pump(config.lns.node_name)
    dataplane = make_dataplane(
        config.dataplane.mode,
        config.dataplane.tun_name,
        config.ppp.local_address,
        config.dataplane.mss_clamp,
        reactor,
    )
    supervisor = SessionSupervisor(
        supervisor_settings(config, accounting is not None),
        ppp_settings(config),
        iter(acct_session_ids, None),
        random.SystemRandom(),
    )
    sessions = SessionRunner(
        supervisor,
        authenticator if authenticator is not None else NoAuthenticator(NO_AAA),
        allocator,
        dataplane,
        reactor,
        accounting,
    )
    endpoint = LnsEndpoint(
        tunnel_settings(config),
        lac_matches(config),
        setups_elsewhere=lambda: supervisor.setups_in_progress,
    )
    # One budget for the stop's waits: the StopCCNs' acks and the last accounting records.
    stop_grace = StopGrace(reactor, STOP_GRACE)
    l2tp = L2tpService(
        endpoint,
        (config.l2tp.listen_host, config.l2tp.listen_port),
        reactor=reactor,
        calls=sessions,
        stop_grace=stop_grace,
        backlog=backlog,
        read_batch=READ_BATCH,
    )
    sessions.link = l2tp
    dataplane.link = l2tp
    liveness: NodeLivenessService | None = None
    accounting_service: RadiusAccountingService | None = None
    if executor is not None and pool_service is not None:
        liveness = _liveness(config, executor, pool_service, sessions, reactor, spool_of)
        accounting_service = (
            RadiusAccountingService(accounting, liveness.registered, stop_grace)
            if accounting is not None
            else None
        )
    dynauth = (
        DynamicAuthorizationService.from_config(config, sessions, IReactorUDP(reactor))
        if config.aaa.dynauth is not None
        else None
    )
    dataplane_service = DataPlaneService(dataplane, config.ppp.local_address, config.ppp.mru)
    management = (
        make_management(
            config.management,
            NodeState(
                config.lns.node_name,
                reactor,
                sessions,
                l2tp,
                dataplane,
                radius_service,
                executor,
                accounting=accounting is not None,
            ),
            IReactorTCP(reactor),
        )
        if config.management is not None
        else None
    )
    startup = Startup.of_node(
        config,
        l2tp=l2tp,
        dynauth=dynauth,
        dataplane=dataplane_service,
        management=management,
        database=executor is not None,
    )
    return NodeService(
        l2tp,
        pool_service,
        radius_service,
        accounting_service,
        dynauth,
        dataplane_service,
        SqlExecutorService(executor) if executor is not None else None,
        sessions,
        management,
        liveness,
        startup,
    )


def _liveness(
    config: Config,
    executor: Executor,
    pool_service: AddressPoolService,
    sessions: SessionRunner,
    reactor: IReactorTime,
    spool_of: Callable[[str], RadiusAccounting] | None,
) -> NodeLivenessService:
    """This node among the nodes of its database: row, heartbeat, adoption, lease watch.

    They run on a thread of their own in the node's process, never queued behind the
    allocations and spool writes of a setup storm on the node's SQL executor: a node
    whose heartbeat waited for those could be declared dead while it serves.
    """
    node = config.lns.node_name
    executor = SqlExecutor(executor.engine, threads=1, reactor=IReactorFromThreads(reactor))
    listen = f"{config.l2tp.listen_host}:{config.l2tp.listen_port}"
    liveness = NodeLiveness(
        executor,
        identity_of(node, listen),
        reactor,
        heartbeat_interval=config.lns.heartbeat_interval,
        dead_after=config.lns.dead_after,
        supervisor=sessions.supervisor,
        abandon=sessions.abandon,
        spool_pump=spool_of,
    )
    watch = LeaseWatch(
        executor,
        node,
        reactor,
        sessions.supervisor,
        sessions.lease_lost,
        config.lns.heartbeat_interval,
    )
    notices = None
    if executor.engine.dialect.name == "postgresql":
        url = executor.engine.url.set(drivername="postgresql")
        notices = LeaseNotices(
            url.render_as_string(hide_password=False),
            IReactorFDSet(reactor),
            reactor,
            watch.notified,
        )
    return NodeLivenessService(liveness, watch, notices, executor)
