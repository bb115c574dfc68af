"""LnsEndpoint: who may open a tunnel, retransmitted SCCRQs, and malformed datagrams.

RFC 2661 section 5.8 (SCCRQ retransmitted by a LAC that missed our SCCRP),
section 4.1 (unknown AVPs with and without the M bit), section 3.1 (the
header, version 2), section 4.4.2 (StopCCN and CDN result codes).
"""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

import lns.testing.lacsim.lac as lac_module
from lns.l2tp.avp import AttributeType, Avp, CallErrors, MessageType, ResultCode, make
from lns.l2tp.effects import (
    CallCleared,
    CallEstablished,
    CallRefused,
    Effect,
    PacketDropped,
    TunnelClosed,
    TunnelEstablished,
    TunnelRefused,
)
from lns.l2tp.endpoint import LacMatch, LnsEndpoint
from lns.l2tp.header import ControlPacket, decode_packet, encode_control
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.result import CdnResult, GeneralError, StopCcnResult
from lns.l2tp.tunnel import LacPeer, TunnelSettings, TunnelState
from lns.testing.l2tp_network import LAC_ADDRESS, SECRET, Network, make_endpoint
from lns.testing.lacsim.lac import Lac, Phase, SimulatedTunnel

ICCID = "8944500102198304826"


def kind(data: bytes) -> MessageType | int | str:
    packet = decode_packet(data)
    assert isinstance(packet, ControlPacket)
    return decode_message(packet.payload, SECRET).message_type if packet.payload else "ZLB"


def control_header(data: bytes) -> ControlPacket:
    packet = decode_packet(data)
    assert isinstance(packet, ControlPacket)
    return packet


def result_of(data: bytes) -> ResultCode:
    packet = decode_packet(data)
    assert isinstance(packet, ControlPacket)
    result = decode_message(packet.payload, SECRET).get(AttributeType.RESULT_CODE)
    assert isinstance(result, ResultCode)
    return result


def establish(net: Network) -> SimulatedTunnel:
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.phase is Phase.ESTABLISHED
    return tunnel


# --- who may open a tunnel ---------------------------------------------------------


def test_unknown_peer_address_gets_a_stateless_stopccn() -> None:
    endpoint = make_endpoint(network="192.0.2.0/24")
    net = Network(endpoint, Lac(secret=SECRET), lac_address=("198.51.100.7", 1701))
    tunnel = net.lac.open_tunnel(net.now)
    net.flush()
    [stop] = net.to_lac
    assert kind(stop) == MessageType.StopCCN
    packet = decode_packet(stop)
    assert packet.tunnel_id == tunnel.tunnel_id
    assert packet.nr == 1  # acknowledges the SCCRQ, so the LAC stops resending it
    assert result_of(stop).result == StopCcnResult.NOT_AUTHORIZED
    assert endpoint.tunnels == {}
    [refused] = net.of_type(TunnelRefused)
    assert refused.peer == ("198.51.100.7", 1701)
    assert refused.peer_hostname == "lac1"
    assert "198.51.100.7" in refused.reason
    assert endpoint.counters["tunnels_refused"] == 1
    assert endpoint.counters["tunnels_created"] == 0
    assert tunnel.phase is Phase.CLOSED
    assert tunnel.result is not None
    assert tunnel.result.result == 4
    net.advance(60.0)  # the LAC does not retransmit; nothing is kept
    assert [kind(d) for d in net.to_lns] == [MessageType.SCCRQ, "ZLB"]
    assert endpoint.tunnels == {}
    assert endpoint.get_timer() is None


def test_host_name_mismatch_gets_a_stopccn() -> None:
    endpoint = make_endpoint(hostname="ggsn-7")
    net = Network(endpoint, Lac(hostname="lac1", secret=SECRET))
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(1.0)
    assert [kind(d) for d in net.to_lac] == [MessageType.StopCCN]
    assert result_of(net.to_lac[0]).result == StopCcnResult.NOT_AUTHORIZED
    [refused] = net.of_type(TunnelRefused)
    assert "'lac1'" in refused.reason
    assert endpoint.tunnels == {}
    assert tunnel.phase is Phase.CLOSED


