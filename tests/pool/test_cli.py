"""lns-admin: every command, run in-process through `lns.cli.main(argv)`, on SQLite.

Errors must be one line on stderr with a non-zero status, never a traceback,
never the database password; one run goes through `python -m lns.cli` as the
installed entry point would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lns
from lns import cli
from lns.db import database
from lns.testing.config import ConfigBuilder

ICCID = "8944200000000000017"
OTHER_ICCID = "89442000000000000250"


class Admin:
    """Runs lns-admin against one database and keeps what it printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self.capsys = capsys
        self.url = url
        self.out = ""
        self.err = ""

    def __call__(self, *argv: str, url: str | None = None) -> int:
        prefix = [] if url == "" else ["--database-url", url or self.url]
        status = cli.main([*prefix, *argv])
        captured = self.capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        return status

    def ok(self, *argv: str) -> str:
        status = self(*argv)
        assert (status, self.err) == (0, ""), self.err
        return self.out

    def json(self, *argv: str) -> object:
        return json.loads(self.ok(*argv, "--json"))

    def refused(self, *argv: str, status: int = 1, url: str | None = None) -> str:
        assert self(*argv, url=url) == status
        assert self.out == ""
        assert self.err.endswith("\n")
        assert self.err.count("\n") == 1, self.err  # one line
        assert "Traceback" not in self.err
        assert self.err.startswith("lns-admin: ")
        return self.err.strip()


