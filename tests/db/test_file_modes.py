"""The SQLite database and its -wal/-shm files are the owner's alone (issue 12, item 8)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lns.db import database


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "lns.db"
    previous = os.umask(umask)
    try:
        engine = database.create_engine(f"sqlite:///{path}")
        database.upgrade(engine)
        with engine.connect() as connection:  # WAL mode: -wal and -shm exist while open
            connection.exec_driver_sql("SELECT 1")
            made = sorted(p.name for p in tmp_path.iterdir())
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        engine.dispose()
    finally:
        os.umask(previous)
    assert made == ["lns.db", "lns.db-shm", "lns.db-wal"]
    assert modes == dict.fromkeys(made, 0o600)


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "lns.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    database.create_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
