"""RFC 2661 section 3.1: the L2TP header shared by control and data messages.

    T L x x S x O P x x x x Ver | Length (opt) | Tunnel ID | Session ID |
    Ns (opt) | Nr (opt) | Offset Size (opt) | Offset Pad (opt)

Control messages always carry Length and Ns/Nr; data messages may carry any
combination of Length, Ns/Nr and Offset, and all of them are accepted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lns.l2tp.wire import MalformedPacket

T_BIT = 0x8000
L_BIT = 0x4000
S_BIT = 0x0800
O_BIT = 0x0200
P_BIT = 0x0100
VERSION_MASK = 0x000F
VERSION = 2

_CONTROL_FLAGS = T_BIT | L_BIT | S_BIT | VERSION
_CONTROL = struct.Struct("!HHHHHH")  # flags, length, tunnel, session, Ns, Nr
_DATA_PLAIN = struct.Struct("!HHH")  # flags, tunnel, session
CONTROL_HEADER_LENGTH = _CONTROL.size


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """A control message as framed on the wire; ``payload`` holds its AVPs (empty: a ZLB)."""

    tunnel_id: int
    session_id: int
    ns: int
    nr: int
    payload: bytes = b""

    @property
    def is_zlb(self) -> bool:
        return not self.payload


@dataclass(frozen=True, slots=True)
class DataPacket:
    """A data message: a PPP frame for one session, with optional sequence numbers."""

    tunnel_id: int
    session_id: int
    payload: bytes
    ns: int | None = None
    nr: int | None = None
    priority: bool = False


def decode_packet(data: bytes) -> ControlPacket | DataPacket:
    """Parse an L2TP header; raises MalformedPacket for anything not RFC 2661 version 2."""
    size = len(data)
    if size < 6:
        raise MalformedPacket(f"header: {size} bytes is too short")
    flags = (data[0] << 8) | data[1]
    version = flags & VERSION_MASK
    if version != VERSION:
        raise MalformedPacket(f"header: version {version}, only 2 is supported")
    pos = 2
    end = size
    if flags & L_BIT:
        length = (data[2] << 8) | data[3]
        if length > size:
            raise MalformedPacket(f"header: Length {length} is past the end ({size} bytes)")
        end = length
        pos = 4
    is_control = bool(flags & T_BIT)
    if is_control and (flags & (L_BIT | S_BIT)) != (L_BIT | S_BIT):
        raise MalformedPacket("header: a control message must have the L and S bits set")
    if pos + 4 > end:
        raise MalformedPacket("header: too short for Tunnel ID and Session ID")
    tunnel_id = (data[pos] << 8) | data[pos + 1]
    session_id = (data[pos + 2] << 8) | data[pos + 3]
    pos += 4
    ns = nr = None
    if flags & S_BIT:
        if pos + 4 > end:
            raise MalformedPacket("header: too short for Ns and Nr")
        ns = (data[pos] << 8) | data[pos + 1]
        nr = (data[pos + 2] << 8) | data[pos + 3]
        pos += 4
    if flags & O_BIT:
        if pos + 2 > end:
            raise MalformedPacket("header: too short for Offset Size")
        offset = (data[pos] << 8) | data[pos + 1]
        pos += 2 + offset
        if pos > end:
            raise MalformedPacket(f"header: Offset Size {offset} is past the end")
    payload = data[pos:end]
    if is_control:
        assert ns is not None  # the S bit is checked above
        assert nr is not None
        return ControlPacket(tunnel_id, session_id, ns, nr, payload)
    return DataPacket(tunnel_id, session_id, payload, ns, nr, bool(flags & P_BIT))


def encode_control(tunnel_id: int, session_id: int, ns: int, nr: int, payload: bytes) -> bytes:
    """Frame a control message (or a ZLB when ``payload`` is empty)."""
    length = CONTROL_HEADER_LENGTH + len(payload)
    return _CONTROL.pack(_CONTROL_FLAGS, length, tunnel_id, session_id, ns, nr) + payload


def encode_data(
    tunnel_id: int,
    session_id: int,
    payload: bytes,
    ns: int | None = None,
    nr: int = 0,
    *,
    with_length: bool = False,
    offset_pad: int | None = None,
    priority: bool = False,
) -> bytes:
    """Frame a PPP frame as a data message.

    The shortest form (no Length, no Offset) is what we send; Ns/Nr only when
    the session requires sequencing. The other options exist so the LAC
    simulator can exercise every header form the RFC allows.
    """
    flags = VERSION | (P_BIT if priority else 0)
    if ns is None and not with_length and offset_pad is None:
        return _DATA_PLAIN.pack(flags, tunnel_id, session_id) + payload
    fields = b""
    if ns is not None:
        flags |= S_BIT
        fields += struct.pack("!HH", ns, nr)
    if offset_pad is not None:
        flags |= O_BIT
        fields += struct.pack("!H", offset_pad) + bytes(offset_pad)
    if with_length:
        flags |= L_BIT
        total = 8 + len(fields) + len(payload)
        return struct.pack("!HHHH", flags, total, tunnel_id, session_id) + fields + payload
    return struct.pack("!HHH", flags, tunnel_id, session_id) + fields + payload
