"""lns.testing.relay.LinkRelay: the path between a LAC and a node, cut on demand."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from lns.testing.relay import LinkRelay


@pytest.fixture
def node() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.2 standing for the node."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture
def lac() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def nothing_arrives(sock: socket.socket) -> bool:
    sock.settimeout(0.3)
    try:
        sock.recvfrom(2048)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_forwards_both_ways_until_cut_then_nothing_until_mended(node, lac):
    with LinkRelay(node.getsockname()) as relay:
        lac.sendto(b"sccrq", relay.address)
        data, seen_from = node.recvfrom(2048)
        assert (data, seen_from) == (b"sccrq", relay.lac_address)
        node.sendto(b"sccrp", seen_from)
        assert lac.recvfrom(2048) == (b"sccrp", relay.address)

        relay.cut()
        lac.sendto(b"hello", relay.address)
        node.sendto(b"hello from the node", seen_from)
        assert nothing_arrives(node)
        assert nothing_arrives(lac)
        assert relay.dropped == 2

        relay.mend()
        lac.sendto(b"hello again", relay.address)
        assert node.recvfrom(2048)[0] == b"hello again"
        assert (relay.forwarded_to_server, relay.forwarded_to_client) == (2, 1)


def test_only_loopback_addresses():
    with pytest.raises(ValueError, match="not a loopback address"):
        LinkRelay(("192.0.2.1", 1701))
