"""The node-wide bound on session setups in progress (lns/l2tp/admission.py, issue 14).

An ICRQ beyond ``max_setups_in_progress`` is refused at once with a CDN, result 4
(temporary lack of facilities), "temporarily out of resources", while the same tunnel's
HELLO is still acknowledged; a setup counts from its ICRQ (a call waiting for its ICCN,
on any tunnel) until the layers above say it is up or failed (``elsewhere``).
"""

from __future__ import annotations

from lns.l2tp.avp import AttributeType, MessageType, ResultCode, make
from lns.l2tp.effects import CallEstablished, CallRefused
from lns.l2tp.header import ControlPacket, decode_packet
from lns.l2tp.message import ControlMessage, decode_message
from lns.l2tp.result import CdnResult, GeneralError
from lns.l2tp.tunnel import TunnelSettings
from lns.testing.l2tp_network import (
    SECRET,
    Network,
    RawPeer,
    establish_raw,
    icrq,
    make_endpoint,
    message_type,
)
from lns.testing.lacsim.lac import Lac

HELLO = ControlMessage(MessageType.HELLO)


def iccn() -> ControlMessage:
    return ControlMessage(
        MessageType.ICCN,
        (
            make(AttributeType.TX_CONNECT_SPEED, 100_000_000),
            make(AttributeType.FRAMING_TYPE, 1),
        ),
    )


class Rig:
    """An endpoint bounded at ``limit`` setups, two hand-played LAC tunnels, and the
    layers above's own count of setups in progress (``above``)."""

    def __init__(self, limit: int, **settings: object) -> None:
        self.above = 0
        self.endpoint = make_endpoint(max_setups_in_progress=limit, **settings)
        self.endpoint.admission.elsewhere = lambda: self.above
        self.net = Network(self.endpoint, Lac(secret=SECRET))
        self.first = establish_raw(self.net, ("192.0.2.11", 1701), peer_tunnel=77)
        self.second = establish_raw(self.net, ("192.0.2.12", 1701), peer_tunnel=78)
        self.ours: dict[int, int] = {}  # the peer's session ID -> ours, from the ICRPs

    def send(self, peer: RawPeer, message: ControlMessage, session_id: int = 0) -> list[object]:
        start = len(self.net.to_others)
        effects = peer.send(message, self.net.now, session_id)
        self.net.flush()
        fresh = self.net.to_others[start:]
        peer.take(fresh)
        for datagram in fresh:
            packet = decode_packet(datagram.data)
            if (
                isinstance(packet, ControlPacket)
                and message_type(datagram.data) == MessageType.ICRP
            ):
                reply = decode_message(packet.payload, SECRET)
                ours = reply.get(AttributeType.ASSIGNED_SESSION_ID)
                assert isinstance(ours, int)
                self.ours[packet.session_id] = ours
        return list(effects)

    def last_reply(self, peer: RawPeer) -> tuple[int | str, int, ResultCode | None]:
        """(message type, header session ID, Result Code) of what ``peer`` got last."""
        data = peer.received[-1]
        packet = decode_packet(data)
        assert isinstance(packet, ControlPacket)
        if packet.is_zlb:
            return ("ZLB", packet.session_id, None)
        result = decode_message(packet.payload, SECRET).get(AttributeType.RESULT_CODE)
        assert result is None or isinstance(result, ResultCode)
        return (message_type(data), packet.session_id, result)

    def acknowledged_all(self, peer: RawPeer) -> bool:
        """Our latest datagram to ``peer`` acknowledges every message it sent."""
        packet = decode_packet(peer.received[-1])
        assert isinstance(packet, ControlPacket)
        return packet.nr == peer.ns


