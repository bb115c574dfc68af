"""IPv4 helpers: RFC 1071 checksum, header checks, RFC 1624 MSS clamping, RFC 792/1191
Fragmentation Needed, RFC 791 fragmentation, and the packet builders.

Checksums are verified against a plain word-by-word reference written here, so the fast
implementation is never checked against itself.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lns.dataplane import ipv4
from lns.dataplane.ipv4 import (
    checksum,
    clamp_mss,
    destination,
    dont_fragment,
    fragment,
    fragmentation_needed,
    ones_sum,
    source,
    tcp_mss,
    valid_header,
)
from lns.testing.packets import (
    datagram,
    icmp_echo,
    parse_icmp_echo,
    tcp_segment,
    tcp_syn,
    udp_datagram,
)

SETTINGS = settings(max_examples=300, deadline=None)

CLIENT = 0x0A000002  # 10.0.0.2
SERVER = 0xC6336407  # 198.51.100.7
LNS = 0x0AFF0001  # 10.255.0.1

SYN = 0x02
ACK = 0x10


def reference_sum(data: bytes) -> int:
    """RFC 1071 section 4.1, as written there: 16-bit words, end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for index in range(0, len(data), 2):
        total += (data[index] << 8) | data[index + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def reference_checksum(data: bytes) -> int:
    return ~reference_sum(data) & 0xFFFF


def header_of(packet: bytes) -> bytes:
    return packet[: (packet[0] & 0x0F) * 4]


def tcp_checksum_ok(packet: bytes) -> bool:
    """The TCP checksum recomputed from scratch with the RFC 793 pseudo-header."""
    header_length = (packet[0] & 0x0F) * 4
    total = (packet[2] << 8) | packet[3]
    segment = packet[header_length:total]
    pseudo = packet[12:20] + bytes([0, packet[9]]) + len(segment).to_bytes(2, "big")
    return reference_checksum(pseudo + segment) == 0


def tcp_options(*options: bytes) -> bytes:
    return b"".join(options)


NOP = b"\x01"
EOL = b"\x00"
WSCALE = b"\x03\x03\x07"  # window scale 7 (RFC 7323)
SACK_OK = b"\x04\x02"  # SACK permitted (RFC 2018)
TIMESTAMPS = b"\x08\x0a" + bytes(range(1, 9))  # TSval, TSecr (RFC 7323)


def mss_option(value: int) -> bytes:
    return b"\x02\x04" + value.to_bytes(2, "big")


# --- checksum ------------------------------------------------------------------------


def test_checksum_rfc1071_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")  # RFC 1071 section 3, numerical example
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D


def test_checksum_of_a_known_header() -> None:
    header = bytes.fromhex(
        "4500 0073"  # version 4, IHL 5, TOS 0, Total Length 115
        "0000 4000"  # Identification 0, DF, offset 0
        "4011 b861"  # TTL 64, UDP, header checksum 0xb861
        "c0a8 0001"  # 192.168.0.1
        "c0a8 00c7"  # 192.168.0.199
    )
    assert checksum(header) == 0
    assert checksum(header[:10] + b"\x00\x00" + header[12:]) == 0xB861


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0xFFFF),
        (b"\x00\x00", 0xFFFF),
        (b"\xff\xff", 0x0000),  # sums to negative zero
        (b"\xff\xff\xff\xff", 0x0000),
        (b"\x01", 0xFEFF),  # odd length: padded with a zero byte
        (b"\x00\x01\xff\xfe", 0x0000),  # 0x0001 + 0xFFFE = 0xFFFF
        (b"\x80\x00\x80\x00", 0xFFFE),  # carry wraps around: 0x10000 -> 0x0001
    ],
)
def test_checksum_edges(data: bytes, expected: int) -> None:
    assert checksum(data) == expected
    assert checksum(data) == reference_checksum(data)


@SETTINGS
@given(st.binary(max_size=300))
def test_checksum_matches_reference(data: bytes) -> None:
    assert checksum(data) == reference_checksum(data)
    assert checksum(bytearray(data)) == checksum(memoryview(data)) == checksum(data)


