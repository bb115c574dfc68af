"""The server as a process, the way an operator starts it, run on this source tree; and
the output of any child process, read line by line with a bound on every wait.

`Twistd` runs ``twistd -n lns --config FILE`` (in a network namespace when given one)
and returns from `Twistd.start` once the server logs that it listens; its log is read
on a thread as it comes, so a long run never fills the pipe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from lns.testing.netns import NetNs

__all__ = [
    "LISTENING",
    "SOURCE_ROOT",
    "ChildOutput",
    "ProcessError",
    "Twistd",
    "twistd_command",
    "working_tree_env",
]

# The directory holding the `lns` package this process runs: the working tree in
# development (children must import it, not an installed copy), site-packages when
# installed.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
LISTENING = "L2TP listening"  # the server's log line once its socket is bound


class ProcessError(RuntimeError):
    """A child process did not do what was expected in time; the message ends with the
    last lines it wrote."""


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


class ChildOutput:
    """What a child writes on one stream, read on a thread, line by line.

    `wait_for` returns the next line (after the last one it returned) that matches, or
    raises `ProcessError` when the child ends first or the time is up; `text` is
    everything read so far.
    """

    def __init__(self, process: subprocess.Popen[str], stream: IO[str] | None = None) -> None:
        self.process = process
        self.seen: list[str] = []
        self._next = 0  # the first line `wait_for` has not looked at
        self._ended = False
        self._changed = threading.Condition()
        source = stream if stream is not None else process.stdout
        assert source is not None, "the child's output is not a pipe"
        self._reader = threading.Thread(target=self._read, args=(source,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                with self._changed:
                    self.seen.append(line.rstrip("\n"))
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # the stream was closed under us at teardown
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def tail(self, lines: int = 30) -> str:
        with self._changed:
            return "\n".join(self.seen[-lines:])

    def text(self) -> str:
        with self._changed:
            return "\n".join(self.seen)

    def wait_for(self, predicate: Callable[[str], bool] | str, timeout: float = 60.0) -> str:
        """The next line for which ``predicate`` holds (a string: the next line holding
        it)."""
        test = (lambda line: predicate in line) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                while self._next < len(self.seen):
                    line = self.seen[self._next]
                    self._next += 1
                    if test(line):
                        return line
                if self._ended:
                    raise ProcessError(f"the process ended:\n{self._tail_locked()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcessError(f"no such line within {timeout} s:\n{self._tail_locked()}")
                self._changed.wait(left)

    def _tail_locked(self, lines: int = 30) -> str:
        return "\n".join(self.seen[-lines:])

    def next_line(self, timeout: float = 60.0) -> str | None:
        """The next line, or None once the child closed its output."""
        try:
            return self.wait_for(lambda line: True, timeout)
        except ProcessError:
            with self._changed:
                if self._ended and self._next >= len(self.seen):
                    return None
            raise

    def json(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line; a driver's failure report (``"phase": "failed"``) raises."""
        value: dict[str, Any] = json.loads(self.wait_for(lambda s: s.startswith("{"), timeout))
        if value.get("phase") == "failed":
            raise ProcessError(f"driver failed: {value.get('error')}\n{self.tail()}")
        return value

    def rest(self, timeout: float = 30.0) -> str:
        """Everything the child wrote, once its output ends (or ``timeout`` passed)."""
        self._reader.join(timeout)
        return self.text()


class Twistd:
    """``twistd -n lns --config FILE`` as a child process; see the module's docstring."""

    def __init__(
        self,
        config: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        namespace: NetNs | None = None,
        twistd_options: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.cwd = cwd if cwd is not None else config.parent
        self.env = dict(env) if env is not None else working_tree_env()
        self.namespace = namespace
        self.twistd_options = tuple(twistd_options)
        self._process: subprocess.Popen[str] | None = None
        self._output: ChildOutput | None = None

    @property
    def process(self) -> subprocess.Popen[str]:
        assert self._process is not None, "not started"
        return self._process

    @property
    def output(self) -> ChildOutput:
        assert self._output is not None, "not started"
        return self._output

    def spawn(self) -> Self:
        """Starts the process without waiting for it to listen."""
        command = twistd_command(self.config, *self.twistd_options)
        options: dict[str, Any] = {
            "cwd": self.cwd,
            "env": self.env,
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.STDOUT,
            "text": True,
        }
        if self.namespace is not None:
            self._process = self.namespace.popen(*command, **options)
        else:
            self._process = subprocess.Popen(command, **options)
        self._output = ChildOutput(self._process)
        return self

    def start(self, timeout: float = 60.0) -> Self:
        """Starts the process and returns once it listens; else stops it and raises
        `ProcessError` with the end of its log."""
        self.spawn()
        try:
            self.output.wait_for(LISTENING, timeout)
        except ProcessError as exc:
            self.stop()
            raise ProcessError(f"twistd did not start listening: {exc}") from None
        return self

    def listening(self) -> bool:
        return LISTENING in self.log()

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.output.text()

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status once the log is read."""
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.output.rest(5.0)
        return process.returncode

    def kill(self) -> int:
        """SIGKILL: the server gets no chance to clean up."""
        self.signal(signal.SIGKILL)
        self.process.wait(10)
        self.output.rest(5.0)
        return self.process.returncode