@pytest.fixture
def admin(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> Admin:
    return Admin(capsys, sqlite_url)


# --- db ---


def test_db_upgrade_creates_the_schema_and_db_current_reports_it(capsys, empty_sqlite_url):
    admin = Admin(capsys, empty_sqlite_url)
    assert "upgraded from revision none to" in admin.ok("db", "upgrade")
    assert admin.ok("db", "current") == f"{database.head()} (head)\n"
    assert "already at revision" in admin.ok("db", "upgrade")
    # Created by `db upgrade` for the owner alone (SQLite gives its -wal and -shm the same).
    assert (Path(empty_sqlite_url.removeprefix("sqlite:///")).stat().st_mode & 0o777) == 0o600


def test_db_current_of_an_empty_database_says_none(capsys, empty_sqlite_url):
    Path(empty_sqlite_url.removeprefix("sqlite:///")).touch()
    admin = Admin(capsys, empty_sqlite_url)
    assert (
        admin.ok("db", "current")
        == f"none (head is {database.head()}: run `lns-admin db upgrade`)\n"
    )
    assert admin.json("db", "current") == {
        "revision": None,
        "head": database.head(),
        "current": False,
    }


def test_pool_and_lease_commands_need_a_migrated_database(capsys, empty_sqlite_url):
    Path(empty_sqlite_url.removeprefix("sqlite:///")).touch()
    admin = Admin(capsys, empty_sqlite_url)
    assert "run `lns-admin db upgrade`" in admin.refused("pool", "list")


@pytest.mark.parametrize("command", [("pool", "list"), ("db", "current"), ("lease", "list")])
def test_a_missing_sqlite_file_is_an_error_and_is_not_created(capsys, tmp_path, command):
    # A mistyped path must not become an empty database: only `db upgrade` creates one.
    path = tmp_path / "missing.db"
    admin = Admin(capsys, f"sqlite:///{path}")
    assert admin.refused(*command) == (
        f"lns-admin: sqlite:///{path}: no database file {path} (`lns-admin db upgrade` creates it)"
    )
    assert not path.exists()


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"lns-admin {lns.__version__}\n"


# --- pool add / list / show ---


NETWORK_BROADCAST = (
    "the range's network and broadcast addresses (--keep-network-broadcast keeps them)"
)


def test_pool_add_and_list(admin):
    # A range's network and broadcast addresses are left out unless told otherwise (issue 14).
    added = admin.ok("pool", "add", "default", "10.0.0.0/24", "--exclude", "10.0.0.1")
    assert added.splitlines() == [
        f"excluded 10.0.0.0 and 10.0.0.255, {NETWORK_BROADCAST}",
        "added 10.0.0.0/24 to new pool 'default': 253 addresses,"
        " excluding 10.0.0.0, 10.0.0.1, 10.0.0.255",
    ]
    assert admin.ok("pool", "add", "default", "10.0.1.0/30", "--keep-network-broadcast") == (
        "added 10.0.1.0/30 to pool 'default': 4 addresses\n"
    )
    # The operator's exclusion already covers the network address: only the broadcast is new.
    assert admin.ok("pool", "add", "static", "10.9.0.0/29", "--exclude", "10.9.0.0/30") == (
        f"excluded 10.9.0.7, {NETWORK_BROADCAST}\n"
        "added 10.9.0.0/29 to new pool 'static': 3 addresses, excluding 10.9.0.0/30, 10.9.0.7\n"
    )
    # A /31 and a /32 have neither.
    assert admin.ok("pool", "add", "point", "10.8.0.0/31") == (
        "added 10.8.0.0/31 to new pool 'point': 2 addresses\n"
    )
    assert admin.ok("pool", "list").splitlines() == [
        "POOL     SIZE  IN USE  RESERVED  FREE  RANGES",
        "default  257   0       0         257   10.0.0.0/24 10.0.1.0/30",
        "point    2     0       0         2     10.8.0.0/31",
        "static   3     0       0         3     10.9.0.0/29",
    ]
    assert admin.json("pool", "list")[::2] == [
        {
            "name": "default",
            "size": 257,
            "in_use": 0,
            "reserved": 0,
            "free": 257,
            "ranges": [
                {
                    "cidr": "10.0.0.0/24",
                    "exclusions": ["10.0.0.0", "10.0.0.1", "10.0.0.255"],
                    "size": 253,
                },
                {"cidr": "10.0.1.0/30", "exclusions": [], "size": 4},
            ],
        },
        {
            "name": "static",
            "size": 3,
            "in_use": 0,
            "reserved": 0,
            "free": 3,
            "ranges": [
                {"cidr": "10.9.0.0/29", "exclusions": ["10.9.0.0/30", "10.9.0.7"], "size": 3}
            ],
        },
    ]


def test_pool_add_help_says_what_it_leaves_out(capsys):
    assert cli.main(["pool", "add", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "its network and broadcast addresses are excluded unless --keep-network-broadcast" in (
        text
    )
    assert "--keep-network-broadcast hand out the range's network and broadcast addresses" in text


def test_pool_list_of_no_pools(admin):
    assert admin.json("pool", "list") == []
    assert admin.ok("pool", "list") == "POOL  SIZE  IN USE  RESERVED  FREE  RANGES\n"


def test_pool_add_a_slash_16_in_one_statement(admin):
    admin.ok("pool", "add", "big", "100.64.0.0/16")
    (pool,) = admin.json("pool", "list")
    assert (pool["size"], pool["free"]) == (65534, 65534)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["10.0.0.0/33"], "not a CIDR: '10.0.0.0/33'"),
        (["banana"], "not a CIDR: 'banana'"),
        (["10.0.0.1/24"], "host bits set in '10.0.0.1/24'; did you mean 10.0.0.0/24?"),
        (["2001:db8::/120"], "pools are IPv4"),
        (["10.0.0.0/8"], "larger than a /16: add it as several /16 ranges"),
        (["10.0.0.0/24", "--exclude", "10.1.0.1"], "bad --exclude '10.1.0.1': not inside"),
        (["10.0.0.0/24", "--exclude", "x"], "bad --exclude 'x': not an address or CIDR"),
    ],
)
def test_pool_add_refuses_malformed_ranges(admin, argv, reason):
    assert reason in admin.refused("pool", "add", "p", *argv)
    assert admin.json("pool", "list") == []


def test_pool_add_refuses_a_bad_pool_name(admin):
    assert "bad pool name 'a b'" in admin.refused("pool", "add", "a b", "10.0.0.0/24")


def test_pool_add_refuses_overlapping_ranges_across_pools(admin):
    admin.ok("pool", "add", "a", "10.0.0.0/24")
    assert admin.refused("pool", "add", "b", "10.0.0.128/25") == (
        "lns-admin: 10.0.0.128/25 overlaps 10.0.0.0/24 of pool 'a'"
    )
    assert "overlaps 10.0.0.0/24 of pool 'a'" in admin.refused("pool", "add", "a", "10.0.0.0/16")
    assert [p["name"] for p in admin.json("pool", "list")] == ["a"]