def test_host_name_match_is_accepted() -> None:
    endpoint = make_endpoint(hostname="ggsn-7")
    net = Network(endpoint, Lac(hostname="ggsn-7", secret=SECRET))
    establish(net)
    [up] = net.of_type(TunnelEstablished)
    assert up.peer_hostname == "ggsn-7"


def test_protocol_version_other_than_1_0_gets_stopccn_result_5(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lac_module, "PROTOCOL_VERSION_1_0", 0x0200)  # the LAC speaks "2.0"
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    tunnel = net.lac.open_tunnel(net.now)
    net.flush()
    [stop] = net.to_lac
    assert kind(stop) == MessageType.StopCCN
    assert result_of(stop).result == StopCcnResult.BAD_PROTOCOL_VERSION
    assert control_header(stop).tunnel_id == tunnel.tunnel_id
    assert not net.of_type(TunnelEstablished)
    [refused] = net.of_type(TunnelRefused)
    assert "protocol version 0x0200" in refused.reason
    assert tunnel.phase is Phase.CLOSED
    assert endpoint.tunnels == {}  # refused without keeping state


def test_sccrq_without_assigned_tunnel_id_is_dropped() -> None:
    endpoint = make_endpoint()
    sccrq = ControlMessage(
        MessageType.SCCRQ,
        (make(AttributeType.PROTOCOL_VERSION, 0x0100), make(AttributeType.HOST_NAME, "lac1")),
    )
    effects = endpoint.datagram_received(
        encode_control(0, 0, 0, 0, encode_message(sccrq)), LAC_ADDRESS, 0.0
    )
    [dropped] = effects
    assert isinstance(dropped, PacketDropped)
    assert "Framing Capabilities" in dropped.reason  # the first required AVP missing
    assert endpoint.counters["missing_avp"] == 1
    assert endpoint.tunnels == {}
    assert endpoint.datagrams_to_send(0.0) == []  # no Assigned Tunnel ID to answer to


def test_retransmitted_sccrq_maps_to_the_same_tunnel() -> None:
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    dropped: list[bytes] = []

    def drop_first_sccrp(data: bytes) -> bool:
        if not dropped and kind(data) == MessageType.SCCRP:
            dropped.append(data)
            return True
        return False

    net.drop_to_lac = drop_first_sccrp
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(5.0)
    assert len(dropped) == 1
    assert [kind(d) for d in net.to_lns].count(MessageType.SCCRQ) == 2  # the LAC resent it
    assert tunnel.phase is Phase.ESTABLISHED
    assert len(endpoint.tunnels) == 1
    assert endpoint.counters["tunnels_created"] == 1
    assert endpoint.counters["sccrq_retransmitted"] == 1
    assert len(net.of_type(TunnelEstablished)) == 1
    assert endpoint.tunnels[tunnel.peer_tunnel_id].state is TunnelState.ESTABLISHED


def test_sccrp_is_resent_only_when_the_sccrq_is() -> None:
    # Until the LAC acknowledges our SCCRP it may be a forged source's: we answer each
    # SCCRQ it sends (with the same SCCRP, same tunnel) and never resend on our own timer.
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    net.drop_to_lac = lambda data: True
    tunnel = net.lac.open_tunnel(net.now)
    net.flush()
    sccrq = net.to_lns[0]
    [first] = net.to_lac
    net.effects += endpoint.datagram_received(sccrq, LAC_ADDRESS, 0.5)
    assert len(endpoint.tunnels) == 1
    [again] = endpoint.datagrams_to_send(0.5)
    assert again.data == first  # the same SCCRP, acknowledging the same SCCRQ
    net.advance(0.4)  # the LAC's own retransmission is not due yet; nor is anything of ours
    assert len(net.to_lac) == 1
    net.drop_to_lac = lambda data: False
    net.advance(2.0)
    assert tunnel.phase is Phase.ESTABLISHED
    assert endpoint.counters["tunnels_created"] == 1
    sccrqs = [kind(d) for d in net.to_lns].count(MessageType.SCCRQ)
    # One SCCRP per SCCRQ the LAC sent (and the one above for the SCCRQ replayed by hand).
    assert [kind(d) for d in net.to_lac].count(MessageType.SCCRP) == sccrqs


def test_two_lacs_same_address_different_tunnel_ids_get_two_tunnels() -> None:
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    first = establish(net)
    second = establish(net)
    assert first.peer_tunnel_id != second.peer_tunnel_id
    assert len(endpoint.tunnels) == 2


