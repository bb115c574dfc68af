"""This node among the nodes sharing its database (DESIGN.md section 9), on the reactor.

:class:`NodeLiveness` keeps the node's row: it registers at start (refusing to run
under the name of a live node, and writing the Stops of the sessions a crashed
previous run of this node left behind), moves its heartbeat every
`heartbeat_interval`, and at each beat claims the nodes that have been silent for
`dead_after`: for each one it claims (exactly one node does), it writes the Stops of
the dead node's sessions and ends its leases in the claiming transaction, then
delivers the dead node's spool with a pump of its own and marks the adoption done.
A node that finds its own row adopted (it was cut off long enough to be declared
dead) ends its sessions without accounting: their Stops were written by the adopter.

:class:`LeaseWatch` finds sessions whose lease was taken over by a newer attach of
the same SIM on another node: at once through PostgreSQL's NOTIFY when the database
is PostgreSQL, and by comparing the leases the database says this node holds with
its sessions every `interval` on any database. Such a session ends (CDN, Stop)
without releasing the lease, which belongs to the other node now.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aaa.radius.adoption import Adopted, adopt_dead, write_stops
from lns.db import nodes
from lns.db.executor import Executor
from lns.pool.allocator import LEASE_CHANNEL
from lns.pool.models import PoolAddress
from lns.sessions.supervisor import SessionSupervisor

__all__ = ["LeaseWatch", "NodeLiveness", "NodeLivenessService", "identity_of"]

log = Logger()


def identity_of(node: str, address: str) -> nodes.NodeIdentity:
    """This process as the node table records it."""
    return nodes.NodeIdentity(
        name=node,
        instance=uuid.uuid4().hex,
        address=address,
        version=_version(),
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def _version() -> str:
    try:
        return importlib.metadata.version("lns")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def process_gone(host: str, pid: int) -> bool:
    """True when (host, pid) is a process of this machine that no longer runs."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def register(
    engine: Engine,
    me: nodes.NodeIdentity,
    now: datetime,
    dead_after: float,
    gone: Callable[[str, int], bool] = process_gone,
) -> nodes.NodeState | None:
    """Register at start, blocking (before any thread runs); raises nodes.NodeAlive.

    When the previous run of this node crashed (no clean stop, not adopted), the Stops
    of its sessions are written now, into this node's spool, ahead of everything this
    run will send.
    """
    with engine.begin() as conn:
        previous = nodes.register(conn, me, now, dead_after, gone)
        if previous is not None and previous.stopped_at is None and previous.adopted_by is None:
            stops = write_stops(conn, me.name, previous.heartbeat_at)
            if stops:
                log.warn(
                    "node {node}: the previous run stopped without ending its sessions; "
                    "spooled the accounting Stop of {stops} of them",
                    node=me.name,
                    stops=stops,
                )
    return previous


class SpoolPump(Protocol):
    """An accounting pump for one node's spool (aaa.radius.accounting.RadiusAccounting)."""

    def start(self) -> defer.Deferred[None]: ...

    def stop(self) -> defer.Deferred[None]: ...

    def pending(self) -> defer.Deferred[int]: ...


