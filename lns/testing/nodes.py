"""Several lns nodes on one PostgreSQL database: the rig of the failover tests and
benchmark (DESIGN.md section 9).

A `Deployment` is what an operator runs for redundancy, on loopback:

* a throw-away PostgreSQL database (`ThrowawayDatabase`) on the server the suite uses,
  migrated and given an address pool with ``lns-admin`` (lns.testing.pools);
* N nodes, ``twistd -n lns`` each (lns.testing.processes.Twistd), named node-A,
  node-B, ..., listening on 127.0.0.2, 127.0.0.3, ... (a free port on each), all
  with that database, one LAC (127.0.0.0/8) and the same RADIUS server with
  accounting on (the suite's FreeRADIUS, NAS-Identifier = the node's name);
* what a test needs to watch them: the live leases in the database (`leases`), a
  `LeaseWatch` that polls them on a thread and records any moment an address or an
  ICCID is held twice, FreeRADIUS's detail records per Acct-Session-Id
  (`accounting`), each node's log and the sessions it says are up (`Node.sessions`),
  its management API (`Node.api`, `Node.api_sessions`);
* what a test does to them: `Node.kill` (SIGKILL), `Node.stop` (SIGTERM),
  `Node.restart`, and `relay` (a `LinkRelay` in front of a node, whose `cut` makes
  a live node unreachable for the LAC);
* `loadgen`: lns-loadgen as a process, given the nodes (or relays) in order of
  preference with ``--lns``.

Everything it starts is stopped, and the database dropped, by `Deployment.close`
(it is a context manager). Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from lns.db import database
from lns.pool.models import PoolAddress
from lns.testing.config import ConfigBuilder, RadiusEndpoint
from lns.testing.freeradius import FreeRadius, records_of
from lns.testing.pools import prepare_pool
from lns.testing.ports import free_tcp_port, free_udp_port
from lns.testing.processes import ProcessError, Twistd
from lns.testing.relay import LinkRelay
from lns.testing.servers import Loadgen, children, cpu_seconds

__all__ = [
    "L2TP_SECRET",
    "POOL",
    "ApiError",
    "Deployment",
    "LeaseWatch",
    "LiveLease",
    "Node",
    "NodeSession",
    "ThrowawayDatabase",
]

L2TP_SECRET = "nodes-l2tp-secret"
POOL = "100.66.0.0/22"  # 1,022 addresses
NODE_NAMES = "ABCDEFGH"

Configure = Callable[[ConfigBuilder, "Node"], object]


# --- the database ----------------------------------------------------------------------


class ThrowawayDatabase:
    """A database of its own on the PostgreSQL server of ``base_url`` (any database
    there, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), dropped by
    `drop` even while nodes are still connected.

    A database, not a schema: nodes talk through LISTEN/NOTIFY, whose channels are
    per database, so two rigs in two schemas of one database would hear each other.
    """

    def __init__(self, base_url: str, prefix: str = "lns_nodes") -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        base = make_url(base_url)
        self._admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
        self.url = base.set(database=self.name).render_as_string(hide_password=False)
        self._execute(f'CREATE DATABASE "{self.name}"')

    def _execute(self, statement: str) -> None:
        import psycopg  # only PostgreSQL rigs need it

        with psycopg.connect(self._admin, autocommit=True) as connection:
            connection.execute(statement.encode())

    def drop(self) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def refuse_connections(self) -> None:
        """An outage: every connection to it is cut and new ones are refused."""
        self._execute(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false')
        self._execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )

    def accept_connections(self) -> None:
        """The end of the outage."""
        self._execute(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')


# --- leases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveLease:
    """A live lease as the database holds it; ``row`` has every column of the address
    row (columns added by later migrations included)."""

    address: str
    iccid: str
    node: str
    tunnel_id: int
    session_id: int
    row: Mapping[str, Any] = field(compare=False, repr=False)


def read_leases(engine: Engine) -> list[LiveLease]:
    """Every live lease, in address order."""
    table = PoolAddress.__table__
    query = select(table).where(table.c.lease_iccid.is_not(None)).order_by(table.c.number)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [
        LiveLease(
            row["address"],
            row["lease_iccid"],
            row["lease_node"],
            row["lease_tunnel_id"],
            row["lease_session_id"],
            dict(row),
        )
        for row in rows
    ]


class LeaseWatch:
    """Polls the live leases (``read()``) and records every moment an address or an
    ICCID is held twice, and every change of who holds what.

    `start` polls every ``interval`` seconds on a thread until `stop`; `poll` polls
    once. `violations` lists what it saw wrong (with the time since it was made);
    `check` raises AssertionError listing them. `history` is, per ICCID, the (node,
    address) it held in turn (None while it held nothing).
    """

    def __init__(self, read: Callable[[], Sequence[LiveLease]], interval: float = 0.05) -> None:
        self.read = read
        self.interval = interval
        self.violations: list[str] = []
        self.history: dict[str, list[tuple[str, str] | None]] = {}
        self.polls = 0
        self.errors = 0  # reads that failed (the server busy or restarting)
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseWatch:
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def poll(self) -> None:
        try:
            leases = self.read()
        except SQLAlchemyError:
            self.errors += 1
        else:
            self._look(leases)

    def _look(self, leases: Sequence[LiveLease]) -> None:
        self.polls += 1
        at = time.monotonic() - self._started
        by_address: dict[str, LiveLease] = {}
        by_iccid: dict[str, LiveLease] = {}
        for lease in leases:
            other = by_address.setdefault(lease.address, lease)
            if other is not lease:
                self.violations.append(
                    f"{at:.2f} s: {lease.address} held by {other.iccid} on {other.node} "
                    f"and by {lease.iccid} on {lease.node}"
                )
            other = by_iccid.setdefault(lease.iccid, lease)
            if other is not lease:
                self.violations.append(
                    f"{at:.2f} s: ICCID {lease.iccid} holds {other.address} on {other.node} "
                    f"and {lease.address} on {lease.node}"
                )
        for iccid in set(self.history) | set(by_iccid):
            held = by_iccid.get(iccid)
            now = None if held is None else (held.node, held.address)
            past = self.history.setdefault(iccid, [])
            if not past or past[-1] != now:
                past.append(now)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def check(self) -> None:
        if self.violations:
            shown = "\n".join(self.violations[:20])
            raise AssertionError(f"{len(self.violations)} moments of a lease held twice:\n{shown}")
        assert self.polls > 0, "the lease watch never read the leases"

    def __enter__(self) -> LeaseWatch:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- nodes ---------------------------------------------------------------------------------

_SESSION_UP = re.compile(
    r"session up: ICCID (?P<iccid>\d+), address (?P<address>[\d.]+), "
    r"tunnel (?P<tunnel>\d+) session (?P<session>\d+)(?:, Acct-Session-Id (?P<acct>\S+))?"
)
_SESSION_DOWN = re.compile(
    r"session down: ICCID \d+, tunnel (?P<tunnel>\d+) session (?P<session>\d+)"
)


class ApiError(RuntimeError):
    """The management API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class NodeSession:
    """A session a node's log says it brought up."""

    iccid: str
    address: str
    tunnel_id: int
    session_id: int
    acct_session_id: str


