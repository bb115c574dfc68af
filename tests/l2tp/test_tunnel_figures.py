"""What a tunnel tells an operator (the management API, /metrics): its age, when it was
established, its last HELLO round trip (RFC 2661 section 6.5), and the node's
retransmission count, on the in-memory network's fake clock."""

from __future__ import annotations

import pytest

from lns.l2tp.avp import MessageType
from lns.l2tp.header import ControlPacket, decode_packet
from lns.l2tp.message import decode_message
from lns.testing.l2tp_network import SECRET, Network, make_endpoint
from lns.testing.lacsim.lac import Lac, Phase


def is_hello(data: bytes) -> bool:
    packet = decode_packet(data)
    if not isinstance(packet, ControlPacket) or packet.is_zlb:
        return False
    return decode_message(packet.payload, SECRET).message_type == MessageType.HELLO


def test_creation_establishment_and_hello_round_trip():
    net = Network(make_endpoint(hello_interval=10.0), Lac(secret=SECRET), now=100.0)
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.phase is Phase.ESTABLISHED
    conn = net.endpoint.tunnels[tunnel.peer_tunnel_id]
    assert conn.created_at == 100.0
    assert conn.established_at == 100.0  # the in-memory network has no delay
    assert conn.hello_rtt is None  # no HELLO of ours yet

    # The first HELLO is lost once: acknowledged only after our retransmission (1 s).
    lost = []

    def drop(data: bytes) -> bool:
        if is_hello(data) and not lost:
            lost.append(data)
            return True
        return False

    net.drop_to_lac = drop
    net.advance(10.5)  # the HELLO at 110.1, lost
    assert lost
    assert conn.hello_rtt is None
    net.advance(1.0)  # retransmitted at 111.1 and acknowledged
    assert conn.hello_rtt is not None
    assert conn.hello_rtt == pytest.approx(1.0, abs=0.1)
    assert net.endpoint.counters["retransmissions"] == 1

    net.advance(11.0)  # the next HELLO goes through at once
    assert conn.hello_rtt < 0.1
    histogram = net.endpoint.hello_rtts
    assert histogram.count == 2
    assert histogram.sum == pytest.approx(1.0 + conn.hello_rtt, abs=0.1)
