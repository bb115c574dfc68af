"""Network namespaces for tests that need real interfaces, addresses and routes.

The test process stays in the root namespace; what runs inside a namespace runs
as a child process through ``ip netns exec``. Every namespace is named
``lnst-<pid>-<n>`` so parallel runs never collide, and is deleted at teardown
even when the test fails (together with the processes started in it through
`NetNs.popen`). Addresses used inside must be private ones (10/8, 100.64/10)
that exist only in namespaces the test created.

Tests take the `netns_factory` fixture (tests/conftest.py), which skips with the
reason when the machine cannot create namespaces (not root, no ``ip``), or fails
instead when ``LNS_REQUIRE_NETNS=1`` (set in CI, where a skip would hide a broken setup).
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import subprocess
from types import TracebackType
from typing import Any

PREFIX = "lnst-"
COMMAND_TIMEOUT = 30.0
_counter = itertools.count(1)


def unique_name() -> str:
    return f"{PREFIX}{os.getpid()}-{next(_counter)}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, check=check, timeout=COMMAND_TIMEOUT
    )


class NetNs:
    """One named network namespace, with its loopback up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: list[subprocess.Popen[str]] = []

    @classmethod
    def create(cls, name: str | None = None) -> NetNs:
        namespace = cls(name or unique_name())
        _ip("netns", "add", namespace.name)
        try:
            namespace.ip("link", "set", "lo", "up")
        except BaseException:
            namespace.delete()
            raise
        return namespace

    def delete(self) -> None:
        """Stop the processes started here, then remove the namespace; safe to repeat."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=COMMAND_TIMEOUT)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self.processes.clear()
        _ip("netns", "delete", self.name, check=False)

    def run(
        self, *args: str, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it; output captured as text.

        Other keyword arguments (``cwd``, ``env``, ``input``...) go to `subprocess.run`.
        """
        kwargs.setdefault("timeout", COMMAND_TIMEOUT)
        return subprocess.run(
            self.exec_args(*args), capture_output=True, text=True, check=check, **kwargs
        )

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n NAME ...``: configure or inspect the namespace from outside."""
        return _ip("-n", self.name, *args, check=check)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start a command inside the namespace; it is killed when the namespace is deleted."""
        kwargs.setdefault("text", True)
        process: subprocess.Popen[str] = subprocess.Popen(self.exec_args(*args), **kwargs)
        self.processes.append(process)
        return process

    def exec_args(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def __enter__(self) -> NetNs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.delete()

    def __repr__(self) -> str:
        return f"NetNs({self.name!r})"


def veth(a: NetNs, a_if: str, a_addr_cidr: str, b: NetNs, b_if: str, b_addr_cidr: str) -> None:
    """A veth pair from ``a`` to ``b``, created directly inside them, addressed and up."""
    a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    for namespace, interface, cidr in ((a, a_if, a_addr_cidr), (b, b_if, b_addr_cidr)):
        namespace.ip("address", "add", cidr, "dev", interface)
        namespace.ip("link", "set", interface, "up")


@functools.cache
def can_create_namespaces() -> str | None:
    """None when this machine can create namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need the `ip` command (iproute2)"
    probe = unique_name()
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` fails: {exc.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


def delete_stale_namespaces() -> None:
    """Remove namespaces left by test runs whose process has died (a killed pytest)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split(" ", 1)[0]
        owner = re.fullmatch(rf"{PREFIX}(\d+)-\d+", name)
        if owner is not None and not os.path.exists(f"/proc/{owner.group(1)}"):
            _ip("netns", "delete", name, check=False)
