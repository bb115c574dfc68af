"""The shipped server as an operator runs it, for the load generator to drive.

The session's FreeRADIUS (tests/conftest.py), which knows a range of SIMs whose
password is their ICCID (the generator's default, `lns.testing.sims`), an SQLite
pool made with ``lns-admin``, and ``twistd -n lns --config FILE`` as a process on a
free loopback port.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius
from lns.testing.pools import sqlite_pool
from lns.testing.ports import free_udp_port
from lns.testing.processes import Twistd

L2TP_SECRET = "loadgen-l2tp-secret"
POOL = "100.65.0.0/22"


@dataclass
class LnsServer:
    twistd: Twistd
    port: int
    secret: str = L2TP_SECRET  # the tunnel secret of its one LAC

    def log(self) -> str:
        return self.twistd.log()


@pytest.fixture(scope="module")
def lns_server(
    tmp_path_factory: pytest.TempPathFactory, freeradius: FreeRadius
) -> Iterator[LnsServer]:
    directory = tmp_path_factory.mktemp("lns")
    port = free_udp_port()
    config = (
        ConfigBuilder()
        .lns(node_name="loadgen-test")
        .l2tp(listen=f"127.0.0.1:{port}", hostname="lns-under-load")
        .lac(name="loadgen", peer="127.0.0.0/8", secret=L2TP_SECRET)
        # FreeRADIUS 3.2.1 signs no reply (notes/peers.md).
        .aaa(nas_identifier="loadgen-test", require_message_authenticator=False)
        .radius_server(freeradius, timeout=2.0, retries=2)
        .database(url=sqlite_pool(directory / "lns.db", POOL), migrate_on_start=False)
        .dataplane(mode="none")
        .write(directory / "lns.toml")
    )
    twistd = Twistd(config).start()
    try:
        yield LnsServer(twistd, port)
    finally:
        twistd.stop()
