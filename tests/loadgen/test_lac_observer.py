"""What the LAC simulator tells its driver (LacObserver), and runs that keep no history."""

from __future__ import annotations

from lns.l2tp.avp import ResultCode
from lns.ppp.frame import Protocol, encode_frame
from lns.testing.l2tp_network import LAC_ADDRESS, SECRET, Network, make_endpoint
from lns.testing.lacsim.lac import Lac, LacObserver, Phase, SimulatedCall, SimulatedTunnel


class Recorder(LacObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def tunnel_established(self, tunnel: SimulatedTunnel, now: float) -> None:
        self.events.append(("tunnel up", tunnel.tunnel_id))

    def tunnel_closed(self, tunnel: SimulatedTunnel, now: float) -> None:
        self.events.append(("tunnel down", tunnel.result or tunnel.failure))

    def call_opened(self, call: SimulatedCall, now: float) -> None:
        self.events.append(("call opened", call.session_id))

    def call_closed(self, call: SimulatedCall, now: float) -> None:
        self.events.append(("call closed", call.result))

    def hello_acknowledged(self, tunnel: SimulatedTunnel, rtt: float, now: float) -> None:
        self.events.append(("hello", round(rtt, 6)))

    def ip_received(self, call: SimulatedCall, packet: bytes, now: float) -> None:
        self.events.append(("ip", packet))


def network(**lac_options) -> tuple[Network, Recorder]:
    recorder = Recorder()
    lac = Lac(secret=SECRET, observer=recorder, **lac_options)
    return Network(make_endpoint(), lac), recorder


def established(net: Network) -> SimulatedTunnel:
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.phase is Phase.ESTABLISHED
    return tunnel


def test_tunnel_established_is_told_once():
    net, recorder = network()
    tunnel = established(net)
    assert recorder.events == [("tunnel up", tunnel.tunnel_id)]


def test_hello_round_trip_runs_from_first_transmission_to_its_acknowledgement():
    net, recorder = network()
    tunnel = established(net)
    recorder.events.clear()
    net.lac.send_hello(tunnel)
    assert Lac.hello_outstanding(tunnel)
    net.now += 1.0  # queued a while: the clock starts when it leaves, not now
    (hello,) = net.lac.datagrams_to_send(net.now)
    net.now += 0.004  # on the wire to the LNS
    net.endpoint.datagram_received(hello, LAC_ADDRESS, net.now)
    assert recorder.events == []
    net.now += 0.003  # the LNS acknowledges (ZLB), on the wire back
    for datagram in net.endpoint.datagrams_to_send(net.now):
        net.lac.datagram_received(datagram.data, net.now)
    assert recorder.events == [("hello", 0.007)]
    assert not Lac.hello_outstanding(tunnel)


def test_only_one_hello_per_tunnel_is_timed_at_a_time():
    net, recorder = network()
    tunnel = established(net)
    recorder.events.clear()
    net.lac.send_hello(tunnel)
    net.lac.send_hello(tunnel)  # sent, but not timed
    net.advance(1.0)
    assert recorder.events == [("hello", 0.0)]
    assert tunnel.channel.idle


def test_a_piggybacked_acknowledgement_ends_the_hello_round_trip():
    net, recorder = network()
    tunnel = established(net)
    call = net.lac.place_call(tunnel, "8944990000000000001")
    net.advance(0.1)
    recorder.events.clear()
    net.lac.send_hello(tunnel)
    (hello,) = net.lac.datagrams_to_send(net.now)
    net.endpoint.datagram_received(hello, LAC_ADDRESS, net.now)
    # Before its ZLB hold-off ends the LNS sends a CDN, whose Nr acknowledges the HELLO.
    ours = next(iter(net.endpoint.tunnels[tunnel.peer_tunnel_id].calls.values()))
    net.endpoint.disconnect_call(
        tunnel.peer_tunnel_id, ours.session_id, ResultCode(3, 0, "kicked"), "admin", net.now
    )
    net.now += 0.002
    for datagram in net.endpoint.datagrams_to_send(net.now):
        net.lac.datagram_received(datagram.data, net.now)
    assert ("hello", 0.002) in recorder.events
    assert ("call closed", ResultCode(3, 0, "kicked")) in recorder.events
    assert call.phase is Phase.CLOSED


def test_a_stopccn_is_told_with_its_result():
    net, recorder = network()
    established(net)
    net.endpoint.shutdown(net.now)
    net.advance(0.1)
    assert recorder.events[-1] == ("tunnel down", ResultCode(6, 0, "LNS is shutting down"))


def test_an_lns_that_stops_acknowledging_is_told():
    net, recorder = network()
    tunnel = established(net)
    net.drop_to_lns = lambda data: True
    net.lac.send_hello(tunnel)
    net.advance(120.0)
    assert tunnel.phase is Phase.CLOSED
    assert recorder.events[-1] == ("tunnel down", "the LNS stopped acknowledging")


def test_ip_packets_for_a_call_are_told_and_nothing_is_recorded_without_record():
    net, recorder = network(record=False)
    tunnel = established(net)
    call = net.lac.place_call(tunnel, "8944990000000000001")
    net.advance(0.1)
    ours = next(iter(net.endpoint.tunnels[tunnel.peer_tunnel_id].calls.values()))
    packet = bytes(range(20))
    for frame in (
        encode_frame(Protocol.IP, packet),
        encode_frame(Protocol.LCP, b"\x09\x01\x00\x08abcd"),
    ):
        datagram = net.endpoint.send_ppp(tunnel.peer_tunnel_id, ours.session_id, frame)
        assert datagram is not None
        net.lac.datagram_received(datagram.data, net.now)
    net.lac.datagram_received(b"\xc8\x02", net.now)  # malformed: counted only
    assert ("ip", packet) in recorder.events
    assert [e for e in recorder.events if e[0] == "ip"] == [("ip", packet)]
    assert call.frames == []
    assert call.data_sequence == []
    assert tunnel.messages_received == []
    assert net.lac.malformed_received == 1


def test_history_is_recorded_by_default():
    net, _ = network()
    tunnel = established(net)
    assert tunnel.messages_received  # SCCRP at least
