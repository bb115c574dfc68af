"""Golden vectors for the L2TP header (RFC 2661 section 3.1), checked in both directions.

Bit layout of the first 16 bits, for reading the annotations:

    T L x x S x O P x x x x Ver(4)
    8 4     0 8 2 1          -> 0x8000 0x4000 0x0800 0x0200 0x0100, Ver = low nibble
"""

from __future__ import annotations

import itertools
import struct

import pytest

from lns.l2tp.header import ControlPacket, DataPacket, decode_packet, encode_control, encode_data
from lns.l2tp.wire import MalformedPacket

# --- control messages -------------------------------------------------------------

# A Message Type AVP (SCCRQ) as the body, so the header carries a real payload.
SCCRQ_BODY = b"\x80\x08\x00\x00\x00\x00\x00\x01"  # M=1 Len=8 Vendor=0 Type=0 (Message Type) SCCRQ

CONTROL_SCCRQ = (
    b"\xc8\x02"  # T=1 L=1 S=1 O=0 P=0 Ver=2
    b"\x00\x14"  # Length: 20 = 12 header + 8 AVP
    b"\x00\x00"  # Tunnel ID: 0 (the peer has not assigned one yet, section 4.4.3)
    b"\x00\x00"  # Session ID: 0 (tunnel-level message)
    b"\x00\x00"  # Ns: 0
    b"\x00\x00"  # Nr: 0
) + SCCRQ_BODY

CONTROL_ICRP = (
    b"\xc8\x02"  # T=1 L=1 S=1 O=0 P=0 Ver=2
    b"\x00\x14"  # Length: 20
    b"\xbe\xef"  # Tunnel ID: 48879
    b"\x12\x34"  # Session ID: 4660
    b"\xff\xff"  # Ns: 65535 (the 16-bit counter about to wrap)
    b"\x00\x01"  # Nr: 1
    b"\x80\x08\x00\x00\x00\x00\x00\x0b"  # M=1 Len=8 Message Type: ICRP (11)
)

ZLB = (
    b"\xc8\x02"  # T=1 L=1 S=1 O=0 P=0 Ver=2
    b"\x00\x0c"  # Length: 12, the header alone: a Zero-Length Body ack (section 5.8)
    b"\x4e\x20"  # Tunnel ID: 20000
    b"\x00\x00"  # Session ID: 0
    b"\x00\x03"  # Ns: 3 (not incremented by a ZLB)
    b"\x00\x05"  # Nr: 5 (acknowledges everything up to Ns 4)
)


def test_control_header_decodes() -> None:
    assert decode_packet(CONTROL_SCCRQ) == ControlPacket(0, 0, 0, 0, SCCRQ_BODY)


def test_control_header_encodes() -> None:
    assert encode_control(0, 0, 0, 0, SCCRQ_BODY) == CONTROL_SCCRQ


def test_control_header_fields_are_big_endian() -> None:
    packet = decode_packet(CONTROL_ICRP)
    assert packet == ControlPacket(48879, 4660, 65535, 1, CONTROL_ICRP[12:])
    assert encode_control(48879, 4660, 65535, 1, CONTROL_ICRP[12:]) == CONTROL_ICRP


def test_zlb_decodes() -> None:
    packet = decode_packet(ZLB)
    assert packet == ControlPacket(20000, 0, 3, 5, b"")
    assert isinstance(packet, ControlPacket)
    assert packet.is_zlb


def test_zlb_encodes() -> None:
    assert encode_control(20000, 0, 3, 5, b"") == ZLB


def test_control_with_body_is_not_zlb() -> None:
    packet = decode_packet(CONTROL_SCCRQ)
    assert isinstance(packet, ControlPacket)
    assert not packet.is_zlb


# --- data messages ----------------------------------------------------------------

# An LCP Echo-Request inside PPP (address/control ff 03, protocol c021).
PPP_FRAME = b"\xff\x03\xc0\x21\x09\x01\x00\x08\xde\xad\xbe\xef"

DATA_SHORTEST = (
    b"\x00\x02"  # T=0 L=0 S=0 O=0 P=0 Ver=2: the form we send
    b"\x4e\x20"  # Tunnel ID: 20000
    b"\x00\x07"  # Session ID: 7
) + PPP_FRAME

DATA_ALL_BITS = (
    b"\x4b\x02"  # T=0 L=1 S=1 O=1 P=1 Ver=2
    b"\x00\x1c"  # Length: 28 = 16 header (with the 2-octet pad) + 12 PPP
    b"\x4e\x20"  # Tunnel ID: 20000
    b"\x00\x07"  # Session ID: 7
    b"\x00\x2a"  # Ns: 42
    b"\x00\x00"  # Nr: 0 (reserved in data messages)
    b"\x00\x02"  # Offset Size: 2
    b"\x00\x00"  # Offset Pad: 2 octets
) + PPP_FRAME

DATA_OFFSET_PAD = (
    b"\x02\x02"  # T=0 L=0 S=0 O=1 P=0 Ver=2
    b"\x00\x01"  # Tunnel ID: 1
    b"\x00\x02"  # Session ID: 2
    b"\x00\x05"  # Offset Size: 5
    b"\xa5\xa5\xa5\xa5\xa5"  # Offset Pad: 5 octets, content meaningless (skipped)
) + PPP_FRAME


