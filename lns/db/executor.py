"""The node's one SQL executor: blocking database work on a bounded thread pool.

The address pool and the accounting spool both run their transactions here
(DESIGN.md section 6: nothing blocks the reactor, and SQL never queues behind or
ahead of anything in the reactor's shared thread pool). Each call is one
transaction on a connection of the engine's pool, which holds at least as many
connections as there are threads (SQLite: one connection, so its writers queue
first come, first served). The calls in progress are kept so that :meth:`stop`
lets them finish before the threads and connections go.

Database failures come back as :class:`DatabaseUnavailable`, one line without
the password, whatever the driver said.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

from lns.db.database import SchemaNotCurrent
from lns.runtime import default_reactor, run_tracked

__all__ = ["DatabaseUnavailable", "SqlExecutor", "SqlExecutorService"]

_T = TypeVar("_T")
_P = ParamSpec("_P")


class DatabaseUnavailable(Exception):
    """The database cannot be used now (unreachable, read-only, not migrated)."""


class SqlExecutor:
    def __init__(
        self, engine: Engine, *, threads: int = 4, reactor: IReactorFromThreads | None = None
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.engine = engine
        self._reactor: IReactorFromThreads = default_reactor(reactor)
        self._threadpool = ThreadPool(minthreads=0, maxthreads=threads, name="lns-sql")
        self._in_flight: set[defer.Deferred[Any]] = set()
        self._running = False

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._threadpool.start()

    def stop(self) -> defer.Deferred[None]:
        """Let the calls in progress finish, then stop the threads and close the connections."""
        was_running, self._running = self._running, False

        def shut(_: object) -> None:
            if was_running:
                self._threadpool.stop()
            self.engine.dispose()

        done: defer.Deferred[Any] = defer.DeferredList(list(self._in_flight), consumeErrors=True)
        return done.addCallback(shut)

    def transaction(
        self, work: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> defer.Deferred[_T]:
        """``work(connection, *args)`` in one transaction on a pool thread."""

        def run() -> _T:
            with self.engine.begin() as connection:
                return work(connection, *args, **kwargs)

        return self.call(run)

    def call(self, work: Callable[[], _T]) -> defer.Deferred[_T]:
        """``work()`` on a pool thread (it opens its own connections or transactions)."""
        if not self._running:
            return defer.fail(DatabaseUnavailable("the database executor is not running"))
        return run_tracked(self._reactor, self._threadpool, self._in_flight, _one_line, work)


def _one_line(work: Callable[[], _T]) -> _T:
    try:
        return work()
    except SchemaNotCurrent as exc:
        raise DatabaseUnavailable(str(exc)) from None
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        text = str(orig if orig is not None else exc).strip()
        line = text.splitlines()[0] if text else type(exc).__name__
        raise DatabaseUnavailable(f"database error: {line}") from None


class SqlExecutorService(service.Service):
    """Starts the executor first and stops it last, after everything that uses it."""

    def __init__(self, executor: SqlExecutor) -> None:
        self.executor = executor

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.executor.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.executor.stop()
