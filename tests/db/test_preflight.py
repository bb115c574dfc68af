"""The database check before a node starts or an admin command runs (lns.db.preflight)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from lns.db import database, preflight


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_sqlite_file_is_created_0600_when_migrating(tmp_path: Path):
    path = tmp_path / "lns.db"
    preflight.prepare(f"sqlite:///{path}", migrate=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    engine = database.create_engine(f"sqlite:///{path}")
    try:
        assert database.current(engine) == database.head()
    finally:
        engine.dispose()


def test_a_missing_sqlite_file_is_not_created_without_migrations(tmp_path: Path):
    path = tmp_path / "lns.db"
    with pytest.raises(preflight.DatabaseUnusable) as caught:
        preflight.prepare(f"sqlite:///{path}", migrate=False)
    assert str(caught.value) == (
        f"sqlite:///{path}: no database file {path} (`lns-admin db upgrade` creates it)"
    )
    assert not path.exists()


def test_a_missing_directory_is_named(tmp_path: Path):
    path = tmp_path / "nowhere" / "lns.db"
    with pytest.raises(preflight.DatabaseUnusable) as caught:
        preflight.prepare(f"sqlite:///{path}", migrate=True)
    assert str(caught.value) == f"sqlite:///{path}: directory {path.parent} does not exist"


def test_a_schema_not_migrated_is_named(tmp_path: Path):
    path = tmp_path / "lns.db"
    path.touch()
    with pytest.raises(preflight.DatabaseUnusable) as caught:
        preflight.prepare(f"sqlite:///{path}", migrate=False)
    assert "none (empty database)" in str(caught.value)
    assert "run `lns-admin db upgrade`" in str(caught.value)


def test_an_unreachable_postgresql_is_one_line_without_the_password():
    port = free_tcp_port()  # closed again: nothing listens there
    url = f"postgresql+psycopg://lns:s3cret-pw@127.0.0.1:{port}/lns"
    with pytest.raises(preflight.DatabaseUnusable) as caught:
        preflight.prepare(url, migrate=True)
    message = str(caught.value)
    assert message.startswith(f"postgresql+psycopg://lns:***@127.0.0.1:{port}/lns: ")
    assert "Connection refused" in message
    assert "s3cret-pw" not in message
    assert "\n" not in message


def test_describe_error_masks_a_password_the_driver_repeats():
    url = "postgresql+psycopg://lns:hunter2@db/lns"
    assert preflight.describe_error(RuntimeError("auth failed for hunter2"), url) == (
        "postgresql+psycopg://lns:***@db/lns: auth failed for ***"
    )


def test_sqlite_file():
    assert preflight.sqlite_file("sqlite:////var/lib/lns/lns.db") == Path("/var/lib/lns/lns.db")
    assert preflight.sqlite_file("postgresql+psycopg://lns@db/lns") is None
    assert preflight.sqlite_file("sqlite://") is None
