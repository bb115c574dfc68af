"""Hostile input cannot hang, exhaust or weaponise the node (issue 12), on a fake clock.

Half-open tunnels from forged SCCRQs and an authenticated LAC's ICRQ flood are
held to their caps while established tunnels keep answering HELLO at once;
identifier allocation refuses instead of looping; a source that never
acknowledges our SCCRP gets no more bytes than it sent; what a peer can make
us parse before it proves the secret is bounded; a restarted node tells a
LAC at once that its tunnel is gone (RFC 2661 section 6.4).
"""

from __future__ import annotations

import random

import pytest

import lns.l2tp.endpoint as endpoint_module
from lns.l2tp import ids
from lns.l2tp.avp import AttributeType, Avp, MessageType, ResultCode, make
from lns.l2tp.effects import CallRefused, PacketDropped, TunnelClosed, TunnelRefused
from lns.l2tp.endpoint import Datagram, LnsEndpoint
from lns.l2tp.header import ControlPacket, decode_packet, encode_control, encode_data
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.result import CdnResult, GeneralError, StopCcnResult
from lns.l2tp.tunnel import (
    ControlConnection,
    TunnelSettings,
    TunnelState,
)
from lns.testing.l2tp_network import (
    LAC_ADDRESS,
    LAC_LIKE,
    SECRET,
    Network,
    assigned_tunnel,
    establish_raw,
    icrq,
    make_endpoint,
    message_type,
    sccrq,
)
from lns.testing.lacsim.lac import Lac, Phase, SimulatedTunnel

ICCID = "8944500102198304826"
RATE = 2000.0  # datagrams a second from the attacker, as in issue 12's measurements


def establish(net: Network) -> SimulatedTunnel:
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.phase is Phase.ESTABLISHED
    return tunnel


def hello_is_answered_at_once(net: Network, tunnel: SimulatedTunnel) -> None:
    before = len(net.to_lac)
    net.lac.send_hello(tunnel)
    net.flush()  # the same instant: no timer fires
    assert [message_type(d) for d in net.to_lac[before:]] == ["ZLB"]
    assert not net.lac.hello_outstanding(tunnel)


def others_since(net: Network, start: int) -> list[Datagram]:
    return net.to_others[start:]


# --- 70,000 half-open tunnels -------------------------------------------------------------


@pytest.mark.parametrize("sources", [1, 200], ids=["one-source", "200-sources"])
def test_70000_half_open_tunnels_leave_at_most_the_cap(sources: int) -> None:
    # Issue 12, item 1: SCCRQs from inside the LAC's prefix whose SCCRP is acknowledged
    # but never followed by an SCCCN. No secret needed, source addresses forged.
    endpoint = make_endpoint()
    lac_cap = 64  # [[l2tp.lac]] max_tunnels_setting_up, default
    net = Network(endpoint, Lac(secret=SECRET))
    tunnel = establish(net)
    peak = 0
    for i in range(70_000):
        net.advance(1 / RATE)
        source = (f"192.0.2.{11 + i % sources}", 1701)
        start = len(net.to_others)
        net.effects += endpoint.datagram_received(
            sccrq(i % 65535 + 1, extra=LAC_LIKE), source, net.now
        )
        net.flush()
        for datagram in others_since(net, start):
            if message_type(datagram.data) == MessageType.SCCRP:  # ... acknowledged with a ZLB
                zlb = encode_control(assigned_tunnel(datagram.data), 0, 1, 1, b"")
                endpoint.datagram_received(zlb, datagram.peer, net.now)
        peak = max(peak, len(endpoint.tunnels))
        assert endpoint.tunnels_setting_up <= lac_cap
        if i % 5000 == 0:
            hello_is_answered_at_once(net, tunnel)
    assert peak == 1 + lac_cap  # the cap is reached, and held
    assert endpoint.counters["tunnels_capped"] > 0
    # Every half-open tunnel goes when its timer says so; the LAC's tunnel stays.
    net.advance(TunnelSettings().setup_timeout + 1)
    assert list(endpoint.tunnels) == [tunnel.peer_tunnel_id]
    assert endpoint.tunnels_setting_up == 0
    hello_is_answered_at_once(net, tunnel)
    assert tunnel.phase is Phase.ESTABLISHED