def test_control_for_an_unknown_tunnel_is_counted_and_dropped() -> None:
    endpoint = make_endpoint()
    hello = encode_message(ControlMessage(MessageType.HELLO))
    effects = endpoint.datagram_received(encode_control(999, 0, 0, 0, hello), LAC_ADDRESS, 0.0)
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["unknown_tunnel"]
    assert endpoint.counters["unknown_tunnel"] == 1


def test_control_from_another_address_is_dropped() -> None:
    endpoint = make_endpoint()
    net = Network(endpoint, Lac(secret=SECRET))
    tunnel = establish(net)
    hello = encode_message(ControlMessage(MessageType.HELLO))
    data = encode_control(tunnel.peer_tunnel_id, 0, 5, 1, hello)
    effects = endpoint.datagram_received(data, ("192.0.2.99", 1701), net.now)
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["wrong_peer"]
    assert endpoint.counters["wrong_peer"] == 1


# --- malformed datagrams -------------------------------------------------------------


def avp(attribute: int, value: bytes, *, mandatory: bool = True, vendor: int = 0) -> bytes:
    """An AVP by hand: M bit, 10-bit length, vendor, attribute, value."""
    bits = (0x8000 if mandatory else 0) | (6 + len(value))
    return struct.pack("!HHH", bits, vendor, attribute) + value


def message_type(mtype: int) -> bytes:
    return avp(AttributeType.MESSAGE_TYPE, struct.pack("!H", mtype))


def in_sequence(tunnel: SimulatedTunnel, payload: bytes, session_id: int = 0) -> bytes:
    """A control datagram with the tunnel's current Ns/Nr (not consumed: see ``accepted``)."""
    ns, nr = tunnel.channel.next_ns, tunnel.channel.next_nr
    return encode_control(tunnel.peer_tunnel_id, session_id, ns, nr, payload)


def accepted(tunnel: SimulatedTunnel) -> None:
    """The LNS took the message we sent by hand: our next Ns moves on."""
    tunnel.channel.next_ns = (tunnel.channel.next_ns + 1) % 65536


@pytest.fixture
def up() -> tuple[Network, SimulatedTunnel]:
    net = Network(make_endpoint(), Lac(secret=SECRET))
    tunnel = establish(net)
    net.advance(1.0)
    return net, tunnel


def still_answers_hello(net: Network, tunnel: SimulatedTunnel) -> None:
    before = len(net.to_lac)
    net.lac.send_hello(tunnel)
    net.flush()
    assert [kind(d) for d in net.to_lac[before:]] == ["ZLB"]
    assert tunnel.channel.idle
    assert net.endpoint.tunnels[tunnel.peer_tunnel_id].state is TunnelState.ESTABLISHED


def send(net: Network, data: bytes) -> list[Effect]:
    start = len(net.effects)
    net.lac.send_raw(data)
    net.flush()
    return net.effects[start:]


def test_short_header_is_counted_and_dropped(up: tuple[Network, SimulatedTunnel]) -> None:
    net, tunnel = up
    sent = len(net.to_lac)
    effects = send(net, b"\xc8\x02\x00")
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["malformed"]
    assert net.endpoint.counters["malformed"] == 1
    assert len(net.to_lac) == sent
    still_answers_hello(net, tunnel)


def test_control_header_shorter_than_its_length_is_dropped(
    up: tuple[Network, SimulatedTunnel],
) -> None:
    net, tunnel = up
    data = in_sequence(tunnel, message_type(MessageType.HELLO))
    send(net, data[:-2])  # the Length field says 2 more bytes than arrived
    assert net.endpoint.counters["malformed"] == 1
    still_answers_hello(net, tunnel)


@pytest.mark.parametrize("version", [0, 1, 3, 15])
def test_wrong_version_is_counted_and_dropped(
    up: tuple[Network, SimulatedTunnel], version: int
) -> None:
    net, tunnel = up
    sent = len(net.to_lac)
    data = bytearray(in_sequence(tunnel, message_type(MessageType.HELLO)))
    data[1] = (data[1] & 0xF0) | version
    effects = send(net, bytes(data))
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["malformed"]
    assert net.endpoint.counters["malformed"] == 1
    assert len(net.to_lac) == sent  # silently discarded, not acknowledged
    still_answers_hello(net, tunnel)