def test_shortest_data_message_decodes() -> None:
    assert decode_packet(DATA_SHORTEST) == DataPacket(20000, 7, PPP_FRAME)


def test_shortest_data_message_encodes() -> None:
    assert encode_data(20000, 7, PPP_FRAME) == DATA_SHORTEST


def test_data_message_with_every_optional_field_decodes() -> None:
    assert decode_packet(DATA_ALL_BITS) == DataPacket(
        20000, 7, PPP_FRAME, ns=42, nr=0, priority=True
    )


def test_data_message_with_every_optional_field_encodes() -> None:
    encoded = encode_data(
        20000, 7, PPP_FRAME, ns=42, nr=0, with_length=True, offset_pad=2, priority=True
    )
    assert encoded == DATA_ALL_BITS


def test_offset_padding_is_skipped() -> None:
    assert decode_packet(DATA_OFFSET_PAD) == DataPacket(1, 2, PPP_FRAME)


def test_offset_padding_is_written_as_zeros() -> None:
    expected = DATA_OFFSET_PAD.replace(b"\xa5" * 5, b"\x00" * 5)
    assert encode_data(1, 2, PPP_FRAME, offset_pad=5) == expected


def test_zero_offset_size() -> None:
    data = (
        b"\x02\x02"  # O=1 Ver=2
        b"\x00\x01"  # Tunnel ID: 1
        b"\x00\x02"  # Session ID: 2
        b"\x00\x00"  # Offset Size: 0, no pad follows
    ) + PPP_FRAME
    assert decode_packet(data) == DataPacket(1, 2, PPP_FRAME)
    assert encode_data(1, 2, PPP_FRAME, offset_pad=0) == data


def _hand_built_data(
    length: bool, sequence: bool, offset: bool, priority: bool, pad_octet: int
) -> bytes:
    """A data message assembled field by field, independently of encode_data."""
    flags = 0x0002
    fields = struct.pack("!HH", 20000, 7)  # Tunnel ID, Session ID
    if sequence:
        flags |= 0x0800
        fields += struct.pack("!HH", 513, 0)  # Ns, Nr
    if offset:
        flags |= 0x0200
        fields += struct.pack("!H", 3) + bytes([pad_octet]) * 3  # Offset Size, Offset Pad
    if priority:
        flags |= 0x0100
    if length:
        flags |= 0x4000
        total = 4 + len(fields) + len(PPP_FRAME)  # flags + Length fields, then the rest
        return struct.pack("!HH", flags, total) + fields + PPP_FRAME
    return struct.pack("!H", flags) + fields + PPP_FRAME


ALL_LSOP = list(itertools.product([False, True], repeat=4))


LSOP_IDS = [
    "".join(name if on else "-" for name, on in zip("LSOP", bits, strict=True)) for bits in ALL_LSOP
]


@pytest.mark.parametrize(("length", "sequence", "offset", "priority"), ALL_LSOP, ids=LSOP_IDS)
def test_every_data_header_form_decodes(
    length: bool, sequence: bool, offset: bool, priority: bool
) -> None:
    data = _hand_built_data(length, sequence, offset, priority, pad_octet=0xEE)
    packet = decode_packet(data)
    assert packet == DataPacket(
        20000,
        7,
        PPP_FRAME,
        ns=513 if sequence else None,
        nr=0 if sequence else None,
        priority=priority,
    )


@pytest.mark.parametrize(("length", "sequence", "offset", "priority"), ALL_LSOP, ids=LSOP_IDS)
def test_every_data_header_form_encodes(
    length: bool, sequence: bool, offset: bool, priority: bool
) -> None:
    encoded = encode_data(
        20000,
        7,
        PPP_FRAME,
        ns=513 if sequence else None,
        nr=0,
        with_length=length,
        offset_pad=3 if offset else None,
        priority=priority,
    )
    assert encoded == _hand_built_data(length, sequence, offset, priority, pad_octet=0)


# --- trailing bytes ---------------------------------------------------------------


def test_control_trailing_bytes_beyond_length_are_ignored() -> None:
    # UDP may carry more than Length says (e.g. link-layer padding): Length wins.
    assert decode_packet(CONTROL_SCCRQ + b"\x00\x00junk") == ControlPacket(0, 0, 0, 0, SCCRQ_BODY)


def test_zlb_trailing_bytes_beyond_length_are_ignored() -> None:
    packet = decode_packet(ZLB + b"\xff" * 6)
    assert isinstance(packet, ControlPacket)
    assert packet.is_zlb


def test_data_trailing_bytes_beyond_length_are_ignored() -> None:
    assert decode_packet(DATA_ALL_BITS + b"\xff\xff\xff").payload == PPP_FRAME


def test_data_without_length_takes_everything() -> None:
    # No L bit: the payload runs to the end of the datagram.
    assert decode_packet(DATA_SHORTEST + b"\xff").payload == PPP_FRAME + b"\xff"


