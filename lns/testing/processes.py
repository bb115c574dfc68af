"""The server as a process, the way an operator starts it, run on this source tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The directory holding the `lns` package this process runs: the working tree in
# development (children must import it, not an installed copy), site-packages when
# installed.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def twistd_command(config: Path, *twistd_options: str) -> list[str]:
    """``twistd -n lns --config FILE`` with this interpreter (``--pidfile=``: none)."""
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        *twistd_options,
        "lns",
        "--config",
        str(config),
    ]


def working_tree_env(**extra: str) -> dict[str, str]:
    """The environment for a child that must import this source tree, not an install."""
    return dict(os.environ, PYTHONPATH=str(SOURCE_ROOT), **extra)