@pytest.mark.parametrize(
    "bad_avp",
    [
        pytest.param(b"\x80\x04\x00\x00\x00\x07", id="avp-length-below-6"),
        pytest.param(b"\x80\x00\x00\x00\x00\x07", id="avp-length-0"),
        pytest.param(b"\x80\x14\x00\x00\x00\x07lac", id="avp-length-past-the-end"),
        pytest.param(b"\x80\x08\x00", id="avp-header-cut-short"),
    ],
)
def test_malformed_avp_is_counted_and_dropped_unacknowledged(
    up: tuple[Network, SimulatedTunnel], bad_avp: bytes
) -> None:
    net, tunnel = up
    conn = net.endpoint.tunnels[tunnel.peer_tunnel_id]
    nr_before = conn.channel.next_nr
    sent = len(net.to_lac)
    effects = send(net, in_sequence(tunnel, message_type(MessageType.HELLO) + bad_avp))
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["malformed"]
    assert net.endpoint.counters["malformed"] == 1
    assert conn.channel.next_nr == nr_before  # not taken, so not acknowledged
    net.advance(1.0)
    assert len(net.to_lac) == sent
    still_answers_hello(net, tunnel)  # with the same Ns the bad message had


def test_value_that_does_not_fit_closes_the_tunnel_length_is_wrong(
    up: tuple[Network, SimulatedTunnel],
) -> None:
    # Well framed, so sequenced and answered at once rather than left for the LAC to
    # retransmit until it gives up: StopCCN, General error, "Length is wrong".
    net, tunnel = up
    payload = message_type(MessageType.HELLO) + avp(AttributeType.ASSIGNED_TUNNEL_ID, b"\x01")
    effects = send(net, in_sequence(tunnel, payload))
    accepted(tunnel)
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["invalid_avp"]
    assert net.endpoint.counters["invalid_avp"] == 1
    result = result_of(net.to_lac[-1])
    assert (result.result, result.error) == (StopCcnResult.GENERAL_ERROR, GeneralError.BAD_LENGTH)
    assert "ASSIGNED_TUNNEL_ID" in result.message
    assert tunnel.phase is Phase.CLOSED


def test_unknown_avp_without_m_bit_is_ignored(up: tuple[Network, SimulatedTunnel]) -> None:
    net, tunnel = up
    payload = (
        message_type(MessageType.HELLO)
        + avp(99, b"ignore me", mandatory=False)
        + avp(1, b"\x00\x01", mandatory=False, vendor=9)  # a vendor AVP without M
    )
    effects = send(net, in_sequence(tunnel, payload))
    accepted(tunnel)
    assert not [e for e in effects if isinstance(e, PacketDropped)]
    assert net.endpoint.counters["malformed"] == 0
    assert kind(net.to_lac[-1]) == "ZLB"  # the HELLO was taken and answered at once
    assert control_header(net.to_lac[-1]).nr == tunnel.channel.next_ns
    still_answers_hello(net, tunnel)


@pytest.mark.parametrize(
    ("unknown", "vendor"), [pytest.param(99, 0, id="ietf"), pytest.param(1, 9, id="vendor")]
)
def test_unknown_mandatory_avp_in_a_tunnel_message_closes_the_tunnel(
    up: tuple[Network, SimulatedTunnel], unknown: int, vendor: int
) -> None:
    net, tunnel = up
    tunnel_id = tunnel.peer_tunnel_id
    payload = message_type(MessageType.HELLO) + avp(unknown, b"\x01\x02", vendor=vendor)
    effects = send(net, in_sequence(tunnel, payload))
    accepted(tunnel)
    [closed] = [e for e in effects if isinstance(e, TunnelClosed)]
    assert not closed.by_peer
    assert net.endpoint.counters["unknown_mandatory_avp"] == 1
    stop = net.to_lac[-1]
    assert kind(stop) == MessageType.StopCCN
    result = result_of(stop)
    assert result.result == StopCcnResult.GENERAL_ERROR
    assert result.error == GeneralError.UNKNOWN_MANDATORY_AVP
    assert f"{vendor}:{unknown}" in result.message
    assert tunnel.phase is Phase.CLOSED
    net.advance(0.0)  # the LAC acknowledged the StopCCN
    assert tunnel_id not in net.endpoint.tunnels


