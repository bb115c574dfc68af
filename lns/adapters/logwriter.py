"""The node's log: one line per event, written in batches to standard output or a rotated file.

Writing the log must not cost a system call per line (DESIGN.md section 10): a
setup storm logs several lines per session, and one ``write`` each was a tenth
of the server's time (issue 14's profile). `LogWriter` is the log observer: it
formats each event into the buffer and asks the reactor to flush the buffer at
its next turn, so every line logged while the reactor handles one batch of I/O
goes out in one ``write``. A buffer larger than `MAX_PENDING` is written at
once; what is left is written when the reactor shuts down (after which each
line is written as it comes) and when the process exits (also after a failed
start, when the reactor never ran).

Output is standard output by default, for systemd's journal, or a file
(`[log] file`) rotated when it would grow beyond `[log] max_bytes`, keeping
`[log] keep` older files (``lns.log.1`` the newest); files are created mode
0640. Events below `[log] level` are dropped before they are formatted.

Twisted's own life-cycle lines for ports and protocols ("Starting protocol
<aaa.radius.client._Socket object at 0x7f...>", "... starting on 60974", "(UDP
Port 60974 Closed)") say nothing an operator can use, and show object reprs:
they are dropped. Our services say what they listen on in words.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import ILogObserver, LogEvent, LogLevel, eventAsText
from twisted.python import threadable
from zope.interface import implementer

from lns.config import LogSection

__all__ = [
    "LEVELS",
    "MAX_PENDING",
    "DescriptorOutput",
    "LogOutput",
    "LogWriter",
    "RotatingFile",
    "is_twisted_noise",
    "open_output",
    "plain_event_text",
    "start_log_writer",
]

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}
MAX_PENDING = 64 * 1024  # bytes buffered before they are written without waiting for the turn
FILE_MODE = 0o640

# Legacy (twisted.python.log) lines of twisted.internet.protocol and .udp about ports
# and protocols starting and stopping.
_NOISE = re.compile(
    r"(Starting|Stopping) (protocol|factory) <.*>"
    r"|\S+ starting on \d+"
    r"|\(UDP Port \d+ Closed\)"
)


def is_twisted_noise(event: LogEvent) -> bool:
    """True for Twisted's port and protocol life-cycle lines (the module docstring says why)."""
    if event.get("log_namespace") != "log_legacy":
        return False
    text = event.get("log_text")
    return isinstance(text, str) and _NOISE.fullmatch(text) is not None


class LogOutput(Protocol):
    """Where the batches go."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class DescriptorOutput:
    """An open descriptor (standard output): every byte written, nothing ever raised.

    A log that cannot be written has nowhere to report it; the bytes are counted.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lost = 0

    def write(self, data: bytes) -> None:
        self.lost += _write_all(self.fd, data)

    def close(self) -> None:
        """The descriptor belongs to the process, not to us: left open."""


