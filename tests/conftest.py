"""Fixtures every test directory may use: the session's FreeRADIUS and network namespaces.

Plain helpers live in the test-support package ``lns.testing``; only pytest fixtures
live here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from lns.testing import sims
from lns.testing.freeradius import FreeRadius, FreeRadiusError, ensure_freeradius
from lns.testing.netns import NetNs, can_create_namespaces, delete_stale_namespaces
from lns.testing.ports import free_udp_port


@pytest.fixture(scope="session")
def freeradius_binary() -> str:
    """The path of `freeradius`, installed first if need be.

    Skips, saying why, only when the install fails; a server that is installed but
    does not start is an error (see `freeradius`).
    """
    try:
        return ensure_freeradius()
    except FreeRadiusError as exc:
        pytest.skip(f"FreeRADIUS could not be installed: {exc}")


@pytest.fixture(scope="session")
def freeradius(freeradius_binary: str) -> Iterator[FreeRadius]:
    """The one FreeRADIUS of the test session, on free loopback ports, knowing
    `lns.testing.sims` (secret `sims.RADIUS_SECRET`)."""
    server = FreeRadius(sims.RADIUS_SECRET, sims.USERS, free_udp_port(), free_udp_port())
    server.start(freeradius_binary)  # raises (an error, not a skip) when it does not come up
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def require_namespaces() -> None:
    """Skips the test when namespaces are unavailable, or fails it with LNS_REQUIRE_NETNS=1
    (set in CI, where a skip would hide a broken setup)."""
    reason = can_create_namespaces()
    if reason is None:
        return
    if os.environ.get("LNS_REQUIRE_NETNS") == "1":
        pytest.fail(f"LNS_REQUIRE_NETNS=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def netns_factory(require_namespaces: None) -> Iterator[Callable[[], NetNs]]:
    """``netns_factory()`` creates a namespace; all of them are deleted at teardown."""
    delete_stale_namespaces()
    created: list[NetNs] = []

    def create() -> NetNs:
        namespace = NetNs.create()
        created.append(namespace)
        return namespace

    try:
        yield create
    finally:
        for namespace in reversed(created):
            namespace.delete()