@SETTINGS
@given(st.lists(st.sampled_from([0x0000, 0xFFFF, 0x0001, 0xFFFE, 0x8000]), max_size=40))
def test_checksum_matches_reference_near_the_wrap(words: list[int]) -> None:
    data = b"".join(word.to_bytes(2, "big") for word in words)
    assert checksum(data) == reference_checksum(data)


# --- header ----------------------------------------------------------------------------


def test_builders_make_valid_headers() -> None:
    for packet in (
        icmp_echo(CLIENT, SERVER, 1, 2, b"ping"),
        tcp_syn(CLIENT, SERVER, 40000, 443, 1460),
        udp_datagram(CLIENT, SERVER, 5000, 53, b"query"),
        datagram(CLIENT, SERVER, 253, b"x" * 33, identification=7, dont_fragment=True, ttl=3),
    ):
        assert valid_header(packet)
        assert checksum(header_of(packet)) == 0
        assert ipv4.header_checksum_ok(packet)
        assert source(packet) == CLIENT
        assert destination(packet) == SERVER
        assert ((packet[2] << 8) | packet[3]) == len(packet)


def test_source_destination_and_df() -> None:
    packet = datagram(0x01020304, 0xFFFFFFFE, 17, b"", dont_fragment=True)
    assert source(packet) == 0x01020304
    assert destination(packet) == 0xFFFFFFFE
    assert dont_fragment(packet)
    assert not dont_fragment(datagram(1, 2, 17, b""))
    assert not dont_fragment(b"")


GOOD = udp_datagram(CLIENT, SERVER, 1, 2, b"payload")


@pytest.mark.parametrize(
    ("packet", "valid"),
    [
        (GOOD, True),
        (GOOD + b"\x00\x00", True),  # link padding after Total Length
        (b"", False),
        (GOOD[:19], False),  # shorter than a header
        (b"\x65" + GOOD[1:], False),  # version 6
        (b"\x44" + GOOD[1:], False),  # IHL 4
        (b"\x4f" + GOOD[1:], False),  # IHL 15: a 60-byte header in 35 bytes
        (GOOD[:-1], False),  # Total Length past the end
        (GOOD[:2] + b"\x00\x13" + GOOD[4:], False),  # Total Length inside the header
        (GOOD[:2] + b"\x00\x14" + GOOD[4:], True),  # Total Length 20: a header alone
    ],
)
def test_valid_header(packet: bytes, valid: bool) -> None:
    assert valid_header(packet) is valid


@SETTINGS
@given(st.binary(max_size=80))
def test_valid_header_never_raises(packet: bytes) -> None:
    valid_header(packet)
    dont_fragment(packet)
    assert clamp_mss(packet, 536) is packet or valid_header(packet)
    tcp_mss(packet)
    parse_icmp_echo(packet)
    fragmentation_needed(packet, 1400, LNS)


# --- builders --------------------------------------------------------------------------


def test_icmp_echo_round_trip() -> None:
    request = icmp_echo(CLIENT, SERVER, 0x1234, 0xBEEF, b"abcdefgh")
    assert parse_icmp_echo(request) == (8, CLIENT, SERVER, 0x1234, 0xBEEF)
    assert reference_checksum(request[20:]) == 0
    reply = icmp_echo(SERVER, CLIENT, 0x1234, 0xBEEF, b"abcdefgh", reply=True)
    assert parse_icmp_echo(reply) == (0, SERVER, CLIENT, 0x1234, 0xBEEF)
    assert reply[20:21] == b"\x00"


def test_parse_icmp_echo_rejects_others() -> None:
    request = icmp_echo(CLIENT, SERVER, 1, 1, b"data")
    broken = request[:-1] + bytes([request[-1] ^ 1])
    assert parse_icmp_echo(broken) is None  # ICMP checksum
    assert parse_icmp_echo(udp_datagram(CLIENT, SERVER, 1, 2, b"")) is None
    assert parse_icmp_echo(request[:27]) is None
    unreachable = fragmentation_needed(tcp_syn(CLIENT, SERVER, 1, 2, None), 1400, LNS)
    assert parse_icmp_echo(unreachable) is None
    first = fragment(icmp_echo(CLIENT, SERVER, 1, 1, bytes(200)), 100)[0]
    assert parse_icmp_echo(first) is None


