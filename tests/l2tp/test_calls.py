"""Incoming calls over one tunnel (RFC 2661 section 7.4.1, sections 5.4 and 6.7-6.16).

ICRQ/ICRP/ICCN with proxy LCP and proxy authentication, CDN both ways, the
ICCID check, OCRQ refused, WEN and SLI, and PPP in data messages in every
header form (section 3.1).
"""

from __future__ import annotations

import itertools
import random

import pytest

from lns.l2tp.avp import (
    Accm,
    AttributeType,
    CallErrors,
    MessageType,
    ResultCode,
    make,
)
from lns.l2tp.effects import (
    CallCleared,
    CallEstablished,
    CallRefused,
    PacketDropped,
    PppFrameReceived,
    TunnelEstablished,
)
from lns.l2tp.header import ControlPacket, DataPacket, decode_packet, encode_data
from lns.l2tp.message import ControlMessage, decode_message
from lns.l2tp.proxy import ProxyAuthenType, ProxyLcp
from lns.l2tp.result import CdnResult, GeneralError
from lns.l2tp.session import CallState, IncomingCall
from lns.l2tp.tunnel import ControlConnection
from lns.testing.l2tp_network import SECRET, Network, make_endpoint
from lns.testing.lacsim.lac import (
    LCP_AUTH_PAP,
    Lac,
    Phase,
    SimulatedCall,
    SimulatedTunnel,
    default_proxy_lcp,
    proxy_chap,
    proxy_pap,
)

ICCID = "8944500102198304826"
LCP_FRAME = b"\xff\x03\xc0\x21\x09\x01\x00\x08\x12\x34\x56\x78"  # LCP Echo-Request


def iccid(i: int) -> str:
    return f"894450{i:013d}"  # 19 digits


@pytest.fixture
def net() -> Network:
    return Network(make_endpoint(), Lac(secret=SECRET))


def establish(net: Network) -> SimulatedTunnel:
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.phase is Phase.ESTABLISHED
    assert net.of_type(TunnelEstablished)
    return tunnel


def connection(net: Network, tunnel: SimulatedTunnel) -> ControlConnection:
    return net.endpoint.tunnels[tunnel.peer_tunnel_id]


def call_up(
    net: Network, tunnel: SimulatedTunnel, number: str = ICCID, *, sequencing: bool = False
) -> tuple[SimulatedCall, IncomingCall]:
    call = net.lac.place_call(tunnel, number, sequencing=sequencing)
    net.advance(0.1)
    assert call.phase is Phase.ESTABLISHED
    ours = connection(net, tunnel).calls[call.peer_session_id]
    assert ours.state is CallState.ESTABLISHED
    return call, ours


def control_messages(log: list[bytes]) -> list[tuple[ControlPacket, ControlMessage]]:
    found = []
    for data in log:
        packet = decode_packet(data)
        if isinstance(packet, ControlPacket) and packet.payload:
            found.append((packet, decode_message(packet.payload, SECRET)))
    return found


# --- a thousand sessions -----------------------------------------------------------


