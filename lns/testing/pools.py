"""An address pool made the way an operator makes one: ``lns-admin db upgrade``, then
``lns-admin pool add`` (README, Pools)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lns.cli import main as lns_admin

__all__ = ["PoolError", "prepare_pool", "sqlite_pool"]


class PoolError(RuntimeError):
    """lns-admin refused: the message names the command."""


def prepare_pool(url: str, *networks: str, name: str = "default") -> str:
    """Migrates the database at ``url`` and adds ``networks`` to pool ``name``; returns
    ``url``. What lns-admin prints is kept out of the test's output."""
    commands = [["db", "upgrade"]] + [["pool", "add", name, str(n)] for n in networks]
    with contextlib.redirect_stdout(None):
        for command in commands:
            if lns_admin(["--database-url", url, *command]) != 0:
                # The URL may hold a password: the command is named without it.
                raise PoolError(f"lns-admin {' '.join(command)} failed")
    return url


def sqlite_pool(path: str | os.PathLike[str], *networks: str, name: str = "default") -> str:
    """`prepare_pool` on the SQLite file at ``path``; returns its URL."""
    return prepare_pool(f"sqlite:///{Path(path)}", *networks, name=name)
