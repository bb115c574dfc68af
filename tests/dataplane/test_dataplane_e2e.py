"""The data plane end to end, in network namespaces this test creates (the site of
lns.testing.dataplane_site: LAC, server with its TUN device and FreeRADIUS, a host behind).
The LAC simulator's devices ping the server's TUN address and the host behind it with
ICMP inside PPP, and the kernels answer.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lns.testing.dataplane_site import (
    HOST,
    L2TP_SECRET,
    LAN,
    MRU,
    POOL,
    RADIUS_SECRET,
    TUN_ADDRESS,
    Site,
    build_site,
)
from lns.testing.netns import NetNs
from lns.testing.processes import ChildOutput

pytestmark = pytest.mark.integration  # namespaces, twistd with its TUN device, FreeRADIUS


@pytest.fixture
def site_factory(
    netns_factory: Callable[[], NetNs],
    tmp_path: Path,
    freeradius_binary: str,
) -> Iterator[Callable[[int], Site]]:
    sites: list[Site] = []

    def build(sessions: int) -> Site:
        site = build_site(netns_factory, tmp_path, freeradius_binary, sessions)
        sites.append(site)
        return site

    try:
        yield build
    finally:
        for site in sites:
            site.cleanup.close()


def drive(
    site: Site, sessions: int, *extra: str
) -> tuple[subprocess.Popen[str], ChildOutput, dict]:
    driver, lines = site.drive(sessions, "--ping", TUN_ADDRESS, "--ping", HOST, *extra)
    up = lines.json()
    assert up["phase"] == "up", up
    return driver, lines, up


def finish(driver: subprocess.Popen[str], lines: ChildOutput) -> dict:
    assert driver.stdin is not None
    driver.stdin.write("done\n")
    driver.stdin.close()
    done = lines.json()
    assert done["phase"] == "done", done
    driver.wait(30)
    return done


def test_pings_through_a_session_spoofing_mss_and_framed_route(
    site_factory: Callable[[int], Site],
):
    site = site_factory(2)
    # Someone listening behind the server, reporting the MSS of the connection it accepts.
    listener = site.host.popen(
        sys.executable,
        "-c",
        "import socket; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('{HOST}', 5001)); s.listen(); print('listening', flush=True); "
        "c, _ = s.accept(); print(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG), flush=True)",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    accepted = ChildOutput(listener)
    accepted.wait_for(lambda line: line == "listening")
    driver, lines, up = drive(
        site, 2, "--spoof-check", "--syn", f"{HOST}:5001", "--serve", str(LAN)
    )

    # Each session's echo requests to the TUN address and to the host came back to it.
    assert up["replies"] == up["wanted"] == 4
    assert up["strays"] == []
    addresses = [ipaddress.IPv4Address(a) for a in up["addresses"]]
    assert all(address in POOL for address in addresses)
    # A packet with another session's source address was dropped, not forwarded.
    assert up["spoof_reply_seen"] is False
    # MSS clamped to MRU - 40 both ways: the SYN-ACK reaching the session, and the
    # connection the host accepted (the session's SYN announced 1460).
    assert up["syn_ack_mss"] == MRU - 40
    assert int(accepted.wait_for(lambda line: line.isdigit())) <= MRU - 40

    # Routes into the TUN device: each session's address and the Framed-Route.
    table = site.routes()
    for address in addresses:
        assert any(line.startswith(f"{address} ") for line in table), table
    assert any(line.startswith(f"{LAN} ") for line in table), table
    # The host reaches the LAN behind the first SIM through its Framed-Route.
    ping = site.host.run("ping", "-c", "2", "-W", "5", "172.20.5.9", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    done = finish(driver, lines)
    assert done["served"] == {"0": 2}
    output = site.stop_server()
    assert "spoofed" in output
    assert "Traceback" not in output
    assert L2TP_SECRET not in output
    assert RADIUS_SECRET not in output
    assert site.routes() == []  # the device is gone with its routes


def test_a_hundred_sessions_each_get_their_own_replies(site_factory: Callable[[int], Site]):
    site = site_factory(100)
    driver, lines, up = drive(site, 100)
    assert up["sessions"] == 100
    assert len(set(up["addresses"])) == 100
    assert up["replies"] == up["wanted"] == 200
    assert up["strays"] == []
    finish(driver, lines)
    output = site.stop_server()
    assert "Traceback" not in output
