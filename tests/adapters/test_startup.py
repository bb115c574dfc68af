"""Start-up checks in process: warnings, one-line reasons, bind failures before any thread."""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path

import pytest
from twisted.internet.error import CannotListenError

from lns.adapters.services import make_service
from lns.adapters.startup import StartupError, explain_os_error, startup_warnings
from lns.adapters.tun import TunError
from lns.config import parse_config
from lns.testing.ports import free_udp_port


def test_an_empty_config_warns_of_no_lac_and_no_radius():
    warnings = startup_warnings(parse_config({}), lambda: "0")
    assert warnings == [
        "no [[l2tp.lac]] is configured: every tunnel will be refused",
        "no [[aaa.radius]] server is configured: every session will be refused",
    ]


def test_tun_mode_with_forwarding_off_warns():
    config = parse_config(
        {
            "l2tp": {"lac": [{"name": "a", "peer": "10.0.0.0/8", "secret": "s"}]},
            "aaa": {"radius": [{"address": "127.0.0.1", "secret": "s"}]},
            "dataplane": {"mode": "tun"},
        }
    )
    assert startup_warnings(config, lambda: "1") == []
    (warning,) = startup_warnings(config, lambda: "0")
    assert warning.startswith("net.ipv4.ip_forward is 0: no packet will be forwarded")
    assert startup_warnings(config, lambda: None) == []  # unknown: say nothing


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            OSError(errno.EADDRINUSE, "x"),
            "Address already in use (another process is using this address and port)",
        ),
        (
            CannotListenError("127.0.0.1", 3799, OSError(errno.EADDRNOTAVAIL, "x")),
            "Cannot assign requested address (no interface of this machine has this address)",
        ),
        (
            OSError(errno.EACCES, "x"),
            "Permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        ),
        (
            TunError.opening("lns0", errno.EPERM),
            "cannot open TUN device lns0: Operation not permitted (needs CAP_NET_ADMIN)",
        ),
    ],
)
def test_os_errors_are_explained_in_one_line(error, expected):
    assert explain_os_error(error) == expected


def _config(tmp_path: Path, port: int, **extra: object) -> dict[str, object]:
    return {
        "l2tp": {"listen": f"127.0.0.1:{port}"},
        "database": {"url": f"sqlite:///{tmp_path / 'lns.db'}"},
        **extra,
    }


def test_a_port_in_use_stops_the_start_before_any_thread(tmp_path: Path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        node = make_service(parse_config(_config(tmp_path, port)))
        threads = set(threading.enumerate())
        with pytest.raises(StartupError) as caught:
            node.privilegedStartService()
        assert str(caught.value) == (
            f"[l2tp] listen 127.0.0.1:{port}: Address already in use "
            "(another process is using this address and port)"
        )
        assert set(threading.enumerate()) == threads
        assert not (tmp_path / "lns.db").exists()  # the database was never touched


def test_dynauth_port_in_use_names_its_key(tmp_path: Path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = _config(
            tmp_path, free_udp_port(), aaa={"dynauth": {"listen": f"127.0.0.1:{port}"}}
        )
        node = make_service(parse_config(config))
        with pytest.raises(StartupError) as caught:
            node.privilegedStartService()
        assert str(caught.value).startswith(f"[aaa.dynauth] listen 127.0.0.1:{port}: Address")


def test_an_unusable_database_stops_the_start_before_any_service(tmp_path: Path):
    config = parse_config(
        {
            "l2tp": {"listen": f"127.0.0.1:{free_udp_port()}"},
            "database": {"url": f"sqlite:///{tmp_path / 'missing' / 'lns.db'}"},
        }
    )
    node = make_service(config)
    node.privilegedStartService()
    try:
        threads = set(threading.enumerate())
        with pytest.raises(StartupError) as caught:
            node.startService()
        assert str(caught.value) == (
            f"[database] url sqlite:///{tmp_path}/missing/lns.db: "
            f"directory {tmp_path}/missing does not exist"
        )
        assert set(threading.enumerate()) == threads
        assert not any(child.running for child in node)
    finally:
        node.l2tp.port.stop()


def test_a_bad_database_url_is_a_startup_error():
    config = parse_config({"database": {"url": "mysql://lns@db/lns"}})
    with pytest.raises(StartupError) as caught:
        make_service(config)
    assert str(caught.value) == (
        "[database] url mysql://lns@db/lns: unsupported database 'mysql'; use sqlite or postgresql"
    )