@dataclass
class Node:
    """One ``twistd -n lns`` of a `Deployment`; see the module's docstring."""

    name: str  # node-A, node-B, ...
    host: str  # 127.0.0.2, 127.0.0.3, ...
    port: int  # its L2TP port on host
    config: Path
    directory: Path
    management: tuple[str, int]  # its management API (loopback: no token)
    earlier_logs: list[str] = field(default_factory=list)  # of runs before this one
    twistd: Twistd | None = None

    @property
    def endpoint(self) -> str:
        """``HOST:PORT`` as lns-loadgen takes it."""
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self, timeout: float = 60.0) -> Node:
        """Starts it (again, after a kill or stop); returns once it listens."""
        self.spawn()
        assert self.twistd is not None
        try:
            self.twistd.output.wait_for("L2TP listening", timeout)
        except ProcessError as exc:
            self.twistd.stop()
            raise ProcessError(f"{self.name} did not start listening: {exc}") from None
        return self

    def spawn(self) -> None:
        if self.twistd is not None:
            if self.twistd.process.poll() is None:
                raise RuntimeError(f"{self.name} is running")
            self.earlier_logs.append(self.twistd.log())
        self.twistd = Twistd(self.config, cwd=self.directory).spawn()

    def restart(self, timeout: float = 60.0) -> Node:
        """Starts it again after `kill` or `stop`, same configuration."""
        return self.start(timeout)

    def kill(self) -> None:
        """SIGKILL: the node gets no chance to say or write anything."""
        if self.twistd is not None:
            self.twistd.kill()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (StopCCN to the LACs, accounting Stops spooled), SIGKILL after
        ``timeout``; the exit status."""
        if self.twistd is None:
            return None
        return self.twistd.stop(timeout)

    def alive(self) -> bool:
        return self.twistd is not None and self.twistd.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.twistd is not None, f"{self.name} was never started"
        return self.twistd.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the running process and its children so far."""
        return sum(cpu_seconds(pid) for pid in children(self.pid)) if self.alive() else 0.0

    def log(self) -> str:
        """What the current (or last) run logged."""
        return self.twistd.log() if self.twistd is not None else ""

    def all_logs(self) -> str:
        return "\n".join([*self.earlier_logs, self.log()])

    def sessions(self) -> dict[tuple[int, int], NodeSession]:
        """The sessions the current run's log says are up, by (tunnel, session)."""
        up: dict[tuple[int, int], NodeSession] = {}
        for line in self.log().splitlines():
            if (session := _session_up(line)) is not None:
                up[(session.tunnel_id, session.session_id)] = session
            elif (found := _SESSION_DOWN.search(line)) is not None:
                up.pop((int(found["tunnel"]), int(found["session"])), None)
        return up

    def sessions_started(self) -> list[NodeSession]:
        """Every session any run of this node logged as up (down since or not), in order."""
        return [s for line in self.all_logs().splitlines() if (s := _session_up(line))]

    def acct_session_ids(self) -> list[str]:
        """The Acct-Session-Id of every session any run of this node brought up."""
        return [s.acct_session_id for s in self.sessions_started() if s.acct_session_id]

    def api(self, path: str, method: str = "GET", timeout: float = 10.0) -> Any:
        """The node's management API (``/api/v1/`` + ``path``): its JSON answer, or
        `ApiError` with the status and the answer's error."""
        url = "http://{}:{}/api/v1/{}".format(*self.management, path.lstrip("/"))
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = json.loads(body).get("error", "")
            except (ValueError, AttributeError):
                message = body.decode("utf-8", "replace")
            raise ApiError(exc.code, message) from None

    def api_sessions(self, **filters: str) -> list[dict[str, Any]]:
        """Every session the node's management API lists (all pages)."""
        sessions: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            query = {**filters, "limit": "1000", **({"after": after} if after else {})}
            page = self.api("sessions?" + urllib.parse.urlencode(query))
            sessions += page["sessions"]
            after = page["next"]
            if after is None:
                return sessions


