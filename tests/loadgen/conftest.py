"""The shipped server as an operator runs it, for the load generator to drive.

The session's FreeRADIUS (tests/conftest.py), which knows a range of SIMs whose
password is their ICCID (the generator's default, `lns.testing.sims`), an SQLite
pool made with ``lns-admin``, and ``twistd -n lns --config FILE`` as a process on a
free loopback port.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lns.cli import main as lns_admin
from lns.testing.freeradius import FreeRadius
from lns.testing.ports import free_udp_port
from lns.testing.processes import twistd_command, working_tree_env
from lns.testing.sims import RADIUS_SECRET

L2TP_SECRET = "loadgen-l2tp-secret"
POOL = "100.65.0.0/22"
LISTENING = "L2TP listening"


def write_config(directory: Path, port: int, radius: FreeRadius) -> Path:
    path = directory / "lns.toml"
    path.write_text(
        f"""
[lns]
node_name = "loadgen-test"
[l2tp]
listen = "127.0.0.1:{port}"
hostname = "lns-under-load"
[[l2tp.lac]]
name = "loadgen"
peer = "127.0.0.0/8"
secret = "{L2TP_SECRET}"
[aaa]
nas_identifier = "loadgen-test"
require_message_authenticator = false  # FreeRADIUS 3.2.1 signs no reply (notes/peers.md)
[[aaa.radius]]
address = "127.0.0.1"
auth_port = {radius.auth_port}
acct_port = {radius.acct_port}
secret = "{RADIUS_SECRET}"
timeout = 2.0
retries = 2
[database]
url = "sqlite:///{directory / "lns.db"}"
migrate_on_start = false
[dataplane]
mode = "none"
"""
    )
    return path


@dataclass
class LnsProcess:
    port: int
    process: subprocess.Popen[str]
    output: list[str]
    secret: str = L2TP_SECRET  # the tunnel secret of its one LAC

    def log(self) -> str:
        return "".join(self.output)


@pytest.fixture(scope="module")
def lns_server(
    tmp_path_factory: pytest.TempPathFactory, freeradius: FreeRadius
) -> Iterator[LnsProcess]:
    tmp_path = tmp_path_factory.mktemp("lns")
    url = f"sqlite:///{tmp_path / 'lns.db'}"
    assert lns_admin(["--database-url", url, "db", "upgrade"]) == 0
    assert lns_admin(["--database-url", url, "pool", "add", "default", POOL]) == 0
    port = free_udp_port()
    config = write_config(tmp_path, port, freeradius)
    process = subprocess.Popen(
        twistd_command(config),
        cwd=tmp_path,
        env=working_tree_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    listening = threading.Event()

    def drain() -> None:  # the log must not fill the pipe while the load runs
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if LISTENING in line:
                listening.set()
        listening.set()  # it exited

    reader = threading.Thread(target=drain, name="twistd-log", daemon=True)
    reader.start()
    listening.wait(60)
    try:
        if process.poll() is not None or not any(LISTENING in line for line in output):
            pytest.fail("twistd did not start listening:\n" + "".join(output[-30:]))
        yield LnsProcess(port, process, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(5)
