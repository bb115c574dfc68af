"""The L2TP socket hands each read's datagrams over as one batch (lns/adapters/udp.py), so
the L2TP service can answer their control messages before the work they start."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet.testing import MemoryReactor

from lns.adapters.udp import PktinfoUdpPort, Received


class Batches:
    def __init__(self) -> None:
        self.batches: list[list[Received]] = []

    def datagrams_received(self, batch: list[Received]) -> None:
        self.batches.append(list(batch))


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_a_read_hands_over_up_to_a_batch_in_arrival_order(sender: socket.socket) -> None:
    sink = Batches()
    reactor = MemoryReactor()  # type: ignore[no-untyped-call]
    port = PktinfoUdpPort("0.0.0.0", 0, sink, reactor, batch=64)
    port.start()
    try:
        assert port in reactor.readers
        for n in range(70):
            sender.sendto(n.to_bytes(2, "big"), ("127.0.0.1", port.port))
        port.doRead()
        port.doRead()
        port.doRead()  # nothing left: no empty batch
    finally:
        port.stop()
    assert [len(batch) for batch in sink.batches] == [64, 6]
    received = [item for batch in sink.batches for item in batch]
    assert [int.from_bytes(data, "big") for data, _peer, _local in received] == list(range(70))
    assert {peer for _data, peer, _local in received} == {sender.getsockname()}
    # The address each datagram was sent to, for the reply's source (IP_PKTINFO).
    assert {local for _data, _peer, local in received} == {"127.0.0.1"}
