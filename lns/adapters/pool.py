"""The SQL address pool for the reactor: `lns.pool.allocator` on the node's SQL executor.

Allocation blocks on the database, so it runs on the node's
executor (lns.db.executor, DESIGN.md section 6). Allocations and releases
asked while a transaction runs share the next one (a group commit: one commit, on
SQLite one fsync, for the sessions that arrive together), each in a savepoint, so a
refusal rolls back only its own request.

`start()` prepares the database before the first allocation: it runs the
migrations when asked (`[database] migrate_on_start`) or checks the schema is
current, then ends every lease this node still holds from before its restart
(its sessions died with it). Allocations asked for meanwhile wait for it. When
it fails (PostgreSQL not up yet, schema not migrated), allocations fail at once
with the reason while it is tried again, backing off from `retry_initial` to
`retry_cap` seconds, until it succeeds or the pool is stopped.
"""

from __future__ import annotations

import enum
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from lns.db import database
from lns.db.executor import DatabaseUnavailable, Executor
from lns.pool import allocator
from lns.pool.allocator import AllocationRequest, Lease, PoolError, PoolUnavailable
from lns.runtime import Backlog

__all__ = ["AddressPoolService", "SqlAddressPool"]

_T = TypeVar("_T")
# At most this many allocations share a transaction; the releases asked among them ride
# along without a limit (a few statements for all: a stopping node ends thousands).
BATCH = 200


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


class SqlAddressPool:
    """`allocate(request) -> Deferred[Lease]` and `release(lease) -> Deferred[None]`.

    Failures are `lns.pool.allocator.PoolError`s: the refusals of the allocator
    (UnknownPool, PoolExhausted, AddressInUse, ...) and PoolUnavailable when the
    database cannot be used (its message is one line, without the password).
    """

    log = Logger()

    def __init__(
        self,
        executor: Executor,
        node: str,
        *,
        default_pool: str = "default",
        clock: IReactorTime | None = None,
        retry_initial: float = 1.0,
        retry_cap: float = 30.0,
        backlog: Backlog | None = None,
    ) -> None:
        """`clock` schedules the start-up retries (none without it); each session's
        answer from a transaction waits its turn in `backlog` (none: all at once)."""
        self.executor = executor
        self.engine = executor.engine
        self.node = node
        self.default_pool = default_pool
        self._clock = clock
        self._retry_initial = retry_initial
        self._retry_cap = retry_cap
        self._retry_delay = retry_initial
        self._retry: IDelayedCall | None = None
        self._migrate = False
        self._state = _State.NEW
        self._failure: PoolUnavailable | None = None
        self._waiters: list[defer.Deferred[None]] = []  # allocations waiting for a start
        self._ready_waiters: list[defer.Deferred[None]] = []  # when_ready(), across retries
        self._batch: list[tuple[AllocationRequest | Lease, defer.Deferred[Any]]] = []
        self._outage: float | None = None  # when the database became unusable
        self._batching = False
        self._drained: list[defer.Deferred[None]] = []  # `stop` waiting for the last batch
        self._backlog = backlog

    # --- Life cycle ---

    def start(self, *, migrate: bool = False) -> defer.Deferred[int]:
        """Migrate (or check) the schema, then end this node's leases from before.

        Fires with the number of leases ended, or fails with PoolUnavailable:
        then allocations fail with that reason while the start is tried again.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"SqlAddressPool.start() called when {self._state.value}")
        self._state = _State.STARTING
        self._migrate = migrate
        return self._attempt()

    def _attempt(self) -> defer.Deferred[int]:
        self._retry = None
        d = _pool_errors(self.executor.with_engine(_prepare, self._migrate, self.node))
        d.addCallbacks(self._started, self._start_failed)
        return d

    def _started(self, released: int) -> int:
        if self._state is _State.STOPPED:
            return released
        self._state = _State.READY
        self._failure = None
        self.log.info(
            "address pool ready on {database}: released {released} lease(s) "
            "that node {node} held before it started",
            database=database.safe_url(self.engine.url),
            released=released,
            node=self.node,
        )
        self._wake()
        return released

    def _start_failed(self, failure: Failure) -> Failure:
        if self._state is _State.STOPPED:
            return failure
        error = failure.value
        reason = str(error) if isinstance(error, PoolUnavailable) else repr(error)
        self._state = _State.FAILED
        retrying = ""
        if self._clock is not None:
            delay = self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, self._retry_cap)
            self._retry = self._clock.callLater(delay, self._retry_start)
            retrying = f" (trying again in {delay:g} s)"
        self._failure = PoolUnavailable(f"address pool not ready: {reason}{retrying}")
        self.log.error(
            "address pool on {database} not ready: {reason}{retrying}",
            database=database.safe_url(self.engine.url),
            reason=reason,
            retrying=retrying,
        )
        self._wake()
        return failure

    def _retry_start(self) -> None:
        # The failure was logged by _start_failed; nobody else waits on this one.
        self._attempt().addErrback(lambda _: None)

    def stop(self) -> defer.Deferred[None]:
        """Nothing new from now on; fires once what was asked before is done (the releases
        of the sessions a stopping node just ended), so the executor can stop after it."""
        if self._state is not _State.STOPPED:
            self._state = _State.STOPPED
            if self._retry is not None and self._retry.active():
                self._retry.cancel()
            self._retry = None
            self._wake()
        if not self._batching:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._drained.append(waiter)
        return waiter

    def when_ready(self) -> defer.Deferred[None]:
        """Fires once the pool is ready, after however many retries; fails if it is stopped."""
        if self._state is _State.READY:
            return defer.succeed(None)
        if self._state is _State.STOPPED:
            return defer.fail(self._unavailable())
        waiter: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    # --- The address interface ---

    def allocate(self, request: AllocationRequest) -> defer.Deferred[Lease]:
        """Lease an address to a session of this node (pool None: the default pool)."""
        return self._when_ready().addCallback(lambda _: self._queue(request))

    def release(self, lease: Lease) -> defer.Deferred[None]:
        """End the lease (the ICCID stays the address's last holder)."""
        done = self._when_ready().addCallback(lambda _: self._queue(lease))
        return done.addCallback(self._released, lease)

    def _queue(self, item: AllocationRequest | Lease) -> defer.Deferred[Any]:
        """One transaction at a time, for everything asked meanwhile (a group commit)."""
        waiter: defer.Deferred[Any] = defer.Deferred()
        self._batch.append((item, waiter))
        if not self._batching:
            self._next_batch()
        return waiter

    def _next_batch(self) -> None:
        taken = allocations = 0
        for item, _ in self._batch:
            if not isinstance(item, Lease):
                if allocations == BATCH:
                    break
                allocations += 1
            taken += 1
        batch, self._batch = self._batch[:taken], self._batch[taken:]
        self._batching = bool(batch)
        if not batch:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)
            return
        items = [item for item, _ in batch]
        work = _pool_errors(
            self.executor.transaction(allocator.run_batch, self.node, self.default_pool, items)
        )

        def answered(results: list[Lease | bool | PoolError]) -> None:
            # Up to BATCH sessions go on with their setup here: each in its turn.
            for (_, waiter), result in zip(batch, results, strict=True):
                if self._backlog is None:
                    _answer(waiter, result)
                else:
                    self._backlog.add(partial(_answer, waiter, result))

        def failed(failure: Failure) -> None:
            for _, waiter in batch:
                waiter.errback(failure)

        work.addCallbacks(self._usable, self._unusable)
        work.addCallbacks(answered, failed)
        work.addBoth(lambda _: self._next_batch())

    def _usable(self, result: _T) -> _T:
        if self._outage is not None:
            self.log.info(
                "address pool: the database is usable again (unavailable since {since:.0f} s)",
                since=self._clock.seconds() - self._outage if self._clock is not None else 0,
            )
            self._outage = None
        return result

    def _unusable(self, failure: Failure) -> Failure:
        if isinstance(failure.value, PoolUnavailable) and self._outage is None:
            self._outage = self._clock.seconds() if self._clock is not None else 0.0
            # Once per outage: every call refused meanwhile says only "temporarily
            # unavailable" to its LAC.
            self.log.error(
                "address pool: the database is unavailable, new sessions are refused "
                "until it is back: {reason}",
                reason=str(failure.value),
            )
        return failure

    def _released(self, ended: bool, lease: Lease) -> None:
        if not ended:
            self.log.info(
                "lease of {address} (ICCID {iccid}) had already ended",
                address=str(lease.address),
                iccid=lease.iccid,
            )

    # --- Plumbing ---

    def _when_ready(self) -> defer.Deferred[None]:
        if self._state is _State.READY:
            return defer.succeed(None)
        if self._state is _State.STARTING:
            waiter: defer.Deferred[None] = defer.Deferred()
            self._waiters.append(waiter)
            return waiter
        return defer.fail(self._unavailable())

    def _unavailable(self) -> PoolUnavailable:
        if self._state is _State.FAILED and self._failure is not None:
            return self._failure
        return PoolUnavailable(f"the address pool is {self._state.value}")

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        if self._state in (_State.READY, _State.STOPPED):
            waiters += self._ready_waiters
            self._ready_waiters = []
        for waiter in waiters:
            if self._state is _State.READY:
                waiter.callback(None)
            else:
                waiter.errback(self._unavailable())