def test_a_thousand_sessions_up_and_down(net: Network) -> None:
    tunnel = establish(net)
    rng = random.Random(1000)
    placed: dict[int, tuple[SimulatedCall, str]] = {}
    for i in range(1000):
        number = iccid(i)
        if i % 2:
            lcp, auth = default_proxy_lcp(rng), proxy_chap(b"pw%d" % i, rng, name=b"dev%d" % i)
        else:
            lcp, auth = default_proxy_lcp(rng, LCP_AUTH_PAP), proxy_pap(b"pw%d" % i, b"dev%d" % i)
        call = net.lac.place_call(
            tunnel, number, called_number="iot.example", proxy_lcp=lcp, proxy_auth=auth
        )
        placed[call.session_id] = (call, number)
    net.advance(30.0)

    established = net.of_type(CallEstablished)
    assert len(established) == 1000
    conn = connection(net, tunnel)
    assert len(conn.calls) == 1000
    session_ids = [e.call.session_id for e in established]
    assert len(set(session_ids)) == 1000  # unique within the tunnel
    assert all(0 < s < 0x10000 for s in session_ids)
    for effect in established:
        ours = effect.call
        call, number = placed[ours.peer_session_id]
        assert call.peer_session_id == ours.session_id
        assert call.phase is Phase.ESTABLISHED
        assert ours.iccid == number
        assert ours.called_number == "iot.example"
        assert ours.tunnel_id == effect.tunnel_id == tunnel.peer_tunnel_id
        assert ours.peer_tunnel_id == tunnel.tunnel_id
        assert call.proxy_lcp is not None
        assert ours.proxy_lcp == ProxyLcp(
            call.proxy_lcp.initial_received, call.proxy_lcp.last_sent, call.proxy_lcp.last_received
        )
        spec = call.proxy_auth
        assert spec is not None
        auth = ours.proxy_auth
        assert auth is not None
        assert auth.authen_type == spec.authen_type
        assert auth.name == spec.name
        assert auth.response == spec.response
        if spec.authen_type == ProxyAuthenType.CHAP:
            assert auth.challenge == spec.challenge
            assert auth.chap_id == spec.chap_id
            assert len(auth.response) == 16
        else:
            assert auth.authen_type == ProxyAuthenType.PAP
            assert auth.chap_id is None
        assert ours.tx_connect_speed == 100_000_000
        assert ours.rx_connect_speed == 50_000_000
        assert ours.framing_type == 1
    # The call serial numbers, as the LAC numbered its ICRQs.
    assert sorted(c.call_serial for c in conn.calls.values()) == list(range(1, 1001))

    # Tear down: the LAC hangs up half, we disconnect the other half.
    ours_by_lac = {c.peer_session_id: c for c in conn.calls.values()}
    lac_calls = [call for call, _ in placed.values()]
    hung_up, disconnected = lac_calls[::2], lac_calls[1::2]
    for call in hung_up:
        net.lac.hang_up(call, ResultCode(CdnResult.LOST_CARRIER))
    for call in disconnected:
        ours = ours_by_lac[call.session_id]
        effects = net.endpoint.disconnect_call(
            ours.tunnel_id,
            ours.session_id,
            ResultCode(CdnResult.ADMINISTRATIVE, 0, "kicked"),
            "admin",
            net.now,
        )
        assert [type(e) for e in effects] == [CallCleared]
        net.effects += effects
    net.advance(30.0)

    cleared = net.of_type(CallCleared)
    assert len(cleared) == 1000
    by_peer = {c.session_id for c in cleared if c.by_peer}
    by_us = {c.session_id for c in cleared if not c.by_peer}
    assert by_peer == {ours_by_lac[c.session_id].session_id for c in hung_up}
    assert by_us == {ours_by_lac[c.session_id].session_id for c in disconnected}
    assert all(c.was_established for c in cleared)
    assert all(c.result.result == CdnResult.LOST_CARRIER for c in cleared if c.by_peer)
    for call in disconnected:
        assert call.phase is Phase.CLOSED
        assert call.result == ResultCode(CdnResult.ADMINISTRATIVE, 0, "kicked")
    assert conn.calls == {}
    assert tunnel.calls == {}
    assert conn.channel.idle
    assert tunnel.channel.idle
    assert conn.channel.retransmissions == 0  # acknowledged promptly, nothing resent
    assert tunnel.channel.retransmissions == 0


def test_session_ids_stay_unique_while_calls_come_and_go(net: Network) -> None:
    tunnel = establish(net)
    conn = connection(net, tunnel)
    seen_live: list[set[int]] = []
    for round_ in range(5):
        calls = [net.lac.place_call(tunnel, iccid(round_ * 100 + i)) for i in range(50)]
        net.advance(1.0)
        seen_live.append(set(conn.calls))
        assert len(conn.calls) == 50
        for call in calls:
            net.lac.hang_up(call)
        net.advance(1.0)
        assert conn.calls == {}
    assert all(len(live) == 50 for live in seen_live)


# --- ICCID validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        pytest.param("894450010219830482", "has 18 digits", id="18-digits"),
        pytest.param("894450010219830482678", "has 21 digits", id="21-digits"),
        pytest.param("8944500102198304A26", "not all digits", id="letters"),
        pytest.param("", "not all digits", id="empty"),
    ],
)
def test_invalid_iccid_is_refused_with_cdn_result_2(
    net: Network, number: str, problem: str
) -> None:
    tunnel = establish(net)
    call = net.lac.place_call(tunnel, number)
    net.advance(0.1)
    [refused] = net.of_type(CallRefused)
    assert refused.calling_number == number
    assert refused.result.result == CdnResult.GENERAL_ERROR
    assert refused.result.error == GeneralError.OUT_OF_RANGE
    assert problem in refused.result.message
    assert call.phase is Phase.CLOSED
    assert call.result == refused.result  # the advisory message reached the LAC
    assert connection(net, tunnel).calls == {}
    assert not net.of_type(CallEstablished)
    [(packet, cdn)] = [
        (p, m) for p, m in control_messages(net.to_lac) if m.message_type == MessageType.CDN
    ]
    assert packet.session_id == call.session_id
    assert isinstance(cdn.get(AttributeType.ASSIGNED_SESSION_ID), int)


@pytest.mark.parametrize(
    "number",
    ["89445001021983048261", "8944500102198304826F", "8944500102198304826f"],
)
def test_valid_iccid_forms_are_accepted(net: Network, number: str) -> None:
    tunnel = establish(net)
    _, ours = call_up(net, tunnel, number)
    assert ours.iccid == number.rstrip("Ff")


