"""Start-up: everything a node needs is checked before it says it is up.

A node that half starts is worse than one that does not: it listens, refuses
every call, and keeps its LACs from failing over (issue 16). The node starts
in two steps, both before the reactor runs:

1. ``privilegedStartService`` (while twistd may still be root): the sockets are
   bound ([l2tp] listen, [aaa.dynauth] listen, [management] listen) and the TUN
   device is opened and configured. Nothing here starts a thread.
2. ``startService``: the database is opened, migrated or checked, and written
   to (`lns.db.preflight`), still before any thread starts; then the services
   start, the warnings are logged and the node says it is up.

Any failure is a `StartupError`: one line naming the configuration key and the
cause. ``twistd lns`` prints it alone on standard error and exits with status 1
(`lns.tap`): no traceback, and since no thread was started, nothing lingers.

Conditions that let the node run but not serve are warnings, logged at start:
no LAC configured (every tunnel refused), no RADIUS server (every session
refused), TUN mode with IPv4 forwarding off (nothing forwarded beyond the host).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from lns import __version__
from lns.adapters.tun import TunError
from lns.config import Config
from lns.db import preflight

__all__ = ["IP_FORWARD", "Startup", "StartupError", "explain_os_error", "startup_warnings"]

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

# What an operator can do about the errors a bind or an open reports.
_HINTS = {
    errno.EADDRINUSE: "another process is using this address and port",
    errno.EADDRNOTAVAIL: "no interface of this machine has this address",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
}


class StartupError(Exception):
    """The node cannot start; ``str()`` is one line: the key, then the cause."""


def explain_os_error(exc: BaseException) -> str:
    """One line for a failed bind or open: the system's reason and what to check."""
    if isinstance(exc, CannotListenError):
        inner = exc.socketError
        if isinstance(inner, BaseException):
            exc = inner
    if isinstance(exc, TunError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        reason = os.strerror(exc.errno)
        hint = _HINTS.get(exc.errno)
        return f"{reason} ({hint})" if hint else reason
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def startup_warnings(config: Config, ip_forward: Callable[[], str | None]) -> list[str]:
    """What lets the node run but not serve; `ip_forward` reads the sysctl (None: unknown)."""
    warnings = []
    if not config.l2tp.lacs:
        warnings.append("no [[l2tp.lac]] is configured: every tunnel will be refused")
    if not config.aaa.radius:
        warnings.append("no [[aaa.radius]] server is configured: every session will be refused")
    if config.dataplane.mode == "tun" and ip_forward() == "0":
        warnings.append(
            "net.ipv4.ip_forward is 0: no packet will be forwarded between sessions and "
            "the network (sysctl -w net.ipv4.ip_forward=1)"
        )
    return warnings


def read_ip_forward() -> str | None:
    try:
        return IP_FORWARD.read_text().strip()
    except OSError:
        return None


class Startup:
    """The node's start-up checks, given to its NodeService by `make_service`."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        *,
        check_database: bool = True,
        ip_forward: Callable[[], str | None] = read_ip_forward,
    ) -> None:
        self.config = config
        self.check_database = check_database
        self.ip_forward = ip_forward
        self._where: dict[object, str] = {}

    @classmethod
    def of_node(
        cls,
        config: Config,
        *,
        l2tp: object,
        dynauth: object | None,
        dataplane: object,
        management: object | None = None,
        database: bool,
    ) -> Startup:
        """The checks of a node whose services are these (`database`: it has an SQL pool)."""
        startup = cls(config, check_database=database)
        l2tp_key = _address(config.l2tp.listen_host, config.l2tp.listen_port)
        startup.where(l2tp, f"[l2tp] listen {l2tp_key}")
        if dynauth is not None and config.aaa.dynauth is not None:
            section = config.aaa.dynauth
            key = _address(section.listen_host, section.listen_port)
            startup.where(dynauth, f"[aaa.dynauth] listen {key}")
        startup.where(dataplane, f"[dataplane] tun_name {config.dataplane.tun_name}")
        if management is not None and config.management is not None:
            key = _address(config.management.listen_host, config.management.listen_port)
            startup.where(management, f"[management] listen {key}")
        return startup

    def where(self, child: object, key: str) -> None:
        """Name the configuration key behind a service, for its start-up failures."""
        self._where[child] = key

    def failure(self, child: object, exc: BaseException) -> StartupError:
        """The StartupError for a service whose sockets or device could not be opened."""
        key = self._where.get(child, type(child).__name__)
        return StartupError(f"{key}: {explain_os_error(exc)}")

    def begin(self) -> None:
        """Before any service starts: the version line, then the database (StartupError)."""
        config = self.config
        self.log.info(
            "lns {version} starting: node {node}, L2TP on {host}:{port}, data plane {mode}",
            version=__version__,
            node=config.lns.node_name,
            host=config.l2tp.listen_host,
            port=config.l2tp.listen_port,
            mode=config.dataplane.mode,
        )
        if not self.check_database:
            return
        database = config.database
        try:
            preflight.prepare(database.url, migrate=database.migrate_on_start)
        except preflight.DatabaseUnusable as exc:
            advice = ""
            if not database.migrate_on_start and "lns-admin db upgrade" in str(exc):
                advice = " or set [database] migrate_on_start = true"
            raise StartupError(f"[database] url {exc}{advice}") from None

    def started(self) -> None:
        """Every service is up: the warnings, then the line that says so."""
        for warning in startup_warnings(self.config, self.ip_forward):
            self.log.warn("{warning}", warning=warning)
        self.log.info(
            "lns {version} up: node {node}", version=__version__, node=self.config.lns.node_name
        )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