def test_a_half_open_tunnel_is_forgotten_after_the_retransmission_budget() -> None:
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    attacker = ("192.0.2.66", 1701)
    endpoint.datagram_received(sccrq(5, extra=LAC_LIKE), attacker, 0.0)
    net.flush()
    [sccrp] = net.to_others
    endpoint.datagram_received(
        encode_control(assigned_tunnel(sccrp.data), 0, 1, 1, b""), attacker, 0.0
    )
    [conn] = endpoint.tunnels.values()
    assert conn.state is TunnelState.WAIT_CTL_CONN
    assert conn.channel.idle  # acknowledged: nothing of ours would ever time out
    budget = TunnelSettings().setup_timeout
    assert budget == 31.0  # 1 + 2 + 4 + 8 + 8 + 8
    net.advance(budget - 0.5)
    assert endpoint.tunnels
    net.advance(1.0)
    assert endpoint.tunnels == {}
    [closed] = net.of_type(TunnelClosed)
    assert not closed.was_established
    assert "not established within 31 s" in closed.reason
    assert endpoint.get_timer() is None
    assert len(net.to_others) == 1  # nothing sent when it went


def test_caps_per_lac_and_node_refuse_with_stopccn_result_2_error_4() -> None:
    endpoint = make_endpoint(max_tunnels=3, max_tunnels_setting_up=2)
    net = Network(endpoint, Lac(secret=SECRET))
    establish(net)  # one established, counts towards max_tunnels only
    for n, peer_tunnel in enumerate((11, 12, 13)):
        net.effects += endpoint.datagram_received(
            sccrq(peer_tunnel, extra=LAC_LIKE), ("192.0.2.50", 1701 + n), 0.1
        )
    net.flush()
    answers = {decode_packet(d.data).tunnel_id: message_type(d.data) for d in net.to_others}
    assert answers == {11: MessageType.SCCRP, 12: MessageType.SCCRP, 13: MessageType.StopCCN}
    [stop] = [decode_packet(d.data) for d in net.to_others if message_type(d.data) == 4]
    assert isinstance(stop, ControlPacket)
    assert stop.nr == 1  # it acknowledges the SCCRQ, so the LAC stops resending
    result = decode_message(stop.payload).get(AttributeType.RESULT_CODE)
    assert result == ResultCode(
        StopCcnResult.GENERAL_ERROR,
        GeneralError.INSUFFICIENT_RESOURCES,
        "too many tunnels; try again later",
    )
    [refused] = net.of_type(TunnelRefused)
    assert "max_tunnels" in refused.reason  # 3 tunnels: the node's cap
    assert len(endpoint.tunnels) == 3


def test_the_per_lac_setup_cap_is_named_in_the_log_line() -> None:
    endpoint = LnsEndpoint(
        TunnelSettings(),
        [
            endpoint_module.LacMatch(
                make_endpoint().lacs[0].network,
                endpoint_module.LacPeer("op-a", SECRET, True, None, 256, 1),
            )
        ],
        random.Random(1),
    )
    endpoint.datagram_received(sccrq(1, extra=LAC_LIKE), ("192.0.2.50", 1701), 0.0)
    effects = endpoint.datagram_received(sccrq(2, extra=LAC_LIKE), ("192.0.2.51", 1701), 0.0)
    [refused] = [e for e in effects if isinstance(e, TunnelRefused)]
    assert refused.reason == "LAC op-a has 1 tunnels being set up (max_tunnels_setting_up)"


# --- 70,000 ICRQs without ICCN in one tunnel -------------------------------------------------


