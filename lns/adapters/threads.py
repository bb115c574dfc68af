"""Blocking work on a bounded thread pool, with the calls in progress kept for a clean stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

_T = TypeVar("_T")


def run_tracked(
    reactor: IReactorFromThreads,
    threadpool: ThreadPool,
    in_flight: set[defer.Deferred[Any]],
    work: Callable[..., _T],
    *args: Any,
) -> defer.Deferred[_T]:
    """``work(*args)`` on ``threadpool``; its Deferred sits in ``in_flight`` until it fires."""
    d: defer.Deferred[_T] = deferToThreadPool(reactor, threadpool, work, *args)
    in_flight.add(d)

    def done(result: object) -> object:
        in_flight.discard(d)
        return result

    d.addBoth(done)
    return d