def test_pool_add_with_a_config_excludes_the_lns_own_address(capsys, tmp_path, sqlite_url):
    config = (
        ConfigBuilder()
        .database(url=sqlite_url)
        .ppp(local_address="10.0.0.1")
        .write(tmp_path / "lns.toml")
    )
    admin = Admin(capsys, sqlite_url)
    assert admin(*["--config", str(config), "pool", "add", "p", "10.0.0.0/29"], url="") == 0
    assert admin.out.splitlines() == [
        "excluded 10.0.0.1, the LNS's own address ([ppp] local_address)",
        f"excluded 10.0.0.0 and 10.0.0.7, {NETWORK_BROADCAST}",
        "added 10.0.0.0/29 to new pool 'p': 5 addresses, excluding 10.0.0.0, 10.0.0.1, 10.0.0.7",
    ]


def test_a_bad_config_file_is_one_line(capsys, tmp_path):
    config = ConfigBuilder().database(url=5).write(tmp_path / "lns.toml")
    reason = Admin(capsys, "").refused("--config", str(config), "pool", "list", url="")
    assert reason.startswith(f"lns-admin: {config}: [database] url: expected a database URL")


def test_the_url_may_come_from_the_environment(capsys, sqlite_url, monkeypatch):
    monkeypatch.setenv("LNS_DATABASE_URL", sqlite_url)
    admin = Admin(capsys, sqlite_url)
    assert admin("pool", "list", "--json", url="") == 0
    assert json.loads(admin.out) == []


def test_pool_show(admin):
    admin.ok("pool", "add", "p", "10.0.0.0/29", "--exclude", "10.0.0.7")
    admin.ok("pool", "reserve", "p", "10.0.0.3", "--iccid", ICCID)
    text = admin.ok("pool", "show", "p")
    lines = text.splitlines()
    assert lines[0] == "pool p: 6 addresses, 0 in use, 1 reserved, 5 free"
    assert lines[2:4] == ["RANGE        SIZE  EXCLUDED", "10.0.0.0/29  6     10.0.0.0 10.0.0.7"]
    assert lines[5] == "RESERVED  ICCID                IN USE  SINCE"
    assert lines[6].startswith(f"10.0.0.3  {ICCID}  no      20")
    shown = admin.json("pool", "show", "p")
    assert shown["reservations"] == [
        {
            "address": "10.0.0.3",
            "iccid": ICCID,
            "reserved_at": shown["reservations"][0]["reserved_at"],
            "in_use": False,
        }
    ]
    assert (shown["size"], shown["reserved"], shown["free"]) == (6, 1, 5)


def test_pool_show_of_an_unknown_pool(admin):
    assert admin.refused("pool", "show", "nope") == "lns-admin: no pool named 'nope'"


# --- pool remove ---


def test_pool_remove(admin):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    assert admin.ok("pool", "remove", "p") == "removed pool 'p'\n"
    assert admin.json("pool", "list") == []
    assert admin.refused("pool", "remove", "p") == "lns-admin: no pool named 'p'"
    # The range is free for another pool now.
    admin.ok("pool", "add", "q", "10.0.0.0/29")


def test_pool_remove_refuses_while_leases_are_live_unless_forced(admin, sqlite_url):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    _lease(sqlite_url, "p", ICCID)
    assert admin.refused("pool", "remove", "p") == (
        "lns-admin: pool 'p' has 1 live lease(s); end those sessions first, or use --force"
    )
    assert admin.json("pool", "list")[0]["in_use"] == 1
    assert admin.ok("pool", "remove", "p", "--force") == (
        "removed pool 'p', dropping 1 live lease(s)\n"
    )
    assert admin.json("lease", "list") == []


# --- pool reserve / unreserve ---


def test_pool_reserve_and_unreserve(admin):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    assert admin.ok("pool", "reserve", "p", "10.0.0.3", "--iccid", ICCID) == (
        f"reserved 10.0.0.3 of pool 'p' for ICCID {ICCID}\n"
    )
    # Again for the same ICCID: nothing changes.
    admin.ok("pool", "reserve", "p", "10.0.0.3", "--iccid", ICCID)
    assert admin.refused("pool", "reserve", "p", "10.0.0.3", "--iccid", OTHER_ICCID) == (
        f"lns-admin: 10.0.0.3 is already reserved for ICCID {ICCID}"
    )
    assert admin.refused("pool", "reserve", "p", "10.0.0.4", "--iccid", ICCID) == (
        f"lns-admin: ICCID {ICCID} already has 10.0.0.3 reserved in pool 'p'; unreserve it first"
    )
    assert admin.json("pool", "list")[0]["reserved"] == 1
    assert admin.ok("pool", "unreserve", "p", "10.0.0.3") == (
        f"unreserved 10.0.0.3 of pool 'p' (was ICCID {ICCID})\n"
    )
    assert admin.refused("pool", "unreserve", "p", "10.0.0.3") == (
        "lns-admin: 10.0.0.3 is not reserved"
    )


