"""Is the database usable? Checked once, before a node says it is up or an admin command runs.

A node that listens while its database cannot be used refuses every call with
an internal error, and loses its Accounting-On (issue 16). So before anything
starts, `prepare` opens the database, migrates it (or checks that it is
current), and writes to it in a transaction it rolls back: reachable,
migrated and writable, or a `DatabaseUnusable` whose one-line message says
what to fix, with the URL's password masked.

SQLite creates a missing file on connect, so a mistyped path would silently
become an empty database. Here a missing file is created only when asked
(`create=True`: `migrate_on_start`, `lns-admin db upgrade`), with mode 0600
(SQLite gives its `-wal` and `-shm` files the database file's mode).
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from lns.db import database

__all__ = ["DatabaseUnusable", "describe_error", "prepare", "require_sqlite_file", "sqlite_file"]

DATABASE_FILE_MODE = 0o600


class DatabaseUnusable(RuntimeError):
    """The database cannot be used; ``str()`` is one line, without a password."""


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL (absolute), or None for any other database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).absolute()


def require_sqlite_file(url: str | URL, *, create: bool) -> None:
    """For SQLite: the file exists, or (with `create`) is created empty, mode 0600.

    Raises DatabaseUnusable naming the missing file or directory.
    """
    path = sqlite_file(url)
    if path is None or path.exists():
        return
    where = database.safe_url(url)
    if not create:
        raise DatabaseUnusable(
            f"{where}: no database file {path} (`lns-admin db upgrade` creates it)"
        )
    if not path.parent.is_dir():
        raise DatabaseUnusable(f"{where}: directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DATABASE_FILE_MODE)
    except FileExistsError:
        return  # made meanwhile, by another node or command
    except OSError as exc:
        raise DatabaseUnusable(f"{where}: cannot create {path}: {exc.strerror}") from None
    os.close(fd)


def describe_error(exc: BaseException, url: str | URL) -> str:
    """One line for a failure to use the database at `url`, with a hint for SQLite files."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    password = _password(url)
    if password:
        reason = reason.replace(password, "***")
    hint = _sqlite_hint(url, reason)
    return f"{database.safe_url(url)}: {reason}{hint}"


def _password(url: str | URL) -> str | None:
    try:
        password = make_url(url).password
    except ArgumentError:
        return None
    return None if password is None else str(password)


def _sqlite_hint(url: str | URL, reason: str) -> str:
    path = sqlite_file(url)
    if path is None:
        return ""
    directory = path.parent
    if not directory.is_dir():
        return f" (directory {directory} does not exist)"
    if "readonly" in reason or "unable to open" in reason:
        # SQLite writes the database and, beside it, its -wal and -shm files.
        if path.exists() and not os.access(path, os.W_OK):
            return f" ({path} is not writable by this user)"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f" (directory {directory} is not writable by this user)"
    return ""


def prepare(url: str, *, migrate: bool) -> None:
    """Open, migrate (or check the schema of) and test-write the database at `url`.

    Raises DatabaseUnusable with one line saying why it cannot be used.
    """
    require_sqlite_file(url, create=migrate)
    try:
        engine = database.create_engine(url, pool_size=1)
    except database.DatabaseUrlError as exc:
        raise DatabaseUnusable(str(exc)) from None
    try:
        if migrate:
            database.upgrade(engine)
        else:
            database.require_current(engine)
        _write_probe(engine)
    except database.SchemaNotCurrent as exc:
        raise DatabaseUnusable(f"{database.safe_url(url)}: {exc}") from None
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseUnusable(describe_error(exc, url)) from None
    finally:
        engine.dispose()


def _write_probe(engine: Engine) -> None:
    """A write the database must accept (a read-only file, a standby server refuse it),
    rolled back."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            connection.execute(
                sqlalchemy.text("UPDATE alembic_version SET version_num = version_num")
            )
        finally:
            transaction.rollback()