def test_tcp_syn_and_mss() -> None:
    syn = tcp_syn(CLIENT, SERVER, 40000, 443, 1460, seq=99)
    assert tcp_checksum_ok(syn)
    assert tcp_mss(syn) == 1460
    assert syn[20 + 13] == SYN
    assert struct.unpack_from("!HHI", syn, 20) == (40000, 443, 99)
    syn_ack = tcp_syn(SERVER, CLIENT, 443, 40000, 1380, seq=5, ack=100)
    assert syn_ack[20 + 13] == SYN | ACK
    assert tcp_checksum_ok(syn_ack)
    assert tcp_mss(syn_ack) == 1380
    assert tcp_mss(tcp_syn(CLIENT, SERVER, 1, 2, None)) is None
    assert tcp_mss(udp_datagram(CLIENT, SERVER, 1, 2, b"\x02\x04\x05\xb4" * 8)) is None


def test_udp_checksum() -> None:
    packet = udp_datagram(CLIENT, SERVER, 5000, 53, b"odd")
    segment = packet[20:]
    pseudo = packet[12:20] + b"\x00\x11" + len(segment).to_bytes(2, "big")
    assert reference_checksum(pseudo + segment) == 0
    assert struct.unpack_from("!HHH", segment) == (5000, 53, 11)


@SETTINGS
@given(st.binary(max_size=64), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_udp_checksum_verifies(payload: bytes, sport: int, dport: int) -> None:
    packet = udp_datagram(CLIENT, SERVER, sport, dport, payload)
    assert packet[26:28] != b"\x00\x00"  # zero would mean "no checksum" (RFC 768)
    segment = packet[20:]
    pseudo = packet[12:20] + b"\x00\x11" + len(segment).to_bytes(2, "big")
    assert reference_checksum(pseudo + segment) in (0, 0xFFFF)


# --- MSS clamping ----------------------------------------------------------------------


def test_clamp_syn() -> None:
    syn = tcp_syn(CLIENT, SERVER, 40000, 443, 1460)
    clamped = clamp_mss(syn, 1410)
    assert tcp_mss(clamped) == 1410
    assert tcp_checksum_ok(clamped)
    assert len(clamped) == len(syn)
    assert isinstance(clamped, bytes)
    assert clamped[:20] == syn[:20]  # the IP header is untouched


def test_clamp_syn_ack() -> None:
    syn_ack = tcp_syn(SERVER, CLIENT, 443, 40000, 1460, ack=1)
    clamped = clamp_mss(syn_ack, 1360)
    assert tcp_mss(clamped) == 1360
    assert tcp_checksum_ok(clamped)


@pytest.mark.parametrize("mss", [1200, 1410])
def test_clamp_leaves_small_enough_mss(mss: int) -> None:
    syn = tcp_syn(CLIENT, SERVER, 40000, 443, mss)
    assert clamp_mss(syn, 1410) is syn


def test_clamp_ignores_non_syn() -> None:
    segment = tcp_segment(CLIENT, SERVER, 1, 2, flags=ACK, options=mss_option(1460))
    assert tcp_mss(segment) == 1460
    assert clamp_mss(segment, 536) is segment


def test_clamp_ignores_syn_without_mss() -> None:
    syn = tcp_segment(CLIENT, SERVER, 1, 2, flags=SYN, options=NOP + WSCALE + SACK_OK)
    assert clamp_mss(syn, 536) is syn


def test_clamp_ignores_other_protocols() -> None:
    packet = udp_datagram(CLIENT, SERVER, 1, 2, bytes(13) + b"\x02" + bytes(6) + mss_option(9000))
    assert clamp_mss(packet, 536) is packet


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(NOP + NOP + TIMESTAMPS + mss_option(1460), id="timestamps"),
        pytest.param(SACK_OK + TIMESTAMPS + NOP + WSCALE + mss_option(1460), id="linux-order"),
        pytest.param(NOP + mss_option(1460), id="odd-alignment"),
        pytest.param(WSCALE + mss_option(1460) + NOP, id="odd-alignment-wscale"),
        pytest.param(mss_option(1460) + NOP + WSCALE + SACK_OK + TIMESTAMPS, id="mss-first"),
        pytest.param(b"\xfe\x06\x01\x02\x03\x04" + mss_option(0xFFFF), id="experimental-first"),
    ],
)
def test_clamp_walks_options(options: bytes) -> None:
    syn = tcp_segment(CLIENT, SERVER, 1, 2, flags=SYN, options=options, payload=b"tfo")
    assert tcp_checksum_ok(syn)
    clamped = clamp_mss(syn, 1400)
    assert tcp_mss(clamped) == 1400
    assert tcp_checksum_ok(clamped)
    changed = [index for index in range(len(syn)) if syn[index] != clamped[index]]
    mss_at = clamped.index(b"\x02\x04\x05\x78", 40)
    assert set(changed) <= {36, 37, mss_at + 2, mss_at + 3}


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(EOL + mss_option(1460), id="after-end-of-list"),
        pytest.param(b"\x08\x00" + bytes(8) + mss_option(1460), id="zero-length"),
        pytest.param(b"\x08\x01" + mss_option(1460), id="length-one"),
        pytest.param(NOP * 3 + b"\x08\x0a\x00\x00", id="length-past-header"),
        pytest.param(b"\x02\x03\x05\xb4", id="mss-length-3"),
        pytest.param(b"\x02\x06\x05\xb4\x00\x00", id="mss-length-6"),
        pytest.param(NOP * 3 + b"\x02", id="kind-without-length"),
    ],
)
def test_clamp_leaves_malformed_options(options: bytes) -> None:
    syn = tcp_segment(CLIENT, SERVER, 1, 2, flags=SYN, options=options)
    assert clamp_mss(syn, 536) is syn