def test_pool_reserve_refuses_an_address_held_by_another_iccid(admin, sqlite_url):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    _lease(sqlite_url, "p", OTHER_ICCID)  # 10.0.0.1
    reason = admin.refused("pool", "reserve", "p", "10.0.0.1", "--iccid", ICCID)
    assert reason.startswith(
        f"lns-admin: 10.0.0.1 is held by the live session of ICCID {OTHER_ICCID}"
    )
    # Its own holder may have it reserved.
    admin.ok("pool", "reserve", "p", "10.0.0.1", "--iccid", OTHER_ICCID)
    assert admin.json("pool", "show", "p")["reservations"][0]["in_use"] is True


@pytest.mark.parametrize(
    ("argv", "status", "reason"),
    [
        (["p", "10.1.0.1", "--iccid", ICCID], 1, "lns-admin: 10.1.0.1 is not in pool 'p'"),
        (["q", "10.0.0.1", "--iccid", ICCID], 1, "lns-admin: no pool named 'q'"),
        (
            ["p", "10.0.0.1", "--iccid", "12345"],
            2,
            "lns-admin: error: not an ICCID (19 or 20 digits): '12345'",
        ),
        (
            ["p", "10.0.0.1", "--iccid", "89442000000000000A7"],
            2,
            "lns-admin: error: not an ICCID (19 or 20 digits): '89442000000000000A7'",
        ),
        (["p", "10.0.0.300", "--iccid", ICCID], 2, "lns-admin: error: not an IPv4 address"),
    ],
)
def test_pool_reserve_refusals(admin, argv, status, reason):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    assert admin.refused("pool", "reserve", *argv, status=status).startswith(reason)


def test_pool_reserve_accepts_an_iccid_with_the_f_filler(admin):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    admin.ok("pool", "reserve", "p", "10.0.0.1", "--iccid", ICCID + "F")
    assert admin.json("pool", "show", "p")["reservations"][0]["iccid"] == ICCID


# --- lease list / release / reclaim ---


def _lease(url: str, pool: str, iccid: str, node: str = "lns-1", session: int = 7) -> str:
    from lns.pool.allocator import allocate

    engine = database.create_engine(url)
    try:
        with engine.begin() as connection:
            return str(allocate(connection, pool, iccid, node, 3, session).address)
    finally:
        engine.dispose()


def test_lease_list_with_filters(admin, sqlite_url):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    admin.ok("pool", "add", "q", "10.1.0.0/29")
    _lease(sqlite_url, "p", ICCID, "lns-1")
    _lease(sqlite_url, "q", ICCID, "lns-2")
    _lease(sqlite_url, "p", OTHER_ICCID, "lns-2")
    leases = admin.json("lease", "list")
    assert [(x["pool"], x["address"], x["iccid"], x["node"]) for x in leases] == [
        ("p", "10.0.0.1", ICCID, "lns-1"),
        ("p", "10.0.0.2", OTHER_ICCID, "lns-2"),
        ("q", "10.1.0.1", ICCID, "lns-2"),
    ]
    assert set(leases[0]) == {
        "pool",
        "address",
        "iccid",
        "node",
        "tunnel_id",
        "session_id",
        "started_at",
        "origin",
    }
    assert (leases[0]["tunnel_id"], leases[0]["session_id"], leases[0]["origin"]) == (3, 7, "lru")
    assert len(admin.json("lease", "list", "--pool", "p")) == 2
    assert len(admin.json("lease", "list", "--iccid", ICCID)) == 2
    assert len(admin.json("lease", "list", "--node", "lns-2")) == 2
    assert len(admin.json("lease", "list", "--node", "lns-2", "--pool", "q")) == 1
    assert admin.json("lease", "list", "--node", "lns-9") == []
    table = admin.ok("lease", "list", "--pool", "q").splitlines()
    assert table[0].split() == [
        "POOL",
        "ADDRESS",
        "ICCID",
        "NODE",
        "TUNNEL",
        "SESSION",
        "SINCE",
        "BY",
    ]
    assert table[1].split()[:6] == ["q", "10.1.0.1", ICCID, "lns-2", "3", "7"]