def test_unknown_mandatory_avp_in_a_call_message_clears_that_call_only(
    up: tuple[Network, SimulatedTunnel],
) -> None:
    net, tunnel = up
    doomed = net.lac.place_call(tunnel, ICCID)
    other = net.lac.place_call(tunnel, "89445001021983048270")
    net.advance(1.0)
    assert len(net.of_type(CallEstablished)) == 2
    conn = net.endpoint.tunnels[tunnel.peer_tunnel_id]
    payload = (
        message_type(MessageType.WEN)
        + avp(AttributeType.CALL_ERRORS, bytes(26))
        + avp(99, b"\x00", mandatory=True)
    )
    effects = send(net, in_sequence(tunnel, payload, doomed.peer_session_id))
    accepted(tunnel)
    [cleared] = [e for e in effects if isinstance(e, CallCleared)]
    assert cleared.session_id == doomed.peer_session_id
    assert not cleared.by_peer
    assert cleared.result.result == CdnResult.GENERAL_ERROR
    assert cleared.result.error == GeneralError.UNKNOWN_MANDATORY_AVP
    assert net.endpoint.counters["unknown_mandatory_avp"] == 1
    cdn = net.to_lac[-1]
    assert kind(cdn) == MessageType.CDN
    assert decode_packet(cdn).session_id == doomed.session_id
    assert doomed.phase is Phase.CLOSED
    assert doomed.result is not None
    assert doomed.result.result == CdnResult.GENERAL_ERROR
    assert list(conn.calls) == [other.peer_session_id]
    assert conn.calls[other.peer_session_id].call_errors is None
    assert not net.of_type(TunnelClosed)
    still_answers_hello(net, tunnel)


def test_unknown_mandatory_avp_in_an_icrq_refuses_that_call_only(
    up: tuple[Network, SimulatedTunnel],
) -> None:
    # Section 4.1: an ICRQ belongs to the session it opens, so the session is refused,
    # not the tunnel (a LAC that sets M on a vendor AVP must not lose every session).
    net, tunnel = up
    kept = net.lac.place_call(tunnel, ICCID)
    net.advance(0.1)
    icrq = ControlMessage(
        MessageType.ICRQ,
        (
            make(AttributeType.ASSIGNED_SESSION_ID, 4321),
            make(AttributeType.CALL_SERIAL_NUMBER, 99),
            make(AttributeType.CALLING_NUMBER, "89445001021983048270"),
            Avp(1, b"\x00\x01", mandatory=True, vendor=9),
        ),
    )
    start = len(net.effects)
    net.lac.send_message(tunnel, icrq)
    net.advance(0.1)
    effects = net.effects[start:]
    [refused] = [e for e in effects if isinstance(e, CallRefused)]
    assert refused.result.result == CdnResult.GENERAL_ERROR
    assert refused.result.error == GeneralError.UNKNOWN_MANDATORY_AVP
    assert refused.calling_number == "89445001021983048270"
    assert net.endpoint.counters["unknown_mandatory_avp"] == 1
    [cdn] = [d for d in net.to_lac if kind(d) == MessageType.CDN]
    assert decode_packet(cdn).session_id == 4321
    assert not [e for e in effects if isinstance(e, TunnelClosed)]
    conn = net.endpoint.tunnels[tunnel.peer_tunnel_id]
    assert list(conn.calls) == [kept.peer_session_id]
    still_answers_hello(net, tunnel)


def test_call_message_for_an_unknown_session_is_dropped_and_acknowledged(
    up: tuple[Network, SimulatedTunnel],
) -> None:
    net, tunnel = up
    wen = ControlMessage(MessageType.WEN, (make(AttributeType.CALL_ERRORS, CallErrors(*[0] * 6)),))
    net.lac.send_message(tunnel, wen, session_id=4242)
    net.advance(0.1)
    assert net.endpoint.counters["unknown_session"] == 1
    assert tunnel.channel.idle
    still_answers_hello(net, tunnel)