def test_70000_icrqs_without_iccn_leave_at_most_the_cap() -> None:
    # Issue 12, item 2: one authenticated LAC exhausts session IDs; today's allocator
    # then loops for ever and every other LAC goes down with it.
    cap = 1024  # [l2tp] max_connecting_calls, default
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    other = establish(net)
    flood = establish_raw(net, ("192.0.2.11", 1701))
    conn = endpoint.tunnels[flood.tunnel_id]
    refused = 0
    for i in range(70_000):
        net.advance(1 / RATE)
        start = len(net.to_others)
        effects = flood.send(icrq(i % 65535 + 1), net.now)
        refused += sum(isinstance(e, CallRefused) for e in effects)
        net.flush()
        flood.take(others_since(net, start))
        assert conn.connecting_calls <= cap
        assert len(conn.calls) <= cap
        assert conn.channel.unacknowledged <= TunnelSettings().max_queued
        if i % 5000 == 0:
            hello_is_answered_at_once(net, other)
            start = len(net.to_others)
            flood.send(ControlMessage(MessageType.HELLO), net.now)
            net.flush()
            assert others_since(net, start), "the flooding tunnel's own HELLO is acknowledged"
            flood.take(others_since(net, start))
    assert refused > 60_000
    assert endpoint.counters["malformed"] == 0
    # The refusals are CDNs sent at once: result 4, temporary lack of facilities.
    cdn = next(
        decode_message(decode_packet(d).payload, SECRET)  # type: ignore[union-attr]
        for d in reversed(flood.received)
        if message_type(d) == MessageType.CDN
    )
    result = cdn.get(AttributeType.RESULT_CODE)
    assert isinstance(result, ResultCode)
    assert (result.result, result.error) == (
        CdnResult.TEMPORARY_LACK_OF_FACILITIES,
        GeneralError.INSUFFICIENT_RESOURCES,
    )
    # Every waiting call goes when its connect timer says so.
    net.advance(TunnelSettings().connect_timeout + 1)
    flood.take(net.to_others)
    assert conn.calls == {}
    assert conn.connecting_calls == 0
    hello_is_answered_at_once(net, other)


def test_an_icrq_beyond_the_connecting_cap_gets_a_cdn_at_once() -> None:
    endpoint = make_endpoint(max_connecting_calls=2)
    net = Network(endpoint, Lac(secret=SECRET))
    peer = establish_raw(net, ("192.0.2.11", 1701))
    for session in (1, 2, 3):
        net.effects += peer.send(icrq(session), net.now)
    net.flush()
    peer.take(net.to_others)
    kinds = [(message_type(d), decode_packet(d).session_id) for d in peer.received[-3:]]
    assert kinds == [(MessageType.ICRP, 1), (MessageType.ICRP, 2), (MessageType.CDN, 3)]
    [refused] = net.of_type(CallRefused)
    assert refused.result.message == "2 calls of this tunnel already wait for their ICCN"


def test_the_allocator_refuses_when_every_identifier_is_taken() -> None:
    rng = random.Random(1)
    full = set(range(1, 65536))
    assert ids.allocate(rng, full) is None  # refused, in one bounded scan
    full.discard(40_000)
    assert ids.allocate(rng, full) == 40_000
    assert ids.allocate(rng, set()) in range(1, 65536)


def test_an_icrq_is_refused_when_no_session_id_is_left() -> None:
    endpoint = make_endpoint(max_calls=70_000)
    net = Network(endpoint, Lac(secret=SECRET))
    peer = establish_raw(net, ("192.0.2.11", 1701))
    conn = endpoint.tunnels[peer.tunnel_id]
    conn.calls.update(dict.fromkeys(range(1, 65536)))  # type: ignore[arg-type]
    effects = peer.send(icrq(9), net.now)
    [refused] = [e for e in effects if isinstance(e, CallRefused)]
    assert refused.result.result == CdnResult.TEMPORARY_LACK_OF_FACILITIES
    assert len(conn.calls) == 65535


