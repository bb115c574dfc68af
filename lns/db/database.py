"""Engines for the lease database, and its alembic migrations run from code.

Two backends (DESIGN.md section 5): a SQLite file for one node (WAL mode, so
readers never wait for the writer; a busy timeout, so writers queue rather than
fail; every transaction `BEGIN IMMEDIATE`, so the allocator's read-then-update
steps are serialised without a lock upgrade that could deadlock), and PostgreSQL
through psycopg 3 for several nodes sharing pools.

The migrations are the only way the schema is made. They run on a Connection
handed to alembic through `Config.attributes["connection"]` (alembic cookbook,
"Sharing a Connection with a Series of Migration Commands and Environments"),
never on a URL: a URL in an alembic Config goes through configparser, which
mangles `%` and would keep the password in yet another place.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

__all__ = [
    "DatabaseUrlError",
    "SchemaNotCurrent",
    "create_engine",
    "current",
    "downgrade",
    "head",
    "migrations_directory",
    "require_current",
    "safe_url",
    "upgrade",
]

# How long a SQLite writer waits for the write lock before "database is locked".
SQLITE_BUSY_TIMEOUT = 30.0
# How long a PostgreSQL connection attempt may take (libpq's connect_timeout).
POSTGRES_CONNECT_TIMEOUT = 10
# Any constant: the key of the advisory lock that serialises migrations of nodes
# starting together against one PostgreSQL database.
_MIGRATION_LOCK_KEY = 0x4C4E5300  # "LNS\0"


class DatabaseUrlError(ValueError):
    """The database URL is unusable; the message never contains its password."""


class SchemaNotCurrent(RuntimeError):
    """The database schema is not at this version's head revision."""

    def __init__(self, found: str | None, wanted: str) -> None:
        super().__init__(
            f"the database schema is at revision {found or 'none (empty database)'}, "
            f"this lns needs {wanted}: run `lns-admin db upgrade`"
        )
        self.found = found
        self.wanted = wanted


def safe_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def create_engine(url: str | URL, *, pool_size: int = 5) -> Engine:
    """An Engine for a `sqlite:///FILE` or `postgresql+psycopg://...` URL.

    `postgresql://` means psycopg 3 here (SQLAlchemy would pick psycopg2).
    PostgreSQL: `pool_size` connections are kept open, at least the number of
    threads using the engine, so none of them waits for one. SQLite: one.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(
            "not a database URL; expected e.g. 'sqlite:///lns.db' or "
            "'postgresql+psycopg://user@host/lns'"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            if parsed.drivername != "postgresql":
                raise DatabaseUrlError(
                    f"{safe_url(parsed)}: only the psycopg driver is supported "
                    "(postgresql+psycopg://...)"
                )
            parsed = parsed.set(drivername="postgresql+psycopg")
        return _postgres_engine(parsed, pool_size)
    raise DatabaseUrlError(
        f"{safe_url(parsed)}: unsupported database {backend!r}; use sqlite or postgresql"
    )


def _sqlite_engine(url: URL) -> Engine:
    if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        # Each pooled connection would open its own empty database.
        raise DatabaseUrlError(
            f"{safe_url(url)}: an in-memory SQLite database cannot be shared by the "
            "server's threads; name a file, e.g. 'sqlite:///lns.db'"
        )
    # One connection, whatever `pool_size` says. SQLite has one writer at a time
    # anyway, and threads queue for the pooled connection first come, first
    # served, where SQLite's busy handler polls with growing sleeps and can let
    # a waiter starve behind a steady stream of others.
    engine = _engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=SQLITE_BUSY_TIMEOUT,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False},
    )

    @event.listens_for(engine, "do_connect")
    def _before_connect(*_: object) -> None:
        # When SQLite is about to open (and so create) the file, not before: an
        # engine made for a node that then fails to start leaves no file behind.
        _create_private(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Take transaction control from pysqlite, which would otherwise BEGIN
        # lazily (deferred) and commit behind our back before DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Take the write lock at the start: two deferred transactions that both
        # read and then write would otherwise fail with SQLITE_BUSY on upgrade.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _create_private(url: URL) -> None:
    """Create a missing database file readable by its owner only (0600).

    Leases and the accounting spool hold ICCIDs and addresses. SQLite creates its
    -wal and -shm files with the permissions of the database file, so making the
    file first, before SQLite does (with the umask's 0644), covers all three. An
    existing file is left as its owner made it; a path that cannot be created is
    left for SQLite to report.
    """
    if url.database is None or url.query.get("uri"):
        return
    try:
        fd = os.open(url.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return
    os.close(fd)


def _postgres_engine(url: URL, pool_size: int) -> Engine:
    connect_args: dict[str, Any] = {"application_name": "lns"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT
    return _engine(
        url,
        pool_size=pool_size,
        max_overflow=2,
        # A node outlives database restarts: test a pooled connection before use.
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _engine(url: URL, **kwargs: Any) -> Engine:
    try:
        return sqlalchemy.create_engine(url, **kwargs)
    except NoSuchModuleError:
        raise DatabaseUrlError(f"{safe_url(url)}: no driver for this URL") from None
    except ImportError as exc:
        raise DatabaseUrlError(f"{safe_url(url)}: driver not installed ({exc.name})") from None


# --- Migrations ---


def migrations_directory() -> Path:
    """The alembic script directory: `migrations/`, beside the `lns` package.

    It is found by path rather than imported by name, so that no other
    `migrations` on sys.path (the current directory's, another project's) can be
    taken for ours; the wheel installs it next to `lns` as it is in the tree.
    """
    directory = Path(__file__).resolve().parent.parent.parent / "migrations"
    if not (directory / "env.py").is_file():
        raise RuntimeError(f"the lns migrations are missing: no {directory / 'env.py'}")
    return directory


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    # configparser interpolation: a literal % in the path must be doubled.
    config.set_main_option("script_location", str(migrations_directory()).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this version of lns knows."""
    revision = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError("the lns migrations have no head revision")
    return revision


@contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Nodes starting together with migrate_on_start all try to migrate:
            # the first does it, the others wait here and then find it done.
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        yield connection


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema up to `revision`, in one transaction."""
    with _migration_transaction(engine) as connection:
        command.upgrade(_alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the schema down to `revision` ("base": nothing left), in one transaction."""
    with _migration_transaction(engine) as connection:
        command.downgrade(_alembic_config(connection), revision)


def current(engine: Engine) -> str | None:
    """The schema's revision, or None for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_current(engine: Engine) -> None:
    """Raise SchemaNotCurrent unless the schema is at `head()`."""
    found = current(engine)
    wanted = head()
    if found != wanted:
        raise SchemaNotCurrent(found, wanted)