# --- OCRQ, WEN, SLI --------------------------------------------------------------------


def test_ocrq_is_refused_with_cdn_result_5(net: Network) -> None:
    tunnel = establish(net)
    ocrq = ControlMessage(
        MessageType.OCRQ,
        (
            make(AttributeType.ASSIGNED_SESSION_ID, 777),
            make(AttributeType.CALL_SERIAL_NUMBER, 1),
            make(AttributeType.MINIMUM_BPS, 9600),
            make(AttributeType.MAXIMUM_BPS, 1_000_000),
            make(AttributeType.BEARER_TYPE, 3),
            make(AttributeType.FRAMING_TYPE, 3),
            make(AttributeType.CALLED_NUMBER, "+4912345"),
        ),
    )
    net.lac.send_message(tunnel, ocrq)
    net.advance(0.1)
    [refused] = net.of_type(CallRefused)
    assert refused.result.result == CdnResult.PERMANENT_LACK_OF_FACILITIES
    assert refused.calling_number == "+4912345"
    [(packet, cdn)] = [
        (p, m) for p, m in control_messages(net.to_lac) if m.message_type == MessageType.CDN
    ]
    assert packet.session_id == 777
    result = cdn.get(AttributeType.RESULT_CODE)
    assert isinstance(result, ResultCode)
    assert result.result == 5
    assert connection(net, tunnel).calls == {}
    assert tunnel.channel.idle


def test_wen_and_sli_are_recorded_on_the_call(net: Network) -> None:
    tunnel = establish(net)
    call, ours = call_up(net, tunnel)
    errors = CallErrors(1, 2, 3, 4, 5, 6)
    net.lac.send_message(
        tunnel,
        ControlMessage(MessageType.WEN, (make(AttributeType.CALL_ERRORS, errors),)),
        call.peer_session_id,
    )
    net.lac.send_message(
        tunnel,
        ControlMessage(MessageType.SLI, (make(AttributeType.ACCM, Accm(0xFFFFFFFF, 0)),)),
        call.peer_session_id,
    )
    net.advance(0.1)
    assert ours.call_errors == errors
    assert ours.accm == Accm(0xFFFFFFFF, 0)
    assert ours.state is CallState.ESTABLISHED
    assert not net.of_type(PacketDropped)
    assert tunnel.channel.idle


def test_cdn_from_the_lac_before_iccn_clears_the_waiting_call(net: Network) -> None:
    tunnel = establish(net)
    net.drop_to_lac = lambda data: True  # the ICRP never reaches the LAC
    call = net.lac.place_call(tunnel, ICCID)
    net.flush()
    [ours] = connection(net, tunnel).calls.values()
    net.drop_to_lac = lambda data: False
    call.peer_session_id = ours.session_id
    net.lac.hang_up(call)
    net.advance(5.0)
    [cleared] = net.of_type(CallCleared)
    assert cleared.by_peer
    assert not cleared.was_established
    assert connection(net, tunnel).calls == {}


# --- data messages ---------------------------------------------------------------------

HEADER_FORMS = list(
    itertools.product([None, 0, 4242], [False, True], [None, 0, 3])
)  # Ns, Length, Offset pad


@pytest.mark.parametrize(
    ("ns", "with_length", "offset_pad"),
    HEADER_FORMS,
    ids=[f"ns={n}-length={ln}-offset={o}" for n, ln, o in HEADER_FORMS],
)
def test_ppp_from_the_lac_in_every_header_form(
    net: Network, ns: int | None, with_length: bool, offset_pad: int | None
) -> None:
    tunnel = establish(net)
    call, ours = call_up(net, tunnel)
    net.lac.send_ppp(call, LCP_FRAME, ns=ns, with_length=with_length, offset_pad=offset_pad)
    net.flush()
    [received] = net.of_type(PppFrameReceived)
    assert received == PppFrameReceived(tunnel.peer_tunnel_id, ours.session_id, LCP_FRAME)


def test_ppp_with_priority_bit_and_compressed_header_is_accepted(net: Network) -> None:
    tunnel = establish(net)
    call, _ = call_up(net, tunnel)
    frame = b"\x21\x45\x00"  # PFC/ACFC: no FF 03, one-byte protocol (IPv4)
    net.lac.send_raw(encode_data(tunnel.peer_tunnel_id, call.peer_session_id, frame, priority=True))
    net.flush()
    assert [e.frame for e in net.of_type(PppFrameReceived)] == [frame]


