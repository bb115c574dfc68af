"""PPP frames as L2TP carries them: RFC 1661 section 2 and RFC 1662 section 3.

L2TP (RFC 2661 section 2) strips the HDLC flags and FCS, so a frame here is the
optional Address/Control pair (FF 03), the Protocol field and the Information
field. Two LCP options shorten the header, and a peer that negotiated them may
use either form on any frame, so the decoder accepts every combination:

* ACFC (RFC 1661 section 6.6): FF 03 omitted;
* PFC (RFC 1661 section 6.5): a protocol below 0x100 sent as its low byte alone.

The Protocol field is self-describing (RFC 1661 section 2): the last byte of a
protocol number is odd and every other byte even, so a first byte that is odd
is the 1-byte compressed form.
"""

from __future__ import annotations

import enum

_ADDRESS_CONTROL = b"\xff\x03"  # RFC 1662 section 3.1: All-Stations address, UI control


class MalformedFrame(ValueError):
    """The bytes are not a well-formed PPP frame or control packet: counted and dropped.

    The only exception the decoders of :mod:`lns.ppp` raise on bad input.
    """


class Protocol(enum.IntEnum):
    """PPP protocol numbers we handle or must answer (RFC 1661, 1332, 1334, 1994, 5072, 1962)."""

    IP = 0x0021
    IPV6 = 0x0057
    IPCP = 0x8021
    IPV6CP = 0x8057
    CCP = 0x80FD
    LCP = 0xC021
    PAP = 0xC023
    CHAP = 0xC223


def valid_protocol(protocol: int) -> bool:
    """RFC 1661 section 2: low byte odd, high byte even (so the compressed form is unambiguous)."""
    return 0 <= protocol <= 0xFFFF and protocol & 0x0001 == 1 and protocol & 0x0100 == 0


def decode_frame(data: bytes) -> tuple[int, bytes]:
    """Split a frame into (protocol, information field), with or without FF 03 and PFC."""
    pos = 0
    if data[:1] == b"\xff":
        # A leading 0xFF is the Address field (RFC 1662 section 3.1). Read as a compressed
        # Protocol field it would be 0x00FF, which no protocol uses, so FF without 03 is
        # malformed rather than ambiguous.
        if data[:2] != _ADDRESS_CONTROL:
            raise MalformedFrame("Address field 0xFF not followed by Control 0x03")
        pos = 2
    if len(data) <= pos:
        raise MalformedFrame(f"frame of {len(data)} bytes has no Protocol field")
    first = data[pos]
    if first & 1:
        return first, data[pos + 1 :]
    if len(data) < pos + 2:
        raise MalformedFrame("Protocol field truncated after its first byte")
    second = data[pos + 1]
    if not second & 1:
        raise MalformedFrame(f"Protocol field 0x{first:02x}{second:02x}: last byte must be odd")
    return (first << 8) | second, data[pos + 2 :]


def encode_frame(protocol: int, payload: bytes, *, acfc: bool = False, pfc: bool = False) -> bytes:
    """A frame with FF 03 (unless ``acfc``) and a 2-byte protocol (1 byte if ``pfc`` allows).

    ``acfc`` and ``pfc`` say what the peer agreed to receive. LCP frames keep
    FF 03 whatever ``acfc`` says (RFC 1661 section 6.6), and PFC never applies to
    them (0xC021 does not fit in one byte).
    """
    if not valid_protocol(protocol):
        raise ValueError(f"0x{protocol:04x} is not a valid PPP protocol number")
    header = b"" if acfc and protocol != Protocol.LCP else _ADDRESS_CONTROL
    if pfc and protocol < 0x100:
        return header + bytes((protocol,)) + payload
    return header + protocol.to_bytes(2, "big") + payload


# The four shapes an IP frame can take (FF 03 present or not, Protocol field in 2 bytes
# or 1), longest first: the data plane's fast test before a full decode.
_IP_HEADERS = (b"\xff\x03\x00\x21", b"\xff\x03\x21", b"\x00\x21", b"\x21")


def ip_packet(frame: bytes) -> bytes | None:
    """The IP packet a frame carries (protocol 0x0021), or None for any other frame."""
    for header in _IP_HEADERS:
        if frame.startswith(header):
            return frame[len(header) :]
    return None
