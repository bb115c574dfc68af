"""The progress display while a run goes on.

On a terminal one line is rewritten in place (carriage return) every second;
elsewhere (a log, a pipe) a plain line every few seconds and at every change
of phase, so a log shows how the run went without a line per second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

_CLEAR_TO_END = "\x1b[K"


@dataclass(frozen=True, slots=True)
class Snapshot:
    elapsed: float
    phase: str  # "tunnels", "setup", "hold", "teardown", "done"
    tunnels_up: int
    tunnels_requested: int
    sessions_up: int  # established and not cleared
    sessions_failed: int
    in_flight: int
    sessions_requested: int
    setups_per_second: float  # over the last interval
    hello_p99: float | None  # seconds, over the last interval


def progress_line(s: Snapshot) -> str:
    hello = "-" if s.hello_p99 is None else f"{s.hello_p99 * 1000:.1f} ms"
    return (
        f"{s.elapsed:7.1f} s  {s.phase:<8}  tunnels {s.tunnels_up}/{s.tunnels_requested}  "
        f"sessions up {s.sessions_up}/{s.sessions_requested} failed {s.sessions_failed} "
        f"in flight {s.in_flight}  {s.setups_per_second:.0f} setups/s  HELLO p99 {hello}"
    )


class Progress:
    """Writes snapshots to ``stream``: in place on a TTY, as plain lines otherwise."""

    def __init__(self, stream: TextIO, *, tty: bool, quiet: bool = False) -> None:
        self.stream = stream
        self.tty = tty
        self.quiet = quiet
        self._dirty = False  # a TTY line is showing without its newline

    @property
    def interval(self) -> float:
        """Seconds between periodic updates."""
        return 1.0 if self.tty else 5.0

    def update(self, snapshot: Snapshot) -> None:
        """A periodic update."""
        if self.quiet:
            return
        if self.tty:
            # Cut to the terminal's width: a wrapped line could not be rewritten in place.
            width = self._width()
            line = progress_line(snapshot)[: max(width - 1, 20)]
            self.stream.write("\r" + line + _CLEAR_TO_END)
            self._dirty = True
        else:
            self.stream.write(progress_line(snapshot) + "\n")
        self.stream.flush()

    def _width(self) -> int:
        """Columns of the terminal we write to ($COLUMNS first, as shutil does)."""
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            return int(columns)
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 80

    def phase_changed(self, snapshot: Snapshot) -> None:
        """A new phase began: shown at once, wherever the output goes."""
        self.update(snapshot)

    def note(self, text: str) -> None:
        """A line of its own (a tunnel that failed, an interrupt), kept above the progress."""
        if self.quiet:
            return
        self.finish()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False