def test_a_peer_that_never_acknowledges_is_not_queued_for_without_bound() -> None:
    endpoint = make_endpoint(max_queued=8)
    net = Network(endpoint, Lac(secret=SECRET))
    peer = establish_raw(net, ("192.0.2.11", 1701))
    conn = endpoint.tunnels[peer.tunnel_id]
    for session in range(1, 40):
        peer.send(icrq(session), net.now)  # never acknowledging our ICRPs
        net.flush()
    assert conn.channel.unacknowledged == 8
    assert endpoint.counters["busy"] > 0
    assert len(conn.calls) == 8  # the rest were not taken: the LAC will retransmit them


# --- no reflection, no amplification ----------------------------------------------------


def bytes_to(net: Network, address: tuple[str, int]) -> int:
    return sum(len(d.data) for d in net.to_others if d.peer == address)


@pytest.mark.parametrize("repeats", [1, 6])
def test_an_unacknowledged_sccrp_is_never_more_than_the_sccrq(repeats: int) -> None:
    # Issue 12, item 3: the SCCRP and five retransmissions (10.3x the bytes) went to
    # whatever source a forged SCCRQ named. Now: what the source sent, at most.
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    victim = ("192.0.2.99", 1701)
    data = sccrq(4242, extra=LAC_LIKE)
    for n in range(repeats):  # the attacker may resend the very same SCCRQ
        endpoint.datagram_received(data, victim, net.now)
        net.advance(1.0 + n)
    net.advance(60.0)
    sent = bytes_to(net, victim)
    assert 0 < sent <= repeats * len(data)
    sccrps = [d for d in net.to_others if message_type(d.data) == MessageType.SCCRP]
    assert len(sccrps) == repeats  # one answer per SCCRQ, none on our own timer
    assert endpoint.tunnels == {}


def test_an_sccrq_smaller_than_our_sccrp_is_answered_once_it_is_resent() -> None:
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    victim = ("192.0.2.99", 1701)
    small = sccrq(4242)  # the bare minimum section 6.1 asks for: smaller than our SCCRP
    endpoint.datagram_received(small, victim, 0.0)
    net.flush()
    assert net.to_others == []
    [conn] = endpoint.tunnels.values()
    assert conn.withheld == 1
    endpoint.datagram_received(small, victim, 1.0)  # the LAC's retransmission
    net.now = 1.0
    net.flush()
    assert [message_type(d.data) for d in net.to_others] == [MessageType.SCCRP]
    assert bytes_to(net, victim) <= 2 * len(small)
    assert endpoint.counters["withheld_unproven"] == 1


def test_refusals_without_state_share_one_budget_a_second() -> None:
    endpoint = make_endpoint(network="192.0.2.0/24")
    unlisted = ("198.51.100.7", 1701)
    data = sccrq(1)
    for n in range(1000):
        endpoint.datagram_received(data, (unlisted[0], 1024 + n), 0.5)
    out = endpoint.datagrams_to_send(0.5)
    assert len(out) == TunnelSettings().stateless_replies
    assert all(len(d.data) <= len(data) for d in out)  # a refusal is smaller than the SCCRQ
    assert endpoint.counters["tunnels_refused"] == 1000
    assert endpoint.tunnels == {}


# --- cheap rejection first ---------------------------------------------------------------


def test_an_oversized_sccrq_is_refused_before_its_avps_are_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 12, item 4: 65,428 bytes of 10,900 empty AVPs cost 24-48 ms each.
    def must_not_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(endpoint_module, "decode_message", must_not_parse)
    monkeypatch.setattr(endpoint_module, "peek", must_not_parse)
    endpoint = make_endpoint()
    empty_avps = b"\x00\x06\x00\x00\x00\x63" * 10_900
    data = sccrq(1)
    huge = encode_control(0, 0, 0, 0, decode_packet(data).payload + empty_avps)  # type: ignore[union-attr]
    assert len(huge) > 65_000
    effects = endpoint.datagram_received(huge, LAC_ADDRESS, 0.0)
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["oversized"]
    # Nor from an address no LAC entry allows (which is never decoded anyway).
    effects = endpoint.datagram_received(huge, ("198.51.100.7", 1701), 0.0)
    assert [type(e) for e in effects] == [TunnelRefused]
    assert endpoint.datagrams_to_send(0.0) == []
    assert endpoint.tunnels == {}