def _answer(waiter: defer.Deferred[Any], result: Lease | bool | PoolError) -> None:
    if isinstance(result, PoolError):
        waiter.errback(result)
    else:
        waiter.callback(result)


def _prepare(engine: Engine, migrate: bool, node: str) -> int:
    """Migrate (or check) the schema, then end the leases `node` held before it started."""
    if migrate:
        database.upgrade(engine)
    else:
        database.require_current(engine)
    with engine.begin() as connection:
        return allocator.release_node(connection, node)


def _pool_errors(work: defer.Deferred[_T]) -> defer.Deferred[_T]:
    """Database failures as the pool's own one-line refusal, PoolUnavailable."""

    def unavailable(failure: Failure) -> Failure:
        if isinstance(failure.value, DatabaseUnavailable):
            raise PoolUnavailable(str(failure.value)) from None
        return failure

    return work.addErrback(unavailable)


class AddressPoolService(service.Service):
    """Starts and stops a SqlAddressPool with the node's other services."""

    def __init__(self, pool: SqlAddressPool, *, migrate: bool) -> None:
        self.pool = pool
        self.migrate = migrate
        self.ready: defer.Deferred[int] | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.ready = self.pool.start(migrate=self.migrate)
        # Logged by the pool; allocations fail with the reason. Keep it out of
        # "Unhandled error in Deferred".
        self.ready.addErrback(lambda _: None)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.pool.stop()
