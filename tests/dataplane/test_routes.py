"""Longest-prefix match (RFC 1812 section 5.2.4.3): host routes first, then prefixes from
the longest length present; the newest route for a network wins, and removing takes the
value expected, so an older owner never removes a newer one's route.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from lns.dataplane.routes import RouteTable

SETTINGS = settings(max_examples=300, deadline=None)


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def address(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def test_empty() -> None:
    table: RouteTable[str] = RouteTable()
    assert table.lookup(address("10.0.0.1")) is None
    assert len(table) == 0
    assert table.get(net("10.0.0.0/8")) is None
    assert not table.remove(net("10.0.0.0/8"), "a")


def test_host_route_beats_prefix() -> None:
    table: RouteTable[str] = RouteTable()
    table.add(net("10.0.0.0/24"), "lan")
    table.add(net("10.0.0.5/32"), "host")
    assert table.lookup(address("10.0.0.5")) == "host"
    assert table.lookup(address("10.0.0.6")) == "lan"
    assert table.lookup(address("10.0.1.5")) is None


def test_longest_prefix_wins() -> None:
    table: RouteTable[str] = RouteTable()
    table.add(net("0.0.0.0/0"), "default")
    table.add(net("10.0.0.0/8"), "eight")
    table.add(net("10.1.0.0/16"), "sixteen")
    table.add(net("10.1.2.0/24"), "twenty-four")
    table.add(net("10.1.2.128/25"), "twenty-five")
    assert table.lookup(address("10.1.2.200")) == "twenty-five"
    assert table.lookup(address("10.1.2.100")) == "twenty-four"
    assert table.lookup(address("10.1.3.1")) == "sixteen"
    assert table.lookup(address("10.2.0.1")) == "eight"
    assert table.lookup(address("192.0.2.1")) == "default"
    assert len(table) == 5


def test_insertion_order_does_not_matter() -> None:
    table: RouteTable[str] = RouteTable()
    table.add(net("10.1.2.0/24"), "twenty-four")
    table.add(net("10.0.0.0/8"), "eight")
    table.add(net("10.1.2.0/31"), "thirty-one")
    assert table.lookup(address("10.1.2.1")) == "thirty-one"
    assert table.lookup(address("10.1.2.2")) == "twenty-four"
    assert table.lookup(address("10.9.9.9")) == "eight"


def test_add_replaces_and_old_owner_cannot_remove() -> None:
    table: RouteTable[str] = RouteTable()
    for route in (net("10.0.0.7/32"), net("192.168.0.0/24")):
        table.add(route, "old")
        table.add(route, "new")
        assert table.get(route) == "new"
        assert not table.remove(route, "old")
        assert table.get(route) == "new"
        assert table.remove(route, "new")
        assert table.get(route) is None
        assert not table.remove(route, "new")
    assert len(table) == 0


def test_remove_keeps_other_routes() -> None:
    table: RouteTable[str] = RouteTable()
    table.add(net("10.0.0.0/24"), "a")
    table.add(net("10.0.1.0/24"), "b")
    table.add(net("10.0.0.0/16"), "c")
    assert table.remove(net("10.0.0.0/24"), "a")
    assert table.lookup(address("10.0.0.1")) == "c"
    assert table.lookup(address("10.0.1.1")) == "b"
    assert table.remove(net("10.0.1.0/24"), "b")
    assert table.lookup(address("10.0.1.1")) == "c"
    assert len(table) == 1


def test_get_is_exact() -> None:
    table: RouteTable[str] = RouteTable()
    table.add(net("10.0.0.0/8"), "eight")
    assert table.get(net("10.0.0.0/8")) == "eight"
    assert table.get(net("10.0.0.0/16")) is None
    assert table.get(net("10.0.0.0/32")) is None


# Networks drawn inside 10.0.0.0/24 with lengths 20 to 32, so they overlap often.
networks = st.builds(
    lambda host, length: ipaddress.IPv4Network((0x0A000000 | host, length), strict=False),
    st.integers(0, 255),
    st.integers(20, 32),
)
operations = st.lists(
    st.tuples(st.booleans(), networks, st.integers(0, 3)),
    max_size=40,
)


@SETTINGS
@given(operations, st.lists(st.integers(0x09FFF000, 0x0A001000), max_size=30))
def test_against_brute_force(
    steps: list[tuple[bool, ipaddress.IPv4Network, int]], probes: list[int]
) -> None:
    table: RouteTable[int] = RouteTable()
    reference: dict[ipaddress.IPv4Network, int] = {}
    for adding, network, value in steps:
        if adding:
            table.add(network, value)
            reference[network] = value
        else:
            expected = reference.get(network) == value
            assert table.remove(network, value) is expected
            if expected:
                del reference[network]
    assert len(table) == len(reference)
    for network, value in reference.items():
        assert table.get(network) == value
    for probe in [*probes, *(int(network.network_address) for network in reference)]:
        candidates = [network for network in reference if ipaddress.IPv4Address(probe) in network]
        best = max(candidates, key=lambda network: network.prefixlen, default=None)
        assert table.lookup(probe) == (None if best is None else reference[best])
