"""Fixtures of the RADIUS tests: the node's database (the accounting spool lives there)
and the real `radclient`.

The FreeRADIUS they talk to is the session's one (``freeradius`` in tests/conftest.py),
knowing the SIMs of `lns.testing.sims`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from lns.db import database
from lns.testing.freeradius import FreeRadiusError, ensure_freeradius


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


@pytest.fixture(scope="session")
def radclient() -> str:
    found = shutil.which("radclient")
    if found is None:
        try:
            ensure_freeradius()  # installs freeradius-utils with freeradius
        except FreeRadiusError as exc:
            pytest.skip(f"radclient could not be installed: {exc}")
        found = shutil.which("radclient")
    if found is None:
        pytest.skip("radclient missing after installing freeradius-utils")
    return found