# --- malformed headers ------------------------------------------------------------


@pytest.mark.parametrize("size", range(6))
def test_short_header_is_malformed(size: int) -> None:
    with pytest.raises(MalformedPacket):
        decode_packet(CONTROL_SCCRQ[:size])


@pytest.mark.parametrize("version", [0, 1, 3, 15])
@pytest.mark.parametrize("template", [CONTROL_SCCRQ, DATA_SHORTEST], ids=["control", "data"])
def test_wrong_version_is_malformed(template: bytes, version: int) -> None:
    # Ver=1 is L2F (RFC 2341), Ver=3 is L2TPv3 (RFC 3931): neither is ours.
    data = template[:1] + bytes([(template[1] & 0xF0) | version]) + template[2:]
    with pytest.raises(MalformedPacket, match="version"):
        decode_packet(data)


def test_length_past_the_end_is_malformed() -> None:
    data = (
        b"\xc8\x02"  # T=1 L=1 S=1 Ver=2
        b"\x00\x15"  # Length: 21, one more than the 20 bytes present
        b"\x00\x00\x00\x00\x00\x00\x00\x00"  # Tunnel, Session, Ns, Nr
    ) + SCCRQ_BODY
    with pytest.raises(MalformedPacket, match="Length"):
        decode_packet(data)


def test_data_length_past_the_end_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="Length"):
        decode_packet(DATA_ALL_BITS[:-1])


@pytest.mark.parametrize("length", [0, 4, 7, 11])
def test_length_shorter_than_the_control_header_is_malformed(length: int) -> None:
    data = CONTROL_SCCRQ[:2] + struct.pack("!H", length) + CONTROL_SCCRQ[4:]
    with pytest.raises(MalformedPacket):
        decode_packet(data)


@pytest.mark.parametrize(
    "flags",
    [
        b"\x88\x02",  # T=1 L=0 S=1: no Length
        b"\xc0\x02",  # T=1 L=1 S=0: no Ns/Nr
        b"\x80\x02",  # T=1 L=0 S=0: neither
    ],
    ids=["no-L", "no-S", "neither"],
)
def test_control_without_l_or_s_is_malformed(flags: bytes) -> None:
    with pytest.raises(MalformedPacket, match="L and S"):
        decode_packet(flags + CONTROL_SCCRQ[2:])


def test_offset_past_the_end_is_malformed() -> None:
    data = (
        b"\x02\x02"  # O=1 Ver=2
        b"\x00\x01"  # Tunnel ID: 1
        b"\x00\x02"  # Session ID: 2
        b"\x00\x64"  # Offset Size: 100, but only 12 bytes follow
    ) + PPP_FRAME
    with pytest.raises(MalformedPacket, match="Offset"):
        decode_packet(data)


def test_offset_past_the_length_is_malformed() -> None:
    # The pad fits the datagram but not the Length field: Length bounds the packet.
    data = (
        b"\x42\x02"  # L=1 O=1 Ver=2
        b"\x00\x0c"  # Length: 12
        b"\x00\x01"  # Tunnel ID: 1
        b"\x00\x02"  # Session ID: 2
        b"\x00\x04"  # Offset Size: 4, but Length leaves 2
    ) + bytes(4)
    with pytest.raises(MalformedPacket, match="Offset"):
        decode_packet(data)


def test_offset_size_truncated_is_malformed() -> None:
    data = b"\x02\x02\x00\x01\x00\x02\x00"  # O=1, Tunnel 1, Session 2, half an Offset Size
    with pytest.raises(MalformedPacket, match="Offset"):
        decode_packet(data)


@pytest.mark.parametrize("cut", [8, 9, 10, 11])
def test_control_ns_nr_truncated_is_malformed(cut: int) -> None:
    # Length itself says the header ends early, inside Ns/Nr.
    data = b"\xc8\x02" + struct.pack("!H", cut) + CONTROL_SCCRQ[4:cut]
    with pytest.raises(MalformedPacket, match="Ns and Nr"):
        decode_packet(data)


@pytest.mark.parametrize("cut", [6, 7, 8, 9])
def test_data_ns_nr_truncated_is_malformed(cut: int) -> None:
    data = (
        b"\x08\x02"  # S=1 Ver=2
        b"\x00\x01"  # Tunnel ID: 1
        b"\x00\x02"  # Session ID: 2
        b"\x00\x01\x00\x00"  # Ns: 1, Nr: 0
    )[:cut]
    with pytest.raises(MalformedPacket, match="Ns and Nr"):
        decode_packet(data)


def test_tunnel_and_session_truncated_by_length_is_malformed() -> None:
    data = (
        b"\x40\x02"  # L=1 Ver=2
        b"\x00\x06"  # Length: 6, no room for Session ID
        b"\x00\x01"  # Tunnel ID: 1
        b"\x00\x02"  # Session ID: 2 (past Length)
    )
    with pytest.raises(MalformedPacket, match="Tunnel ID"):
        decode_packet(data)


def test_malformed_packet_is_a_value_error() -> None:
    # Callers that only know ValueError still catch it (STYLE.md section 3).
    assert issubclass(MalformedPacket, ValueError)
