"""ICMP echo (RFC 792) in IPv4 (RFC 791), as a device sends it through its session.

Only what the generator needs: build an Echo Request from the device's address,
and recognise the Echo Reply that should come back to it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPv4 = ipaddress.IPv4Address

_ICMP = 1
_ECHO_REPLY = 0
_ECHO_REQUEST = 8
_TTL = 64
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_ICMP_ECHO = struct.Struct("!BBHHH")


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(
    source: IPv4, destination: IPv4, identifier: int, sequence: int, payload: bytes = b""
) -> bytes:
    """An IPv4 packet carrying an ICMP Echo Request, both checksums filled in."""
    icmp = _ICMP_ECHO.pack(_ECHO_REQUEST, 0, 0, identifier, sequence) + payload
    icmp = icmp[:2] + internet_checksum(icmp).to_bytes(2, "big") + icmp[4:]
    length = _IPV4_HEADER.size + len(icmp)
    header = _IPV4_HEADER.pack(
        0x45, 0, length, identifier, 0, _TTL, _ICMP, 0, source.packed, destination.packed
    )
    header = header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:]
    return header + icmp


@dataclass(frozen=True, slots=True)
class EchoReply:
    source: IPv4
    destination: IPv4
    identifier: int
    sequence: int


def parse_echo_reply(packet: bytes) -> EchoReply | None:
    """The Echo Reply in an IPv4 packet, or None for anything else (or anything damaged)."""
    if len(packet) < _IPV4_HEADER.size or packet[0] >> 4 != 4:
        return None
    header_length = (packet[0] & 0x0F) * 4
    if header_length < _IPV4_HEADER.size or len(packet) < header_length + _ICMP_ECHO.size:
        return None
    fields = _IPV4_HEADER.unpack_from(packet)
    total_length, flags_fragment, protocol = fields[2], fields[4], fields[6]
    if protocol != _ICMP or flags_fragment & 0x3FFF or total_length > len(packet):
        return None  # not ICMP, or a fragment
    icmp = packet[header_length:total_length]
    kind, code, _checksum, identifier, sequence = _ICMP_ECHO.unpack_from(icmp)
    if kind != _ECHO_REPLY or code != 0 or internet_checksum(icmp) != 0:
        return None
    return EchoReply(IPv4(fields[8]), IPv4(fields[9]), identifier, sequence)
