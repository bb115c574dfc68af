"""lns-admin's commands for a running node (lns/node_admin.py) without a node: where they
connect, what they print, and the one-line errors that need no node. Against a real
node: tests/integration/test_management.py."""

from __future__ import annotations

import pytest

from lns.cli import main
from lns.config import ManagementSection, Secret
from lns.node_admin import NodeApi, _duration, _octets


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),  # listening everywhere: reached on loopback
        ("::", "http://[::1]:8080"),
        ("::1", "http://[::1]:8080"),
        ("192.0.2.7", "http://192.0.2.7:8080"),
    ],
)
def test_the_node_is_reached_where_it_listens(host, url):
    api = NodeApi(ManagementSection(listen_host=host, token=Secret("t")), "lns.toml")
    assert api.base == url


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (4.2, "4s"), (75, "1m15s"), (3725, "1h02m"), (90061, "1d01h")],
)
def test_durations(seconds, shown):
    assert _duration(seconds) == shown


@pytest.mark.parametrize(
    ("count", "shown"),
    [(0, "0"), (999, "999"), (1000, "1.0k"), (1_234_567, "1.2M"), (5 * 10**15, "5000.0T")],
)
def test_octets(count, shown):
    assert _octets(count) == shown


def test_a_config_without_management_says_so(tmp_path, capsys):
    config = tmp_path / "lns.toml"
    config.write_text('[lns]\nnode_name = "n"\n')
    assert main(["--config", str(config), "status"]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"lns-admin: {config} has no [management] section: the node runs no management API\n"
    )


def test_node_commands_need_the_config_not_a_database_url(capsys):
    assert main(["--database-url", "sqlite:///x.db", "session", "list"]) == 2
    assert "need --config" in capsys.readouterr().err


def test_session_kill_needs_an_id_or_an_iccid(capsys):
    assert main(["session", "kill"]) == 2
    assert main(["session", "kill", "--iccid", "123"]) == 2
    assert "not an ICCID" in capsys.readouterr().err