class NodeLiveness:
    """This node's row and heartbeat, and the adoption of dead nodes; see the module."""

    def __init__(
        self,
        executor: Executor,
        me: nodes.NodeIdentity,
        clock: IReactorTime,
        *,
        heartbeat_interval: float,
        dead_after: float,
        supervisor: SessionSupervisor,
        abandon: Callable[[str], None],
        spool_pump: Callable[[str], SpoolPump] | None = None,
    ) -> None:
        self.executor = executor
        self.me = me
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after
        self.supervisor = supervisor
        self.abandon = abandon  # ends every session without accounting (we were adopted)
        self.spool_pump = spool_pump  # None: no accounting, nothing to deliver
        self.adopted: list[Adopted] = []
        self._beat: IDelayedCall | None = None
        self._pumps: dict[str, SpoolPump] = {}
        self._running = False
        self._failing = False

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    # --- life cycle -----------------------------------------------------------------------

    def register(self) -> nodes.NodeState | None:
        """Write this node's row at start, blocking, before any thread or socket serves
        (raises nodes.NodeAlive); the row of the previous run (None the first time)."""
        return register(self.executor.engine, self.me, self._now(), self.dead_after)

    async def adoption_finished(self, previous: nodes.NodeState | None) -> None:
        """Wait while another node still delivers the spool of this node's previous run
        (it adopted it): this run's own records go after those."""
        while previous is not None and previous.adopted_by and not previous.adoption_done_at:
            adopter = await self.executor.transaction(nodes.adoption_state, previous.adopted_by)
            if adopter is None or not adopter.alive(self._now(), self.dead_after):
                break  # the adopter is gone too: this node delivers its spool itself
            log.info(
                "node {node}: waiting for {adopter} to deliver the accounting of this "
                "node's previous run",
                node=self.me.name,
                adopter=previous.adopted_by,
            )
            await task.deferLater(self.clock, self.heartbeat_interval, lambda: None)
            previous = await self.executor.transaction(nodes.adoption_state, self.me.name)

    def start(self) -> None:
        self._running = True
        self._schedule(0.0)

    def stop(self) -> defer.Deferred[None]:
        """A clean stop: the row says so (nothing to adopt); adopted spools stay for later."""
        self._running = False
        if self._beat is not None and self._beat.active():
            self._beat.cancel()
        self._beat = None
        pumps = [pump.stop() for pump in self._pumps.values()]
        self._pumps.clear()
        done = defer.DeferredList(pumps, consumeErrors=True)
        done.addCallback(lambda _: self.executor.transaction(nodes.stopped, self.me, self._now()))
        done.addErrback(lambda failure: log.failure("node row not marked stopped", failure))
        return done.addCallback(lambda _: None)

    def _schedule(self, delay: float) -> None:
        if self._running:
            self._beat = self.clock.callLater(delay, self._tick)

    # --- the heartbeat ----------------------------------------------------------------------

    def _tick(self) -> None:
        self._beat = None
        done = defer.ensureDeferred(self.beat())
        done.addErrback(self._failed)
        done.addBoth(lambda _: self._schedule(self.heartbeat_interval))

    async def beat(self) -> None:
        """One heartbeat, then the adoption of whatever died."""
        now = self._now()
        ours = await self.executor.transaction(nodes.heartbeat, self.me, now, len(self.supervisor))
        if self._failing:
            self._failing = False
            log.info("node {node}: heartbeat works again", node=self.me.name)
        if not ours:
            log.critical(
                "node {node} was declared dead and adopted by another node (or another "
                "process took its name): ending its sessions without accounting",
                node=self.me.name,
            )
            self.abandon("this node was declared dead and adopted by another node")
            return
        adopted = await self.executor.transaction(adopt_dead, self.me.name, now, self.dead_after)
        for dead in adopted:
            self.adopted.append(dead)
            log.warn(
                "adopted dead node {node} (silent since {since}): spooled {stops} accounting "
                "Stops, ended {leases} leases",
                node=dead.name,
                since=dead.heard_from.isoformat(timespec="seconds"),
                stops=dead.stops,
                leases=dead.leases,
            )
            self._deliver(dead.name)

    def _deliver(self, name: str) -> None:
        defer.ensureDeferred(self.deliver(name)).addErrback(self._failed)

    async def deliver(self, name: str) -> None:
        """Deliver the dead node's spool, then mark the adoption done."""
        if self.spool_pump is not None:
            pump = self._pumps.get(name)
            if pump is None:
                pump = self._pumps[name] = self.spool_pump(name)
            await pump.start()  # one pass over everything spooled
            if await pump.pending():
                # Not all acknowledged yet (RADIUS down?): the pump retries on its own
                # schedule; look again at the next beat.
                if self._running:
                    self.clock.callLater(self.heartbeat_interval, self._deliver, name)
                return
            self._pumps.pop(name, None)
            await pump.stop()
        if await self.executor.transaction(nodes.adoption_done, name, self.me.name, self._now()):
            log.info("adoption of node {node} done: its spool is delivered", node=name)

    def _failed(self, failure: Failure) -> None:
        if self._failing:
            return  # logged once per outage
        self._failing = True
        log.error(
            "node {node}: heartbeat or adoption failed (logged once until it works again): "
            "{reason}",
            node=self.me.name,
            reason=failure.getErrorMessage(),
        )


class NodeLivenessService(service.Service):
    """Registers the node before it serves, then beats and watches its leases.

    `register` runs first (the node service calls it before its children start): a live
    node under the same name stops this one there. `registered` fires once the row is
    written and any adoption of this node's previous run is done.
    """

    def __init__(
        self,
        liveness: NodeLiveness,
        watch: LeaseWatch,
        notices: LeaseNotices | None,
        executor: Executor | None = None,
    ) -> None:
        self.liveness = liveness
        self.watch = watch
        self.notices = notices
        self.executor = executor  # its own, started and stopped with it
        self.previous: nodes.NodeState | None = None
        self._up_yet = False
        self._waiters: list[defer.Deferred[None]] = []

    def registered(self) -> defer.Deferred[None]:
        """Fires once the node's row is written (never, if it could not be)."""
        if self._up_yet:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def register(self) -> None:
        """The node's row, written before the node serves (raises nodes.NodeAlive)."""
        self.previous = self.liveness.register()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.executor is not None:
            self.executor.start()
        waiting = defer.ensureDeferred(self.liveness.adoption_finished(self.previous))
        waiting.addCallbacks(self._up, self.liveness._failed)

    def _up(self, _: object) -> None:
        if not self.running:
            return
        self.liveness.start()
        self.watch.start()
        if self.notices is not None:
            self.notices.start()
        self._up_yet = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self.watch.stop()
        if self.notices is not None:
            self.notices.stop()
        stopped = self.liveness.stop()
        executor = self.executor
        if executor is not None:
            stopped.addCallback(lambda _: executor.stop())
        return stopped


