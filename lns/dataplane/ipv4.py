"""IPv4 packets as bytes: RFC 791 (header, fragmentation), RFC 792 and 1191 (ICMP), RFC 1071
and 1624 (the Internet checksum and its incremental update), RFC 879 and 6691 (TCP MSS).

Everything here works on ``bytes`` and takes addresses as ``int`` (u32), so the data plane
never builds an ``ipaddress`` object per packet. Functions meant for the hot path
(:func:`valid_header`, :func:`source`, :func:`destination`, :func:`dont_fragment`,
:func:`clamp_mss`) never raise on short or garbled input; the rest assume a packet that
:func:`valid_header` accepted. Only what forwarding needs lives here: the packets tests,
the load generator and the benchmarks send are built by `lns.testing.packets`.
"""

from __future__ import annotations

import struct
from typing import Final

# Header layout (RFC 791 section 3.1), the byte offsets this module reads and writes.
_FLAGS_OFFSET: Final = 6  # flags (3 bits) and fragment offset (13 bits, in 8-byte units)
_TTL: Final = 8
_PROTOCOL: Final = 9
_HEADER_CHECKSUM: Final = 10
_SOURCE: Final = 12
_DESTINATION: Final = 16

DF: Final = 0x4000  # Don't Fragment, in the 16-bit flags/offset word
MF: Final = 0x2000  # More Fragments
OFFSET_MASK: Final = 0x1FFF

ICMP: Final = 1
TCP: Final = 6
UDP: Final = 17

MINIMUM_MTU: Final = 68  # RFC 791 section 3.2: every link carries 68 octets unfragmented

ESSENTIALS: Final = struct.Struct("!BxH5xB2xII")
"""Version/IHL, Total Length, Protocol, Source and Destination in one C call.

The forwarder reads these five fields of every packet; one ``unpack_from`` is cheaper than
five slices. It raises ``struct.error`` on fewer than 20 bytes.
"""

_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")
_HEADER: Final = struct.Struct("!BBHHHBBHII")  # a 20-byte header without options
_ICMP_HEADER: Final = struct.Struct("!BBHHH")  # type, code, checksum, two 16-bit fields

# ICMP types (RFC 792) that are errors: never answered with another error (RFC 1122 3.2.2).
_ICMP_ERRORS: Final = frozenset({3, 4, 5, 11, 12})
_DESTINATION_UNREACHABLE: Final = 3
_FRAGMENTATION_NEEDED: Final = 4  # code of type 3 (RFC 792; next-hop MTU from RFC 1191)
_INTERNETWORK_CONTROL: Final = 0xC0  # RFC 1812 4.3.2.5: precedence 6 for ICMP errors

