"""The node's one SQL executor: blocking database work off the reactor.

The address pool, the accounting spool and the node's liveness all run their
transactions here (DESIGN.md section 6: nothing blocks the reactor). Work is a
module-level function: :meth:`SqlExecutor.transaction` runs ``work(connection,
*args)`` in one transaction, :meth:`SqlExecutor.with_engine` runs ``work(engine,
*args)`` for work that manages its own transactions (migrations). Two executors
give the same interface:

- :class:`SqlExecutor`: a bounded thread pool in the node's process. Each call is
  one transaction on a connection of the engine's pool (SQLite: one connection, so
  its writers queue first come, first served).
- :class:`ProcessSqlExecutor` (``[database] worker = "process"``): the work runs
  in a child process (:mod:`lns.db.worker`), so SQLAlchemy and the database driver
  use another core than the reactor instead of competing with it for the GIL.
  Functions and their arguments and results cross by pickle.

The calls in progress are kept so that ``stop`` lets them finish first. Database
failures come back as :class:`DatabaseUnavailable`, one line without the password,
whatever the driver said.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorFromThreads, IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from lns.db import worker
from lns.db.database import SchemaNotCurrent
from lns.runtime import default_reactor, run_tracked

__all__ = [
    "DatabaseUnavailable",
    "Executor",
    "ProcessSqlExecutor",
    "SqlExecutor",
    "SqlExecutorService",
    "run_in_transaction",
    "run_with_engine",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")
log = Logger()


class DatabaseUnavailable(Exception):
    """The database cannot be used now (unreachable, read-only, not migrated)."""


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


def run_in_transaction(engine: Engine, work: Callable[..., _T], *args: Any) -> _T:
    """``work(connection, *args)`` in one transaction; database errors as one line."""

    def run() -> _T:
        _require_file(engine)
        with engine.begin() as connection:
            return work(connection, *args)

    return _recovering(engine, run)


def run_with_engine(engine: Engine, work: Callable[..., _T], *args: Any) -> _T:
    """``work(engine, *args)``; database errors as one line."""
    return _recovering(engine, lambda: work(engine, *args))


def _recovering(engine: Engine, work: Callable[[], _T]) -> _T:
    """After a database error the engine's connections are closed: the next call opens
    new ones, so the node recovers as soon as the database is usable again (a SQLite
    connection opened while its file was read-only stays read-only, for one)."""
    try:
        return _one_line(work)
    except DatabaseUnavailable:
        engine.dispose()
        raise


def _require_file(engine: Engine) -> None:
    """SQLite writes on into a database file that was deleted: refuse instead."""
    if engine.dialect.name != "sqlite":
        return
    path = engine.url.database
    if path and path != ":memory:" and not os.path.exists(path):
        raise DatabaseUnavailable(f"database error: the database file {path} is gone")


class Executor(Protocol):
    """What the node's SQL users need of an executor."""

    engine: Engine

    def transaction(
        self, work: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> defer.Deferred[_T]: ...

    def with_engine(
        self, work: Callable[Concatenate[Engine, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> defer.Deferred[_T]: ...

    def start(self) -> None: ...

    def stop(self) -> defer.Deferred[None]: ...


class SqlExecutor:
    """Database work on a bounded thread pool of the node's process."""

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
        return self._run(run_in_transaction, work, args)

    def with_engine(
        self, work: Callable[Concatenate[Engine, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> defer.Deferred[_T]:
        """``work(engine, *args)`` on a pool thread (it makes its own transactions)."""
        return self._run(run_with_engine, work, args)

    def _run(
        self, runner: Callable[..., _T], work: Callable[..., Any], args: tuple[Any, ...]
    ) -> defer.Deferred[_T]:
        if not self._running:
            return defer.fail(DatabaseUnavailable("the database executor is not running"))
        return run_tracked(
            self._reactor, self._threadpool, self._in_flight, runner, self.engine, work, *args
        )


class _WorkerProtocol(protocol.ProcessProtocol):
    def __init__(self, executor: ProcessSqlExecutor) -> None:
        self.executor = executor
        self.buffer = bytearray()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != 1:
            return
        self.buffer += data
        for number, ok, result in worker.decode_frames(self.buffer):
            self.executor._answered(number, ok, result)

    def processEnded(self, reason: Failure) -> None:
        self.executor._ended(self)
        self.ended.callback(None)


class ProcessSqlExecutor:
    """Database work in a child process (:mod:`lns.db.worker`); see the module docstring.

    `engine` stays in this process for the blocking work done before the node serves
    (registration); everything asked through the executor runs in the child.
    """

    def __init__(
        self,
        engine: Engine,
        url: str,
        reactor: IReactorProcess,
        *,
        threads: int = 4,
        python: str = sys.executable,
    ) -> None:
        self.engine = engine
        self._url = url
        self._reactor = reactor
        self._threads = threads
        self._python = python
        self._child: _WorkerProtocol | None = None
        self._pending: dict[int, defer.Deferred[Any]] = {}
        self._number = 0
        self._running = False

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._spawn()

    def _spawn(self) -> None:
        child = _WorkerProtocol(self)
        # The child imports the same lns as this process, wherever it was found.
        here = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
        self._reactor.spawnProcess(
            child,
            self._python,
            [self._python, "-m", "lns.db.worker"],
            env={**os.environ, "PYTHONPATH": path},
            childFDs={0: "w", 1: "r", 2: 2},
        )
        self._child = child
        # The URL (maybe with a password) goes by pipe, never on a command line.
        assert child.transport is not None
        child.transport.write(worker.frame((self._url, self._threads)))

    def stop(self) -> defer.Deferred[None]:
        """Let the calls in progress finish, then end the child (its input closed)."""
        self._running = False
        child = self._child
        pending = list(self._pending.values())
        done: defer.Deferred[Any] = defer.DeferredList(pending, consumeErrors=True)

        def close(_: object) -> defer.Deferred[None] | None:
            self.engine.dispose()
            if child is None or child.transport is None or self._child is not child:
                return None
            child.transport.closeStdin()
            return child.ended

        return done.addCallback(close).addCallback(lambda _: None)

    def transaction(
        self, work: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> defer.Deferred[_T]:
        return self._send("transaction", work, args)

    def with_engine(
        self, work: Callable[Concatenate[Engine, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> defer.Deferred[_T]:
        return self._send("engine", work, args)

    def _send(
        self, kind: str, work: Callable[..., Any], args: tuple[Any, ...]
    ) -> defer.Deferred[Any]:
        if not self._running:
            return defer.fail(DatabaseUnavailable("the database executor is not running"))
        if self._child is None:
            self._spawn()
        child = self._child
        assert child is not None
        assert child.transport is not None
        self._number += 1
        waiter: defer.Deferred[Any] = defer.Deferred()
        self._pending[self._number] = waiter
        child.transport.write(worker.frame((self._number, kind, work, args)))
        return waiter

    def _answered(self, number: int, ok: bool, result: Any) -> None:
        waiter = self._pending.pop(number, None)
        if waiter is None:
            return
        if ok:
            waiter.callback(result)
        else:
            waiter.errback(result if isinstance(result, BaseException) else RuntimeError(result))

    def _ended(self, child: _WorkerProtocol) -> None:
        if self._child is not child:
            return
        self._child = None
        pending, self._pending = self._pending, {}
        if pending or self._running:
            log.error("the SQL worker process ended; its calls in progress failed")
        for waiter in pending.values():
            waiter.errback(DatabaseUnavailable("the SQL worker process ended"))


class SqlExecutorService(service.Service):
    """Starts the executor first and stops it last, after everything that uses it."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.executor.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.executor.stop()
