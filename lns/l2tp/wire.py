"""Bounds-checked byte reading for the L2TP codecs.

Every decoder in :mod:`lns.l2tp` reads through :class:`Reader`, so the only
exception bad bytes can raise is :class:`MalformedPacket`.
"""

from __future__ import annotations

import struct

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class MalformedPacket(ValueError):
    """The bytes are not a well-formed L2TP packet; the packet is counted and dropped."""


class Reader:
    """A cursor over a bytes object that raises MalformedPacket instead of reading past the end."""

    __slots__ = ("_data", "_end", "pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self.pos = start
        self._end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def _need(self, count: int, what: str) -> None:
        if self.pos + count > self._end:
            raise MalformedPacket(f"{what}: needs {count} bytes, {self.remaining} left")

    def u8(self, what: str) -> int:
        self._need(1, what)
        value = self._data[self.pos]
        self.pos += 1
        return value

    def u16(self, what: str) -> int:
        self._need(2, what)
        (value,) = _U16.unpack_from(self._data, self.pos)
        self.pos += 2
        return int(value)

    def u32(self, what: str) -> int:
        self._need(4, what)
        (value,) = _U32.unpack_from(self._data, self.pos)
        self.pos += 4
        return int(value)

    def take(self, count: int, what: str) -> bytes:
        self._need(count, what)
        value = self._data[self.pos : self.pos + count]
        self.pos += count
        return value

    def rest(self) -> bytes:
        value = self._data[self.pos : self._end]
        self.pos = self._end
        return value


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)
