"""Reload on SIGHUP: the configuration file read again and applied to the running node.

DESIGN.md sections 7 and 10. Without a handler, SIGHUP's default action ends the
process at once (Twisted handles SIGINT and SIGTERM, never SIGHUP), with no StopCCN
and no accounting Stop; :meth:`ConfigReload.install` makes it a reload instead.

A reload is all or nothing for what it may change:

- The file is read and validated as at start; an unreadable or invalid file changes
  nothing and is one log line saying why.
- Everything below is built before anything is applied (a RadSec key that cannot be
  read refuses the reload like an invalid file), then applied at once, between two
  reactor events: LACs (added, removed, new secret or limits: the endpoint's table,
  for new tunnels), the ``[l2tp]`` timers and limits, RADIUS servers (a new client
  takes new requests; the old one finishes those in flight, then closes), the
  Access-Request and accounting NAS identity, dynauth clients and checks, the PPP
  policies, MRU, DNS and keepalive and the ``[aaa]`` templates and interim interval
  (for new sessions), ``[database] default_pool``, ``[dataplane] mss_clamp``, the
  management token and ``metrics_public``.
- What the running node cannot change (sockets, the TUN device, the database, the
  node's name, sections that were absent or are removed) keeps its running value,
  each named in one log line; the rest still applies.
- Live tunnels and sessions are left alone: a tunnel keeps the LAC entry it was
  authenticated with (a removed LAC's tunnels stay until they end, and the log says
  so), a session the PPP settings it started with.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFromThreads,
    IReactorTime,
    IReactorUDP,
)
from twisted.logger import Logger

from aaa.radius.accounting import RadiusAccountingService
from aaa.radius.attributes import NasIdentity
from aaa.radius.auth import AccessRequestSettings, RadiusAuthenticator
from aaa.radius.client import RadiusClient, RadiusClientService
from aaa.radius.dae import DynamicAuthorizationService
from lns.adapters.pool import AddressPoolService
from lns.adapters.services import (
    NodeService,
    lac_matches,
    ppp_settings,
    supervisor_settings,
    tunnel_settings,
)
from lns.config import Config, ConfigError, load_config
from lns.runtime import default_reactor

__all__ = ["ConfigReload", "ReloadOutcome", "enable_reload"]

# Leaf keys (dataclass field paths of Config) a reload applies. A changed key not
# listed here, or a section that appears or disappears, needs a restart.
LIVE: frozenset[tuple[str, ...]] = frozenset(
    {
        *(
            ("l2tp", key)
            for key in (
                "hostname",
                "hello_interval",
                "receive_window",
                "retransmit_initial",
                "retransmit_cap",
                "retransmit_max",
                "hide_avps",
                "max_tunnels",
                "max_tunnels_setting_up",
                "max_connecting_calls",
                "max_setups_in_progress",
                "lacs",
            )
        ),
        *(
            ("ppp", key)
            for key in (
                "mru",
                "dns",
                "echo_interval",
                "echo_failures",
                "lcp_renegotiation",
                "no_proxy_auth",
                "auth",
            )
        ),
        *(
            ("aaa", key)
            for key in (
                "username",
                "iccid_password",
                "nas_identifier",
                "require_message_authenticator",
                "interim_interval",
                "radius",
            )
        ),
        *(
            ("aaa", "dynauth", key)
            for key in (
                "clients",
                "require_message_authenticator",
                "require_event_timestamp",
                "event_timestamp_window",
            )
        ),
        ("database", "default_pool"),
        ("database", "migrate_on_start"),  # read at start only: nothing to apply
        ("dataplane", "mss_clamp"),
        ("management", "token"),
        ("management", "metrics_public"),
    }
)
# How a field is written in the file, where the two differ.
_KEY_NAMES = {
    "listen_host": "listen",
    "listen_port": "listen",
    "lacs": "[[l2tp.lac]]",
    "radius": "[[aaa.radius]]",
    "clients": "[[aaa.dynauth.client]]",
}
# Sections that may be absent (None), named as tables.
_OPTIONAL_SECTIONS = frozenset({("aaa", "dynauth")})
_DRAIN_POLL = 1.0  # seconds between checks that the old RADIUS client is idle
_DRAIN_LIMIT = 120.0  # the old client is closed after this, idle or not

log = Logger()


@dataclass
class ReloadOutcome:
    """What one reload did: applied (keys), refused (keys needing a restart), or why not."""

    applied: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    error: str | None = None


def key_name(path: tuple[str, ...]) -> str:
    """``("l2tp", "listen_host")`` as the file writes it: ``[l2tp] listen``."""
    if len(path) == 1 or path in _OPTIONAL_SECTIONS:
        return f"[{'.'.join(path)}]"
    name = _KEY_NAMES.get(path[-1], path[-1])
    if name.startswith("[["):
        return name
    return f"[{'.'.join(path[:-1])}] {name}"


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf of the configuration by field path; an absent section is one leaf (None),
    an array of tables one leaf (its tuple)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _leaves(getattr(value, item.name), (*path, item.name))
    else:
        yield path, value


def _replace_at(config: Any, path: tuple[str, ...], value: Any) -> Any:
    head, *rest = path
    inner = value if not rest else _replace_at(getattr(config, head), tuple(rest), value)
    return dataclasses.replace(config, **{head: inner})


def _get_at(config: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        config = getattr(config, part)
    return config


def changes(old: Config, new: Config) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The changed leaves a reload applies, and those that need a restart (the shortest
    path of each: a section that came or went is one)."""
    before, after = dict(_leaves(old)), dict(_leaves(new))
    missing = object()
    changed = sorted(
        path
        for path in before.keys() | after.keys()
        if before.get(path, missing) != after.get(path, missing)
    )
    live: list[tuple[str, ...]] = []
    refused: list[tuple[str, ...]] = []
    for path in changed:
        if any(path[: len(done)] == done for done in refused):
            continue  # inside a section that came or went
        if path not in after or path not in before:
            # One side has the section, the other not: refuse the section as a whole.
            prefixes = (path[:n] for n in range(1, len(path) + 1))
            refused.append(next(p for p in prefixes if _absent(old, new, p)))
        elif path in LIVE:
            live.append(path)
        else:
            refused.append(path)
    if (not old.aaa.radius) != (not new.aaa.radius):
        # A node started without RADIUS has no accounting to give one, and one with
        # RADIUS keeps its accounting spool going: either way, a restart.
        live.remove(("aaa", "radius"))
        refused.append(("aaa", "radius"))
    return live, refused