def test_an_sccrq_with_too_many_avps_is_dropped() -> None:
    endpoint = make_endpoint()
    padding = tuple(Avp(300 + n, b"", mandatory=False) for n in range(40))
    effects = endpoint.datagram_received(sccrq(1, extra=padding), LAC_ADDRESS, 0.0)
    [dropped] = [e for e in effects if isinstance(e, PacketDropped)]
    assert (dropped.counter, "more than 32 AVPs" in dropped.reason) == ("malformed", True)
    assert endpoint.tunnels == {}


def test_a_source_gets_its_share_of_work_a_second() -> None:
    endpoint = make_endpoint(unauthenticated_per_source=10)
    for n in range(15):
        endpoint.datagram_received(sccrq(n + 1, extra=LAC_LIKE), LAC_ADDRESS, 0.0)
    assert endpoint.counters["rate_limited"] == 5
    assert endpoint.counters["tunnels_created"] == 10
    endpoint.datagram_received(sccrq(99, extra=LAC_LIKE), LAC_ADDRESS, 1.0)  # a new second
    assert endpoint.counters["tunnels_created"] == 11


# --- after a restart --------------------------------------------------------------------------


def test_a_restarted_node_answers_an_unknown_tunnels_hello_with_stopccn() -> None:
    endpoint = make_endpoint()  # knows no tunnel: the node was restarted
    hello = encode_message(ControlMessage(MessageType.HELLO))
    endpoint.datagram_received(encode_control(4242, 0, 17, 9, hello), LAC_ADDRESS, 0.0)
    [stop] = endpoint.datagrams_to_send(0.0)
    assert stop.peer == LAC_ADDRESS
    packet = decode_packet(stop.data)
    assert isinstance(packet, ControlPacket)
    # Section 6.4: Tunnel ID 0 in the header, the tunnel named by its Assigned Tunnel ID.
    assert (packet.tunnel_id, packet.ns, packet.nr) == (0, 0, 18)
    message = decode_message(packet.payload)
    assert message.message_type == MessageType.StopCCN
    assert message.get(AttributeType.ASSIGNED_TUNNEL_ID) == 4242
    result = message.get(AttributeType.RESULT_CODE)
    assert isinstance(result, ResultCode)
    assert (result.result, result.error) == (
        StopCcnResult.GENERAL_ERROR,
        GeneralError.NO_CONTROL_CONNECTION,
    )
    assert "no tunnel 4242 here" in result.message
    assert endpoint.tunnels == {}
    assert endpoint.counters["unknown_tunnel_stopccn"] == 1


def test_unknown_tunnels_are_answered_once_a_second_and_never_to_unlisted_sources() -> None:
    endpoint = make_endpoint()
    hello = encode_message(ControlMessage(MessageType.HELLO))
    for ns in range(5):  # the LAC's retransmissions within one second: one answer
        endpoint.datagram_received(encode_control(4242, 0, ns, 0, hello), LAC_ADDRESS, 0.2)
    endpoint.datagram_received(encode_data(4242, 7, b"\xff\x03\xc0\x21"), LAC_ADDRESS, 0.3)
    endpoint.datagram_received(encode_control(4242, 0, 5, 0, b""), LAC_ADDRESS, 0.4)  # ZLB
    endpoint.datagram_received(encode_control(4242, 0, 0, 0, hello), ("198.51.100.7", 1701), 0.4)
    assert len(endpoint.datagrams_to_send(0.4)) == 1
    # The next second, data for the same tunnel is answered too (the LAC's sessions
    # keep sending while it waits for its HELLO to time out).
    endpoint.datagram_received(encode_data(4242, 7, b"\xff\x03\xc0\x21"), LAC_ADDRESS, 1.3)
    [stop] = endpoint.datagrams_to_send(1.3)
    assert decode_packet(stop.data).nr == 0  # type: ignore[union-attr]
    assert endpoint.counters["unknown_tunnel"] == 9


