"""IPv4 packets built and read for tests, benchmarks and the load generator: RFC 791 (the
header), RFC 792 (ICMP Echo and Echo Reply), RFC 793 and 768 (TCP and UDP with their
pseudo-header checksums), RFC 879 (the MSS option).

The data plane's own packet code is `lns.dataplane.ipv4` (what forwarding needs: header
checks, MSS clamping, ICMP errors, fragmentation); this module builds what a device, a
host or a test sends, and recognises the Echo Replies that come back. Addresses are
``int`` (u32), as in `lns.dataplane.ipv4`; the checksum is the data plane's (RFC 1071).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from lns.dataplane.ipv4 import DF, ICMP, MF, OFFSET_MASK, TCP, UDP, checksum, valid_header

__all__ = [
    "ACK",
    "ECHO_REPLY",
    "ECHO_REQUEST",
    "SYN",
    "IcmpEcho",
    "answer_echo",
    "datagram",
    "echo_message",
    "echo_payload",
    "icmp_echo",
    "parse_echo_reply",
    "parse_icmp_echo",
    "tcp_segment",
    "tcp_syn",
    "transport_checksum",
    "udp_datagram",
]

ECHO_REPLY: Final = 0  # RFC 792 ICMP types
ECHO_REQUEST: Final = 8
SYN: Final = 0x02  # TCP flags (RFC 793 section 3.1)
ACK: Final = 0x10
_TCP_MSS: Final = 2  # RFC 879: kind 2, length 4, 16-bit value

_HEADER: Final = struct.Struct("!BBHHHBBHII")  # a 20-byte IPv4 header without options
_PSEUDO: Final = struct.Struct("!IIxBH")  # RFC 793 section 3.1 / RFC 768 pseudo-header
_ECHO: Final = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_TCP_HEADER: Final = struct.Struct("!HHIIBBHHH")
_UDP_HEADER: Final = struct.Struct("!HHHH")
_U16: Final = struct.Struct("!H")


def datagram(
    source: int,
    destination: int,
    protocol: int,
    payload: bytes,
    *,
    identification: int = 0,
    dont_fragment: bool = False,
    ttl: int = 64,
) -> bytes:
    """An IPv4 packet with a 20-byte header (no options) and a correct header checksum."""
    header = bytearray(
        _HEADER.pack(
            0x45,  # version 4, header length 5 words
            0,  # type of service
            _HEADER.size + len(payload),
            identification & 0xFFFF,
            DF if dont_fragment else 0,
            ttl,
            protocol,
            0,  # header checksum, computed below
            source,
            destination,
        )
    )
    _U16.pack_into(header, 10, checksum(header))
    return bytes(header) + payload


def transport_checksum(source: int, destination: int, protocol: int, segment: bytes) -> int:
    """The TCP or UDP checksum of ``segment`` with its pseudo-header (RFC 793, RFC 768).

    Computed over the segment as given: zero its checksum field first to build one, or
    leave it in place to verify one (a correct segment gives 0).
    """
    return checksum(_PSEUDO.pack(source, destination, protocol, len(segment)) + segment)


# --- ICMP Echo (RFC 792) -------------------------------------------------------------------


def echo_message(
    identifier: int, sequence: int, payload: bytes = b"", *, reply: bool = False
) -> bytes:
    """An ICMP Echo Request (Echo Reply with ``reply=True``) message, without the IP
    header: what a raw ICMP socket sends."""
    kind = ECHO_REPLY if reply else ECHO_REQUEST
    message = bytearray(_ECHO.pack(kind, 0, 0, identifier & 0xFFFF, sequence & 0xFFFF))
    message += payload
    _U16.pack_into(message, 2, checksum(message))
    return bytes(message)


def icmp_echo(
    source: int,
    destination: int,
    identifier: int,
    sequence: int,
    payload: bytes = b"",
    *,
    reply: bool = False,
) -> bytes:
    """An ICMP Echo Request (or Echo Reply with ``reply=True``) as an IPv4 packet."""
    message = echo_message(identifier, sequence, payload, reply=reply)
    return datagram(source, destination, ICMP, message)


class IcmpEcho(NamedTuple):
    """An ICMP Echo or Echo Reply read from an IPv4 packet; compares equal to the tuple
    ``(kind, source, destination, identifier, sequence)``."""

    kind: int  # ECHO_REQUEST or ECHO_REPLY
    source: int
    destination: int
    identifier: int
    sequence: int


def parse_icmp_echo(packet: bytes) -> IcmpEcho | None:
    """The ICMP Echo or Echo Reply in an IPv4 packet.

    None for anything else: a bad header, another protocol or ICMP type, a fragment, or an
    ICMP checksum that does not verify.
    """
    if not valid_header(packet) or packet[9] != ICMP:
        return None
    if _U16.unpack_from(packet, 6)[0] & (MF | OFFSET_MASK):
        return None
    header_length = (packet[0] & 0x0F) * 4
    total = _U16.unpack_from(packet, 2)[0]
    if total - header_length < _ECHO.size:
        return None
    kind, code, _, identifier, sequence = _ECHO.unpack_from(packet, header_length)
    if kind not in (ECHO_REQUEST, ECHO_REPLY) or code != 0:
        return None
    if checksum(memoryview(packet)[header_length:total]) != 0:
        return None
    source, destination = struct.unpack_from("!II", packet, 12)
    return IcmpEcho(kind, source, destination, identifier, sequence)


def parse_echo_reply(packet: bytes) -> IcmpEcho | None:
    """The Echo Reply in an IPv4 packet; None for anything else, an Echo Request included."""
    echo = parse_icmp_echo(packet)
    return echo if echo is not None and echo.kind == ECHO_REPLY else None


def echo_payload(packet: bytes) -> bytes:
    """The data of an ICMP Echo that `parse_icmp_echo` accepted (after its 8-byte header)."""
    header_length = (packet[0] & 0x0F) * 4
    total = _U16.unpack_from(packet, 2)[0]
    return packet[header_length + _ECHO.size : total]


def answer_echo(request: bytes) -> bytes | None:
    """The Echo Reply a host sends back to an IPv4 Echo Request: from the address that was
    pinged, with the request's identifier, sequence, data and IP identification (and no
    IP options); None for anything but a sound Echo Request."""
    echo = parse_icmp_echo(request)
    if echo is None or echo.kind != ECHO_REQUEST:
        return None
    message = echo_message(echo.identifier, echo.sequence, echo_payload(request), reply=True)
    identification = _U16.unpack_from(request, 4)[0]
    return datagram(echo.destination, echo.source, ICMP, message, identification=identification)


# --- TCP and UDP ---------------------------------------------------------------------------


def tcp_segment(
    source: int,
    destination: int,
    source_port: int,
    destination_port: int,
    *,
    seq: int = 0,
    ack: int = 0,
    flags: int = ACK,
    options: bytes = b"",
    payload: bytes = b"",
    window: int = 65535,
    dont_fragment: bool = True,
) -> bytes:
    """A TCP segment in an IPv4 packet, with correct checksums.

    ``options`` are raw TCP option bytes, padded here with End of Option List to a
    multiple of 4; ``flags`` is the TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08,
    ACK 0x10).
    """
    options += bytes(-len(options) % 4)
    data_offset = (20 + len(options)) // 4
    segment = bytearray(
        _TCP_HEADER.pack(
            source_port,
            destination_port,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            data_offset << 4,
            flags,
            window,
            0,
            0,
        )
    )
    segment += options
    segment += payload
    _U16.pack_into(segment, 16, transport_checksum(source, destination, TCP, bytes(segment)))
    return datagram(source, destination, TCP, bytes(segment), dont_fragment=dont_fragment)


def tcp_syn(
    source: int,
    destination: int,
    source_port: int,
    destination_port: int,
    mss: int | None,
    seq: int = 0,
    *,
    ack: int | None = None,
) -> bytes:
    """A TCP SYN carrying an MSS option (none when ``mss`` is None); a SYN-ACK when ``ack``
    is given."""
    options = b"" if mss is None else bytes([_TCP_MSS, 4]) + _U16.pack(mss)
    return tcp_segment(
        source,
        destination,
        source_port,
        destination_port,
        seq=seq,
        ack=0 if ack is None else ack,
        flags=SYN if ack is None else SYN | ACK,
        options=options,
    )


def udp_datagram(
    source: int, destination: int, source_port: int, destination_port: int, payload: bytes
) -> bytes:
    """A UDP datagram (RFC 768) in an IPv4 packet, with correct checksums."""
    segment = bytearray(_UDP_HEADER.pack(source_port, destination_port, 8 + len(payload), 0))
    segment += payload
    value = transport_checksum(source, destination, UDP, bytes(segment))
    # RFC 768: a computed checksum of zero is sent as all ones (zero means "none").
    _U16.pack_into(segment, 6, value or 0xFFFF)
    return datagram(source, destination, UDP, bytes(segment))
