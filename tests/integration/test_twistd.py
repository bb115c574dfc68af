"""The server as an operator runs it: ``twistd -n lns --config FILE``, then SIGTERM.

A LAC simulator on loopback opens a tunnel and a session against the real
process; on SIGTERM the LAC must receive a StopCCN (result 6, shutting down)
and the process must exit cleanly, having logged each event on one line.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from lns.testing.config import ConfigBuilder
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.lac import Lac, Phase, default_proxy_lcp, proxy_chap
from lns.testing.ports import free_udp_port
from lns.testing.processes import Twistd, twistd_command, working_tree_env

SECRET = b"twistd-test-secret"
ICCID = "8944200000000000017"


def write_config(directory: Path, port: int) -> Path:
    return (
        ConfigBuilder()
        .lns(node_name="test-node")
        .l2tp(listen=f"127.0.0.1:{port}", hostname="lns-under-test")
        .lac(name="loopback-lac", peer="127.0.0.0/8", secret=SECRET.decode())
        .dataplane(mode="none")
        .sqlite(directory / "lns.db")
        .write(directory / "lns.toml")
    )


@pytest_twisted.inlineCallbacks
def test_twistd_serves_a_session_and_stops_with_stopccn(tmp_path: Path):
    port = free_udp_port()
    server = Twistd(write_config(tmp_path, port)).start()
    process = server.process
    client = None
    try:
        lac = Lac(hostname="lac1", secret=SECRET)
        client = LacClient(lac, ("127.0.0.1", port), reactor)
        client.start()
        tunnel = lac.open_tunnel(reactor.seconds())
        client.flush()
        yield client.until(lambda: tunnel.phase is Phase.ESTABLISHED, timeout=10)
        call = lac.place_call(
            tunnel,
            ICCID,
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_chap(b"pw", lac.rng),
        )
        client.flush()
        yield client.until(lambda: call.peer_session_id != 0 and tunnel.channel.idle, timeout=10)

        process.send_signal(signal.SIGTERM)
        yield client.until(lambda: tunnel.phase is Phase.CLOSED, timeout=10)
        assert tunnel.result is not None
        assert tunnel.result.result == 6  # requester is being shut down
        # Let the LAC's ack of the StopCCN go out before the process is checked.
        yield client.until(lambda: tunnel.channel.idle, timeout=10)
        process.wait(15)
    finally:
        if client is not None:
            yield client.stop()
        server.stop()
    output = server.log()
    # twistd ends itself with the signal that stopped it, as a daemon should.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "tunnel up: LAC loopback-lac (lac1)" in output
    assert f"call up: ICCID {ICCID}" in output
    # No AAA back end is configured in this build: the session is refused, saying why.
    assert f"session down: ICCID {ICCID}" in output
    assert "authentication unavailable: no AAA back end" in output
    assert f"call down: ICCID {ICCID}" in output
    assert "tunnel down: LAC loopback-lac" in output
    assert "LNS is shutting down" in output
    assert "some LACs did not acknowledge" not in output
    assert SECRET.decode() not in output
    assert "Traceback" not in output


def test_bad_config_stops_the_start_naming_the_key(tmp_path: Path):
    path = ConfigBuilder().l2tp(hello_interval="often").write(tmp_path / "lns.toml")
    result = subprocess.run(
        twistd_command(path),
        cwd=tmp_path,
        env=working_tree_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "hello_interval" in result.stdout + result.stderr