def test_clamp_leaves_truncated_segments() -> None:
    syn = tcp_syn(CLIENT, SERVER, 1, 2, 1460)
    # Data offset 6 claims 24 bytes of TCP header, but cut the packet (and its length) short.
    for cut in range(20, len(syn)):
        short = syn[:2] + cut.to_bytes(2, "big") + syn[4:cut]
        assert clamp_mss(short, 536) is short
    assert clamp_mss(syn[:30], 536) == syn[:30]  # Total Length past the end


def test_clamp_leaves_later_fragments() -> None:
    syn = bytearray(tcp_syn(CLIENT, SERVER, 1, 2, 1460, seq=0))
    syn[6:8] = (0x0001).to_bytes(2, "big")  # offset 8: bytes that only look like TCP
    assert clamp_mss(bytes(syn), 536) == bytes(syn)
    assert tcp_mss(bytes(syn)) is None


def test_clamp_with_ip_options() -> None:
    syn = tcp_syn(CLIENT, SERVER, 1, 2, 1460)
    options = b"\x94\x04\x00\x00"  # Router Alert (RFC 2113), 4 bytes
    longer = bytes([0x46]) + syn[1:2] + (len(syn) + 4).to_bytes(2, "big") + syn[4:20]
    longer = longer[:10] + b"\x00\x00" + longer[12:]
    longer = longer + options + syn[20:]
    clamped = clamp_mss(longer, 1000)
    assert tcp_mss(clamped) == 1000
    assert tcp_checksum_ok(clamped)


option_blocks = st.lists(
    st.sampled_from([NOP, WSCALE, SACK_OK, TIMESTAMPS, b"\x1e\x04\xab\xcd"]), max_size=5
)


