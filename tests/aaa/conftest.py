"""The FreeRADIUS of the RADIUS tests: one per test session, on free loopback ports.

Installed with apt-get when the binary is missing (CI runs as root); the tests
that need it are skipped, saying why, only when that install fails. A server
that is installed but does not start is an error, not a skip.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from lns.db import database
from tests.aaa.freeradius import FreeRadius, FreeRadiusError, ensure_freeradius
from tests.integration.ports import free_udp_port

RADIUS_SECRET = "lns-freeradius-test-secret"


@dataclass(frozen=True)
class Sim:
    iccid: str
    password: str


# The users of the test server, keyed by ICCID (mods-config/files/authorize).
PLAIN = Sim("89440000000000000011", "pw-plain")
STATIC = Sim("89440000000000000029", "pw-static")
POOLED = Sim("89440000000000000037", "pw-pool")
TIMED = Sim("89440000000000000045", "pw-timed")
BARRED = Sim("89440000000000000052", "pw-barred")
BY_ICCID = Sim("89440000000000000060", "89440000000000000060")  # password = ICCID
CHECKED = Sim("89440000000000000078", "pw-checked")

USERS = f"""\
# Written by tests/aaa/conftest.py.
{PLAIN.iccid}	Cleartext-Password := "{PLAIN.password}"

{STATIC.iccid}	Cleartext-Password := "{STATIC.password}"
	Framed-IP-Address = 100.64.20.9,
	MS-Primary-DNS-Server = 192.0.2.53,
	MS-Secondary-DNS-Server = 192.0.2.54

{POOLED.iccid}	Cleartext-Password := "{POOLED.password}"
	Framed-IP-Address = 255.255.255.254,
	Framed-Pool = "gold"

{TIMED.iccid}	Cleartext-Password := "{TIMED.password}"
	Session-Timeout = 3600,
	Idle-Timeout = 600,
	Acct-Interim-Interval = 300,
	Framed-Route = "10.1.0.0/24 0.0.0.0 1",
	Class = 0x636c6173732d3435

{BARRED.iccid}	Auth-Type := Reject
	Reply-Message = "SIM barred by the operator"

{BY_ICCID.iccid}	Cleartext-Password := "{BY_ICCID.password}"
	Framed-IP-Address = 100.64.20.60

# Matches only when FreeRADIUS decoded our request as we meant it.
{CHECKED.iccid}	Cleartext-Password := "{CHECKED.password}", NAS-Port-Type == Virtual, \
Service-Type == Framed-User, Framed-Protocol == PPP, Tunnel-Type:1 == L2TP, \
Tunnel-Medium-Type:1 == IPv4, Tunnel-Client-Endpoint:1 == "198.51.100.7", \
Tunnel-Client-Auth-Id:1 == "lac1.example", Calling-Station-Id == "{CHECKED.iccid}", \
Called-Station-Id == "iot.example", NAS-Identifier == "lns-test", NAS-Port == 4242, \
NAS-IP-Address == 127.0.0.1, Connect-Info == "9600000/384000"
	Reply-Message = "every attribute as expected"
"""


@pytest.fixture(scope="session")
def freeradius_binary() -> str:
    """The path of `freeradius`, installed first if need be."""
    try:
        return ensure_freeradius()
    except FreeRadiusError as exc:
        pytest.skip(f"FreeRADIUS could not be installed: {exc}")


@pytest.fixture(scope="session")
def freeradius(freeradius_binary: str) -> Iterator[FreeRadius]:
    server = FreeRadius(RADIUS_SECRET, USERS, free_udp_port(), free_udp_port())
    server.start(freeradius_binary)  # raises (an error, not a skip) when it does not come up
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, made once per module and copied for each test."""
    path = tmp_path_factory.mktemp("aaa-template") / "lns.db"
    engine = database.create_engine(f"sqlite:///{path}")
    database.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def engine(tmp_path: Path, template: Path) -> Iterator[Engine]:
    """A fresh copy of the migrated database (the accounting spool lives there)."""
    path = tmp_path / "lns.db"
    shutil.copyfile(template, path)
    engine = database.create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()
