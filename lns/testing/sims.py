"""The SIMs the test suite's FreeRADIUS knows, and the secret it shares with the node.

One population for the one FreeRADIUS of a test session (``freeradius`` in
tests/conftest.py): named SIMs whose replies the RADIUS tests check, and a range of
plain SIMs whose password is their ICCID, lns-loadgen's default, for the tests that
drive many sessions. Their ICCIDs do not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

from lns.testing.freeradius import RadiusUser, users_file

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

# The load generator's SIMs: LOADGEN_ICCID_START and the next ones, password = ICCID.
LOADGEN_ICCID_START = "8944990000000000001"
LOADGEN_SIMS = 200


def loadgen_iccid(index: int) -> str:
    return str(int(LOADGEN_ICCID_START) + index).zfill(len(LOADGEN_ICCID_START))


NAMED_USERS = (
    RadiusUser(PLAIN.iccid, PLAIN.password),
    RadiusUser(
        STATIC.iccid,
        STATIC.password,
        reply=(
            "Framed-IP-Address = 100.64.20.9",
            "MS-Primary-DNS-Server = 192.0.2.53",
            "MS-Secondary-DNS-Server = 192.0.2.54",
        ),
    ),
    RadiusUser(
        POOLED.iccid,
        POOLED.password,
        reply=("Framed-IP-Address = 255.255.255.254", 'Framed-Pool = "gold"'),
    ),
    RadiusUser(
        TIMED.iccid,
        TIMED.password,
        reply=(
            "Session-Timeout = 3600",
            "Idle-Timeout = 600",
            "Acct-Interim-Interval = 300",
            'Framed-Route = "10.1.0.0/24 0.0.0.0 1"',
            "Class = 0x636c6173732d3435",
        ),
    ),
    RadiusUser(
        BARRED.iccid,
        None,
        check=("Auth-Type := Reject",),
        reply=('Reply-Message = "SIM barred by the operator"',),
    ),
    RadiusUser(BY_ICCID.iccid, BY_ICCID.password, reply=("Framed-IP-Address = 100.64.20.60",)),
    # Matches only when FreeRADIUS decoded our request as we meant it.
    RadiusUser(
        CHECKED.iccid,
        CHECKED.password,
        check=(
            "NAS-Port-Type == Virtual",
            "Service-Type == Framed-User",
            "Framed-Protocol == PPP",
            "Tunnel-Type:1 == L2TP",
            "Tunnel-Medium-Type:1 == IPv4",
            'Tunnel-Client-Endpoint:1 == "198.51.100.7"',
            'Tunnel-Client-Auth-Id:1 == "lac1.example"',
            f'Calling-Station-Id == "{CHECKED.iccid}"',
            'Called-Station-Id == "iot.example"',
            'NAS-Identifier == "lns-test"',
            "NAS-Port == 4242",
            "NAS-IP-Address == 127.0.0.1",
            'Connect-Info == "9600000/384000"',
        ),
        reply=('Reply-Message = "every attribute as expected"',),
    ),
)

LOADGEN_USERS = tuple(RadiusUser(loadgen_iccid(i), loadgen_iccid(i)) for i in range(LOADGEN_SIMS))

USERS = users_file((*NAMED_USERS, *LOADGEN_USERS), "Written by lns/testing/sims.py.")
