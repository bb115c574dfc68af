"""What the comparison benchmarks share: lns or l2tpns in a network namespace of its own.

Not run directly: benchmarks/setup_storm.py, memory.py and dataplane.py import it.

Each server runs in a namespace created for it, with everything it needs inside:

* FreeRADIUS (lns.testing.freeradius) on the namespace's loopback (ports 1812/1813),
  started through a wrapper script that runs it under ``ip netns exec`` (the pattern of
  lns.testing.dataplane_site), with one user per SIM: ``ICCID Cleartext-Password := PASSWORD``
  (the password is the ICCID unless told otherwise, as lns-loadgen's default);
* lns: ``twistd -n lns --config`` with a TUN device, RADIUS CHAP (the LAC's proxy CHAP)
  and an SQLite file or a PostgreSQL database of its own (created here, dropped at the
  end), its pool a /16;
* l2tpns (Debian package ``l2tpns``): its configuration and pool go to
  /etc/netns/NAMESPACE/l2tpns/, which ``ip netns exec`` bind-mounts over /etc/l2tpns for
  the processes it starts (l2tpns reads /etc/l2tpns/ip_pool whatever ``-c`` says); it
  challenges every device with CHAP and asks FreeRADIUS with the name the device gives.

The load generator runs in the same namespace (``ip netns exec NS python -m lns.loadgen
127.0.0.1 ...``), so no datagram crosses a namespace and both servers see the same
setup. Everything started here is registered on a `contextlib.ExitStack` the caller
owns: processes, namespaces, /etc/netns entries, the PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius, RadiusUser, ensure_freeradius, users_file
from lns.testing.netns import NetNs, can_create_namespaces, unique_name
from lns.testing.pools import PoolError, prepare_pool
from lns.testing.processes import SOURCE_ROOT, twistd_command, working_tree_env

L2TP_SECRET = "bench-l2tp-secret"
RADIUS_SECRET = "bench-radius-secret"
RADIUS_PORTS = (1812, 1813)
ICCID_START = 8944000000000000001  # lns-loadgen's default first ICCID
POOL = ipaddress.ip_network("100.80.0.0/16")  # 65,534 addresses: enough for 50,000 sessions
GATEWAY = "100.64.0.1"  # the servers' own PPP address (IPCP), outside the pool
TUN_NAME = "lns0"
POSTGRES_SOCKET = "/var/run/postgresql"
L2TPNS_READY = "I am declaring myself the master!"
LNS_READY = "L2TP listening"
TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """Something the benchmark started did not do what was expected in time."""


# --- machine and processes --------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    l2tpns = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "l2tpns"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    freeradius = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "freeradius"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "l2tpns": l2tpns or None,
        "freeradius": freeradius or None,
    }


def machine_busy(since: tuple[int, int] | None = None) -> Any:
    """/proc/stat's (busy, total) jiffies now; with ``since``, the busy share of all CPUs
    since then, in % of the whole machine (100% = every core busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    busy = total - values[3] - values[4]  # idle, iowait
    if since is None:
        return (busy, total)
    return round(100 * (busy - since[0]) / max(1, total - since[1]), 1)


def children(pid: int) -> list[int]:
    """``pid`` and every descendant of it (from /proc; threads are not processes here)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process, in KiB (0 if it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


class LogFile:
    """A child's log written to a file; waits read it again (it is small enough)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for(
        self, needle: str, timeout: float, alive: Callable[[], bool] = lambda: True
    ) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if not alive():
                raise BenchError(f"the process ended before {needle!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"no {needle!r} within {timeout} s:\n{self.tail()}")
            time.sleep(0.2)


def stop_process(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --- the harness: namespaces and the things in them ---------------------------------------


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Harness(contextlib.ExitStack):
    """An ExitStack that also creates namespaces and directories, removed at its end.

    SIGTERM and SIGHUP become KeyboardInterrupt, so the stack unwinds on them too.
    """

    def __init__(self) -> None:
        super().__init__()
        reason = can_create_namespaces()
        if reason is not None:
            raise BenchError(f"cannot run: {reason}")
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupted)

    def namespace(self) -> NetNs:
        namespace = NetNs.create(unique_name())
        self.callback(namespace.delete)
        return namespace

    def directory(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        path.chmod(0o755)
        self.callback(shutil.rmtree, path, ignore_errors=True)
        return path


def users(count: int, iccid_start: int = ICCID_START, password: str | None = None) -> str:
    """FreeRADIUS users: one SIM per ICCID, its password the ICCID unless one is given."""
    return users_file(
        RadiusUser(str(iccid), password or str(iccid))
        for iccid in range(iccid_start, iccid_start + count)
    )


def start_freeradius(
    harness: contextlib.ExitStack, namespace: NetNs, users_text: str
) -> FreeRadius:
    """FreeRADIUS on the namespace's loopback, stopped when the harness ends."""
    radius = FreeRadius(
        RADIUS_SECRET, users_text, *RADIUS_PORTS, ready_timeout=180.0, namespace=namespace.name
    )
    radius.start(ensure_freeradius())
    harness.callback(radius.stop)
    return radius


@dataclass
class Server:
    """A running server: its process, its log, what it costs."""

    kind: str  # "lns" or "l2tpns"
    namespace: NetNs
    process: subprocess.Popen[Any]
    log: LogFile
    label: str
    details: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return children(self.process.pid)

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in self.pids())

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stop_process(self.process)

    def problems(self, limit: int = 20) -> list[str]:
        """Lines of its log that say something went wrong (for the report)."""
        if self.kind == "lns":
            pattern = re.compile(r"Traceback|Unhandled|#(warn|error|critical)\]")
        else:
            pattern = re.compile(r"(?i)error|fail|dropp?ing|no free|overflow")
        found = [line for line in self.log.text().splitlines() if pattern.search(line)]
        return found[:limit]

    def problem_count(self) -> int:
        return len(self.problems(limit=10**9))

    def sessions_down(self) -> dict[str, int]:
        """lns: why sessions went down so far ("session down: ..., session N: REASON")."""
        reasons: dict[str, int] = {}
        for line in self.log.text().splitlines():
            match = re.search(r"session down: .*? session \d+: (.*)$", line)
            if match:
                reason = re.sub(r"\d+", "N", match.group(1))
                reasons[reason] = reasons.get(reason, 0) + 1
        return reasons


def lns_config(
    directory: Path,
    url: str,
    *,
    listen: str = "127.0.0.1",
    peer: str = "127.0.0.0/8",
    local_address: str = GATEWAY,
    hello: int = 60,
    mru: int = 1450,
    tun_name: str = TUN_NAME,
    worker: str = "process",
) -> Path:
    return (
        ConfigBuilder()
        .lns(node_name="bench")
        .l2tp(listen=f"{listen}:1701", hello_interval=hello)
        .lac(name="bench", peer=peer, secret=L2TP_SECRET)
        .ppp(local_address=local_address, mru=mru, dns=["192.0.2.53"])
        .aaa(require_message_authenticator=False)  # FreeRADIUS 3.2.1 signs no reply
        .radius(
            address="127.0.0.1",
            auth_port=RADIUS_PORTS[0],
            acct_port=RADIUS_PORTS[1],
            secret=RADIUS_SECRET,
        )
        .database(url=url, worker=worker)
        .dataplane(mode="tun", tun_name=tun_name)
        .write(directory / "lns.toml")
    )


def postgres_database(harness: contextlib.ExitStack) -> str:
    """A database of our own on the local PostgreSQL (unix socket), dropped at the end."""
    import psycopg  # only the PostgreSQL runs need it

    name = f"lns_bench_{uuid.uuid4().hex[:10]}"
    admin = f"host={POSTGRES_SOCKET} user=postgres dbname=test"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    harness.callback(drop)
    return f"postgresql+psycopg://postgres@/{name}?host={POSTGRES_SOCKET}"


def start_lns(
    harness: contextlib.ExitStack,
    namespace: NetNs,
    directory: Path,
    database: str = "sqlite",
    *,
    pool: str = str(POOL),
    env: Sequence[tuple[str, str]] = (),
    cpus: str | None = None,
    **config: Any,
) -> Server:
    """``twistd -n lns`` in ``namespace`` (FreeRADIUS must already run there); with
    ``cpus`` ("0", "0,1"), it and its children run on those CPUs only (taskset)."""
    if database == "sqlite":
        url = f"sqlite:///{directory / 'lns.db'}"
    elif database == "postgresql":
        url = postgres_database(harness)
    else:
        raise ValueError(f"unknown database {database!r}")
    try:
        prepare_pool(url, pool)
    except PoolError as exc:
        raise BenchError(str(exc)) from None
    path = lns_config(directory, url, **config)
    log = LogFile(directory / "lns.log")
    with log.path.open("w") as output:
        pinned = ["taskset", "-c", cpus] if cpus else []
        process = namespace.popen(
            *pinned,
            *twistd_command(path),
            cwd=directory,
            env=working_tree_env(**dict(env)),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Server("lns", namespace, process, log, f"lns/{database}", {"database": database})
    harness.callback(server.stop)
    log.wait_for(LNS_READY, 60, server.alive)
    return server


def l2tpns_config(
    directory: Path,
    *,
    bind: str,
    radius: str = "127.0.0.1",
    tun_address: str = GATEWAY,
    tun_name: str = TUN_NAME,
    debug: int = 1,
    secret: str = L2TP_SECRET,
    radius_secret: str = RADIUS_SECRET,
) -> str:
    return f"""\
set debug {debug}
set log_file "{directory / "l2tpns.log"}"
set pid_file "{directory / "l2tpns.pid"}"
set l2tp_secret "{secret}"
set bind_address {bind}
set iftun_address {tun_address}
set tundevicename "{tun_name}"
set primary_dns 192.0.2.53
set primary_radius {radius}
set primary_radius_port {RADIUS_PORTS[0]}
set radius_secret "{radius_secret}"
set radius_authtypes "chap,pap"
set radius_accounting yes
set cli_bind_address 127.0.0.1
set cluster_interface lo
set disable_sending_hello yes
set ppp_keepalive yes
"""


def start_l2tpns(
    harness: contextlib.ExitStack,
    namespace: NetNs,
    directory: Path,
    *,
    bind: str = "127.0.0.1",
    pool: str = str(POOL),
    debug: int = 1,
    **config: Any,
) -> Server:
    """l2tpns in ``namespace``, its /etc/l2tpns that of /etc/netns/NAMESPACE/l2tpns."""
    binary = shutil.which("l2tpns") or "/usr/sbin/l2tpns"
    if not Path(binary).exists():
        raise BenchError("l2tpns is not installed: apt-get install l2tpns")
    etc = Path("/etc/netns") / namespace.name
    # Registered before it exists, so a failure half-way still removes it.
    harness.callback(shutil.rmtree, etc, ignore_errors=True)
    (etc / "l2tpns").mkdir(parents=True)
    (etc / "l2tpns" / "startup-config").write_text(
        l2tpns_config(directory, bind=bind, debug=debug, **config)
    )
    (etc / "l2tpns" / "ip_pool").write_text(pool + "\n")
    (etc / "l2tpns" / "users").write_text("")
    log = LogFile(directory / "l2tpns.log")
    output = (directory / "l2tpns.out").open("w")
    harness.callback(output.close)
    process = namespace.popen(
        binary,
        "-c",
        "/etc/l2tpns/startup-config",
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        # At its exit l2tpns signals its whole process group: keep ours out of it.
        start_new_session=True,
    )
    server = Server("l2tpns", namespace, process, log, "l2tpns", {"debug": debug})
    harness.callback(server.stop)
    # Its cluster election: it answers no L2TP until it declares itself the master.
    log.wait_for(L2TPNS_READY, 90, server.alive)
    return server


def start_server(
    harness: Harness, kind: str, users_text: str, **options: Any
) -> tuple[Server, NetNs]:
    """A namespace with FreeRADIUS and the server (``lns-sqlite``, ``lns-postgresql``,
    ``l2tpns``) on its loopback."""
    namespace = harness.namespace()
    directory = harness.directory(f"lns-bench-{kind}-")
    start_freeradius(harness, namespace, users_text)
    if kind == "l2tpns":
        return start_l2tpns(harness, namespace, directory, **options), namespace
    database = kind.removeprefix("lns-")
    return start_lns(harness, namespace, directory, database, **options), namespace


# --- the load generator ---------------------------------------------------------------------


class Loadgen:
    """lns-loadgen inside a namespace (or, ``namespace`` None, in ours); its progress
    lines read on a thread."""

    def __init__(self, namespace: NetNs | None, directory: Path, arguments: Sequence[str]) -> None:
        self.json_path = directory / f"loadgen-{uuid.uuid4().hex[:8]}.json"
        self.lines: list[str] = []
        self.phase = "start"
        self._changed = threading.Condition()
        self.command = [sys.executable, "-m", "lns.loadgen", *arguments, "--json", ""]
        self.command[-1] = str(self.json_path)
        options: dict[str, Any] = {
            "cwd": SOURCE_ROOT,
            "env": working_tree_env(),
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.PIPE,
            "text": True,
        }
        if namespace is None:
            self.process: subprocess.Popen[str] = subprocess.Popen(self.command, **options)
        else:
            self.process = namespace.popen(*self.command, **options)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            line = line.rstrip("\n")
            with self._changed:
                self.lines.append(line)
                match = re.match(r"\s*[\d.]+ s\s+(\w+)\s", line)
                if match:
                    self.phase = match.group(1)
                self._changed.notify_all()
        with self._changed:
            self.phase = "exited"
            self._changed.notify_all()

    def wait_phase(self, phases: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.phase not in phases | {"exited"}:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"loadgen not in {phases} after {timeout} s: {self.tail()}")
                self._changed.wait(left)
            return self.phase

    def wait_line(self, text: str, timeout: float) -> str:
        """The first progress line (or note) holding ``text``, waited for."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if self.phase == "exited" or left <= 0:
                    raise BenchError(f"loadgen wrote no {text!r} within {timeout} s: {self.tail()}")
                self._changed.wait(left)

    def tail(self, lines: int = 5) -> str:
        with self._changed:
            return "\n".join(self.lines[-lines:])

    def wait(self, timeout: float) -> dict[str, Any]:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise BenchError(f"loadgen still running after {timeout} s: {self.tail()}") from None
        try:
            summary: dict[str, Any] = json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            raise BenchError(
                f"loadgen exited {self.process.returncode} without a summary:\n{self.tail(20)}"
            ) from None
        return summary

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def sessions_up(self) -> tuple[int, int]:
        """Sessions up and failed, as its last progress line says ((0, 0) before one)."""
        with self._changed:
            found = [m for m in map(_SESSIONS_UP.search, self.lines) if m is not None]
        return (int(found[-1].group(1)), int(found[-1].group(3))) if found else (0, 0)


_SESSIONS_UP = re.compile(r"sessions up (\d+)/(\d+) failed (\d+)")


def held_loadgen(
    harness: contextlib.ExitStack,
    namespace: NetNs,
    directory: Path,
    setup_timeout: float,
    **arguments: Any,
) -> Loadgen:
    """lns-loadgen setting up sessions and holding them (a HELLO a second, killed with
    the harness), once they are all up; ``arguments`` are `loadgen_arguments`'."""
    loadgen = Loadgen(
        namespace,
        directory,
        loadgen_arguments(hold=24 * 3600, hello_interval=1.0, timeout=120, **arguments),
    )
    harness.callback(loadgen.kill)
    if loadgen.wait_phase({"hold", "teardown", "done"}, setup_timeout) != "hold":
        raise BenchError(f"loadgen ended before the hold: {loadgen.tail()}")
    return loadgen


def loadgen_arguments(
    *,
    sessions: int,
    tunnels: int,
    retransmit: float = 1.0,
    rate: float = 0,
    concurrency: int = 1000,
    hold: float = 0,
    hello_interval: float = 0.1,
    timeout: float = 60,
    iccid_start: int = ICCID_START,
) -> list[str]:
    return [
        "127.0.0.1",
        "--secret",
        L2TP_SECRET,
        "--tunnels",
        str(tunnels),
        "--sessions",
        str(sessions),
        "--rate",
        str(rate),
        "--concurrency",
        str(concurrency),
        "--hold",
        str(hold),
        "--retransmit",
        str(retransmit),
        "--hello-interval",
        str(hello_interval),
        "--timeout",
        str(timeout),
        "--iccid-start",
        str(iccid_start),
        "--password-from-iccid",
        "--auth",
        "chap",
    ]


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON written to {path}")


def summarise(
    benchmark: str,
    results: list[dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
    output: Path | None,
    width: int,
) -> int:
    """The summary of every run (errors in one line), the JSON report; the exit status."""
    print("\nsummary:")
    for result in results:
        if "error" in result:
            print(f"{result['run']:<{width}} error: {result['error'].splitlines()[0]}")
        else:
            show(result)
    write_report(
        output,
        {
            "benchmark": benchmark,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "results": results,
        },
    )
    return 1 if any("error" in r for r in results) else 0


def run_reported(
    benchmark: str,
    label: str,
    run: Callable[[], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
    output: Path | None,
    width: int,
) -> int:
    """A benchmark of one run: its result shown (or its failure in one line, under
    ``label``), then the summary and the JSON report; the exit status."""
    try:
        result = run()
    except BenchError as exc:
        print(f"{benchmark}: failed: {exc}", file=sys.stderr)
        result = {"run": label, "error": str(exc)}
    else:
        show(result)
    return summarise(benchmark, [result], show, output, width)


# --- the data-plane site with l2tpns as its server -------------------------------------------


def build_l2tpns_site(create_namespace: Callable[[], NetNs], directory: Path, sessions: int) -> Any:
    """lns.testing.dataplane_site's site (LAC, server and host namespaces, the same addresses,
    users and pool) with l2tpns in the server's place: bound to the LAC-facing address,
    its TUN device named like lns's, FreeRADIUS on its loopback.

    The caller owns ``site.cleanup`` (FreeRADIUS, l2tpns, /etc/netns/NAMESPACE).
    """
    from lns.testing import dataplane_site as dataplane
    from lns.testing.netns import veth

    lac, lns, host = create_namespace(), create_namespace(), create_namespace()
    site = dataplane.Site(lac, lns, host, directory)
    veth(lac, "lac0", f"{dataplane.LAC_ADDRESS}/30", lns, "l2tp0", f"{dataplane.LNS_ADDRESS}/30")
    veth(lns, "up0", "10.211.0.1/30", host, "down0", f"{dataplane.HOST}/30")
    lns.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    for network in (dataplane.POOL, dataplane.LAN, f"{dataplane.TUN_ADDRESS}/32"):
        host.ip("route", "add", str(network), "via", "10.211.0.1")
    start_freeradius(site.cleanup, lns, dataplane.users(sessions))
    server = start_l2tpns(
        site.cleanup,
        lns,
        directory,
        bind=dataplane.LNS_ADDRESS,
        pool=str(dataplane.POOL),
        tun_address=dataplane.TUN_ADDRESS,
        secret=dataplane.L2TP_SECRET,  # what site.drive gives the LAC
    )
    site.server = server.process
    site.log = _NoLines(server.log)
    return site


class _NoLines:
    """What Site.stop_server reads for l2tpns: its log file (it writes nothing to stdout)."""

    def __init__(self, log: LogFile) -> None:
        self.log = log

    def rest(self, timeout: float = 0.0) -> str:
        return self.log.text()
