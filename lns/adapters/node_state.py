"""The running node as an operator sees it: sessions, tunnels, status (DESIGN.md section 10).

:class:`NodeState` reads the live objects (the session supervisor's records and
indexes, the L2TP endpoint's tunnels, the RADIUS client's counters) and turns them
into plain JSON-ready dicts for the management API (``lns.adapters.management``);
the Prometheus exporter (``lns.adapters.metrics``) reads the same objects. Nothing
here is kept or updated per packet: everything is computed when asked. The two
figures that live in the database (the accounting spool, pool usage) are fetched
on the SQL executor, bounded in time, and reported as unavailable when the
database does not answer.

Sessions are listed in the order they began; a page ends with the cursor of the
next (``after``), which stays valid while sessions come and go.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from aaa.radius import spool
from aaa.radius.client import RadiusClientService
from lns.adapters.dataplane import DataPlane
from lns.adapters.l2tp import L2tpService
from lns.adapters.sessions import SessionRunner
from lns.db.executor import Executor
from lns.iccid import InvalidIccid, parse_iccid
from lns.l2tp.avp import ResultCode
from lns.l2tp.result import StopCcnResult
from lns.l2tp.session import CallState
from lns.l2tp.tunnel import ControlConnection, TunnelState
from lns.pool import admin
from lns.ppp.termination import TerminateCause
from lns.sessions.record import SessionRecord, SessionState

__all__ = [
    "DatabaseFigures",
    "InvalidRequest",
    "NodeState",
    "SessionFilter",
    "SessionPage",
    "version",
]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
DATABASE_TIMEOUT = 3.0  # seconds the database may take for status and /metrics
KILLED_BY_OPERATOR = "cleared by an operator (management API)"


def version() -> str:
    import lns

    found = getattr(lns, "__version__", None)
    if isinstance(found, str):
        return found
    from importlib import metadata

    try:
        return metadata.version("lns")
    except metadata.PackageNotFoundError:
        return "unknown"


class InvalidRequest(ValueError):
    """A filter or paging argument that cannot be used; the message says which and why."""


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


# --- sessions ---------------------------------------------------------------------------


_STATES = {state.value: state for state in SessionState if state is not SessionState.CLOSED}


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """What ``GET /api/v1/sessions`` may be narrowed by; None: any."""

    iccid: str | None = None
    address: ipaddress.IPv4Address | None = None
    lac: str | None = None
    tunnel: int | None = None
    state: SessionState | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> SessionFilter:
        iccid = query.get("iccid")
        if iccid is not None:
            try:
                iccid = parse_iccid(iccid)
            except InvalidIccid:
                raise InvalidRequest(f"iccid: not an ICCID (19 or 20 digits): {iccid!r}") from None
        address = None
        if "address" in query:
            try:
                address = ipaddress.IPv4Address(query["address"])
            except ValueError:
                raise InvalidRequest(
                    f"address: not an IPv4 address: {query['address']!r}"
                ) from None
        tunnel = None
        if "tunnel" in query:
            tunnel = _integer(query, "tunnel", 1, 65535)
        state = None
        if "state" in query:
            state = _STATES.get(query["state"])
            if state is None:
                choices = ", ".join(_STATES)
                raise InvalidRequest(f"state: expected one of {choices}, got {query['state']!r}")
        lac = query.get("lac")
        if lac == "":
            raise InvalidRequest("lac: must not be empty")
        return cls(iccid, address, lac, tunnel, state)

    def candidates(self, runner: SessionRunner) -> Iterable[SessionRecord]:
        """The records to check, from the narrowest index there is."""
        supervisor = runner.supervisor
        if self.iccid is not None:
            return supervisor.by_iccid(self.iccid)
        if self.address is not None:
            found = supervisor.by_address(self.address)
            return [found] if found is not None else []
        return supervisor

    def matches(self, record: SessionRecord) -> bool:
        context = record.context
        return (
            (self.iccid is None or record.iccid == self.iccid)
            and (self.address is None or record.address == self.address)
            and (self.lac is None or context.lac_name == self.lac)
            and (self.tunnel is None or context.tunnel_id == self.tunnel)
            and (self.state is None or record.state is self.state)
        )


def _integer(query: Mapping[str, str], name: str, low: int, high: int) -> int:
    text = query[name]
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidRequest(f"{name}: expected an integer from {low} to {high}, got {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[dict[str, Any]]
    total: int  # sessions matching the filter, on every page
    next: str | None  # the `after` of the next page; None on the last


# --- the database's figures -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseFigures:
    """The accounting spool and the pools, as one transaction saw them; or why not."""

    spool_depth: int | None = None  # None: the node has no RADIUS accounting
    spool_oldest: datetime | None = None
    pools: tuple[admin.PoolUsage, ...] = ()
    error: str | None = None  # the database did not answer (in time)

    def spool_oldest_age(self, now: float) -> float | None:
        if self.spool_oldest is None:
            return None
        oldest = self.spool_oldest
        if oldest.tzinfo is None:  # SQLite keeps no time zone: the spool writes UTC
            oldest = oldest.replace(tzinfo=UTC)
        return max(0.0, now - oldest.timestamp())


class NodeState:
    """Read and act on the running node; see the module docstring."""

    def __init__(
        self,
        node_name: str,
        clock: IReactorTime,
        runner: SessionRunner,
        l2tp: L2tpService,
        dataplane: DataPlane,
        radius: RadiusClientService | None = None,
        executor: Executor | None = None,
        accounting: bool = False,
    ) -> None:
        self.node_name = node_name
        self.clock = clock
        self.runner = runner
        self.l2tp = l2tp
        self.dataplane = dataplane
        self.radius = radius  # its `client` is replaced when a reload changes the servers
        self.executor = executor
        self.accounting = accounting  # records go through the spool
        self.started_at = clock.seconds()
        self.version = version()

    # --- sessions -----------------------------------------------------------------------

    def sessions(
        self, where: SessionFilter, limit: int = DEFAULT_PAGE, after: int = 0
    ) -> SessionPage:
        found = sorted(
            (r for r in where.candidates(self.runner) if where.matches(r)),
            key=lambda record: record.serial,
        )
        start = next((i for i, r in enumerate(found) if r.serial > after), len(found))
        page = found[start : start + limit]
        more = start + limit < len(found)
        now = self.clock.seconds()
        return SessionPage(
            [self.session_json(record, now) for record in page],
            len(found),
            str(page[-1].serial) if more and page else None,
        )

    def session(self, acct_session_id: str) -> dict[str, Any] | None:
        record = self.runner.supervisor.by_acct_session_id(acct_session_id)
        return None if record is None else self.session_json(record, self.clock.seconds())

    def kill_session(self, acct_session_id: str) -> dict[str, Any] | None:
        """Clear the session: CDN to the LAC, Stop with Admin-Reset, lease released."""
        record = self.runner.supervisor.by_acct_session_id(acct_session_id)
        if record is None:
            return None
        shown = self.session_json(record, self.clock.seconds())
        self.runner.close(record, TerminateCause.ADMIN_RESET, KILLED_BY_OPERATOR)
        return shown

    def session_json(self, record: SessionRecord, now: float) -> dict[str, Any]:
        context = record.context
        traffic = record.traffic
        conn = self.l2tp.endpoint.tunnels.get(context.tunnel_id)
        call = conn.calls.get(context.session_id) if conn is not None else None
        up = record.opened_at
        return {
            "acct_session_id": record.acct_session_id,
            "iccid": record.iccid,
            "user_name": record.user_name,
            "state": record.state.value,
            "phase": record.ppp.phase.value,
            "address": str(record.address) if record.address is not None else None,
            "lac": {
                "name": context.lac_name,
                "hostname": context.lac_hostname,
                "address": context.lac_address,
            },
            "tunnel_id": context.tunnel_id,
            "session_id": context.session_id,
            "peer_tunnel_id": conn.peer_tunnel_id if conn is not None else None,
            "peer_session_id": call.peer_session_id if call is not None else None,
            "called_number": context.called_number,
            "created_at": _iso(record.created_at),
            "started_at": _iso(up),
            "uptime": now - up if up is not None else None,
            # in: from the device (RADIUS Acct-Input-*), out: to the device
            "octets_in": traffic.octets_up,
            "octets_out": traffic.octets_down,
            "packets_in": traffic.packets_up,
            "packets_out": traffic.packets_down,
            "idle": now - record.last_activity() if up is not None else None,
            # How it came up: proxy authentication from the LAC, our own PAP/CHAP with
            # the device, or the ICCID alone; the LAC's proxy LCP adopted or renegotiated.
            "auth": record.ppp.auth_source.value,
            "lcp": "renegotiated" if record.ppp.lcp_renegotiated else "proxy",
            "session_timeout": record.session_timeout,
            "idle_timeout": record.idle_timeout,
        }

    # --- tunnels ------------------------------------------------------------------------

    def tunnels(self) -> list[dict[str, Any]]:
        now = self.clock.seconds()
        tunnels = sorted(self.l2tp.endpoint.tunnels.values(), key=lambda c: c.created_at)
        return [self.tunnel_json(conn, now) for conn in tunnels]

    def tunnel(self, tunnel_id: int) -> dict[str, Any] | None:
        conn = self.l2tp.endpoint.tunnels.get(tunnel_id)
        return None if conn is None else self.tunnel_json(conn, self.clock.seconds())

    def kill_tunnel(self, tunnel_id: int) -> dict[str, Any] | None:
        """StopCCN to the LAC; its sessions end with Admin-Reset Stops (no CDN each)."""
        conn = self.l2tp.endpoint.tunnels.get(tunnel_id)
        if conn is None or conn.state in (TunnelState.CLOSING, TunnelState.CLOSED):
            return None
        shown = self.tunnel_json(conn, self.clock.seconds())
        self.runner.close_tunnel(tunnel_id, TerminateCause.ADMIN_RESET, KILLED_BY_OPERATOR)
        result = ResultCode(StopCcnResult.GENERAL_REQUEST, 0, "cleared by an operator")
        self.l2tp.close_tunnel(tunnel_id, result, KILLED_BY_OPERATOR)
        return shown

    def tunnel_json(self, conn: ControlConnection, now: float) -> dict[str, Any]:
        sessions = sum(1 for call in conn.calls.values() if call.state is CallState.ESTABLISHED)
        return {
            "tunnel_id": conn.tunnel_id,
            "peer_tunnel_id": conn.peer_tunnel_id,
            "lac": conn.lac.name,
            "peer_hostname": conn.peer_hostname,
            "peer": {"address": conn.peer[0], "port": conn.peer[1]},
            "local_address": conn.local,
            "state": conn.state.value,
            "sessions": sessions,
            "created_at": _iso(conn.created_at),
            "established_at": _iso(conn.established_at),
            "age": now - conn.created_at,
            "hello_rtt": conn.hello_rtt,
            "retransmissions": conn.channel.retransmissions,
            "unacknowledged": conn.channel.unacknowledged,
        }

    # --- status -------------------------------------------------------------------------

    def database_figures(self) -> defer.Deferred[DatabaseFigures]:
        """The spool and the pools, or a DatabaseFigures saying why they are missing."""
        executor = self.executor
        if executor is None:
            return defer.succeed(DatabaseFigures(error="no database"))

        def failed(failure: Any) -> DatabaseFigures:
            if failure.check(defer.TimeoutError):
                reason = f"no answer within {DATABASE_TIMEOUT:g} s"
            else:
                reason = failure.getErrorMessage()
            return DatabaseFigures(error=f"database unavailable: {reason}")

        d = executor.transaction(_read_figures, self.node_name, self.accounting)
        d.addTimeout(DATABASE_TIMEOUT, self.clock)
        return d.addErrback(failed)

    def status(self) -> defer.Deferred[dict[str, Any]]:
        return self.database_figures().addCallback(self.status_json)

    def status_json(self, figures: DatabaseFigures) -> dict[str, Any]:
        now = self.clock.seconds()
        supervisor = self.runner.supervisor
        stats = supervisor.stats
        up = sum(1 for record in supervisor if record.state is SessionState.UP)
        tunnels = self.l2tp.endpoint.tunnels.values()
        established = sum(1 for conn in tunnels if conn.state is TunnelState.ESTABLISHED)
        latency = stats.setup_latency
        return {
            "node": self.node_name,
            "version": self.version,
            "started_at": _iso(self.started_at),
            "uptime": now - self.started_at,
            "sessions": {"total": len(supervisor), "up": up, "setting_up": len(supervisor) - up},
            "tunnels": {"total": len(tunnels), "established": established},
            "setups": {
                "calls": stats.calls,
                "up": stats.setups,
                "failed": {str(reason): n for reason, n in sorted(stats.failures.items())},
                "latency_mean": latency.mean,
            },
            "radius": self.radius_json(now),
            "accounting": (
                {
                    "spool_depth": figures.spool_depth,
                    "oldest_age": figures.spool_oldest_age(now),
                }
                if self.accounting and figures.error is None
                else None
            ),
            "pools": [
                {
                    "name": pool.name,
                    "size": pool.size,
                    "in_use": pool.in_use,
                    "reserved": pool.reserved,
                    "free": pool.free,
                }
                for pool in figures.pools
            ],
            "database": figures.error or "ok",
        }

    def radius_json(self, now: float) -> list[dict[str, Any]]:
        if self.radius is None:
            return []
        servers = []
        for port in self.radius.client.ports:
            stats = port.stats
            observed = [kind.latency for kind in stats.by_type.values()]
            count = sum(h.count for h in observed)
            servers.append(
                {
                    "server": port.label,
                    "transport": port.server.transport,
                    "state": "alive" if port.alive(now) else "dead",
                    "requests": stats.requests,
                    "timeouts": stats.timeouts,
                    "replies": stats.replies,
                    "latency_mean": sum(h.sum for h in observed) / count if count else None,
                }
            )
        return servers


def _read_figures(connection: Connection, node: str, accounting: bool) -> DatabaseFigures:
    """The spool's depth and oldest record (with accounting on) and the pools' usage."""
    depth, oldest = spool.summary(connection, node) if accounting else (None, None)
    pools = tuple(admin.pool_usage(connection))
    return DatabaseFigures(depth, oldest, pools)