def test_unknown_message_type_closes_the_tunnel(up: tuple[Network, SimulatedTunnel]) -> None:
    net, tunnel = up
    effects = send(net, in_sequence(tunnel, message_type(99)))
    accepted(tunnel)
    assert [e for e in effects if isinstance(e, TunnelClosed)]
    assert net.endpoint.counters["unknown_message_type"] == 1
    result = result_of(net.to_lac[-1])
    assert result.result == StopCcnResult.GENERAL_ERROR
    assert "unknown message type 99" in result.message


def test_message_for_tunnel_zero_other_than_sccrq_is_dropped() -> None:
    endpoint = make_endpoint()
    hello = encode_message(ControlMessage(MessageType.HELLO))
    effects = endpoint.datagram_received(encode_control(0, 0, 0, 0, hello), LAC_ADDRESS, 0.0)
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["unexpected"]
    assert endpoint.tunnels == {}


def test_lac_chosen_by_host_name_among_entries_for_the_same_addresses() -> None:
    network = ipaddress.ip_network("192.0.2.0/24")
    entries = [
        LacMatch(network, LacPeer("op-a", b"secret-a", True, "lac-a")),
        LacMatch(network, LacPeer("op-b", b"secret-b", True, "lac-b")),
    ]
    endpoint = LnsEndpoint(TunnelSettings(), entries, random.Random(1))
    net = Network(endpoint, Lac(hostname="lac-b", secret=b"secret-b"))
    establish(net)
    [up] = net.of_type(TunnelEstablished)
    assert up.lac_name == "op-b"
    # A host name neither entry names is refused.
    other = Network(LnsEndpoint(TunnelSettings(), entries, random.Random(1)), Lac(hostname="lac-c"))
    other.lac.open_tunnel(0.0)
    other.flush()
    [refused] = other.of_type(TunnelRefused)
    assert "'lac-c'" in refused.reason


def test_a_burst_as_wide_as_our_receive_window_is_taken_without_loss() -> None:
    # A GGSN sends as many ICRQs as our advertised window allows (DESIGN.md section 3).
    endpoint = make_endpoint(receive_window=16)
    net = Network(endpoint, Lac(secret=SECRET))
    tunnel = establish(net)
    sccrp = next(
        decode_message(control_header(d).payload, SECRET)
        for d in net.to_lac
        if kind(d) == MessageType.SCCRP
    )
    assert sccrp.get(AttributeType.RECEIVE_WINDOW_SIZE) == 16
    tunnel.channel.peer_window = 16
    for i in range(64):
        net.lac.place_call(tunnel, f"894450{i:013d}")
    net.advance(5.0)
    conn = endpoint.tunnels[tunnel.peer_tunnel_id]
    assert len(net.of_type(CallEstablished)) == 64
    assert conn.channel.out_of_window == 0
    assert tunnel.channel.retransmissions == 0
    assert conn.channel.retransmissions == 0


def test_unknown_mandatory_avp_in_an_sccrq_gets_a_stopccn_the_lac_can_match() -> None:
    # Some LACs set M on vendor AVPs: the StopCCN must reach the LAC's tunnel, not tunnel 0.
    endpoint = make_endpoint()
    sccrq = ControlMessage(
        MessageType.SCCRQ,
        (
            make(AttributeType.PROTOCOL_VERSION, 0x0100),
            make(AttributeType.HOST_NAME, "lac1"),
            make(AttributeType.FRAMING_CAPABILITIES, 3),
            make(AttributeType.ASSIGNED_TUNNEL_ID, 321),
            Avp(7, b"\x01", mandatory=True, vendor=2011),
        ),
    )
    data = encode_control(0, 0, 0, 0, encode_message(sccrq))
    effects = endpoint.datagram_received(data, LAC_ADDRESS, 0.0)
    assert [e.counter for e in effects if isinstance(e, PacketDropped)] == ["unknown_mandatory_avp"]
    assert endpoint.counters["unknown_mandatory_avp"] == 1
    assert endpoint.tunnels == {}  # answered without keeping state
    [stop] = endpoint.datagrams_to_send(0.0)
    assert kind(stop.data) == MessageType.StopCCN
    header = control_header(stop.data)
    assert header.tunnel_id == 321
    assert header.nr == 1  # and it acknowledges the SCCRQ
    result = result_of(stop.data)
    assert result.result == StopCcnResult.GENERAL_ERROR
    assert result.error == GeneralError.UNKNOWN_MANDATORY_AVP
    assert "2011:7" in result.message