_TCP_SYN: Final = 0x02
_OPTION_END: Final = 0  # TCP and IP options: End of Option List
_OPTION_NOP: Final = 1  # No-Operation
_TCP_MSS: Final = 2  # RFC 879: kind 2, length 4, 16-bit value
_IP_OPTION_COPIED: Final = 0x80  # RFC 791 section 3.1: copy this option into every fragment


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit one's complement sum of ``data`` (RFC 1071 section 2), padded to even length.

    Since 2**16 leaves remainder 1 modulo 0xFFFF, the whole buffer read as one big-endian
    integer has the same remainder as the sum of its 16-bit words: one ``int.from_bytes``
    and one modulo replace the loop. The end-around carry sum is that remainder, except that
    a nonzero sum divisible by 0xFFFF is 0xFFFF (negative zero) rather than 0.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    total = value % 0xFFFF
    if total == 0 and value:
        return 0xFFFF
    return total


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum of ``data`` (RFC 1071): the complement of its one's complement sum.

    A header or segment that carries a correct checksum sums to 0xFFFF, so ``checksum`` over
    it returns 0.
    """
    return ~ones_sum(data) & 0xFFFF


def valid_header(packet: bytes) -> bool:
    """True if ``packet`` starts with a usable IPv4 header (RFC 791 section 3.1).

    Version 4, IHL at least 5, the whole header present, and a Total Length that covers
    the header and fits in the bytes we have (trailing bytes past it are link padding).
    The header checksum is not verified: the peer's PPP link and the kernel on the TUN side
    already guard it, and the hot path cannot afford it.
    """
    size = len(packet)
    if size < 20:
        return False
    first = packet[0]
    if first >> 4 != 4:
        return False
    header_length = (first & 0x0F) * 4
    if header_length < 20 or header_length > size:
        return False
    total = (packet[2] << 8) | packet[3]
    return header_length <= total <= size


def source(packet: bytes) -> int:
    """The Source Address as a u32 (bytes 12 to 16)."""
    value: int = _U32.unpack_from(packet, _SOURCE)[0]
    return value


def destination(packet: bytes) -> int:
    """The Destination Address as a u32 (bytes 16 to 20)."""
    value: int = _U32.unpack_from(packet, _DESTINATION)[0]
    return value


def dont_fragment(packet: bytes) -> bool:
    """True if the DF flag is set (false for anything too short to carry it)."""
    return len(packet) > _FLAGS_OFFSET and bool(packet[_FLAGS_OFFSET] & 0x40)


def header_checksum_ok(packet: bytes) -> bool:
    """True if the header checksum of a packet that :func:`valid_header` accepted is correct."""
    return checksum(memoryview(packet)[: (packet[0] & 0x0F) * 4]) == 0


# --- TCP MSS clamping --------------------------------------------------------------------


def _mss_position(packet: bytes, syn_only: bool) -> int:
    """Where the 2-byte value of the MSS option of a TCP segment starts, or -1.

    -1 also when the packet is not the first (or only) fragment of a TCP segment, when it
    is cut short, and when the options are malformed: an option length below 2 or past the
    end of the TCP header, or an MSS option whose length is not 4 (RFC 879). Options are
    walked as RFC 793 section 3.1 lays them out: End of Option List stops, No-Operation is
    one byte, every other kind has a length byte that counts the kind and itself.
    """
    size = len(packet)
    if size < 20 or packet[_PROTOCOL] != TCP:
        return -1
    if ((packet[_FLAGS_OFFSET] << 8) | packet[_FLAGS_OFFSET + 1]) & OFFSET_MASK:
        return -1  # a later fragment: no TCP header here
    end = (packet[2] << 8) | packet[3]
    if end > size:
        return -1
    tcp = (packet[0] & 0x0F) * 4
    if tcp < 20 or tcp + 20 > end:
        return -1
    if syn_only and not packet[tcp + 13] & _TCP_SYN:
        return -1
    options_end = tcp + (packet[tcp + 12] >> 4) * 4
    if options_end > end:
        return -1
    position = tcp + 20
    while position < options_end:
        kind = packet[position]
        if kind == _OPTION_END:
            return -1
        if kind == _OPTION_NOP:
            position += 1
            continue
        if position + 1 >= options_end:
            return -1
        length = packet[position + 1]
        if length < 2 or position + length > options_end:
            return -1
        if kind == _TCP_MSS:
            return position + 2 if length == 4 else -1
        position += length
    return -1


def tcp_mss(packet: bytes) -> int | None:
    """The MSS option of a TCP segment in an IPv4 packet, None if it has none (or no TCP)."""
    position = _mss_position(packet, syn_only=False)
    if position < 0:
        return None
    return (packet[position] << 8) | packet[position + 1]


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def clamp_mss(packet: bytes, mss: int) -> bytes:
    """Lower the MSS option of a TCP SYN (or SYN-ACK) to ``mss``; else return ``packet`` itself.

    Only the first or only fragment of a segment carries the TCP header (RFC 791); the
    option is rewritten when the segment has SYN set and an MSS larger than ``mss`` (RFC 6691:
    the sender's MSS is at most the path's MTU minus 40). The TCP checksum is updated
    incrementally with RFC 1624 equation 3, ``HC' = ~(~HC + ~m + m')``, so the payload
    is never summed. Anything else, malformed options included, comes back as the very
    same object, so callers can test ``result is packet``.
    """
    position = _mss_position(packet, syn_only=True)
    if position < 0:
        return packet
    old = (packet[position] << 8) | packet[position + 1]
    if old <= mss:
        return packet
    tcp = (packet[0] & 0x0F) * 4
    old_word = old
    new_word = mss
    if (position - tcp) & 1:
        # The value straddles two 16-bit words of the checksummed segment (after an odd
        # number of NOPs): its bytes count as the low byte of one word and the high byte
        # of the next, which in one's complement arithmetic is the byte-swapped value
        # (RFC 1071 section 2, property B).
        old_word = _swap16(old)
        new_word = _swap16(mss)
    checksum_at = tcp + 16
    old_checksum = (packet[checksum_at] << 8) | packet[checksum_at + 1]
    total = (~old_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    clamped = bytearray(packet)
    clamped[position] = mss >> 8
    clamped[position + 1] = mss & 0xFF
    _U16.pack_into(clamped, checksum_at, ~total & 0xFFFF)
    return bytes(clamped)


# --- ICMP Fragmentation Needed -----------------------------------------------------------


def _unicast(address: int) -> bool:
    """False for addresses that name no single host (RFC 1812 section 4.3.2.7).

    0.0.0.0/8 ("this network"), 127.0.0.0/8 (loopback), 224.0.0.0/4 (multicast),
    240.0.0.0/4 (reserved, including 255.255.255.255 limited broadcast).
    """
    top = address >> 24
    return top != 0 and top != 127 and top < 224


def _ip_header(
    source: int,
    destination: int,
    protocol: int,
    payload_length: int,
    *,
    identification: int = 0,
    dont_fragment: bool = False,
    ttl: int = 64,
    tos: int = 0,
) -> bytes:
    fields = (
        0x45,
        tos,
        20 + payload_length,
        identification & 0xFFFF,
        DF if dont_fragment else 0,
        ttl,
        protocol,
        0,
        source,
        destination,
    )
    header = bytearray(_HEADER.pack(*fields))
    _U16.pack_into(header, _HEADER_CHECKSUM, checksum(header))
    return bytes(header)


def fragmentation_needed(packet: bytes, next_hop_mtu: int, our_address: int) -> bytes:
    """An ICMP Destination Unreachable, Fragmentation Needed and DF Set, for ``packet``.

    RFC 792 type 3 code 4, with RFC 1191's Next-Hop MTU in the low 16 bits of the second
    word; it quotes the offending header and the first 64 bits of its data, and goes from
    ``our_address`` to the packet's source with TTL 64. It is an atomic datagram (DF set,
    Identification 0, RFC 6864) with precedence 6 (RFC 1812 section 4.3.2.5).

    Returns ``b""`` (the caller drops the packet silently) where RFC 1812 section 4.3.2.7
    forbids an ICMP error: for an ICMP error message, for a fragment other than the first,
    for a source or destination that is not a unicast host, and for a malformed header.
    """
    if not valid_header(packet):
        return b""
    if ((packet[_FLAGS_OFFSET] << 8) | packet[_FLAGS_OFFSET + 1]) & OFFSET_MASK:
        return b""
    header_length = (packet[0] & 0x0F) * 4
    total = (packet[2] << 8) | packet[3]
    # An ICMP message too short to show its type may be an error: stay silent about it too.
    if packet[_PROTOCOL] == ICMP and (
        total <= header_length or packet[header_length] in _ICMP_ERRORS
    ):
        return b""
    sender = source(packet)
    if not _unicast(sender) or not _unicast(destination(packet)):
        return b""
    quoted = packet[: min(total, header_length + 8)]
    message = bytearray(8 + len(quoted))
    _ICMP_HEADER.pack_into(
        message, 0, _DESTINATION_UNREACHABLE, _FRAGMENTATION_NEEDED, 0, 0, next_hop_mtu & 0xFFFF
    )
    message[8:] = quoted
    _U16.pack_into(message, 2, checksum(message))
    header = _ip_header(
        our_address, sender, ICMP, len(message), dont_fragment=True, tos=_INTERNETWORK_CONTROL
    )
    return header + message


# --- Fragmentation -----------------------------------------------------------------------


def _copied_options(header: bytes) -> bytes:
    """The options of ``header`` that RFC 791 marks to be copied into every fragment.

    Padded with End of Option List to a multiple of 4 bytes. Malformed options (a length
    below 2 or past the header) end the walk: what was found before them is kept.
    """
    copied = bytearray()
    position = 20
    end = len(header)
    while position < end:
        kind = header[position]
        if kind == _OPTION_END:
            break
        if kind == _OPTION_NOP:
            position += 1
            continue
        if position + 1 >= end:
            break
        length = header[position + 1]
        if length < 2 or position + length > end:
            break
        if kind & _IP_OPTION_COPIED:
            copied += header[position : position + length]
        position += length
    copied += bytes(-len(copied) % 4)
    return bytes(copied)


def fragment(packet: bytes, mtu: int) -> list[bytes]:
    """Split a packet into fragments of at most ``mtu`` bytes (RFC 791 section 3.2).

    ``packet`` must have passed :func:`valid_header`; bytes past its Total Length are left
    out. A packet that fits comes back alone and untouched. Otherwise each fragment carries
    a multiple of 8 data bytes except the last, offsets count from the packet's own offset
    (the input may itself be a fragment), and MF is set on every fragment but the last,
    which keeps the input's MF. The first fragment keeps the whole header, options and
    all; the later ones keep only the options with the copied flag (security, source
    routes), padded to a 4-byte boundary. Header checksums are recomputed.

    Raises ValueError when DF is set (the caller answers with :func:`fragmentation_needed`
    instead) or when ``mtu`` leaves no room for 8 data bytes after the header.
    """
    header_length = (packet[0] & 0x0F) * 4
    total = (packet[2] << 8) | packet[3]
    if total <= mtu:
        return [packet if total == len(packet) else packet[:total]]
    flags_offset = (packet[_FLAGS_OFFSET] << 8) | packet[_FLAGS_OFFSET + 1]
    if flags_offset & DF:
        raise ValueError("fragment: DF is set")
    if mtu - header_length < 8:
        raise ValueError(f"fragment: MTU {mtu} leaves no room after a {header_length}-byte header")
    header = packet[:header_length]
    later_header = header
    if header_length > 20:
        options = _copied_options(header)
        later_header = bytes([0x40 | (5 + len(options) // 4)]) + header[1:20] + options
    kept_flags = flags_offset & 0x8000  # the reserved bit, passed on as is
    base_offset = flags_offset & OFFSET_MASK
    last_more = flags_offset & MF
    fragments: list[bytes] = []
    position = header_length
    current = header
    while position < total:
        room = (mtu - len(current)) & ~7
        end = position + room
        more = MF
        if end >= total:
            end = total
            more = last_more
        piece = bytearray(current)
        piece += packet[position:end]
        offset = base_offset + (position - header_length) // 8
        _U16.pack_into(piece, 2, len(piece))
        _U16.pack_into(piece, _FLAGS_OFFSET, kept_flags | more | offset)
        piece[_HEADER_CHECKSUM] = piece[_HEADER_CHECKSUM + 1] = 0
        _U16.pack_into(piece, _HEADER_CHECKSUM, checksum(memoryview(piece)[: len(current)]))
        fragments.append(bytes(piece))
        position = end
        current = later_header
    return fragments