# --- leases taken over by other nodes ----------------------------------------------------


def leases_of(conn: Connection, node: str) -> set[tuple[int, int]]:
    """(address as an integer, generation) of every live lease the database says `node`
    holds: integers, so the reactor compares tens of thousands of sessions' leases
    without formatting an address each."""
    rows = conn.execute(
        select(PoolAddress.address, PoolAddress.generation).where(PoolAddress.lease_node == node)
    )
    return {(int(ipaddress.IPv4Address(row.address)), row.generation) for row in rows}


class LeaseWatch:
    """Ends the sessions whose lease another node took over; see the module docstring."""

    def __init__(
        self,
        executor: Executor,
        node: str,
        clock: IReactorTime,
        supervisor: SessionSupervisor,
        lost: Callable[[Any], None],
        interval: float,
    ) -> None:
        self.executor = executor
        self.node = node
        self.clock = clock
        self.supervisor = supervisor
        self.lost = lost  # called with each record whose lease is gone
        self.interval = interval
        self._call: IDelayedCall | None = None
        self._running = False
        self._failing = False

    def start(self) -> None:
        self._running = True
        self._call = self.clock.callLater(self.interval, self._check)

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        self._call = None
        # The sessions holding a lease now: their leases are committed, so the query
        # below sees each one unless it was taken over (or ended by an operator).
        holding = [record for record in self.supervisor if record.lease is not None]
        done = self.executor.transaction(leases_of, self.node)
        done.addCallback(self._compare, holding)
        done.addErrback(self._check_failed)
        done.addBoth(self._again)

    def _check_failed(self, failure: Failure) -> None:
        if not self._failing:  # once per outage
            self._failing = True
            log.warn("lease check failed: {reason}", reason=failure.getErrorMessage())

    def _again(self, _: object) -> None:
        if self._running:
            self._call = self.clock.callLater(self.interval, self._check)

    def _compare(self, held: set[tuple[int, int]], holding: list[Any]) -> None:
        self._failing = False
        for record in holding:
            lease = record.lease
            if lease is None or self.supervisor.get(record.key) is not record:
                continue  # it ended meanwhile
            if (int(lease.address), lease.generation) not in held:
                self.lost(record)

    def notified(self, payload: str) -> None:
        """A NOTIFY on the lease channel: a lease was taken over; ours?"""
        try:
            notice = json.loads(payload)
            node, address, generation = notice["node"], notice["address"], notice["generation"]
        except (ValueError, KeyError, TypeError):
            log.warn("unreadable lease notice {payload!r}", payload=payload[:200])
            return
        if node != self.node:
            return
        try:
            record = self.supervisor.by_address(ipaddress.IPv4Address(address))
        except ValueError:
            log.warn("unreadable lease notice {payload!r}", payload=payload[:200])
            return
        lease = record.lease if record is not None else None
        if record is not None and lease is not None and lease.generation == generation:
            self.lost(record)


@implementer(IReadDescriptor)
class LeaseNotices:
    """PostgreSQL LISTEN on the lease channel, read by the reactor (no thread)."""

    def __init__(
        self,
        url: str,
        reactor: IReactorFDSet,
        clock: IReactorTime,
        deliver: Callable[[str], None],
        retry: float = 5.0,
    ) -> None:
        self.url = url
        self.reactor = reactor
        self.clock = clock
        self.deliver = deliver
        self.retry = retry
        self._connection: Any = None
        self._fd = -1
        self._retry_call: IDelayedCall | None = None
        self._running = False

    def start(self) -> None:
        self._running = True
        self._connect()

    def stop(self) -> None:
        self._running = False
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._close()

    def _connect(self) -> None:
        import psycopg

        self._retry_call = None
        try:
            connection = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            connection.execute(f"LISTEN {LEASE_CHANNEL}")
            connection.pgconn.nonblocking = 1
        except Exception as exc:
            log.warn(
                "lease notices: cannot LISTEN ({reason}); the periodic lease check goes on",
                reason=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
            self._later()
            return
        self._connection = connection
        # Our own descriptor for the reactor: libpq closes its socket when the server
        # cuts the connection, and the reactor must still be able to let go of ours.
        self._fd = os.dup(connection.pgconn.socket)
        self.reactor.addReader(self)

    def _later(self) -> None:
        if self._running:
            self._retry_call = self.clock.callLater(self.retry, self._connect)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self.reactor.removeReader(self)
            os.close(self._fd)
            self._fd = -1
            connection.close()

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "lease-notices"

    def doRead(self) -> None:
        connection = self._connection
        if connection is None:
            return
        pgconn = connection.pgconn
        try:
            pgconn.consume_input()
        except Exception:
            self._lost()
            return
        while True:
            notice = pgconn.notifies()
            if notice is None:
                break
            self.deliver(notice.extra.decode("utf-8", "replace"))

    def connectionLost(self, reason: Failure) -> None:
        self._lost()

    def _lost(self) -> None:
        log.warn("lease notices: connection lost; reconnecting")
        self._close()
        self._later()
