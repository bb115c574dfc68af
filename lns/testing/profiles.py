"""What a py-spy profile of lns says: the raw samples summed by function.

The benchmarks that take ``--profile`` (setup_storm, shutdown) print this summary.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

__all__ = ["profile_summary"]


def _project(frame: str) -> bool:
    """A frame of this project's code (py-spy names frames ``func (path:line)``)."""
    where = frame.rpartition("(")[2]
    return where.startswith(("lns/", "aaa/")) or "/lns/" in where or "/aaa/" in where


def profile_summary(raw: Path, top: int = 10) -> dict[str, Any]:
    """From py-spy's raw output (``frame;frame;... count`` per line), in % of samples:

    * ``self``: the function on top of the stack (where the CPU was);
    * ``project``: the innermost frame of lns's own code in the stack, so time spent in
      SQLAlchemy, pyroute2 or the socket layer is charged to the lns line that called it
      (``null``: no lns frame, such as the reactor waiting in epoll);
    * ``inclusive``: lns functions anywhere in the stack.
    """
    own: collections.Counter[str] = collections.Counter()
    nearest: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        mine = [frame for frame in frames if _project(frame)]
        nearest[mine[-1] if mine else "null"] += count
        for frame in set(mine):
            inclusive[frame] += count
    if total == 0:
        return {"samples": 0, "self": [], "project": [], "inclusive": []}

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self": share(own),
        "project": share(nearest),
        "inclusive": share(inclusive),
    }