@SETTINGS
@given(
    before=option_blocks,
    after=option_blocks,
    mss=st.integers(0, 0xFFFF),
    clamp=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=40),
    ports=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    seq=st.integers(0, 2**32 - 1),
    syn_ack=st.booleans(),
)
def test_clamp_random_syns(
    before: list[bytes],
    after: list[bytes],
    mss: int,
    clamp: int,
    payload: bytes,
    ports: tuple[int, int],
    seq: int,
    syn_ack: bool,
) -> None:
    options = b"".join(before) + mss_option(mss) + b"".join(after)
    assume(len(options) <= 40)  # the most a TCP header holds
    flags = SYN | ACK if syn_ack else SYN
    syn = tcp_segment(
        CLIENT, SERVER, *ports, seq=seq, flags=flags, options=options, payload=payload
    )
    assert tcp_mss(syn) == mss
    clamped = clamp_mss(syn, clamp)
    if mss <= clamp:
        assert clamped is syn
        return
    assert tcp_mss(clamped) == clamp
    assert tcp_checksum_ok(clamped)
    mss_at = 20 + 20 + options.index(mss_option(mss)) + 2
    changed = {index for index in range(len(syn)) if syn[index] != clamped[index]}
    assert changed <= {36, 37, mss_at, mss_at + 1}


# --- ICMP Fragmentation Needed ---------------------------------------------------------


def test_fragmentation_needed_structure() -> None:
    big = tcp_segment(CLIENT, SERVER, 40000, 443, seq=7, payload=bytes(1452))
    icmp = fragmentation_needed(big, 1400, LNS)
    assert valid_header(icmp)
    assert checksum(header_of(icmp)) == 0
    assert icmp[0] == 0x45
    assert icmp[1] == 0xC0  # precedence 6, internetwork control
    assert (icmp[2] << 8 | icmp[3]) == len(icmp) == 20 + 8 + 20 + 8
    assert icmp[6] & 0x40  # atomic datagram: DF
    assert icmp[8] == 64  # TTL
    assert icmp[9] == 1  # ICMP
    assert source(icmp) == LNS
    assert destination(icmp) == CLIENT
    message = icmp[20:]
    assert reference_checksum(message) == 0
    assert message[0] == 3  # Destination Unreachable
    assert message[1] == 4  # Fragmentation Needed and DF set
    assert message[4:6] == b"\x00\x00"  # unused
    assert (message[6] << 8 | message[7]) == 1400  # RFC 1191 Next-Hop MTU
    assert message[8:] == big[:28]  # the header and 64 bits of data


def test_fragmentation_needed_quotes_ip_options() -> None:
    packet = bytearray(datagram(CLIENT, SERVER, 17, bytes(100)))
    packet[0] = 0x46
    packet[2:4] = (len(packet) + 4).to_bytes(2, "big")
    packet[20:20] = b"\x94\x04\x00\x00"
    icmp = fragmentation_needed(bytes(packet), 576, LNS)
    assert icmp[28:] == bytes(packet[:32])
    assert len(icmp) == 20 + 8 + 24 + 8


def test_fragmentation_needed_quotes_short_packets_whole() -> None:
    packet = udp_datagram(CLIENT, SERVER, 1, 2, b"")  # 28 bytes: header and UDP header
    icmp = fragmentation_needed(packet, 68, LNS)
    assert icmp[28:] == packet
    padded = fragmentation_needed(packet + b"\x00" * 4, 68, LNS)
    assert padded[28:] == packet


def test_fragmentation_needed_for_echo_request() -> None:
    echo = icmp_echo(CLIENT, SERVER, 1, 1, bytes(2000))
    assert fragmentation_needed(echo, 1500, LNS)


@pytest.mark.parametrize("kind", [3, 4, 5, 11, 12])
def test_no_fragmentation_needed_for_icmp_errors(kind: int) -> None:
    message = bytes([kind, 0, 0, 0]) + bytes(4) + bytes(1500)
    error = datagram(SERVER, CLIENT, 1, message, dont_fragment=True)
    assert fragmentation_needed(error, 1400, LNS) == b""


def test_no_fragmentation_needed_for_unreadable_icmp() -> None:
    assert fragmentation_needed(datagram(SERVER, CLIENT, 1, b""), 1400, LNS) == b""