def test_the_icrq_beyond_the_bound_gets_a_cdn_and_the_hello_behind_it_is_acknowledged() -> None:
    rig = Rig(limit=3)
    rig.send(rig.first, icrq(1))
    rig.send(rig.first, icrq(2))
    rig.send(rig.second, icrq(3))  # another tunnel: the bound is the node's
    assert rig.endpoint.admission.connecting == 3
    assert rig.endpoint.admission.in_progress == 3

    # The fourth ICRQ and a HELLO on the same tunnel, read together.
    effects = rig.first.send(icrq(4), rig.net.now)
    effects += rig.first.send(HELLO, rig.net.now)
    rig.net.flush()  # the same instant: no hold-off timer fires
    rig.first.take(rig.net.to_others)
    [refused] = [e for e in effects if isinstance(e, CallRefused)]
    cdn = next(d for d in reversed(rig.first.received) if message_type(d) == MessageType.CDN)
    packet = decode_packet(cdn)
    assert isinstance(packet, ControlPacket)
    assert packet.session_id == 4  # addressed to the LAC's session
    result = decode_message(packet.payload, SECRET).get(AttributeType.RESULT_CODE)
    assert result == refused.result
    assert result == ResultCode(
        CdnResult.TEMPORARY_LACK_OF_FACILITIES,
        GeneralError.INSUFFICIENT_RESOURCES,
        "temporarily out of resources: 3 session setups in progress, try again later",
    )
    assert rig.acknowledged_all(rig.first)  # the HELLO (and the ICRQ) acknowledged
    assert rig.endpoint.admission.refused == 1
    assert rig.endpoint.admission.connecting == 3  # the refused call holds nothing


def test_setups_count_until_the_layers_above_are_done_with_them() -> None:
    rig = Rig(limit=2)
    rig.send(rig.first, icrq(1))
    rig.send(rig.second, icrq(2))
    # Call 1 connects: it leaves L2TP's count and enters the layers above's.
    effects = rig.send(rig.first, iccn(), rig.ours[1])
    assert [type(e) for e in effects] == [CallEstablished]
    rig.above = 1
    assert rig.endpoint.admission.connecting == 1
    rig.send(rig.first, icrq(3))
    assert rig.last_reply(rig.first)[0] == MessageType.CDN
    rig.above = 0  # its session came up
    rig.send(rig.first, icrq(4))
    assert rig.last_reply(rig.first)[0] == MessageType.ICRP
    assert rig.endpoint.admission.connecting == 2
    assert rig.endpoint.admission.refused == 1


def test_calls_that_end_before_their_iccn_free_their_place() -> None:
    # Within our first retransmission timeout: the hand-played peers send no acks.
    rig = Rig(limit=3, connect_timeout=0.5)
    for session in (1, 2):
        rig.send(rig.first, icrq(session))
    rig.send(rig.second, icrq(3))
    # The LAC hangs up call 1, we clear call 2 (the layers above asked), and call 3
    # times out waiting for its ICCN.
    cdn = ControlMessage(
        MessageType.CDN,
        (
            make(AttributeType.RESULT_CODE, ResultCode(1)),
            make(AttributeType.ASSIGNED_SESSION_ID, 1),
        ),
    )
    rig.send(rig.first, cdn, rig.ours[1])
    assert rig.endpoint.admission.connecting == 2
    rig.endpoint.disconnect_call(
        rig.first.tunnel_id, rig.ours[2], ResultCode(3), "admin", rig.net.now
    )
    assert rig.endpoint.admission.connecting == 1
    rig.net.advance(0.6)
    assert rig.endpoint.admission.connecting == 0
    # A tunnel that goes takes its waiting calls' places with it.
    for session in (4, 5):
        rig.send(rig.second, icrq(session))
    assert rig.endpoint.admission.connecting == 2
    rig.send(
        rig.second,
        ControlMessage(
            MessageType.StopCCN,
            (
                make(AttributeType.ASSIGNED_TUNNEL_ID, 78),
                make(AttributeType.RESULT_CODE, ResultCode(1)),
            ),
        ),
    )
    assert rig.endpoint.admission.connecting == 0


def test_a_reload_changes_the_bound_at_once() -> None:
    rig = Rig(limit=1)
    rig.send(rig.first, icrq(1))
    rig.send(rig.first, icrq(2))
    assert rig.last_reply(rig.first)[0] == MessageType.CDN
    rig.endpoint.settings = TunnelSettings(max_setups_in_progress=5)
    rig.send(rig.first, icrq(3))  # an existing tunnel, the new bound
    assert rig.last_reply(rig.first)[0] == MessageType.ICRP
