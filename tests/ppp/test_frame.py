"""PPP framing in L2TP (RFC 1661 sections 2, 6.5, 6.6; RFC 1662 section 3.1), both directions.

A frame as L2TP carries it: [FF 03] Protocol(1 or 2 bytes) Information. Flags and
FCS are gone (RFC 2661 section 2), so nothing else surrounds these bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lns.ppp.frame import MalformedFrame, Protocol, decode_frame, encode_frame, valid_protocol

SETTINGS = settings(max_examples=300, deadline=None)

LCP_ECHO = b"\x09\x01\x00\x08\x12\x34\x56\x78"  # Echo-Request Id=1 Length=8 Magic=0x12345678
IP_HEADER = b"\x45\x00\x00\x14"  # the first bytes of an IPv4 header (version 4, IHL 5)

LCP_FULL = (
    b"\xff"  # Address: All-Stations
    b"\x03"  # Control: Unnumbered Information
    b"\xc0\x21"  # Protocol: LCP, never compressed (section 6.5)
) + LCP_ECHO

IP_ACFC_PFC = (
    b"\x21"  # Protocol: IP compressed to one byte (odd first byte), no FF 03
) + IP_HEADER

IP_FULL = (
    b"\xff\x03"  # Address, Control
    b"\x00\x21"  # Protocol: IP, two bytes
) + IP_HEADER

IP_PFC_ONLY = (
    b"\xff\x03"  # Address, Control
    b"\x21"  # Protocol: IP compressed
) + IP_HEADER

IPCP_ACFC_ONLY = (
    b"\x80\x21"  # Protocol: IPCP (first byte even: a second byte follows), no FF 03
    b"\x05\x02\x00\x04"  # Terminate-Request Id=2 Length=4
)


@pytest.mark.parametrize(
    ("frame", "protocol", "payload", "acfc", "pfc"),
    [
        (LCP_FULL, Protocol.LCP, LCP_ECHO, False, False),
        (IP_FULL, Protocol.IP, IP_HEADER, False, False),
        (IP_ACFC_PFC, Protocol.IP, IP_HEADER, True, True),
        (IP_PFC_ONLY, Protocol.IP, IP_HEADER, False, True),
        (IPCP_ACFC_ONLY, Protocol.IPCP, b"\x05\x02\x00\x04", True, False),
    ],
)
def test_golden_frames_both_ways(
    frame: bytes, protocol: int, payload: bytes, acfc: bool, pfc: bool
) -> None:
    assert decode_frame(frame) == (protocol, payload)
    assert encode_frame(protocol, payload, acfc=acfc, pfc=pfc) == frame


def test_lcp_keeps_address_control_and_full_protocol() -> None:
    # RFC 1661 sections 6.5/6.6: LCP frames are never compressed, whatever was negotiated.
    assert encode_frame(Protocol.LCP, LCP_ECHO, acfc=True, pfc=True) == LCP_FULL


def test_pfc_does_not_apply_above_0xff() -> None:
    assert encode_frame(Protocol.IPCP, b"", pfc=True) == b"\xff\x03\x80\x21"
    assert encode_frame(Protocol.CHAP, b"", acfc=True, pfc=True) == b"\xc2\x23"


def test_empty_information_field() -> None:
    assert decode_frame(b"\xff\x03\x00\x21") == (Protocol.IP, b"")
    assert decode_frame(b"\x21") == (Protocol.IP, b"")


@pytest.mark.parametrize(
    "frame",
    [
        b"",  # nothing at all
        b"\xff",  # Address without Control
        b"\xff\x05\x00\x21",  # Address followed by something other than Control 0x03
        b"\xff\x03",  # header only, no Protocol
        b"\x80",  # 2-byte Protocol cut after its first byte
        b"\xff\x03\xc0",  # the same behind FF 03
        b"\x80\x20\x01",  # 2-byte Protocol whose last byte is even
        b"\xff\x03\xc0\x22\x01",  # the same behind FF 03
    ],
)
def test_malformed_frames(frame: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode_frame(frame)


@pytest.mark.parametrize("protocol", [0x0020, 0x0121, 0xC020, -1, 0x10000, 0x1_0021])
def test_encode_refuses_invalid_protocols(protocol: int) -> None:
    assert not valid_protocol(protocol)
    with pytest.raises(ValueError, match="not a valid PPP protocol"):
        encode_frame(protocol, b"")


def test_protocol_numbers() -> None:
    assert {p.name: p.value for p in Protocol} == {
        "IP": 0x0021,
        "IPV6": 0x0057,
        "IPCP": 0x8021,
        "IPV6CP": 0x8057,
        "CCP": 0x80FD,
        "LCP": 0xC021,
        "PAP": 0xC023,
        "CHAP": 0xC223,
    }
    assert all(valid_protocol(p) for p in Protocol)


protocols = st.builds(
    lambda high, low: (high * 2) << 8 | (low * 2 + 1),
    st.integers(0, 0x7F),
    st.integers(0, 0x7F),
)


@SETTINGS
@given(protocols, st.binary(max_size=64), st.booleans(), st.booleans())
def test_round_trip(protocol: int, payload: bytes, acfc: bool, pfc: bool) -> None:
    assert decode_frame(encode_frame(protocol, payload, acfc=acfc, pfc=pfc)) == (protocol, payload)


@SETTINGS
@given(st.binary(max_size=16))
def test_random_bytes_raise_only_malformed_frame(data: bytes) -> None:
    try:
        protocol, payload = decode_frame(data)
    except MalformedFrame:
        return
    # Whatever decodes is a valid protocol and a suffix of the frame, and re-encodes
    # to an equivalent frame.
    assert valid_protocol(protocol)
    assert data.endswith(payload)
    assert decode_frame(encode_frame(protocol, payload)) == (protocol, payload)