def test_lease_list_refusals(admin):
    assert admin.ok("lease", "list") == "no live leases\n"
    assert admin.refused("lease", "list", "--pool", "nope") == "lns-admin: no pool named 'nope'"
    assert "not an ICCID" in admin.refused("lease", "list", "--iccid", "1", status=2)


def test_lease_release(admin, sqlite_url):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    address = _lease(sqlite_url, "p", ICCID)
    assert admin.ok("lease", "release", address) == (
        f"released {address} (ICCID {ICCID} on node 'lns-1')\n"
    )
    assert admin.json("lease", "list") == []
    assert admin.refused("lease", "release", address) == f"lns-admin: {address} has no live lease"
    assert admin.refused("lease", "release", "192.0.2.1") == (
        "lns-admin: 192.0.2.1 is not in any pool"
    )
    # The ICCID keeps its address by stickiness.
    assert _lease(sqlite_url, "p", ICCID) == address


def test_lease_reclaim(admin, sqlite_url):
    admin.ok("pool", "add", "p", "10.0.0.0/29")
    _lease(sqlite_url, "p", ICCID, "gone")
    _lease(sqlite_url, "p", OTHER_ICCID, "lns-1")
    assert admin.ok("lease", "reclaim", "--node", "gone") == "released 1 lease(s) of node 'gone'\n"
    assert [x["node"] for x in admin.json("lease", "list")] == ["lns-1"]
    assert admin.ok("lease", "reclaim", "--node", "gone") == "released 0 lease(s) of node 'gone'\n"


# --- The command line itself ---


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["pool"],
        ["pool", "frob"],
        ["pool", "add", "p"],
        ["pool", "reserve", "p", "10.0.0.1"],
        ["lease", "reclaim"],
        ["--bogus"],
    ],
)
def test_malformed_command_lines_are_one_line_with_status_2(admin, argv):
    reason = admin.refused(*argv, status=2)
    assert reason.startswith("lns-admin: error: ")
    assert reason.endswith("--help)")


def test_help_exits_0(admin):
    assert admin("--help") == 0
    assert "pool" in admin.out


def test_an_unreachable_database_is_one_line_without_the_password(admin):
    url = "postgresql+psycopg://lns:s3cret-pw@127.0.0.1:1/lns"
    reason = admin.refused("pool", "list", url=url)
    assert reason.startswith("lns-admin: cannot use postgresql+psycopg://lns:***@127.0.0.1:1/lns: ")
    assert "s3cret" not in reason


def test_an_unopenable_sqlite_file_is_one_line(admin, tmp_path):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    assert admin.refused("db", "upgrade", url=url).endswith("/no/such does not exist")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("nonsense", "not a database URL"),
        ("mysql://u:pw@h/db", "unsupported database 'mysql'"),
        ("postgresql+asyncpg://u:pw@h/db", "only the psycopg driver is supported"),
        ("sqlite://", "an in-memory SQLite database cannot be shared"),
    ],
)
def test_unusable_urls_are_one_line_without_the_password(admin, url, reason):
    text = admin.refused("db", "current", url=url)
    assert reason in text
    assert ":pw@" not in text


@pytest.mark.integration  # a child process
def test_the_installed_entry_point_runs_as_a_module(sqlite_url, tmp_path):
    root = Path(cli.__file__).resolve().parent.parent
    env = {**os.environ, "LNS_DATABASE_URL": sqlite_url}
    run = subprocess.run(
        [sys.executable, "-m", "lns.cli", "pool", "add", "p", "10.0.0.0/30"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (run.returncode, run.stderr) == (0, "")
    listed = subprocess.run(
        [sys.executable, "-m", "lns.cli", "pool", "list", "--json"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert listed.returncode == 0
    assert json.loads(listed.stdout)[0]["size"] == 2  # less its network and broadcast
    failed = subprocess.run(
        [sys.executable, "-m", "lns.cli", "pool", "show", "nope"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (failed.returncode, failed.stdout, failed.stderr) == (
        1,
        "",
        "lns-admin: no pool named 'nope'\n",
    )
