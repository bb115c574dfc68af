"""Control packets and Configuration Options (RFC 1661 sections 5 and 6), both directions.

Golden vectors are whole frames as L2TP carries them, annotated byte by byte:
LCP (RFC 1661), IPCP with the RFC 1877 DNS options, CHAP (RFC 1994 section 4.1)
and PAP (RFC 1334 section 2.2.1).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lns.ppp.frame import MalformedFrame, Protocol, decode_frame, encode_frame
from lns.ppp.packet import (
    Code,
    ControlPacket,
    Option,
    decode_options,
    decode_packet,
    encode_options,
)

SETTINGS = settings(max_examples=300, deadline=None)

LCP_CONFIGURE_REQUEST = (
    b"\xff\x03"  # Address, Control
    b"\xc0\x21"  # Protocol: LCP
    b"\x01"  # Code: Configure-Request
    b"\x2a"  # Identifier: 42
    b"\x00\x12"  # Length: 18 = 4 header + 4 + 6 + 2 + 2
    b"\x01\x04\x05\xaa"  # Option 1 (MRU), Length 4: 1450
    b"\x05\x06\x1f\x2e\x3d\x4c"  # Option 5 (Magic-Number), Length 6: 0x1f2e3d4c
    b"\x07\x02"  # Option 7 (Protocol-Field-Compression), Length 2, no data
    b"\x08\x02"  # Option 8 (Address-and-Control-Field-Compression), Length 2
)
LCP_OPTIONS = [
    Option(1, b"\x05\xaa"),
    Option(5, b"\x1f\x2e\x3d\x4c"),
    Option(7, b""),
    Option(8, b""),
]

IPCP_CONFIGURE_REQUEST = (
    b"\xff\x03"  # Address, Control
    b"\x80\x21"  # Protocol: IPCP
    b"\x01"  # Code: Configure-Request
    b"\x01"  # Identifier: 1
    b"\x00\x16"  # Length: 22 = 4 + 3 options of 6
    b"\x03\x06\x00\x00\x00\x00"  # Option 3 (IP-Address), Length 6: 0.0.0.0, "assign me one"
    b"\x81\x06\x00\x00\x00\x00"  # Option 129 (Primary-DNS, RFC 1877), Length 6: 0.0.0.0
    b"\x83\x06\x00\x00\x00\x00"  # Option 131 (Secondary-DNS, RFC 1877), Length 6: 0.0.0.0
)
IPCP_OPTIONS = [
    Option(3, bytes(4)),
    Option(129, bytes(4)),
    Option(131, bytes(4)),
]

CHAP_VALUE = bytes(range(0x10, 0x20))
CHAP_CHALLENGE = (
    b"\xff\x03"  # Address, Control
    b"\xc2\x23"  # Protocol: CHAP
    b"\x01"  # Code: Challenge
    b"\x07"  # Identifier: 7
    b"\x00\x18"  # Length: 24 = 4 + 1 + 16 + 3
    b"\x10"  # Value-Size: 16
    b"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"  # Value
    b"lns"  # Name: the authenticator's name, to the end of the packet
)

PAP_AUTHENTICATE_REQUEST = (
    b"\xff\x03"  # Address, Control
    b"\xc0\x23"  # Protocol: PAP
    b"\x01"  # Code: Authenticate-Request
    b"\x03"  # Identifier: 3
    b"\x00\x0e"  # Length: 14 = 4 + 1 + 4 + 1 + 4
    b"\x04"  # Peer-ID Length: 4
    b"user"  # Peer-ID
    b"\x04"  # Passwd-Length: 4
    b"pass"  # Password
)


@pytest.mark.parametrize(
    ("frame", "protocol", "packet"),
    [
        (
            LCP_CONFIGURE_REQUEST,
            Protocol.LCP,
            ControlPacket(Code.CONFIGURE_REQUEST, 42, encode_options(LCP_OPTIONS)),
        ),
        (
            IPCP_CONFIGURE_REQUEST,
            Protocol.IPCP,
            ControlPacket(Code.CONFIGURE_REQUEST, 1, encode_options(IPCP_OPTIONS)),
        ),
        (CHAP_CHALLENGE, Protocol.CHAP, ControlPacket(1, 7, b"\x10" + CHAP_VALUE + b"lns")),
        (PAP_AUTHENTICATE_REQUEST, Protocol.PAP, ControlPacket(1, 3, b"\x04user\x04pass")),
    ],
)
def test_golden_packets_both_ways(frame: bytes, protocol: int, packet: ControlPacket) -> None:
    decoded_protocol, payload = decode_frame(frame)
    assert decoded_protocol == protocol
    assert decode_packet(payload) == packet
    assert encode_frame(protocol, packet.encode()) == frame


@pytest.mark.parametrize(
    ("frame", "options"),
    [(LCP_CONFIGURE_REQUEST, LCP_OPTIONS), (IPCP_CONFIGURE_REQUEST, IPCP_OPTIONS)],
)
def test_golden_options_both_ways(frame: bytes, options: list[Option]) -> None:
    data = decode_packet(decode_frame(frame)[1]).data
    assert decode_options(data) == options
    assert encode_options(options) == data


def test_bytes_beyond_length_are_padding() -> None:
    # RFC 1661 section 5: octets outside the Length are padding, ignored on reception.
    payload = b"\x06\x09\x00\x04" + b"\x00\x00\x00"  # Terminate-Ack Id=9 Length=4, 3 padding
    assert decode_packet(payload) == ControlPacket(Code.TERMINATE_ACK, 9, b"")


def test_unknown_codes_and_options_survive() -> None:
    packet = ControlPacket(0xEE, 0xFF, b"\x99\x03\x01\x00\x02")
    assert decode_packet(packet.encode()) == packet
    assert decode_options(b"\x99\x03\x01\x00\x02") == [Option(0x99, b"\x01"), Option(0, b"")]


def test_code_numbers() -> None:
    assert [(c.name, c.value) for c in Code] == [
        ("CONFIGURE_REQUEST", 1),
        ("CONFIGURE_ACK", 2),
        ("CONFIGURE_NAK", 3),
        ("CONFIGURE_REJECT", 4),
        ("TERMINATE_REQUEST", 5),
        ("TERMINATE_ACK", 6),
        ("CODE_REJECT", 7),
        ("PROTOCOL_REJECT", 8),
        ("ECHO_REQUEST", 9),
        ("ECHO_REPLY", 10),
        ("DISCARD_REQUEST", 11),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no header
        b"\x01\x01\x00",  # header cut short
        b"\x01\x01\x00\x03",  # Length 3, below the header's 4
        b"\x01\x01\x00\x00",  # Length 0
        b"\x01\x01\x00\x09\x01\x04\x05\xaa",  # Length 9, only 8 bytes received
    ],
)
def test_malformed_packets(payload: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode_packet(payload)


@pytest.mark.parametrize(
    "data",
    [
        b"\x01",  # a lone Type byte
        b"\x01\x04\x05",  # MRU Length 4, 3 bytes there
        b"\x01\x00",  # Length 0
        b"\x07\x01",  # Length 1, below the Type/Length header
        b"\x07\x02\x01",  # a good option, then a dangling byte
    ],
)
def test_malformed_options(data: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode_options(data)


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        Option(1, bytes(254)).encode()
    assert Option(1, bytes(253)).encode()[:2] == b"\x01\xff"
    with pytest.raises(ValueError, match="Length field"):
        ControlPacket(1, 1, bytes(0xFFFC)).encode()


options = st.builds(Option, st.integers(0, 255), st.binary(max_size=20))
packets = st.builds(ControlPacket, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=64))


@SETTINGS
@given(packets, st.binary(max_size=8))
def test_packet_round_trip(packet: ControlPacket, padding: bytes) -> None:
    assert decode_packet(packet.encode() + padding) == packet


@SETTINGS
@given(st.lists(options, max_size=8))
def test_options_round_trip(option_list: list[Option]) -> None:
    assert decode_options(encode_options(option_list)) == option_list


@SETTINGS
@given(st.binary(max_size=40))
def test_random_bytes_raise_only_malformed_frame(data: bytes) -> None:
    try:
        packet = decode_packet(data)
    except MalformedFrame:
        pass
    else:
        assert data.startswith(packet.encode())
    try:
        decoded = decode_options(data)
    except MalformedFrame:
        pass
    else:
        assert encode_options(decoded) == data
