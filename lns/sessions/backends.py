"""What the session supervisor's effects ask of AAA and of the address pool.

The contracts the back ends fulfil (RADIUS and the SQL pool in production; the
accounting back end's is in :mod:`lns.sessions.accounting`), owned here as
``AuthRequest``/``Decision`` are by the PPP core, so that the adapters carrying out
the effects depend on these and not on ``aaa`` or the pool's adapter. Generic over
what a call returns (a Twisted Deferred, in production).
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from lns.pool.allocator import AllocationRequest, Lease
from lns.ppp.auth import AuthRequest

__all__ = ["AddressAllocator", "Authenticator"]

_Answer = TypeVar("_Answer", covariant=True)


class Authenticator(Protocol[_Answer]):
    """The AAA back end: a Decision for each request (RADIUS in production)."""

    def authenticate(self, request: AuthRequest) -> _Answer: ...


class AddressAllocator(Protocol[_Answer]):
    """The address pool: a Lease for each request, and leases ended (SQL in production)."""

    def allocate(self, request: AllocationRequest) -> _Answer: ...

    def release(self, lease: Lease) -> _Answer: ...