def test_no_fragmentation_needed_for_later_fragments() -> None:
    packet = bytearray(udp_datagram(SERVER, CLIENT, 1, 2, bytes(1600)))
    packet[6:8] = (0x2000 | 185).to_bytes(2, "big")  # MF, offset 1480
    assert fragmentation_needed(bytes(packet), 1400, LNS) == b""
    packet[6:8] = (0x2000).to_bytes(2, "big")  # MF, offset 0: the first fragment
    assert fragmentation_needed(bytes(packet), 1400, LNS)


@pytest.mark.parametrize(
    ("sender", "target"),
    [
        (0x00000000, CLIENT),  # this host
        (0x7F000001, CLIENT),  # loopback
        (0xE0000001, CLIENT),  # multicast
        (0xFFFFFFFF, CLIENT),  # broadcast
        (SERVER, 0xE0000001),  # to a multicast group
    ],
)
def test_no_fragmentation_needed_for_non_unicast(sender: int, target: int) -> None:
    packet = udp_datagram(sender, target, 1, 2, bytes(1500))
    assert fragmentation_needed(packet, 1400, LNS) == b""


def test_no_fragmentation_needed_for_garbage() -> None:
    assert fragmentation_needed(b"", 1400, LNS) == b""
    assert fragmentation_needed(b"\x45" + bytes(30), 1400, LNS) == b""


# --- fragmentation ---------------------------------------------------------------------


def reassemble(fragments: list[bytes], original: bytes) -> bytes:
    """Check each fragment's header against the original and join the data by offset."""
    original_header_length = (original[0] & 0x0F) * 4
    original_flags = (original[6] << 8) | original[7]
    base = (original_flags & 0x1FFF) * 8
    pieces: list[tuple[int, bytes, bool]] = []
    for piece in fragments:
        assert valid_header(piece)
        header_length = (piece[0] & 0x0F) * 4
        assert checksum(piece[:header_length]) == 0
        assert (piece[2] << 8 | piece[3]) == len(piece)
        # Identification, TTL, protocol, addresses are those of the original.
        assert piece[4:6] == original[4:6]
        assert piece[8:10] == original[8:10]
        assert piece[12:20] == original[12:20]
        flags = (piece[6] << 8) | piece[7]
        assert not flags & 0x4000
        pieces.append(((flags & 0x1FFF) * 8, piece[header_length:], bool(flags & 0x2000)))
    pieces.sort()
    data = b""
    for index, (offset, piece, more) in enumerate(pieces):
        assert offset == base + len(data)
        last = index == len(pieces) - 1
        if last:
            assert more == bool(original_flags & 0x2000)
        else:
            assert more
            assert len(piece) % 8 == 0
        data += piece
    assert pieces[0][0] == base
    assert fragments[0][20:original_header_length] == original[20:original_header_length]
    return data


def test_fragment_a_packet_that_fits() -> None:
    packet = udp_datagram(CLIENT, SERVER, 1, 2, bytes(100))
    assert fragment(packet, 128) == [packet]
    assert fragment(packet, 1500)[0] is packet
    assert fragment(packet + b"\x00\x00", 1500) == [packet]


def test_fragment_basic() -> None:
    packet = datagram(SERVER, CLIENT, 17, bytes(range(256)) * 7, identification=0x4242)
    fragments = fragment(packet, 576)
    assert [len(piece) for piece in fragments] == [
        572,
        572,
        572,
        156,
    ]  # 552 data bytes (69 x 8), then 136
    assert reassemble(fragments, packet) == packet[20:]


def test_fragment_refuses_df() -> None:
    packet = datagram(SERVER, CLIENT, 17, bytes(2000), dont_fragment=True)
    with pytest.raises(ValueError, match="DF"):
        fragment(packet, 1500)


def test_fragment_refuses_tiny_mtu() -> None:
    packet = datagram(SERVER, CLIENT, 17, bytes(200))
    with pytest.raises(ValueError, match="MTU"):
        fragment(packet, 27)