class RotatingFile:
    """A log file rotated by size: ``path`` is current, ``path.1`` .. ``path.<keep>`` older.

    Rotation happens before a write that would take the file beyond `max_bytes`
    (a single write larger than that still goes into one file).
    """

    def __init__(self, path: str, max_bytes: int, keep: int) -> None:
        if max_bytes < 1 or keep < 1:
            raise ValueError("max_bytes and keep must be at least 1")
        self.path = os.path.abspath(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.lost = 0
        self.rotations = 0
        self._fd: int | None = None
        self._size = 0
        self._open()

    def _open(self) -> None:
        """Open (creating mode 0640) for appending; raises OSError when that is impossible."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def write(self, data: bytes) -> None:
        if self._size and self._size + len(data) > self.max_bytes:
            self.rotate()
        if self._fd is None:
            self.lost += len(data)
            return
        lost = _write_all(self._fd, data)
        self.lost += lost
        self._size += len(data) - lost

    def rotate(self) -> None:
        """``path.N`` becomes ``path.N+1`` (the oldest goes), ``path`` becomes ``path.1``."""
        self.close()
        try:
            for number in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{number}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{number + 1}")
            os.replace(self.path, f"{self.path}.1")
        except OSError:
            pass  # keep writing to the current file rather than lose lines
        try:
            self._open()
        except OSError:
            self._fd = None
        self.rotations += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def plain_event_text(event: LogEvent) -> str | None:
    """What `eventAsText` makes of an event, for the plain ones (a format string of ours,
    no failure, no ``{callable()}``), at a tenth of its cost: in a setup storm Twisted's
    formatter was a twentieth of the node's time. None for the others."""
    fmt = event.get("log_format")
    if type(fmt) is not str or "log_failure" in event or "log_flattened" in event:
        return None
    if "()" in fmt:
        return None
    try:
        text = fmt.format_map(event)
    except Exception:
        return None  # Twisted's formatter says what is wrong with it
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{level.name if level else '-'}"
    return f"[{system}] {text}"


def _write_all(fd: int, data: bytes) -> int:
    """Write every byte (a pipe may take part of them); the number of bytes lost."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            # A non-blocking descriptor that is full: wait for it rather than drop lines.
            time.sleep(0.001)
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            return len(view)
        view = view[written:]
    return 0


class Scheduler(Protocol):
    """What the writer needs of the reactor."""

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any) -> Any: ...

    def callFromThread(self, callable: Callable[..., Any], *args: Any) -> None: ...


@implementer(ILogObserver)
class LogWriter:
    """The log observer: formats events into a buffer written once per reactor turn.

    Safe to call from any thread, and from a signal handler: Twisted's SIGTERM
    handler logs "Received SIGTERM" in the main thread, between any two bytecodes,
    possibly in the middle of our own flush. So the lock is reentrant and held only
    to add to or take the buffer, never while writing; one flush writes at a time
    (a nested or concurrent one leaves its lines to it); and a nested call schedules
    its flush with callFromThread, the one reactor call meant for such contexts.
    """

    def __init__(
        self,
        output: LogOutput,
        reactor: Scheduler,
        level: LogLevel = LogLevel.info,
        *,
        max_pending: int = MAX_PENDING,
        in_io_thread: Callable[[], bool] = threadable.isInIOThread,
    ) -> None:
        self.output = output
        self.reactor = reactor
        self.level = level
        self.max_pending = max_pending
        self._in_io_thread = in_io_thread
        self._lock = threading.RLock()
        self._calls = threading.local()  # per thread: how deep in __call__ (2: nested)
        self._pending: list[str] = []
        self._pending_size = 0
        self._scheduled = False
        self._writing = False
        self._closed = False
        self._stopped = False  # the reactor has shut down: nothing would flush later
        self._second = -1
        self._stamp = ""

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level", LogLevel.info)
        if level < self.level or is_twisted_noise(event):
            return
        text = self._format(event)
        if text is None:
            return
        depth = getattr(self._calls, "depth", 0)
        self._calls.depth = depth + 1
        try:
            with self._lock:
                if self._closed:
                    return
                self._pending.append(text)
                self._pending_size += len(text)
                full = self._pending_size >= self.max_pending or self._stopped
                schedule = not full and not self._scheduled
                if schedule:
                    self._scheduled = True
            if full:
                self.flush()
            elif schedule:
                self._schedule(nested=depth > 0)
        finally:
            self._calls.depth = depth

    def _format(self, event: LogEvent) -> str | None:
        text = plain_event_text(event) or eventAsText(event, includeTimestamp=False)
        if not text:
            return None
        when = event.get("log_time")
        if not isinstance(when, int | float):
            when = time.time()
        second = int(when)
        stamp = self._stamp
        if second != self._second:
            # One strftime per second, not per line.
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
            self._stamp, self._second = stamp, second
        return f"{stamp} {text.rstrip().replace(chr(10), chr(10) + chr(9))}\n"

    def _schedule(self, nested: bool = False) -> None:
        # In the reactor's thread a delayed call costs nothing; from another thread (or
        # from a signal handler that interrupted us) the reactor is woken with
        # callFromThread, which is one write to its waker.
        if self._in_io_thread() and not nested and not self._writing:
            self.reactor.callLater(0, self.flush)
        else:
            self.reactor.callFromThread(self.flush)

    def flush(self) -> None:
        """Write what is buffered, in one batch."""
        with self._lock:
            if self._writing:
                return  # the flush in progress (interrupted, or in another thread) goes on
            self._scheduled = False
            if not self._pending:
                return
            data = "".join(self._pending).encode("utf-8", "replace")
            self._pending = []
            self._pending_size = 0
            self._writing = True
        try:
            self.output.write(data)
        finally:
            with self._lock:
                self._writing = False
                again = bool(self._pending) and not self._scheduled
                if again:
                    self._scheduled = True
            if again:
                # Lines that came while we wrote (a signal handler, another thread).
                if self._stopped:
                    self.flush()
                else:
                    self._schedule(nested=True)

    def reactor_stopped(self) -> None:
        """Flush, and from now on write each line at once: no reactor turn will come.

        twistd ends a node stopped by a signal by re-raising the signal, which
        skips atexit; only its last lines ("Server Shut Down.") come after this.
        """
        with self._lock:
            self._stopped = True
        self.flush()

    def close(self) -> None:
        """Flush, then stop accepting events and close the output."""
        self.flush()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.output.close()


def open_output(section: LogSection) -> LogOutput:
    """Standard output, or the `[log] file`; OSError when the file cannot be opened."""
    if section.file is None:
        return DescriptorOutput(1)
    return RotatingFile(section.file, section.max_bytes, section.keep)


def start_log_writer(output: LogOutput, section: LogSection, reactor: Any) -> LogWriter:
    """The node's log observer on `output`, flushed at each reactor turn, at shutdown and
    when the process exits (also after a start that failed before the reactor ran)."""
    writer = LogWriter(output, reactor, LEVELS[section.level])
    reactor.addSystemEventTrigger("after", "shutdown", writer.reactor_stopped)
    atexit.register(writer.close)
    return writer
