"""The control packet and option formats shared by LCP, IPCP, PAP and CHAP.

RFC 1661 section 5: Code (1 byte), Identifier (1 byte), Length (2 bytes, the
whole packet including this header), then Data. Bytes beyond Length are
padding and are ignored (section 5). IPCP (RFC 1332 section 2) reuses the LCP
packet format with codes 1-7, PAP (RFC 1334 section 2.2) and CHAP (RFC 1994
section 4) the same header with codes of their own.

Configuration Options (RFC 1661 section 6): Type (1 byte), Length (1 byte,
including these two), Data. Unknown types survive a round trip as raw bytes:
judging them is the policy's job, not the codec's.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from lns.ppp.frame import MalformedFrame

_HEADER = struct.Struct("!BBH")
HEADER_LENGTH = _HEADER.size
MAX_OPTION_DATA = 0xFF - 2


class Code(enum.IntEnum):
    """LCP codes (RFC 1661 section 5); IPCP uses 1-7 (RFC 1332 section 2)."""

    CONFIGURE_REQUEST = 1
    CONFIGURE_ACK = 2
    CONFIGURE_NAK = 3
    CONFIGURE_REJECT = 4
    TERMINATE_REQUEST = 5
    TERMINATE_ACK = 6
    CODE_REJECT = 7
    PROTOCOL_REJECT = 8
    ECHO_REQUEST = 9
    ECHO_REPLY = 10
    DISCARD_REQUEST = 11


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """One control packet; ``code`` is a plain int so PAP/CHAP codes and unknown ones fit."""

    code: int
    identifier: int
    data: bytes

    def encode(self) -> bytes:
        length = HEADER_LENGTH + len(self.data)
        if length > 0xFFFF:
            raise ValueError(f"control packet of {length} bytes does not fit the Length field")
        return _HEADER.pack(self.code, self.identifier, length) + self.data


def decode_packet(payload: bytes) -> ControlPacket:
    """The control packet at the start of a frame's Information field (padding ignored)."""
    if len(payload) < HEADER_LENGTH:
        raise MalformedFrame(f"control packet of {len(payload)} bytes: the header needs 4")
    code, identifier, length = _HEADER.unpack_from(payload)
    if length < HEADER_LENGTH:
        raise MalformedFrame(f"control packet Length {length} is below the header's 4")
    if length > len(payload):
        raise MalformedFrame(f"control packet Length {length} exceeds the {len(payload)} received")
    return ControlPacket(code, identifier, payload[HEADER_LENGTH:length])


@dataclass(frozen=True, slots=True)
class Option:
    """One Configuration Option, its value kept as raw bytes."""

    type: int
    data: bytes

    def encode(self) -> bytes:
        if len(self.data) > MAX_OPTION_DATA:
            raise ValueError(f"option {self.type}: {len(self.data)} data bytes do not fit")
        return bytes((self.type, len(self.data) + 2)) + self.data


def decode_options(data: bytes) -> list[Option]:
    """The options of a Configure-Request/Ack/Nak/Reject, in order, duplicates kept."""
    options: list[Option] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise MalformedFrame(f"option at offset {pos}: 1 byte left, the header needs 2")
        kind, length = data[pos], data[pos + 1]
        if length < 2:
            raise MalformedFrame(f"option {kind} at offset {pos}: Length {length} is below 2")
        if pos + length > len(data):
            raise MalformedFrame(
                f"option {kind} at offset {pos}: Length {length} runs past the packet"
            )
        options.append(Option(kind, data[pos + 2 : pos + length]))
        pos += length
    return options


def encode_options(options: Iterable[Option]) -> bytes:
    return b"".join(option.encode() for option in options)
