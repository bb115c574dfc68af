"""The forwarder between sessions and the TUN device: ingress filtering (RFC 2827), MSS
clamping both ways, routing by address then Framed-Route, and the oversized-packet rule
(ICMP Fragmentation Needed with DF set, RFC 791 fragmentation without).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lns.dataplane.forwarder import Forwarder, SessionPath
from lns.dataplane.ipv4 import (
    checksum,
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

LOCAL = ipaddress.IPv4Address("10.255.0.1")
SESSION_ADDRESS = ipaddress.IPv4Address("10.0.0.2")
CLIENT = int(SESSION_ADDRESS)
LAN = ipaddress.IPv4Network("192.168.10.0/24")  # a Framed-Route behind the device
LAN_HOST = int(ipaddress.IPv4Address("192.168.10.20"))
SERVER = int(ipaddress.IPv4Address("198.51.100.7"))
KEY = (1, 1)


@pytest.fixture
def forwarder() -> Forwarder:
    return Forwarder(LOCAL, mss_clamp=True)


@pytest.fixture
def path(forwarder: Forwarder) -> SessionPath:
    return forwarder.attach(SessionPath.for_session(KEY, SESSION_ADDRESS, [LAN], 1400))


def tcp_checksum_ok(packet: bytes) -> bool:
    segment = packet[20:]
    pseudo = packet[12:20] + b"\x00\x06" + len(segment).to_bytes(2, "big")
    return checksum(pseudo + segment) == 0


# --- attaching -------------------------------------------------------------------------


def test_attach(forwarder: Forwarder, path: SessionPath) -> None:
    assert path.key == KEY
    assert path.address == CLIENT
    assert path.networks == (LAN,)
    assert path.mru == 1400
    assert path.mss == 1360
    assert path.attached
    assert list(forwarder) == [path]
    assert len(forwarder) == 1
    assert forwarder.owner(ipaddress.IPv4Network(SESSION_ADDRESS)) is path
    assert forwarder.owner(LAN) is path


def test_mru_below_the_ipv4_minimum_is_raised(forwarder: Forwarder) -> None:
    path = forwarder.attach(SessionPath.for_session(KEY, SESSION_ADDRESS, [], 40))
    assert path.mru == 68
    assert path.mss == 28


def test_detach_removes_routes(forwarder: Forwarder, path: SessionPath) -> None:
    assert forwarder.detach(path) is True
    assert forwarder.detach(path) is False  # once only
    assert list(forwarder) == []
    assert forwarder.owner(LAN) is None
    assert forwarder.from_network(udp_datagram(SERVER, CLIENT, 1, 2, b"")) == (None, [])
    assert forwarder.from_network(udp_datagram(SERVER, LAN_HOST, 1, 2, b"")) == (None, [])
    assert forwarder.counters["no_route"] == 2


def test_detach_keeps_a_newer_sessions_routes(forwarder: Forwarder, path: SessionPath) -> None:
    newer = forwarder.attach(SessionPath.for_session((2, 7), SESSION_ADDRESS, [LAN], 1500))
    packet = udp_datagram(SERVER, CLIENT, 1, 2, b"x")
    assert forwarder.from_network(packet)[0] is newer
    assert forwarder.detach(path)
    assert forwarder.owner(ipaddress.IPv4Network(SESSION_ADDRESS)) is newer
    assert forwarder.owner(LAN) is newer
    assert forwarder.from_network(packet)[0] is newer
    assert forwarder.from_network(udp_datagram(SERVER, LAN_HOST, 1, 2, b""))[0] is newer


def test_detach_of_the_newer_gives_routes_back(forwarder: Forwarder, path: SessionPath) -> None:
    newer = forwarder.attach(SessionPath.for_session((2, 7), SESSION_ADDRESS, [], 1500))
    assert forwarder.owner(LAN) is path
    assert forwarder.detach(newer)
    assert forwarder.owner(ipaddress.IPv4Network(SESSION_ADDRESS)) is path
    assert forwarder.from_network(udp_datagram(SERVER, CLIENT, 1, 2, b""))[0] is path


@SETTINGS
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 4), st.integers(0, 2), st.integers(0, 2)),
        max_size=30,
    )
)
def test_routes_follow_the_newest_live_claimant(steps: list[tuple[bool, int, int, int]]) -> None:
    """Whatever the order of attaches and detaches, an address or route leads to the most
    recently attached session still holding it, and to nothing once none does."""
    forwarder = Forwarder(LOCAL, mss_clamp=False)
    addresses = [ipaddress.IPv4Address(f"10.0.0.{index}") for index in range(1, 4)]
    lans = [ipaddress.IPv4Network(f"172.16.{index}.0/24") for index in range(3)]
    live: list[SessionPath] = []
    for attaching, key, address_index, lan_index in steps:
        if attaching:
            path = forwarder.attach(
                SessionPath.for_session((0, key), addresses[address_index], [lans[lan_index]], 1500)
            )
            for other in [other for other in live if other.key == (0, key)]:
                forwarder.detach(other)  # the session of that key ended before
            live = [other for other in live if other.key != (0, key)] + [path]
        else:
            for other in [other for other in live if other.key == (0, key)]:
                forwarder.detach(other)
            live = [other for other in live if other.key != (0, key)]
    for address in addresses:
        holders = [path for path in live if path.address == int(address)]
        expected = holders[-1] if holders else None
        assert forwarder.owner(ipaddress.IPv4Network(address)) is expected
    for lan in lans:
        holders = [path for path in live if lan in path.networks]
        expected = holders[-1] if holders else None
        assert forwarder.owner(lan) is expected
        host = int(lan.network_address) + 9
        assert forwarder.from_network(udp_datagram(SERVER, host, 1, 2, b""))[0] is expected


# --- from the session ----------------------------------------------------------------------


def test_from_session_own_address(forwarder: Forwarder, path: SessionPath) -> None:
    packet = udp_datagram(CLIENT, SERVER, 1000, 53, b"query")
    assert forwarder.from_session(path, packet, 12.5) is packet
    assert path.traffic.packets_up == 1
    assert path.traffic.octets_up == len(packet)
    assert path.traffic.last_up == 12.5


def test_from_session_framed_route_source(forwarder: Forwarder, path: SessionPath) -> None:
    packet = icmp_echo(LAN_HOST, SERVER, 1, 1)
    assert forwarder.from_session(path, packet, 1.0) is packet
    assert path.spoofed == 0


@pytest.mark.parametrize(
    "sender",
    [
        "10.0.0.3",  # the neighbour's address
        "192.168.11.1",  # just outside the Framed-Route
        "0.0.0.0",
        "198.51.100.7",
    ],
)
def test_from_session_spoofed(forwarder: Forwarder, path: SessionPath, sender: str) -> None:
    packet = udp_datagram(int(ipaddress.IPv4Address(sender)), SERVER, 1, 2, b"")
    assert forwarder.from_session(path, packet, 5.0) is None
    assert path.spoofed == 1
    assert forwarder.counters["spoofed"] == 1
    assert path.traffic.packets_up == path.traffic.octets_up == 0
    assert path.traffic.last_up == 0.0  # junk does not keep a session from idling out


def test_from_session_without_routes_allows_only_its_address(forwarder: Forwarder) -> None:
    path = forwarder.attach(
        SessionPath.for_session((5, 5), ipaddress.IPv4Address("10.0.0.9"), [], 1500)
    )
    assert forwarder.from_session(path, udp_datagram(0x0A000009, SERVER, 1, 2, b""), 0.0)
    assert forwarder.from_session(path, udp_datagram(0x0A000008, SERVER, 1, 2, b""), 0.0) is None


def test_from_session_cuts_link_padding(forwarder: Forwarder, path: SessionPath) -> None:
    packet = udp_datagram(CLIENT, SERVER, 1, 2, b"ab")
    assert forwarder.from_session(path, packet + b"\x00\x00", 0.0) == packet
    assert path.traffic.octets_up == len(packet)


def test_from_session_clamps_mss(forwarder: Forwarder, path: SessionPath) -> None:
    syn = tcp_syn(CLIENT, SERVER, 40000, 443, 1460)
    out = forwarder.from_session(path, syn, 0.0)
    assert out is not None
    assert tcp_mss(out) == 1360
    assert tcp_checksum_ok(out)
    assert forwarder.counters["mss_clamped"] == 1
    small = tcp_syn(CLIENT, SERVER, 40001, 443, 1200)
    assert forwarder.from_session(path, small, 0.0) is small
    data = tcp_segment(CLIENT, SERVER, 40000, 443, payload=b"GET /")
    assert forwarder.from_session(path, data, 0.0) is data
    assert forwarder.counters["mss_clamped"] == 1


def test_clamp_off() -> None:
    forwarder = Forwarder(LOCAL, mss_clamp=False)
    path = forwarder.attach(SessionPath.for_session(KEY, SESSION_ADDRESS, [], 1400))
    syn = tcp_syn(CLIENT, SERVER, 40000, 443, 1460)
    assert forwarder.from_session(path, syn, 0.0) is syn
    syn_ack = tcp_syn(SERVER, CLIENT, 443, 40000, 1460, ack=1)
    assert forwarder.from_network(syn_ack) == (path, [syn_ack])
    assert forwarder.counters["mss_clamped"] == 0


# --- from the network ----------------------------------------------------------------


def test_from_network_to_the_address(forwarder: Forwarder, path: SessionPath) -> None:
    packet = icmp_echo(SERVER, CLIENT, 3, 4, b"hello", reply=True)
    assert forwarder.from_network(packet) == (path, [packet])
    assert forwarder.from_network(packet)[1][0] is packet
    assert path.traffic.packets_down == 2
    assert path.traffic.octets_down == 2 * len(packet)


def test_from_network_to_a_framed_route(forwarder: Forwarder, path: SessionPath) -> None:
    packet = udp_datagram(SERVER, LAN_HOST, 1, 2, b"")
    assert forwarder.from_network(packet) == (path, [packet])


def test_from_network_longest_route_wins(forwarder: Forwarder, path: SessionPath) -> None:
    inner = ipaddress.IPv4Network("192.168.10.16/28")
    other = forwarder.attach(
        SessionPath.for_session((9, 9), ipaddress.IPv4Address("10.0.0.3"), [inner], 1500)
    )
    assert forwarder.from_network(udp_datagram(SERVER, LAN_HOST, 1, 2, b""))[0] is other
    assert forwarder.from_network(udp_datagram(SERVER, LAN_HOST + 20, 1, 2, b""))[0] is path


def test_from_network_no_route(forwarder: Forwarder, path: SessionPath) -> None:
    packet = udp_datagram(SERVER, int(ipaddress.IPv4Address("10.0.0.99")), 1, 2, b"")
    assert forwarder.from_network(packet) == (None, [])
    assert forwarder.counters["no_route"] == 1


def test_from_network_clamps_syn_ack(forwarder: Forwarder, path: SessionPath) -> None:
    syn_ack = tcp_syn(SERVER, CLIENT, 443, 40000, 1460, ack=1)
    found, packets = forwarder.from_network(syn_ack)
    assert found is path
    assert tcp_mss(packets[0]) == 1360
    assert tcp_checksum_ok(packets[0])


def test_from_network_too_big_with_df(forwarder: Forwarder, path: SessionPath) -> None:
    big = tcp_segment(SERVER, CLIENT, 443, 40000, payload=bytes(1400))  # DF set
    assert len(big) == 1440
    found, packets = forwarder.from_network(big)
    assert found is None
    [icmp] = packets
    assert valid_header(icmp)
    assert checksum(icmp[:20]) == 0
    assert icmp[12:16] == LOCAL.packed
    assert icmp[16:20] == big[12:16]
    assert icmp[20:22] == b"\x03\x04"
    assert int.from_bytes(icmp[26:28], "big") == 1400
    assert icmp[28:] == big[:28]
    assert path.too_big == 1
    assert forwarder.counters["too_big"] == 1
    assert forwarder.counters["icmp_sent"] == 1
    assert path.traffic.packets_down == path.traffic.octets_down == 0


def test_from_network_exactly_the_mru(forwarder: Forwarder, path: SessionPath) -> None:
    packet = tcp_segment(SERVER, CLIENT, 443, 40000, payload=bytes(1360))
    assert len(packet) == 1400
    assert forwarder.from_network(packet) == (path, [packet])


def test_from_network_too_big_icmp_error_dropped(forwarder: Forwarder, path: SessionPath) -> None:
    error = datagram(SERVER, CLIENT, 1, b"\x03\x01" + bytes(1500), dont_fragment=True)
    assert forwarder.from_network(error) == (None, [])
    assert path.too_big == 1
    assert forwarder.counters["too_big"] == 1
    assert forwarder.counters["icmp_sent"] == 0


def test_from_network_too_big_without_df(forwarder: Forwarder, path: SessionPath) -> None:
    payload = bytes(range(256)) * 8
    big = udp_datagram(SERVER, CLIENT, 53, 1000, payload)
    found, packets = forwarder.from_network(big)
    assert found is path
    assert len(packets) == 2
    assert all(len(piece) <= 1400 for piece in packets)
    assert b"".join(piece[20:] for piece in packets) == big[20:]
    assert path.fragmented == 1
    assert forwarder.counters["fragmented"] == 1
    assert path.traffic.packets_down == 2
    assert path.traffic.octets_down == sum(len(piece) for piece in packets) == len(big) + 20


def test_from_network_too_big_syn_without_df_is_clamped_then_fragmented(
    forwarder: Forwarder, path: SessionPath
) -> None:
    syn = tcp_segment(
        SERVER,
        CLIENT,
        443,
        40000,
        flags=0x12,
        options=b"\x02\x04\x05\xb4",
        payload=bytes(1500),
        dont_fragment=False,
    )
    found, packets = forwarder.from_network(syn)
    assert found is path
    assert tcp_mss(packets[0]) == 1360


def test_ping_round_trip(forwarder: Forwarder, path: SessionPath) -> None:
    request = icmp_echo(CLIENT, SERVER, 77, 1, b"0123456789")
    up = forwarder.from_session(path, request, 3.0)
    assert up is not None
    assert parse_icmp_echo(up) == (8, CLIENT, SERVER, 77, 1)
    reply = icmp_echo(SERVER, CLIENT, 77, 1, b"0123456789", reply=True)
    found, down = forwarder.from_network(reply)
    assert found is path
    assert parse_icmp_echo(down[0]) == (0, SERVER, CLIENT, 77, 1)


# --- malformed input ------------------------------------------------------------------

GOOD = udp_datagram(CLIENT, SERVER, 1, 2, b"payload")
BACK = udp_datagram(SERVER, CLIENT, 2, 1, b"payload")

Damage = Callable[[bytes], bytes]

MALFORMED = [
    pytest.param(lambda good: b"", id="empty"),
    pytest.param(lambda good: good[:19], id="short"),
    pytest.param(lambda good: b"\x60" + good[1:], id="version-6"),
    pytest.param(lambda good: b"\x44" + good[1:], id="ihl-4"),
    pytest.param(lambda good: b"\x4f" + good[1:], id="ihl-past-end"),
    pytest.param(lambda good: good[:2] + b"\x05\xdc" + good[4:], id="total-length-past-end"),
    pytest.param(lambda good: good[:2] + b"\x00\x10" + good[4:], id="total-length-in-header"),
]


@pytest.mark.parametrize("damage", MALFORMED)
def test_malformed_from_session(forwarder: Forwarder, path: SessionPath, damage: Damage) -> None:
    assert forwarder.from_session(path, damage(GOOD), 1.0) is None
    assert forwarder.counters["malformed"] == 1
    assert path.traffic.packets_up == 0
    assert path.traffic.last_up == 0.0


@pytest.mark.parametrize("damage", MALFORMED)
def test_malformed_from_network(forwarder: Forwarder, path: SessionPath, damage: Damage) -> None:
    assert forwarder.from_network(damage(BACK)) == (None, [])
    assert forwarder.counters["malformed"] == 1
    assert path.traffic.packets_down == 0


def small_mru_forwarder() -> tuple[Forwarder, SessionPath]:
    forwarder = Forwarder(LOCAL, mss_clamp=True)
    path = forwarder.attach(
        SessionPath.for_session(KEY, SESSION_ADDRESS, [ipaddress.IPv4Network("0.0.0.0/0")], 68)
    )
    return forwarder, path


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    forwarder, path = small_mru_forwarder()
    forwarder.from_session(path, data, 0.0)
    forwarder.from_network(data)
    assert (
        sum(forwarder.counters.values()) >= 1
        or path.traffic.packets_up + path.traffic.packets_down >= 1
    )


@SETTINGS
@given(st.binary(max_size=200), st.integers(0, 0xFFFF), st.integers(0x40, 0x4F))
def test_random_payloads_behind_a_valid_header_never_raise(
    payload: bytes, flags: int, version_ihl: int
) -> None:
    """A header that passes the checks, followed by anything: options, TCP, ICMP."""
    forwarder, path = small_mru_forwarder()
    for protocol in (1, 6, 17):
        packet = bytearray(datagram(SERVER, CLIENT, protocol, payload))
        packet[0] = version_ihl
        packet[6:8] = flags.to_bytes(2, "big")
        forwarder.from_network(bytes(packet))
        packet[12:16], packet[16:20] = packet[16:20], packet[12:16]
        forwarder.from_session(path, bytes(packet), 0.0)
