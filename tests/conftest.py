"""Fixtures every test directory may use: the session's FreeRADIUS and network namespaces.

Plain helpers live in the test-support package ``lns.testing``; only pytest fixtures
live here.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

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


# --- the `integration` marker -------------------------------------------------------------

# A test that uses one of these fixtures starts or reaches a real component.
REAL_COMPONENT_FIXTURES = frozenset(
    {
        "freeradius",  # FreeRADIUS on loopback
        "freeradius_binary",  # the installed FreeRADIUS (apt-get when missing)
        "radclient",
        "netns_factory",  # network namespaces, TUN devices, processes inside them
        "require_namespaces",
        "postgres_schema_url",  # the PostgreSQL server
        "postgres_url",
        "lns_server",  # twistd -n lns as a process
    }
)
# Directories of tests/ whose every test starts a real component.
INTEGRATION_DIRECTORIES = ("integration",)
TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks `integration` every test that uses a real component's fixture or lives in an
    integration directory; modules elsewhere mark themselves (``pytestmark``) or their
    tests."""
    for item in items:
        directory = item.path.relative_to(TESTS).parts[0]
        if directory in INTEGRATION_DIRECTORIES or REAL_COMPONENT_FIXTURES.intersection(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test not marked `integration` that starts a process fails, saying so: the fast
    suite (``-m "not integration"``) stays fast and needs nothing installed."""
    if request.node.get_closest_marker("integration") is not None:
        return
    test = request.node.nodeid

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(
            f"{test} starts a process: mark it `integration` (pytest.mark.integration)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    for name in ("fork", "posix_spawn", "posix_spawnp"):
        monkeypatch.setattr(os, name, refuse)
