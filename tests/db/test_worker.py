"""lns.db.worker, the node's SQL in a process of its own, started as the node starts it.

A stopping node still writes its sessions' Stops through the worker, so a SIGTERM or
SIGINT sent to the whole process group (systemd's default KillMode, a terminal's Ctrl-C)
must not end it: only the end of its input does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from lns.db.worker import FRAME, decode_frames, frame
from lns.testing.processes import SOURCE_ROOT, working_tree_env

pytestmark = pytest.mark.integration


def sqlite_version(engine: Engine) -> str:
    """A call the worker runs with its engine (named by reference, as the node's are)."""
    with engine.connect() as connection:
        return str(connection.execute(text("select sqlite_version()")).scalar_one())


def answer(worker: subprocess.Popen[bytes]) -> object:
    assert worker.stdout is not None
    header = worker.stdout.read(FRAME.size)
    (length,) = FRAME.unpack(header)
    [reply] = decode_frames(bytearray(header + worker.stdout.read(length)))
    return reply


def test_the_worker_outlives_stop_signals_and_ends_with_its_input(tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "lns.db.worker"],
        cwd=SOURCE_ROOT,
        env=working_tree_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdin is not None
        worker.stdin.write(frame((f"sqlite:///{tmp_path / 'worker.db'}", 1)))
        call = (1, "engine", sqlite_version, ())
        worker.stdin.write(frame(call))
        worker.stdin.flush()
        number, ok, version = answer(worker)  # type: ignore[misc]
        assert (number, ok) == (1, True)
        for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(worker.pid, stop)
        worker.stdin.write(frame((2, "engine", sqlite_version, ())))
        worker.stdin.flush()
        assert answer(worker) == (2, True, version)  # still there, still answering
        worker.stdin.close()  # the node is gone
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
