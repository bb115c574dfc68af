"""A real ``twistd -n lns`` under a small flood of every kind of issue 12, on loopback.

Not timed (benchmarks/hostile_floods.py measures): a flood of counted datagrams
(lns.testing.flood) from addresses of the LAC's prefix and from one no LAC entry
allows; afterwards the LAC simulator's established tunnel still has its HELLO
acknowledged and a new call answered, the caps held exactly (as many SCCRPs and
ICRPs as the configuration allows, the rest refused with a StopCCN or a CDN),
nothing was reflected beyond what was sent, and the log stayed a few lines a
second. SIGTERM still ends the process cleanly.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor, threads

from lns.testing.config import ConfigBuilder
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.lac import Lac, Phase, default_proxy_lcp, proxy_chap
from lns.testing.ports import free_udp_port
from lns.testing.processes import SOURCE_ROOT, Twistd, working_tree_env

SECRET = "hostile-test-secret"
SETTING_UP = 8  # [[l2tp.lac]] max_tunnels_setting_up
CONNECTING = 16  # [l2tp] max_connecting_calls
COUNTS = {
    "half-open": 200,
    "icrq": 300,
    "unlisted": 300,
    "oversized": 20,
    "unknown-tunnel": 100,
    "garbage": 100,
}


def write_config(directory: Path, port: int) -> Path:
    return (
        ConfigBuilder()
        .lns(node_name="hostile")
        .l2tp(listen=f"127.0.0.1:{port}", max_connecting_calls=CONNECTING)
        .lac(
            name="loopback-lac",
            peer="127.0.0.0/24",
            secret=SECRET,
            max_tunnels_setting_up=SETTING_UP,
        )
        .dataplane(mode="none")
        .sqlite(directory / "lns.db")
        .write(directory / "lns.toml")
    )


def run_flood(directory: Path, port: int) -> dict[str, dict[str, Any]]:
    secret = directory / "secret"
    secret.write_text(SECRET + "\n")
    report = directory / "flood.json"
    counts = ",".join(f"{kind}={count}" for kind, count in COUNTS.items())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lns.testing.flood",
            f"127.0.0.1:{port}",
            "--secret-file",
            str(secret),
            "--count",
            counts,
            "--lac-prefix",
            "127.0.0",
            "--unlisted",
            "127.1.0.1",
            "--json",
            str(report),
        ],
        cwd=SOURCE_ROOT,
        env=working_tree_env(),
        check=True,
        timeout=120,
    )
    kinds: dict[str, dict[str, Any]] = json.loads(report.read_text())["kinds"]
    return kinds


@pytest_twisted.inlineCallbacks
def test_a_flood_leaves_twistd_answering_hello_within_its_caps(tmp_path: Path):
    port = free_udp_port()
    server = Twistd(write_config(tmp_path, port)).start()
    process = server.process
    client = None
    try:
        lac = Lac(hostname="lac1", secret=SECRET.encode())
        client = LacClient(lac, ("127.0.0.1", port), reactor)
        client.start()
        tunnel = lac.open_tunnel(reactor.seconds())
        client.flush()
        yield client.until(lambda: tunnel.phase is Phase.ESTABLISHED, timeout=10)

        kinds = yield threads.deferToThread(run_flood, tmp_path, port)

        # The LAC's tunnel is unharmed: its HELLO is acknowledged, a new call answered.
        lac.send_hello(tunnel)
        client.flush()
        yield client.until(lambda: not lac.hello_outstanding(tunnel), timeout=10)
        call = lac.place_call(
            tunnel,
            "8944200000000000017",
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_chap(b"pw", lac.rng),
        )
        client.flush()
        yield client.until(lambda: call.peer_session_id != 0, timeout=10)
        assert tunnel.phase is Phase.ESTABLISHED

        process.send_signal(signal.SIGTERM)
        yield client.until(lambda: tunnel.phase is Phase.CLOSED, timeout=10)
        yield client.until(lambda: tunnel.channel.idle, timeout=10)
        process.wait(15)
    finally:
        if client is not None:
            yield client.stop()
        server.stop()

    half_open, icrq = kinds["half-open"], kinds["icrq"]
    # Exactly the cap of half-open tunnels was answered; the rest refused, saying why.
    assert half_open["replies"].get("SCCRP") == SETTING_UP
    assert half_open["replies"].get("StopCCN 2/4", 0) >= 1
    # Inside the authenticated tunnel: as many calls wait for an ICCN as the cap allows,
    # every other ICRQ gets its CDN at once (result 4), none goes unanswered.
    assert icrq["replies"].get("ICRP") == CONNECTING
    assert icrq["replies"].get("CDN 4/4") == COUNTS["icrq"] - CONNECTING
    # Before anyone proved the secret, nothing drew back more than it sent.
    for kind in ("half-open", "unlisted", "oversized", "garbage"):
        assert kinds[kind]["reply_bytes"] <= kinds[kind]["sent_bytes"], kind
    assert kinds["oversized"]["replies"] == {}
    # A configured LAC is told at once that a tunnel is unknown here (restarted node).
    assert kinds["unknown-tunnel"]["replies"].get("StopCCN 2/1", 0) >= 1

    text = server.log()
    refused = [line for line in text.splitlines() if "tunnel refused from" in line]
    seconds = {line[:19] for line in refused}  # one timestamp per second of the log
    assert 0 < len(refused) <= 2 * len(seconds)
    assert re.search(r"\[\d{2,} more not logged\]", text)
    assert len(text.splitlines()) < 200  # 1,000 refusals and drops, a few lines each second
    assert process.returncode in (0, -signal.SIGTERM), text[-3000:]
    assert "Traceback" not in text
    assert SECRET not in text