def test_fragment_of_a_fragment() -> None:
    packet = bytearray(datagram(SERVER, CLIENT, 17, bytes(range(200)) * 5, identification=9))
    packet[6:8] = (0x2000 | 100).to_bytes(2, "big")  # MF, offset 800
    packet[10:12] = b"\x00\x00"
    packet[10:12] = checksum(packet[:20]).to_bytes(2, "big")
    fragments = fragment(bytes(packet), 300)
    assert reassemble(fragments, bytes(packet)) == bytes(packet[20:])
    assert all((piece[6] << 8 | piece[7]) & 0x2000 for piece in fragments)  # MF kept on the last


def with_ip_options(packet: bytes, options: bytes) -> bytes:
    """``packet`` with ``options`` (a multiple of 4 bytes) in its header."""
    header = bytearray(packet[:20])
    header[0] = 0x45 + len(options) // 4
    header[2:4] = (len(packet) + len(options)).to_bytes(2, "big")
    header[10:12] = b"\x00\x00"
    header += options
    header[10:12] = checksum(header).to_bytes(2, "big")
    return bytes(header) + packet[20:]


LSRR = b"\x83\x07\x04\x0a\x00\x00\x01"  # loose source route: copied flag set
RECORD_ROUTE = b"\x07\x07\x04\x00\x00\x00\x00"  # record route: not copied
SECURITY = b"\x82\x0b" + bytes(9)  # security (RFC 1108 layout): copied


def test_fragment_copies_only_copied_options() -> None:
    options = RECORD_ROUTE + b"\x01" + LSRR + b"\x01" + SECURITY + b"\x00"
    assert len(options) == 28
    packet = with_ip_options(datagram(SERVER, CLIENT, 17, bytes(range(250)) * 4), options)
    fragments = fragment(packet, 300)
    assert fragments[0][0] == 0x45 + 7  # the first fragment keeps every option
    assert fragments[0][20:48] == options
    for piece in fragments[1:]:
        assert piece[0] == 0x45 + 5  # LSRR (7) and security (11), padded to 20
        assert piece[20:40] == LSRR + SECURITY + b"\x00\x00"
    assert reassemble(fragments, packet) == packet[48:]


def test_fragment_without_copied_options() -> None:
    packet = with_ip_options(datagram(SERVER, CLIENT, 17, bytes(1000)), RECORD_ROUTE + b"\x00")
    fragments = fragment(packet, 500)
    assert fragments[0][0] == 0x47
    assert all(piece[0] == 0x45 for piece in fragments[1:])
    assert reassemble(fragments, packet) == packet[28:]


def test_fragment_malformed_options_not_copied() -> None:
    packet = with_ip_options(datagram(SERVER, CLIENT, 17, bytes(1000)), b"\x83\x00\x00\x00")
    fragments = fragment(packet, 500)
    assert all(piece[0] == 0x45 for piece in fragments[1:])
    assert reassemble(fragments, packet) == packet[24:]


@SETTINGS
@given(
    size=st.integers(0, 3000),
    mtu=st.integers(68, 1500),
    options=st.sampled_from([b"", LSRR + b"\x00", RECORD_ROUTE + b"\x00", SECURITY + b"\x00"]),
    offset=st.integers(0, 100),
    more=st.booleans(),
)
def test_fragment_properties(size: int, mtu: int, options: bytes, offset: int, more: bool) -> None:
    payload = bytes(index * 7 & 0xFF for index in range(size))
    packet = bytearray(with_ip_options(datagram(SERVER, CLIENT, 17, payload, ttl=9), options))
    packet[6:8] = ((0x2000 if more else 0) | offset).to_bytes(2, "big")
    packet[10:12] = b"\x00\x00"
    header_length = 20 + len(options)
    packet[10:12] = checksum(packet[:header_length]).to_bytes(2, "big")
    original = bytes(packet)
    fragments = fragment(original, mtu)
    assert all(len(piece) <= mtu for piece in fragments)
    if len(original) <= mtu:
        assert fragments == [original]
    else:
        assert len(fragments) >= 2
    assert reassemble(fragments, original) == payload