def _session_up(line: str) -> NodeSession | None:
    found = _SESSION_UP.search(line)
    if found is None:
        return None
    return NodeSession(
        found["iccid"],
        found["address"],
        int(found["tunnel"]),
        int(found["session"]),
        found["acct"] or "",
    )


# --- the deployment --------------------------------------------------------------------------


class Deployment:
    """N nodes on one throw-away database; see the module's docstring.

    ``radius``: the RADIUS server every node uses (the suite's FreeRADIUS). ``configure``
    may add keys per node (``configure(builder, node)``), e.g. the heartbeat keys.
    Nodes are started by `start` (or one by one with `Node.start`).
    """

    def __init__(
        self,
        directory: Path,
        radius: RadiusEndpoint,
        postgres_url: str,
        *,
        nodes: int = 2,
        pool: str = POOL,
        configure: Configure | None = None,
    ) -> None:
        if not 1 <= nodes <= len(NODE_NAMES):
            raise ValueError(f"1 to {len(NODE_NAMES)} nodes, not {nodes}")
        self.directory = directory
        self.radius = radius
        self._cleanup = contextlib.ExitStack()
        self.database = ThrowawayDatabase(postgres_url)
        self._cleanup.callback(self.database.drop)
        try:
            self.url = prepare_pool(self.database.url, pool)
            self.engine = database.create_engine(self.url, pool_size=2)
            self._cleanup.callback(self.engine.dispose)
            self.nodes = [self._node(index, configure) for index in range(nodes)]
        except BaseException:
            self._cleanup.close()
            raise
        self._relays: list[LinkRelay] = []
        self._loadgens: list[Loadgen] = []

    def _node(self, index: int, configure: Configure | None) -> Node:
        name = f"node-{NODE_NAMES[index]}"
        host = f"127.0.0.{index + 2}"
        directory = self.directory / name
        directory.mkdir(parents=True, exist_ok=True)
        node = Node(
            name,
            host,
            free_udp_port(host),
            directory / "lns.toml",
            directory,
            (host, free_tcp_port(host)),
        )
        builder = (
            ConfigBuilder()
            .lns(node_name=name)
            .l2tp(listen=f"{host}:{node.port}", hostname=name)
            .lac(name="rig", peer="127.0.0.0/8", secret=L2TP_SECRET)
            # FreeRADIUS 3.2.1 signs no reply (notes/peers.md).
            .aaa(nas_identifier=name, require_message_authenticator=False)
            .radius_server(self.radius, timeout=2.0, retries=2)
            .database(url=self.url, migrate_on_start=False)
            .dataplane(mode="none")
            .management(listen="{}:{}".format(*node.management))
        )
        if configure is not None:
            configure(builder, node)
        builder.write(node.config)
        self._cleanup.callback(node.stop)
        return node

    def start(self, timeout: float = 60.0) -> Deployment:
        """Starts every node at once; returns when all listen."""
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            assert node.twistd is not None
            try:
                node.twistd.output.wait_for("L2TP listening", timeout)
            except ProcessError as exc:
                raise ProcessError(f"{node.name} did not start listening: {exc}") from None
        return self

    def node(self, name: str) -> Node:
        """A node by name (``node-A``) or letter (``A``)."""
        for node in self.nodes:
            if name in (node.name, node.name.removeprefix("node-")):
                return node
        raise KeyError(name)

    # --- watching -------------------------------------------------------------------------

    def leases(self) -> dict[str, LiveLease]:
        """The live leases now, by address."""
        return {lease.address: lease for lease in read_leases(self.engine)}

    def leases_by_iccid(self) -> dict[str, LiveLease]:
        return {lease.iccid: lease for lease in read_leases(self.engine)}

    def watch_leases(self, interval: float = 0.05) -> LeaseWatch:
        """A `LeaseWatch` of this deployment's database, started (stopped at the end)."""
        watch = LeaseWatch(lambda: read_leases(self.engine), interval)
        self._cleanup.callback(watch.stop)
        return watch.start()

    def accounting(self, acct_session_id: str) -> list[dict[str, str]]:
        """FreeRADIUS's detail records of one session, in the order written."""
        if not isinstance(self.radius, FreeRadius):
            raise TypeError("accounting records are read from a FreeRadius runner")
        return records_of(self.radius, acct_session_id)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Polls ``condition`` every 50 ms until it holds; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}")
            time.sleep(0.05)

    # --- acting ---------------------------------------------------------------------------

    def relay(self, node: Node) -> LinkRelay:
        """A relay in front of ``node``, started; give the LAC `LinkRelay.address`."""
        relay = LinkRelay(node.address)
        relay.start()
        self._relays.append(relay)
        self._cleanup.callback(relay.stop)
        return relay

    def loadgen(
        self, lns: Sequence[Node | LinkRelay], *arguments: str, secret: str = L2TP_SECRET
    ) -> Loadgen:
        """``lns-loadgen --lns ...`` (``lns`` in order of preference) with ``arguments``,
        tunnel secret and ``--password-from-iccid`` given; its JSON summary lands in the
        deployment's directory (`Loadgen.wait` returns it)."""
        targets = [
            item.endpoint if isinstance(item, Node) else "{}:{}".format(*item.address)
            for item in lns
        ]
        loadgen = Loadgen(
            None,
            self.directory,
            ["--lns", ",".join(targets), "--secret", secret, "--password-from-iccid", *arguments],
        )
        self._loadgens.append(loadgen)
        self._cleanup.callback(loadgen.kill)
        return loadgen

    # --- the end --------------------------------------------------------------------------

    def close(self) -> None:
        """Stops everything started here and drops the database."""
        self._cleanup.close()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def logs(self) -> Iterator[tuple[str, str]]:
        """(node name, everything it logged in every run), for a failure's report."""
        for node in self.nodes:
            yield node.name, node.all_logs()