@pytest.mark.parametrize("sequencing", [False, True])
def test_send_ppp_reaches_the_call(net: Network, sequencing: bool) -> None:
    tunnel = establish(net)
    call, ours = call_up(net, tunnel, sequencing=sequencing)
    assert ours.sequencing_required is sequencing
    frames = [LCP_FRAME, b"\xff\x03\x80\x21\x01\x01\x00\x04", b"\xff\x03\x00\x21E"]
    for frame in frames:
        datagram = net.endpoint.send_ppp(tunnel.peer_tunnel_id, ours.session_id, frame)
        assert datagram is not None
        assert datagram.peer == net.lac_address
        packet = decode_packet(datagram.data)
        assert isinstance(packet, DataPacket)
        net.lac.datagram_received(datagram.data, net.now)
    assert call.frames == frames
    if sequencing:
        assert call.data_sequence == [0, 1, 2]  # Ns on every frame
    else:
        assert call.data_sequence == [None, None, None]


def test_send_ppp_for_a_gone_call_returns_none(net: Network) -> None:
    tunnel = establish(net)
    call, ours = call_up(net, tunnel)
    net.lac.hang_up(call)
    net.advance(0.1)
    assert net.endpoint.send_ppp(tunnel.peer_tunnel_id, ours.session_id, LCP_FRAME) is None
    assert net.endpoint.send_ppp(12345, ours.session_id, LCP_FRAME) is None


def test_data_for_an_unknown_session_is_counted_and_dropped(net: Network) -> None:
    tunnel = establish(net)
    call, _ = call_up(net, tunnel)
    net.lac.send_raw(encode_data(tunnel.peer_tunnel_id, 4242, LCP_FRAME))
    net.lac.send_raw(encode_data(tunnel.peer_tunnel_id, 0, LCP_FRAME))
    net.flush()
    assert net.endpoint.counters["unknown_session"] == 2
    assert not net.of_type(PppFrameReceived)
    dropped = net.of_type(PacketDropped)
    assert [d.counter for d in dropped] == ["unknown_session", "unknown_session"]
    # Data for a tunnel that does not exist is counted too.
    net.lac.send_raw(encode_data(999, call.peer_session_id, LCP_FRAME))
    net.flush()
    assert net.endpoint.counters["unknown_tunnel"] == 1


def test_data_before_iccn_is_dropped(net: Network) -> None:
    tunnel = establish(net)
    net.drop_to_lac = lambda data: True  # the LAC never learns the ICRP: no ICCN
    net.lac.place_call(tunnel, ICCID)
    net.flush()
    [ours] = connection(net, tunnel).calls.values()
    assert ours.state is CallState.WAIT_CONNECT
    net.lac.send_raw(encode_data(tunnel.peer_tunnel_id, ours.session_id, LCP_FRAME))
    net.flush()
    assert net.endpoint.counters["unknown_session"] == 1
    assert not net.of_type(PppFrameReceived)


def test_cdn_sent_before_the_icrp_arrived_is_matched_by_assigned_session_id(
    net: Network,
) -> None:
    tunnel = establish(net)
    icrp_dropped = []

    def lose_first_icrp(data: bytes) -> bool:
        packet = decode_packet(data)
        if not isinstance(packet, ControlPacket) or packet.is_zlb or icrp_dropped:
            return False
        if decode_message(packet.payload, SECRET).message_type == MessageType.ICRP:
            icrp_dropped.append(data)
            return True
        return False

    net.drop_to_lac = lose_first_icrp
    call = net.lac.place_call(tunnel, ICCID)
    net.flush()
    assert icrp_dropped
    assert call.peer_session_id == 0  # the LAC never learnt our session ID
    net.lac.hang_up(call)
    net.advance(5)

    cleared = net.of_type(CallCleared)
    assert [(c.iccid, c.by_peer) for c in cleared] == [(ICCID, True)]
    assert all(not conn.calls for conn in net.endpoint.tunnels.values())


def test_call_never_connected_is_cleared_after_the_connect_timeout() -> None:
    net = Network(make_endpoint(connect_timeout=30.0), Lac(secret=SECRET))
    tunnel = establish(net)
    iccns = []

    def lose_iccns(data: bytes) -> bool:
        packet = decode_packet(data)
        if not isinstance(packet, ControlPacket) or packet.is_zlb:
            return False
        if decode_message(packet.payload, SECRET).message_type == MessageType.ICCN:
            iccns.append(packet.ns)
            return True
        return False

    net.drop_to_lns = lose_iccns
    call = net.lac.place_call(tunnel, ICCID)
    net.advance(29.0)
    assert not net.of_type(CallCleared)
    net.advance(2.0)
    cleared = net.of_type(CallCleared)
    assert [(c.iccid, c.result.result, c.by_peer) for c in cleared] == [
        (ICCID, CdnResult.TIMEOUT, False)
    ]
    assert "no ICCN within 30 s" in cleared[0].reason
    assert call.result is not None  # the LAC got the CDN
    assert call.result.result == CdnResult.TIMEOUT
