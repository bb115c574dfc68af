"""lns-admin and the nodes sharing a database (issue 13, DESIGN.md section 9): `node list`,
and `lease release`, `lease reclaim --node`, `pool remove --force` refused while the
holding node is alive and adopting it when it is dead (its sessions' Stops spooled)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from aaa.radius import spool
from lns import cli
from lns.db import database, nodes
from lns.pool import admin as pool_admin
from lns.pool.allocator import allocate

ICCIDS = ["8944200000000000017", "8944200000000000025"]


class Admin:
    def __init__(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self.capsys, self.url = capsys, url

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        status = cli.main(["--database-url", self.url, *argv])
        captured = self.capsys.readouterr()
        return status, captured.out, captured.err


def node_row(url: str, name: str, heard_ago: float, sessions: int = 1) -> None:
    """A node's row as if it had run, last heard `heard_ago` seconds ago, with one
    accounted session (its Start spooled and acknowledged) and a lease per ICCID."""
    engine = database.create_engine(url)
    now = datetime.now(UTC)
    heard = now - timedelta(seconds=heard_ago)
    me = nodes.NodeIdentity(name, f"{name}-run", "127.0.0.9:1701", "0.1.0", "elsewhere", 7)
    with engine.begin() as conn:
        nodes.register(conn, me, heard, 30.0, lambda host, pid: False)
        for n, iccid in enumerate(ICCIDS[:sessions]):
            allocate(conn, "default", iccid, name, 1, n + 1)
            record = spool.SessionRecord(
                f"{name}-{n}", 1, [("Acct-Session-Id", f"{name}-{n}")], heard, (0,) * 4
            )
            spool.enqueue_sessions(conn, name, [record])
        far = now + timedelta(days=1)  # every Start delivered (acknowledged)
        spool.acknowledged_many(conn, [r.id for r in spool.due(conn, name, far, 100)])
    engine.dispose()


@pytest.fixture
def admin(capsys, sqlite_url) -> Admin:
    engine = database.create_engine(sqlite_url)
    with engine.begin() as conn:
        pool_admin.add_range(conn, "default", "10.0.0.0/29")
    engine.dispose()
    return Admin(capsys, sqlite_url)


def leases(url: str) -> dict[str, str]:
    engine = database.create_engine(url)
    with engine.begin() as conn:
        found = {str(lease.address): lease.node for lease in pool_admin.list_leases(conn)}
    engine.dispose()
    return found


def stops(url: str, node: str) -> int:
    engine = database.create_engine(url)
    with engine.begin() as conn:
        far = datetime.now(UTC) + timedelta(days=1)
        found = sum(r.status == 2 for r in spool.due(conn, node, far, 100))
    engine.dispose()
    return found


@pytest.mark.parametrize(
    "command",
    [
        ("lease", "release", "10.0.0.1"),
        ("lease", "reclaim", "--node", "node-A"),
        ("pool", "remove", "default", "--force"),
    ],
    ids=["lease-release", "lease-reclaim", "pool-remove"],
)
def test_a_live_nodes_leases_are_refused_to_every_command(admin, sqlite_url, command):
    node_row(sqlite_url, "node-A", heard_ago=2)
    status, out, err = admin(*command)
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "node 'node-A' is alive (heard from 2 s ago)" in err
    assert "lns-admin session kill" in err
    assert leases(sqlite_url) == {"10.0.0.1": "node-A"}  # the SIM keeps its address alone
    assert stops(sqlite_url, "node-A") == 0


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (("lease", "release", "10.0.0.1"), "released 10.0.0.1 (ICCID 8944200000000000017"),
        (("lease", "reclaim", "--node", "node-A"), "released 2 lease(s) of node 'node-A'"),
        (("pool", "remove", "default", "--force"), "removed pool 'default'"),
    ],
    ids=["lease-release", "lease-reclaim", "pool-remove"],
)
def test_a_dead_nodes_leases_are_taken_by_adopting_it(admin, sqlite_url, command, said):
    node_row(sqlite_url, "node-A", heard_ago=120, sessions=2)
    status, out, err = admin(*command)
    assert (status, err) == (0, "")
    assert out.startswith(said)
    assert "node 'node-A' was dead: adopted it (2 accounting Stop(s) spooled" in out
    assert leases(sqlite_url) == {}
    assert stops(sqlite_url, "node-A") == 2  # once: a second command writes none
    assert admin("lease", "reclaim", "--node", "node-A")[0] == 0
    assert stops(sqlite_url, "node-A") == 2


def test_node_list_shows_each_node_alive_or_dead(admin, sqlite_url):
    assert admin("node", "list")[1] == "no node has run on this database\n"
    node_row(sqlite_url, "node-A", heard_ago=1)
    node_row(sqlite_url, "node-B", heard_ago=300, sessions=0)
    status, out, _ = admin("node", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "NODE",
        "ADDRESS",
        "VERSION",
        "HEARTBEAT",
        "SESSIONS",
        "LEASES",
        "SPOOL",
        "STATUS",
    ]
    assert lines[1].split()[0] == "node-A"
    assert lines[1].split()[-1] == "alive"
    assert lines[2].split()[-1] == "dead"
    listed = json.loads(admin("node", "list", "--json")[1])
    assert [(n["name"], n["status"], n["live_leases"]) for n in listed] == [
        ("node-A", "alive", 1),
        ("node-B", "dead", 0),
    ]
    assert listed[0]["address"] == "127.0.0.9:1701"
    assert listed[0]["heartbeat_age"] < 5
