"""Tunnel and session identifiers (RFC 2661 sections 4.4.3 and 4.4.4): 1..65535, chosen at random.

Random identifiers make a blind guess at a tunnel's ID (to inject an SCCCN for a
spoofed SCCRQ, say) unlikely. Allocation can fail, and is bounded when it does:
a few random probes, then one scan of the whole space from a random point; the
caps in front of the allocator keep it from ever coming close to full.
"""

from __future__ import annotations

import random
from collections.abc import Container

ID_SPACE = 0xFFFF  # identifiers 1..65535; 0 means "none yet"
_PROBES = 16


def allocate(rng: random.Random, in_use: Container[int]) -> int | None:
    """A free identifier, or None when all 65535 are in use."""
    for _ in range(_PROBES):
        candidate = rng.randrange(1, ID_SPACE + 1)
        if candidate not in in_use:
            return candidate
    start = rng.randrange(ID_SPACE)
    for offset in range(ID_SPACE):
        candidate = (start + offset) % ID_SPACE + 1
        if candidate not in in_use:
            return candidate
    return None