def test_the_lac_simulator_restarting_against_a_restarted_node() -> None:
    # The LNS loses every tunnel (a restart) while the LAC keeps its own.
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    tunnel = establish(net)
    net.endpoint = make_endpoint()
    net.lac.send_hello(tunnel)
    net.flush()
    [stop] = net.to_lac[-1:]
    assert message_type(stop) == MessageType.StopCCN
    assert decode_packet(stop).tunnel_id == 0  # type: ignore[union-attr]


# --- the tunnel core in isolation ----------------------------------------------------------


def test_a_tunnel_never_established_is_given_up_even_without_our_timer_running() -> None:
    conn = ControlConnection(
        9,
        ("192.0.2.5", 1701),
        make_endpoint().lacs[0].peer,
        TunnelSettings(),
        random.Random(1),
        0.0,
    )
    assert conn.get_timer() == 31.0
    effects = conn.handle_timer(31.0)
    assert [type(e) for e in effects] == [TunnelClosed]
    assert conn.finished(31.0)


def test_a_refusal_to_an_unlisted_address_is_never_longer_than_the_sccrq() -> None:
    endpoint = make_endpoint(network="192.0.2.0/24")
    bare = ControlMessage(MessageType.SCCRQ, (make(AttributeType.ASSIGNED_TUNNEL_ID, 5),))
    tiny = encode_control(0, 0, 0, 0, encode_message(bare))  # 28 bytes; our StopCCN is 52
    effects = endpoint.datagram_received(tiny, ("198.51.100.7", 1701), 0.0)
    assert [type(e) for e in effects] == [TunnelRefused]
    assert endpoint.datagrams_to_send(0.0) == []
    assert endpoint.counters["stateless_withheld"] == 1


def test_shutdown_sends_no_stopccn_to_tunnels_never_established() -> None:
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    tunnel = establish(net)
    endpoint.datagram_received(sccrq(5, extra=LAC_LIKE), ("192.0.2.66", 1701), net.now)
    net.flush()
    assert endpoint.tunnels_setting_up == 1
    sent = len(net.to_others)
    endpoint.shutdown(net.now)
    net.flush()
    assert len(net.to_others) == sent  # nothing to the half-open tunnel's source
    assert list(endpoint.tunnels) == [tunnel.peer_tunnel_id]
    assert endpoint.tunnels_setting_up == 0
    assert tunnel.phase is Phase.CLOSED  # the LAC got its StopCCN


def test_the_caps_come_from_the_configuration() -> None:
    from lns.adapters.services import lac_matches, tunnel_settings
    from lns.config import parse_config

    config = parse_config(
        {
            "l2tp": {
                "max_tunnels": 10,
                "max_tunnels_setting_up": 5,
                "max_connecting_calls": 7,
                "max_setups_in_progress": 9,
                "lac": [
                    {
                        "name": "op-a",
                        "peer": "192.0.2.0/24",
                        "secret": "s",
                        "max_tunnels": 4,
                        "max_tunnels_setting_up": 2,
                    }
                ],
            }
        }
    )
    settings = tunnel_settings(config)
    assert (settings.max_tunnels, settings.max_tunnels_setting_up) == (10, 5)
    assert settings.max_connecting_calls == 7
    assert settings.max_setups_in_progress == 9
    [match] = lac_matches(config)
    assert (match.peer.max_tunnels, match.peer.max_tunnels_setting_up) == (4, 2)
