"""Databases for the pool tests.

SQLite: a file in tmp_path, copied from one migrated once per session (so every
test starts from the schema the migrations make, cheaply). PostgreSQL: the
server named by LNS_TEST_POSTGRES_URL (set by .ci/run), else the local server
at DEFAULT_POSTGRES_URL when it answers, each test in a fresh schema of its own
that is dropped afterwards; without either those tests are skipped, saying why.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from lns.db import database

POSTGRES_URL_VARIABLE = "LNS_TEST_POSTGRES_URL"
# CI's server (.ci/run); used when the variable is unset and a server answers there.
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@functools.cache
def _local_postgres() -> tuple[str | None, str]:
    """(DEFAULT_POSTGRES_URL if a server answers there, else None; why not)."""
    engine = database.create_engine(f"{DEFAULT_POSTGRES_URL}?connect_timeout=2", pool_size=1)
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        text_ = str(getattr(exc, "orig", exc)).strip()
        return None, text_.splitlines()[0] if text_ else type(exc).__name__
    finally:
        engine.dispose()
    return DEFAULT_POSTGRES_URL, ""


def postgres_base_url() -> str:
    """LNS_TEST_POSTGRES_URL, else the local server when one answers; else a skip saying why.

    A URL given explicitly that does not answer is an error, not a skip.
    """
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if url:
        return url
    found, why = _local_postgres()
    if found is None:
        pytest.skip(
            f"{POSTGRES_URL_VARIABLE} is not set and no PostgreSQL answers at "
            f"{DEFAULT_POSTGRES_URL} ({why}): PostgreSQL tests not run"
        )
    return found


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "lns.db"
    engine = database.create_engine(f"sqlite:///{path}")
    database.upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated SQLite database of this test's own."""
    path = tmp_path / "lns.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections work in a new, empty schema (dropped afterwards)."""
    base = postgres_base_url()
    schema = f"lns_test_{uuid.uuid4().hex[:16]}"
    owner = database.create_engine(base, pool_size=1)
    with owner.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with owner.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        owner.dispose()


@pytest.fixture
def postgres_url(postgres_schema_url: str) -> str:
    """A migrated PostgreSQL schema of this test's own."""
    engine = database.create_engine(postgres_schema_url, pool_size=1)
    database.upgrade(engine)
    engine.dispose()
    return postgres_schema_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend (PostgreSQL's tests are `integration` ones)."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    value: str = request.getfixturevalue(fixture)
    return value


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = database.create_engine(url)
    yield engine
    engine.dispose()