def _absent(old: Config, new: Config, path: tuple[str, ...]) -> bool:
    return (_get_at(old, path) is None) != (_get_at(new, path) is None)


class ConfigReload:
    """Reloads ``path`` into ``node``; see the module docstring."""

    def __init__(
        self,
        node: NodeService,
        config: Config,
        path: str | os.PathLike[str],
        reactor: IReactorTime | None = None,
    ) -> None:
        self.node = node
        self.config = config  # what the node runs with now
        self.path = os.fspath(path)
        self.reactor: IReactorTime = default_reactor(reactor)
        self.reloads = 0

    # --- the signal ---------------------------------------------------------------------

    def install(self) -> None:
        """SIGHUP reloads (from the reactor thread, between two events)."""
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        IReactorFromThreads(self.reactor).callFromThread(self._reload_from_signal)

    def _reload_from_signal(self) -> None:
        if not self.node.running:
            log.info("SIGHUP ignored: the node is stopping")
            return
        self.reload()  # its outcome is one log line (and one per key kept)

    # --- the reload ---------------------------------------------------------------------

    def reload(self) -> ReloadOutcome:
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            log.error("reload refused, nothing changed: {error}", error=str(exc))
            return ReloadOutcome(error=str(exc))
        live, refused = changes(self.config, new)
        effective = new
        for path in refused:
            effective = _replace_at(effective, path, _get_at(self.config, path))
        problem = _insecure(effective)
        if problem is not None:
            log.error("reload refused, nothing changed: {error}", error=problem)
            return ReloadOutcome(error=problem)
        radius_changed = ("aaa", "radius") in live or (
            "aaa",
            "require_message_authenticator",
        ) in live
        try:
            client = self._new_radius_client(effective) if radius_changed else None
        except ValueError as exc:  # TlsSetupError: a RadSec file that cannot be used
            error = f"{self.path}: [[aaa.radius]]: {exc}"
            log.error("reload refused, nothing changed: {error}", error=error)
            return ReloadOutcome(error=error)
        refused_keys = list(dict.fromkeys(key_name(path) for path in refused))
        for key in refused_keys:
            log.warn(
                "reload: {key} cannot change while the node runs; it keeps its running"
                " value until a restart",
                key=key,
            )
        self._apply(effective, client)
        self._log_lacs(self.config, effective)
        self.config = effective
        self.reloads += 1
        outcome = ReloadOutcome(applied=sorted({key_name(p) for p in live}), refused=refused_keys)
        log.info(
            "configuration reloaded from {path}: {applied}{refused}",
            path=self.path,
            applied=", ".join(outcome.applied) if outcome.applied else "nothing changed",
            refused=f" ({len(refused_keys)} key(s) need a restart)" if refused_keys else "",
        )
        return outcome

    def _new_radius_client(self, config: Config) -> RadiusClient | None:
        old = self.node.radius
        if not isinstance(old, RadiusClientService) or not config.aaa.radius:
            return None
        client = RadiusClient(
            config.aaa.radius,
            IReactorUDP(self.reactor),
            config.aaa.require_message_authenticator,
            clock=self.reactor,
        )
        # The same server port keeps its counters (metrics are counters: they never go back).
        before = {(port.kind, port.label): port for port in old.client.ports}
        for port in client.ports:
            previous = before.get((port.kind, port.label))
            if previous is not None:
                port.stats = previous.stats
        return client

    def _apply(self, config: Config, client: RadiusClient | None) -> None:
        node = self.node
        endpoint = node.l2tp.endpoint
        endpoint.settings = tunnel_settings(config)
        endpoint.lacs = tuple(lac_matches(config))
        runner = node.sessions
        if runner is not None:
            supervisor = runner.supervisor
            supervisor.ppp_settings = ppp_settings(config)
            supervisor.settings = supervisor_settings(config, supervisor.settings.accounting)
            if isinstance(runner.authenticator, RadiusAuthenticator):
                runner.authenticator.settings = AccessRequestSettings.from_config(config)
        accounting = node.accounting
        if isinstance(accounting, RadiusAccountingService):
            accounting.accounting.nas = NasIdentity.from_config(config)
        if client is not None:
            self._swap_radius_client(client)
        dynauth, section = node.dynauth, config.aaa.dynauth
        if isinstance(dynauth, DynamicAuthorizationService) and section is not None:
            server = dynauth.server
            server.clients = {c.address: c for c in section.clients}
            server.nas_identifier = config.aaa.nas_identifier
            server.require_message_authenticator = section.require_message_authenticator
            server.require_event_timestamp = section.require_event_timestamp
            server.event_timestamp_window = section.event_timestamp_window
        if isinstance(node.pool, AddressPoolService):
            node.pool.pool.default_pool = config.database.default_pool
        if node.dataplane is not None:
            node.dataplane.dataplane.forwarder.mss_clamp = config.dataplane.mss_clamp
        management = node.management
        if management is not None and config.management is not None:
            management.api.settings = config.management

    def _swap_radius_client(self, client: RadiusClient) -> None:
        node = self.node
        assert isinstance(node.radius, RadiusClientService)
        old = node.radius.client
        client.start()
        node.radius.client = client
        runner = node.sessions
        if runner is not None and isinstance(runner.authenticator, RadiusAuthenticator):
            runner.authenticator.client = client
        if isinstance(node.accounting, RadiusAccountingService):
            node.accounting.accounting.client = client
        self._drain(old, 0.0)

    def _drain(self, old: RadiusClient, waited: float) -> None:
        """Close the old client once its requests in flight are answered (or given up)."""
        if old.in_flight and waited < _DRAIN_LIMIT:
            self.reactor.callLater(_DRAIN_POLL, self._drain, old, waited + _DRAIN_POLL)
            return
        old.stop()

    @staticmethod
    def _log_lacs(old: Config, new: Config) -> None:
        before = {lac.name: lac for lac in old.l2tp.lacs}
        after = {lac.name: lac for lac in new.l2tp.lacs}
        for name in sorted(after.keys() - before.keys()):
            log.info("reload: LAC {lac} added", lac=name)
        for name in sorted(before.keys() & after.keys()):
            if before[name] != after[name]:
                log.info("reload: LAC {lac} changed (its new tunnels use the new entry)", lac=name)
        for name in sorted(before.keys() - after.keys()):
            log.info("reload: LAC {lac} removed; its live tunnels stay until they end", lac=name)


def _insecure(config: Config) -> str | None:
    section = config.management
    if section is None or section.token is not None:
        return None
    if ipaddress.ip_address(section.listen_host).is_loopback:
        return None
    return (
        f"[management] token: required when listen is not a loopback address"
        f" ({section.listen_host}), and the running listen stays"
    )


def enable_reload(
    node: NodeService,
    config: Config,
    path: str | os.PathLike[str],
    reactor: IReactorTime | None = None,
) -> ConfigReload:
    """SIGHUP reloads ``path`` into ``node`` once the reactor runs (``twistd lns``)."""
    reload = ConfigReload(node, config, path, reactor)
    IReactorCore(reload.reactor).callWhenRunning(reload.install)
    return reload
