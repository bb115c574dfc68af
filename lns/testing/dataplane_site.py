"""A small operator site in network namespaces, for the data-plane test and benchmark::

    [lac ns]  LAC + devices  10.210.0.2 --veth-- 10.210.0.1  [lns ns]
                                                  twistd -n lns, TUN lns0 100.64.0.1,
                                                  FreeRADIUS on its loopback
                                                 10.211.0.1 --veth-- 10.211.0.2  [host ns]

The server runs as a user runs it (``twistd -n lns --config``) with its TUN device,
RADIUS (a real FreeRADIUS, started inside the server's namespace) and an SQLite pool.
Every address here exists only inside the namespaces the site created.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius, RadiusUser, users_file
from lns.testing.netns import NetNs, veth
from lns.testing.pools import sqlite_pool
from lns.testing.processes import SOURCE_ROOT, ChildOutput, Twistd, working_tree_env

L2TP_SECRET = "dataplane-l2tp-secret"
RADIUS_SECRET = "dataplane-radius-secret"
PASSWORD = "pw-dataplane"
ICCID_BASE = 8944000000000100000
POOL = ipaddress.ip_network("100.64.40.0/23")
TUN_ADDRESS = "100.64.0.1"
LNS_ADDRESS = "10.210.0.1"
LAC_ADDRESS = "10.210.0.2"
HOST = "10.211.0.2"
LAN = ipaddress.ip_network("172.20.5.0/24")  # the Framed-Route of the first SIM
MRU = 1450
RADIUS_PORTS = (18120, 18130)


class ServerLog(Protocol):
    """What `Site.stop_server` reads from the server: everything it wrote until it ended."""

    def rest(self, timeout: float = 30.0) -> str: ...


def users(sessions: int) -> str:
    """FreeRADIUS users: one SIM per session, the first with a Framed-Route."""
    return users_file(
        RadiusUser(
            str(ICCID_BASE + index),
            PASSWORD,
            reply=(f'Framed-Route = "{LAN} 0.0.0.0 1"',) if index == 0 else (),
        )
        for index in range(sessions)
    )


def server_config(directory: Path, url: str, mss_clamp: bool = True, hello: int = 60) -> Path:
    return (
        ConfigBuilder()
        .lns(node_name="dataplane-node")
        .l2tp(listen=f"{LNS_ADDRESS}:1701", hello_interval=hello)
        .lac(name="op", peer="10.210.0.0/30", secret=L2TP_SECRET)
        .ppp(local_address=TUN_ADDRESS, mru=MRU)
        .aaa(require_message_authenticator=False)  # FreeRADIUS 3.2.1 signs no reply
        .radius(
            address="127.0.0.1",
            auth_port=RADIUS_PORTS[0],
            acct_port=RADIUS_PORTS[1],
            secret=RADIUS_SECRET,
        )
        .database(url=url)
        .dataplane(mode="tun", tun_name="lns0", mss_clamp=mss_clamp)
        .write(directory / "lns.toml")
    )


@dataclass
class Site:
    lac: NetNs
    lns: NetNs
    host: NetNs
    directory: Path
    server: subprocess.Popen[str] | None = None
    log: ServerLog | None = None
    radius: FreeRadius | None = None
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def routes(self) -> list[str]:
        return self.lns.ip("route", "show", "dev", "lns0", check=False).stdout.splitlines()

    def stop_server(self) -> str:
        """SIGTERM to the server; its whole log once it has exited."""
        assert self.server is not None
        assert self.log is not None
        self.server.terminate()
        self.server.wait(30)
        return self.log.rest()

    def drive(self, sessions: int, *extra: str) -> tuple[subprocess.Popen[str], ChildOutput]:
        """The LAC and its devices (lns.testing.session_driver) in the LAC namespace."""
        driver = self.lac.popen(
            sys.executable,
            "-m",
            "lns.testing.session_driver",
            "--server",
            f"{LNS_ADDRESS}:1701",
            "--local",
            LAC_ADDRESS,
            "--secret",
            L2TP_SECRET,
            "--password",
            PASSWORD,
            "--sessions",
            str(sessions),
            "--iccid-base",
            str(ICCID_BASE),
            "--mru",
            str(MRU),
            *extra,
            cwd=SOURCE_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return driver, ChildOutput(driver)


def build_site(
    create_namespace: Callable[[], NetNs],
    directory: Path,
    freeradius_binary: str,
    sessions: int,
    mss_clamp: bool = True,
    hello: int = 60,
    server_env: Sequence[tuple[str, str]] = (),
) -> Site:
    """Namespaces, links and routes; FreeRADIUS and the server started in the lns namespace.

    The caller owns ``site.cleanup`` (FreeRADIUS is stopped through it); the namespaces
    (and every process started in them) go with ``create_namespace``'s owner.
    """
    lac, lns, host = create_namespace(), create_namespace(), create_namespace()
    site = Site(lac, lns, host, directory)
    veth(lac, "lac0", f"{LAC_ADDRESS}/30", lns, "l2tp0", f"{LNS_ADDRESS}/30")
    veth(lns, "up0", "10.211.0.1/30", host, "down0", f"{HOST}/30")
    lns.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    for network in (POOL, LAN, ipaddress.ip_network(f"{TUN_ADDRESS}/32")):
        host.ip("route", "add", str(network), "via", "10.211.0.1")

    # FreeRADIUS inside the server's namespace, on its loopback.
    radius = FreeRadius(RADIUS_SECRET, users(sessions), *RADIUS_PORTS, namespace=lns.name)
    radius.start(freeradius_binary)
    site.radius = radius
    site.cleanup.callback(radius.stop)

    url = sqlite_pool(directory / "lns.db", str(POOL))
    config = server_config(directory, url, mss_clamp, hello)
    twistd = Twistd(config, env=working_tree_env(**dict(server_env)), namespace=lns).start()
    site.server = twistd.process
    site.log = twistd.output
    return site
