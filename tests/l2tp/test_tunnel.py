"""A control connection end to end (RFC 2661 sections 5, 6 and 7), LAC simulator to LnsEndpoint.

Everything runs in memory on the harness's fake clock: ``Network.advance``
fires timers, ``drop_to_lns``/``drop_to_lac`` lose datagrams (and, wrapped
by :func:`timed`, record when each one left).
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable

import pytest

from lns.l2tp.avp import AttributeType, MessageType, ResultCode
from lns.l2tp.effects import CallCleared, CallEstablished, TunnelClosed, TunnelEstablished
from lns.l2tp.header import ControlPacket, DataPacket, decode_packet
from lns.l2tp.message import H_BIT, LENGTH_MASK, ControlMessage, decode_message
from lns.l2tp.reliable import RetransmitPolicy
from lns.l2tp.result import StopCcnResult
from lns.l2tp.tunnel import ControlConnection, TunnelState
from lns.testing.l2tp_network import LAC_ADDRESS, SECRET, Network, make_endpoint
from lns.testing.lacsim.lac import Lac, Phase, SimulatedTunnel, default_proxy_lcp, proxy_chap

ICCIDS = [f"89445001021983{i:05d}" for i in range(10)]


# --- helpers -------------------------------------------------------------------------


def kind(data: bytes, secret: bytes | None = SECRET) -> MessageType | int | str:
    """What a datagram is: a message type, "ZLB" or "data"."""
    packet = decode_packet(data)
    if isinstance(packet, DataPacket):
        return "data"
    if packet.is_zlb:
        return "ZLB"
    return decode_message(packet.payload, secret).message_type


def body(data: bytes, secret: bytes | None = SECRET) -> tuple[ControlPacket, ControlMessage]:
    packet = decode_packet(data)
    assert isinstance(packet, ControlPacket)
    return packet, decode_message(packet.payload, secret)


def control_header(data: bytes) -> ControlPacket:
    """The control header of a datagram (its payload undecoded)."""
    packet = decode_packet(data)
    assert isinstance(packet, ControlPacket)
    return packet


def timed(
    net: Network, direction: str, drop: Callable[[bytes], bool] = lambda data: False
) -> list[tuple[float, bytes]]:
    """Record (instant, datagram) for one direction ("lac" or "lns"), losing what ``drop`` says."""
    log: list[tuple[float, bytes]] = []

    def hook(data: bytes) -> bool:
        log.append((net.now, data))
        return drop(data)

    setattr(net, f"drop_to_{direction}", hook)
    return log


def establish(net: Network) -> SimulatedTunnel:
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.phase is Phase.ESTABLISHED, tunnel.failure
    assert net.of_type(TunnelEstablished)
    return tunnel


def connection(net: Network, tunnel: SimulatedTunnel) -> ControlConnection:
    return net.endpoint.tunnels[tunnel.peer_tunnel_id]


def place_calls(net: Network, tunnel: SimulatedTunnel, count: int) -> None:
    rng = random.Random(7)
    for iccid in ICCIDS[:count]:
        net.lac.place_call(
            tunnel, iccid, proxy_lcp=default_proxy_lcp(rng), proxy_auth=proxy_chap(b"pw", rng)
        )
    net.advance(0.1)
    assert len(net.of_type(CallEstablished)) == count


def avp_flags(payload: bytes) -> list[tuple[int, bool]]:
    """(attribute, hidden) of every AVP in a control message body, read off the raw bytes."""
    found = []
    pos = 0
    while pos < len(payload):
        bits, _vendor, attribute = struct.unpack_from("!HHH", payload, pos)
        found.append((attribute, bool(bits & H_BIT)))
        pos += bits & LENGTH_MASK
    return found


# --- set-up and tunnel authentication ------------------------------------------------


def test_tunnel_up_with_authentication_both_ways() -> None:
    net = Network(make_endpoint(), Lac(secret=SECRET))
    tunnel = establish(net)
    assert tunnel.failure == ""
    [established] = net.of_type(TunnelEstablished)
    assert established.peer_tunnel_id == tunnel.tunnel_id
    assert established.peer_hostname == "lac1"
    assert established.lac_name == "op-a"
    assert connection(net, tunnel).state is TunnelState.ESTABLISHED

    sccrq, sccrp, scccn = (
        body(next(d for d in log if kind(d) == mtype))[1]
        for log, mtype in (
            (net.to_lns, MessageType.SCCRQ),
            (net.to_lac, MessageType.SCCRP),
            (net.to_lns, MessageType.SCCCN),
        )
    )
    # Our response to the LAC's challenge (section 5.1.1: type 2 for SCCRP) ...
    lac_challenge = sccrq.get(AttributeType.CHALLENGE)
    assert isinstance(lac_challenge, bytes)
    assert (
        sccrp.get(AttributeType.CHALLENGE_RESPONSE)
        == hashlib.md5(b"\x02" + SECRET + lac_challenge).digest()
    )
    # ... and the LAC's response to ours (type 3 for SCCCN), which we verified.
    our_challenge = sccrp.get(AttributeType.CHALLENGE)
    assert isinstance(our_challenge, bytes)
    assert len(our_challenge) == 16
    assert (
        scccn.get(AttributeType.CHALLENGE_RESPONSE)
        == hashlib.md5(b"\x03" + SECRET + our_challenge).digest()
    )


def test_tunnel_up_without_authentication() -> None:
    net = Network(make_endpoint(secret=None, authenticate=False), Lac(secret=None))
    tunnel = establish(net)
    sccrq, sccrp, scccn = (
        body(d, None)[1] for d in (*net.to_lns[:1], net.to_lac[0], net.to_lns[1])
    )
    assert sccrq.message_type == MessageType.SCCRQ
    assert sccrp.message_type == MessageType.SCCRP
    assert scccn.message_type == MessageType.SCCCN
    assert not sccrq.has(AttributeType.CHALLENGE)
    assert not sccrp.has(AttributeType.CHALLENGE)
    assert not sccrp.has(AttributeType.CHALLENGE_RESPONSE)
    assert not scccn.has(AttributeType.CHALLENGE_RESPONSE)
    assert connection(net, tunnel).state is TunnelState.ESTABLISHED


def test_wrong_secret_at_the_lac_gets_stopccn_after_scccn_and_is_forgotten() -> None:
    # The LAC does not challenge us, so the LNS is the one to find out, from the SCCCN.
    net = Network(make_endpoint(), Lac(secret=b"not the secret", challenge=False))
    tunnel = net.lac.open_tunnel(net.now)
    net.flush()
    assert [kind(d) for d in net.to_lns] == [MessageType.SCCRQ, MessageType.SCCCN, "ZLB"]
    assert [kind(d) for d in net.to_lac] == [MessageType.SCCRP, MessageType.StopCCN]
    _, stop = body(net.to_lac[1])
    result = stop.get(AttributeType.RESULT_CODE)
    assert isinstance(result, ResultCode)
    assert result.result == StopCcnResult.NOT_AUTHORIZED
    assert "wrong Challenge Response" in result.message
    assert tunnel.result == result
    assert tunnel.phase is Phase.CLOSED
    [closed] = net.of_type(TunnelClosed)
    assert not closed.by_peer
    assert not net.of_type(TunnelEstablished)
    # The LAC acknowledged our StopCCN: nothing left to keep.
    net.advance(0.0)
    assert net.endpoint.tunnels == {}


def test_wrong_secret_at_the_lns_is_caught_by_the_lacs_challenge() -> None:
    net = Network(make_endpoint(secret=b"the lns's idea"), Lac(secret=SECRET))
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.failure == "the LNS's Challenge Response is wrong"
    [closed] = net.of_type(TunnelClosed)
    assert closed.by_peer
    assert not net.of_type(TunnelEstablished)
    net.advance(60.0)  # the linger for retransmissions of the LAC's StopCCN
    assert net.endpoint.tunnels == {}


# --- HELLO -----------------------------------------------------------------------------


def test_hello_from_the_lac_is_acknowledged_in_the_same_instant() -> None:
    net = Network(make_endpoint(), Lac(secret=SECRET))
    tunnel = establish(net)
    net.advance(5.0)
    to_lac = timed(net, "lac")
    to_lns = timed(net, "lns")
    net.lac.send_hello(tunnel)
    net.flush()  # no time passes
    [(sent_at, hello)] = to_lns
    assert kind(hello) == MessageType.HELLO
    [(acked_at, ack)] = to_lac
    assert kind(ack) == "ZLB"
    assert acked_at == sent_at == net.now
    assert control_header(ack).nr == control_header(hello).ns + 1
    assert tunnel.channel.idle


def test_lns_sends_hello_after_hello_interval_of_silence() -> None:
    net = Network(make_endpoint(hello_interval=10.0), Lac(secret=SECRET))
    tunnel = establish(net)  # the SCCCN arrived at 0.0: the last we heard
    to_lac = timed(net, "lac")
    net.advance(9.95 - net.now)
    assert to_lac == []
    net.advance(0.05)
    [(hello_at, hello)] = to_lac
    assert kind(hello) == MessageType.HELLO
    assert hello_at == pytest.approx(10.0)
    assert tunnel.messages_received[-1] == MessageType.HELLO
    # The LAC's ZLB acknowledged it; the next HELLO comes hello_interval after that.
    net.advance(10.0)
    assert [kind(d) for _, d in to_lac] == [MessageType.HELLO, MessageType.HELLO]
    assert to_lac[1][0] == pytest.approx(20.0)


def test_traffic_from_the_lac_postpones_our_hello() -> None:
    net = Network(make_endpoint(hello_interval=10.0), Lac(secret=SECRET))
    tunnel = establish(net)
    to_lac = timed(net, "lac")
    net.advance(6.0 - net.now)
    net.lac.send_hello(tunnel)
    net.advance(15.95 - net.now)
    assert [kind(d) for _, d in to_lac] == ["ZLB"]
    net.advance(0.05)
    assert [kind(d) for _, d in to_lac] == ["ZLB", MessageType.HELLO]
    assert to_lac[1][0] == pytest.approx(16.0)


# --- retransmission and giving up -----------------------------------------------------


def test_lns_retransmits_then_gives_up_and_clears_every_call() -> None:
    net = Network(make_endpoint(hello_interval=10.0), Lac(secret=SECRET))
    tunnel = establish(net)
    place_calls(net, tunnel, 3)
    tunnel_id = tunnel.peer_tunnel_id
    to_lac = timed(net, "lac", drop=lambda data: True)  # the LAC hears nothing any more
    net.advance(10.5 - net.now)  # the last ICCN came at 0.1: the HELLO goes at 10.1
    [(hello_at, hello)] = to_lac
    assert hello_at == pytest.approx(10.1)
    assert kind(hello) == MessageType.HELLO
    net.advance(hello_at + 30.9 - net.now)
    assert not net.of_type(TunnelClosed)
    times = [t - hello_at for t, _ in to_lac]
    assert times == pytest.approx([0, 1, 3, 7, 15, 23])  # 1, 2, 4, 8, 8 s apart
    assert {d for _, d in to_lac} == {hello}  # the same message, Ns and Nr each time
    net.advance(0.1)  # 8 s after the fifth retransmission: give up
    [closed] = net.of_type(TunnelClosed)
    assert closed.tunnel_id == tunnel_id
    assert not closed.by_peer
    assert "5 retransmissions" in closed.reason
    cleared = net.of_type(CallCleared)
    assert len(cleared) == 3
    assert all(not c.by_peer and c.was_established for c in cleared)
    assert {c.iccid for c in cleared} == set(ICCIDS[:3])
    assert net.endpoint.tunnels == {}
    assert len(to_lac) == 6  # nothing after giving up


def test_retransmission_policy_comes_from_the_settings() -> None:
    policy = RetransmitPolicy(initial=0.5, cap=2.0, max_retransmissions=3)
    net = Network(make_endpoint(hello_interval=10.0, retransmit=policy), Lac(secret=SECRET))
    establish(net)
    to_lac = timed(net, "lac", drop=lambda data: True)
    net.advance(30.0)
    hello_at = to_lac[0][0]
    assert [t - hello_at for t, _ in to_lac] == pytest.approx([0, 0.5, 1.5, 3.5])
    [closed] = net.of_type(TunnelClosed)
    assert net.endpoint.tunnels == {}
    assert "3 retransmissions" in closed.reason


def test_lost_ack_makes_the_lac_retransmit_and_we_ack_again() -> None:
    net = Network(make_endpoint(), Lac(secret=SECRET))
    tunnel = establish(net)
    conn = connection(net, tunnel)
    net.drop_to_lac = lambda data: kind(data) == "ZLB"
    net.lac.send_hello(tunnel)
    net.advance(0.5)
    net.drop_to_lac = lambda data: False
    net.advance(1.0)  # the LAC's retransmission at +1 s is a duplicate for us
    assert conn.channel.duplicates == 1
    assert tunnel.channel.idle


# --- out of order and duplicates from the LAC ----------------------------------------


def test_reordered_icrqs_are_delivered_once_in_order() -> None:
    net = Network(make_endpoint(), Lac(secret=SECRET))
    tunnel = establish(net)
    conn = connection(net, tunnel)
    held: list[bytes] = []

    def hold_first_icrq(data: bytes) -> bool:
        if not held and kind(data) == MessageType.ICRQ:
            held.append(data)
            return True
        return False

    net.drop_to_lns = hold_first_icrq
    first = net.lac.place_call(tunnel, ICCIDS[0])
    second = net.lac.place_call(tunnel, ICCIDS[1])
    net.flush()
    assert len(held) == 1
    assert conn.calls == {}  # the second ICRQ waits for the first
    net.drop_to_lns = lambda data: False
    net.effects += net.endpoint.datagram_received(held[0], LAC_ADDRESS, net.now)
    net.flush()
    assert [c.peer_session_id for c in conn.calls.values()] == [
        first.session_id,
        second.session_id,
    ]
    assert [c.call_serial for c in conn.calls.values()] == [1, 2]
    net.advance(0.1)
    established = net.of_type(CallEstablished)
    assert [e.call.iccid for e in established] == ICCIDS[:2]
    assert first.phase is second.phase is Phase.ESTABLISHED

    # The same ICRQ again (a retransmission whose ack was lost): acked at once, no new call.
    to_lac = timed(net, "lac")
    net.effects += net.endpoint.datagram_received(held[0], LAC_ADDRESS, net.now)
    net.flush()
    assert conn.channel.duplicates == 1
    assert len(conn.calls) == 2
    assert len(net.of_type(CallEstablished)) == 2
    assert [kind(d) for _, d in to_lac] == ["ZLB"]
    assert to_lac[0][0] == net.now


# --- StopCCN both ways ------------------------------------------------------------------


def test_stopccn_from_the_lac_clears_every_call_is_acked_and_forgotten() -> None:
    net = Network(make_endpoint(), Lac(secret=SECRET))
    tunnel = establish(net)
    place_calls(net, tunnel, 4)
    tunnel_id = tunnel.peer_tunnel_id
    to_lac = timed(net, "lac")
    net.lac.close_tunnel(tunnel)
    net.flush()
    cleared = net.of_type(CallCleared)
    assert len(cleared) == 4
    assert all(c.by_peer and c.was_established for c in cleared)
    [closed] = net.of_type(TunnelClosed)
    assert closed.by_peer
    assert closed.tunnel_id == tunnel_id
    assert [kind(d) for _, d in to_lac] == ["ZLB"]  # acked in the same instant
    assert tunnel.channel.idle
    # Kept a while to acknowledge a retransmitted StopCCN, then forgotten.
    assert net.endpoint.tunnels[tunnel_id].state is TunnelState.CLOSED
    net.advance(30.0)
    assert tunnel_id in net.endpoint.tunnels
    net.advance(1.5)
    assert net.endpoint.tunnels == {}


def test_retransmitted_stopccn_is_acked_while_lingering() -> None:
    net = Network(make_endpoint(), Lac(secret=SECRET))
    tunnel = establish(net)
    net.drop_to_lac = lambda data: True  # the LAC never hears our ack
    net.lac.close_tunnel(tunnel)
    net.advance(1.5)
    conn = net.endpoint.tunnels[tunnel.peer_tunnel_id]
    assert conn.channel.duplicates == 1
    net.drop_to_lac = lambda data: False
    net.advance(2.0)
    assert tunnel.channel.idle
    assert len(net.of_type(TunnelClosed)) == 1


def test_shutdown_sends_stopccn_result_6_on_every_tunnel() -> None:
    net = Network(make_endpoint(), Lac(secret=SECRET))
    tunnels = [establish(net) for _ in range(3)]
    place_calls(net, tunnels[0], 2)
    to_lac = timed(net, "lac")
    effects = net.endpoint.shutdown(net.now)
    assert net.endpoint.closing
    assert len([e for e in effects if isinstance(e, TunnelClosed)]) == 3
    assert len([e for e in effects if isinstance(e, CallCleared)]) == 2
    net.flush()
    stops = [body(d) for _, d in to_lac if kind(d) == MessageType.StopCCN]
    assert sorted(p.tunnel_id for p, _ in stops) == sorted(t.tunnel_id for t in tunnels)
    for _, stop in stops:
        result = stop.get(AttributeType.RESULT_CODE)
        assert isinstance(result, ResultCode)
        assert result.result == StopCcnResult.SHUTTING_DOWN
    assert all(t.phase is Phase.CLOSED for t in tunnels)
    assert all(t.result is not None and t.result.result == 6 for t in tunnels)
    net.advance(0.0)  # every StopCCN was acknowledged
    assert not net.endpoint.closing
    assert net.endpoint.tunnels == {}


# --- hidden AVPs ---------------------------------------------------------------------


def test_hidden_avps_both_ways() -> None:
    net = Network(make_endpoint(hide_avps=True), Lac(secret=SECRET, hide_avps=True))
    tunnel = establish(net)
    rng = random.Random(3)
    auth = proxy_chap(b"device-password", rng, name=b"device")
    call = net.lac.place_call(tunnel, ICCIDS[5], proxy_lcp=default_proxy_lcp(rng), proxy_auth=auth)
    net.advance(0.1)
    assert call.phase is Phase.ESTABLISHED

    def hidden(log: list[bytes], mtype: MessageType) -> set[int]:
        data = next(d for d in log if kind(d) == mtype)
        flags = avp_flags(control_header(data).payload)
        attributes = [a for a, h in flags if h]
        if attributes:  # section 4.3: the Random Vector comes before what it covers
            first_hidden = next(i for i, (_, h) in enumerate(flags) if h)
            assert AttributeType.RANDOM_VECTOR in [a for a, _ in flags[:first_hidden]]
        return set(attributes)

    assert AttributeType.CALLING_NUMBER in hidden(net.to_lns, MessageType.ICRQ)
    assert AttributeType.CHALLENGE_RESPONSE in hidden(net.to_lns, MessageType.SCCCN)
    assert {AttributeType.PROXY_AUTHEN_NAME, AttributeType.PROXY_AUTHEN_RESPONSE} <= hidden(
        net.to_lns, MessageType.ICCN
    )
    # Nothing of ours is hidden before the tunnel is established: it holds nothing the
    # hiding protects, and an SCCRP must stay as small as a LAC's SCCRQ (no reflection).
    assert hidden(net.to_lac, MessageType.SCCRP) == set()
    assert AttributeType.ASSIGNED_SESSION_ID in hidden(net.to_lac, MessageType.ICRP)

    [established] = net.of_type(CallEstablished)
    assert established.call.iccid == ICCIDS[5]
    assert established.call.proxy_auth is not None
    assert established.call.proxy_auth.name == b"device"
    assert established.call.proxy_auth.response == auth.response
    assert established.call.peer_session_id == call.session_id

    # ... and the tunnel still works both ways: a CDN from us, with a hidden session ID.
    net.endpoint.disconnect_call(
        tunnel.peer_tunnel_id,
        established.call.session_id,
        ResultCode(3, 0, "administrative"),
        "test",
        net.now,
    )
    net.advance(0.1)
    assert call.result is not None
    assert call.result.result == 3
    assert AttributeType.ASSIGNED_SESSION_ID in hidden(net.to_lac, MessageType.CDN)
    # Never hidden (section 4.4: Result Code, Host Name, Protocol Version ...)
    net.endpoint.close_tunnel(tunnel.peer_tunnel_id, ResultCode(1), "test", net.now)
    net.flush()
    assert AttributeType.ASSIGNED_TUNNEL_ID in hidden(net.to_lac, MessageType.StopCCN)
    assert AttributeType.RESULT_CODE not in hidden(net.to_lac, MessageType.StopCCN)


def test_half_open_tunnel_is_given_up_on_both_sides() -> None:
    # Our SCCRPs never arrive: the LAC retransmits its SCCRQ (acknowledged each time) and
    # we retransmit our SCCRP; both give up, and nothing keeps asking for a timer.
    net = Network(make_endpoint(), Lac(secret=SECRET))
    net.drop_to_lac = lambda data: True
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(100.0)
    assert tunnel.phase is Phase.CLOSED
    assert tunnel.failure == "the LNS stopped acknowledging"
    [closed] = net.of_type(TunnelClosed)
    assert not closed.by_peer
    assert net.endpoint.tunnels == {}
    assert net.endpoint.get_timer() is None
    assert net.lac.get_timer() is None
    assert [kind(d) for d in net.to_lns].count(MessageType.SCCRQ) == 6


def test_lac_without_a_secret_fails_our_challenge() -> None:
    net = Network(make_endpoint(), Lac(secret=None))
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.result is not None
    assert tunnel.result.result == StopCcnResult.NOT_AUTHORIZED
    assert "no Challenge Response" in tunnel.result.message
    assert net.endpoint.tunnels == {}


def test_lac_challenge_without_a_configured_secret_is_refused() -> None:
    net = Network(make_endpoint(secret=None, authenticate=False), Lac(secret=SECRET))
    tunnel = net.lac.open_tunnel(net.now)
    net.advance(0.1)
    assert tunnel.result is not None
    assert tunnel.result.result == StopCcnResult.NOT_AUTHORIZED
    assert not net.of_type(TunnelEstablished)
    assert net.endpoint.tunnels == {}
