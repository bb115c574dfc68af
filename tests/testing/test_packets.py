"""The packet builders of lns.testing.packets: ICMP echo as a device sends it through its
session, the replies it expects, and the answer a host gives."""

from __future__ import annotations

import ipaddress
import struct

from lns.dataplane.ipv4 import checksum as internet_checksum
from lns.testing.packets import answer_echo, icmp_echo, parse_echo_reply

DEVICE = ipaddress.IPv4Address("100.64.1.7")
TARGET = ipaddress.IPv4Address("198.51.100.1")


def echo_request(source, destination, identifier, sequence, payload=b""):
    return icmp_echo(int(source), int(destination), identifier, sequence, payload)


def echo_reply(source, destination, identifier, sequence):
    return icmp_echo(int(source), int(destination), identifier, sequence, reply=True)


def test_rfc_1071_checksum_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is ~ddf2.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert internet_checksum(b"\x01") == 0xFEFF  # an odd byte is padded with zero


def test_echo_request_fields_and_checksums():
    packet = echo_request(DEVICE, TARGET, 0x1234, 7, b"abcd")
    version_ihl, _tos, length, _ident, _frag, ttl, protocol, _sum, src, dst = struct.unpack(
        "!BBHHHBBH4s4s", packet[:20]
    )
    assert (version_ihl, length, ttl, protocol) == (0x45, 20 + 8 + 4, 64, 1)
    assert (src, dst) == (DEVICE.packed, TARGET.packed)
    assert internet_checksum(packet[:20]) == 0  # a correct header sums to zero
    kind, code, _checksum, identifier, sequence = struct.unpack("!BBHHH", packet[20:28])
    assert (kind, code, identifier, sequence) == (8, 0, 0x1234, 7)
    assert internet_checksum(packet[20:]) == 0
    assert packet[28:] == b"abcd"


def test_echo_reply_is_recognised():
    reply = parse_echo_reply(echo_reply(TARGET, DEVICE, 0x1234, 7))
    assert reply is not None
    assert (reply.source, reply.destination, reply.identifier, reply.sequence) == (
        int(TARGET),
        int(DEVICE),
        0x1234,
        7,
    )


def test_anything_but_a_sound_echo_reply_is_ignored():
    request = echo_request(DEVICE, TARGET, 1, 1)
    assert parse_echo_reply(request) is None  # type 8, not 0
    reply = bytearray(echo_reply(TARGET, DEVICE, 1, 1))
    damaged = bytes(reply[:-1]) + bytes([reply[-1] ^ 0xFF])
    assert parse_echo_reply(damaged) is None  # ICMP checksum wrong
    fragment = bytearray(reply)
    fragment[6] = 0x20  # More Fragments
    assert parse_echo_reply(bytes(fragment)) is None
    udp = bytearray(reply)
    udp[9] = 17
    assert parse_echo_reply(bytes(udp)) is None
    assert parse_echo_reply(b"") is None
    assert parse_echo_reply(b"\x60" + bytes(40)) is None  # IPv6
    assert parse_echo_reply(bytes(reply[:24])) is None  # truncated


def test_a_host_answers_an_echo_request_with_its_data_and_identification():
    request = bytearray(echo_request(DEVICE, TARGET, 0x1234, 7, b"abcd"))
    request[4:6] = b"\x42\x42"  # IP identification
    request[10:12] = b"\x00\x00"
    request[10:12] = internet_checksum(bytes(request[:20])).to_bytes(2, "big")
    answer = answer_echo(bytes(request))
    assert answer is not None
    assert answer[4:6] == b"\x42\x42"
    assert answer[28:] == b"abcd"
    assert internet_checksum(answer[:20]) == 0
    assert internet_checksum(answer[20:]) == 0
    reply = parse_echo_reply(answer)
    assert reply is not None
    assert (reply.source, reply.destination, reply.identifier, reply.sequence) == (
        int(TARGET),
        int(DEVICE),
        0x1234,
        7,
    )
    assert answer_echo(answer) is None  # a reply is not answered
    assert answer_echo(bytes(request[:-1])) is None  # damaged
