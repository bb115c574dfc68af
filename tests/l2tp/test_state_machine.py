"""Every tunnel state x every control message type has a defined outcome.

After h2's ``test/test_state_machines.py``: for each TunnelState reachable
from IDLE (and ESTABLISHED with a call waiting or up) and each message type
(known or not), feeding a decoded message to a ControlConnection either runs
a transition from ``_TUNNEL_TRANSITIONS`` or yields a defined outcome
(PacketDropped, or a StopCCN/CDN queued for the peer), is acknowledged, and
never raises. RFC 2661 section 7 (the control connection states) and
section 4.1 (unknown mandatory AVPs).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lns.l2tp.avp import (
    Accm,
    AttributeType,
    Avp,
    CallErrors,
    MessageType,
    ResultCode,
    make,
)
from lns.l2tp.control import UnusableMessage, parse
from lns.l2tp.effects import Effect, PacketDropped
from lns.l2tp.header import ControlPacket, decode_packet
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.tunnel import (
    _TUNNEL_TRANSITIONS,
    ControlConnection,
    LacPeer,
    TunnelSettings,
    TunnelState,
    challenge_response,
)

SECRET = b"tunnel-secret"
PEER = ("192.0.2.10", 1701)
PEER_TUNNEL = 4711
ICCID = "8944500102198304826"
UNKNOWN_SESSION = 4242

# A typical message of every type, with the AVPs RFC 2661 section 6 lists for it.
MESSAGES: dict[int, tuple[Avp, ...]] = {
    MessageType.SCCRQ: (
        make(AttributeType.PROTOCOL_VERSION, 0x0100),
        make(AttributeType.HOST_NAME, "lac1"),
        make(AttributeType.FRAMING_CAPABILITIES, 3),
        make(AttributeType.ASSIGNED_TUNNEL_ID, PEER_TUNNEL),
        make(AttributeType.RECEIVE_WINDOW_SIZE, 8),
        make(AttributeType.CHALLENGE, b"0123456789abcdef"),
        # As a LAC's SCCRQ is, larger than our SCCRP: an unproven peer gets no more
        # bytes than it sent (lns.l2tp.tunnel).
        make(AttributeType.TIE_BREAKER, b"tiebreak"),
        make(AttributeType.VENDOR_NAME, "Example LAC Vendor Inc."),
    ),
    MessageType.SCCRP: (
        make(AttributeType.PROTOCOL_VERSION, 0x0100),
        make(AttributeType.HOST_NAME, "lac1"),
        make(AttributeType.FRAMING_CAPABILITIES, 3),
        make(AttributeType.ASSIGNED_TUNNEL_ID, PEER_TUNNEL),
    ),
    MessageType.SCCCN: (make(AttributeType.CHALLENGE_RESPONSE, bytes(16)),),
    MessageType.StopCCN: (
        make(AttributeType.ASSIGNED_TUNNEL_ID, PEER_TUNNEL),
        make(AttributeType.RESULT_CODE, ResultCode(1)),
    ),
    MessageType.HELLO: (),
    MessageType.OCRQ: (
        make(AttributeType.ASSIGNED_SESSION_ID, 77),
        make(AttributeType.CALL_SERIAL_NUMBER, 1),
        make(AttributeType.MINIMUM_BPS, 9600),
        make(AttributeType.MAXIMUM_BPS, 100000),
        make(AttributeType.BEARER_TYPE, 3),
        make(AttributeType.FRAMING_TYPE, 3),
        make(AttributeType.CALLED_NUMBER, "123"),
    ),
    MessageType.OCRP: (make(AttributeType.ASSIGNED_SESSION_ID, 77),),
    MessageType.OCCN: (
        make(AttributeType.TX_CONNECT_SPEED, 100000),
        make(AttributeType.FRAMING_TYPE, 1),
    ),
    MessageType.ICRQ: (
        make(AttributeType.ASSIGNED_SESSION_ID, 78),
        make(AttributeType.CALL_SERIAL_NUMBER, 2),
        make(AttributeType.CALLING_NUMBER, "89445001021983048270"),
        make(AttributeType.CALLED_NUMBER, "iot.example"),
    ),
    MessageType.ICRP: (make(AttributeType.ASSIGNED_SESSION_ID, 78),),
    MessageType.ICCN: (
        make(AttributeType.TX_CONNECT_SPEED, 100000),
        make(AttributeType.FRAMING_TYPE, 1),
        make(AttributeType.PROXY_AUTHEN_TYPE, 2),
    ),
    MessageType.CDN: (
        make(AttributeType.RESULT_CODE, ResultCode(1)),
        make(AttributeType.ASSIGNED_SESSION_ID, 78),
    ),
    MessageType.WEN: (make(AttributeType.CALL_ERRORS, CallErrors(0, 1, 2, 3, 4, 5)),),
    MessageType.SLI: (make(AttributeType.ACCM, Accm(0, 0xFFFFFFFF)),),
}
UNKNOWN_TYPES = (0, 5, 13, 99, 0xFFFF)  # reserved or unassigned message types
ALL_TYPES: list[int] = [*MessageType, *UNKNOWN_TYPES]


class Peer:
    """The LAC's half of a ControlConnection under test: numbers and feeds messages."""

    def __init__(self, conn: ControlConnection) -> None:
        self.conn = conn
        self.ns = 0
        self.nr = 0
        self.now = 0.0
        self.call_session: int | None = None  # our session ID of the call, when there is one

    def feed(self, message: ControlMessage, session_id: int = 0) -> list[Effect]:
        payload = encode_message(message, SECRET)
        packet = ControlPacket(self.conn.tunnel_id, session_id, self.ns, self.nr, payload)
        self.ns = (self.ns + 1) % 65536
        return self.conn.receive(packet, self.now)

    def sent(self, acknowledge: bool = True) -> list[tuple[ControlPacket, ControlMessage]]:
        """What the connection sends now (acknowledged by what we feed next, as a LAC would)."""
        out = []
        for data in self.conn.datagrams_to_send(self.now):
            packet = decode_packet(data)
            assert isinstance(packet, ControlPacket)
            if packet.payload:
                out.append((packet, decode_message(packet.payload, SECRET)))
                if acknowledge:
                    self.nr = (packet.ns + 1) % 65536
        return out

    def ack(self) -> list[Effect]:
        packet = ControlPacket(self.conn.tunnel_id, 0, self.ns, self.nr)
        return self.conn.receive(packet, self.now)


def _idle() -> Peer:
    conn = ControlConnection(
        1234, PEER, LacPeer("op-a", SECRET, True), TunnelSettings(), random.Random(5), 0.0
    )
    return Peer(conn)


def _wait_ctl_conn() -> Peer:
    peer = _idle()
    peer.feed(ControlMessage(MessageType.SCCRQ, MESSAGES[MessageType.SCCRQ]))
    return peer


def _established() -> Peer:
    peer = _wait_ctl_conn()
    [(_, sccrp)] = peer.sent()
    challenge = sccrp.get(AttributeType.CHALLENGE)
    assert isinstance(challenge, bytes)
    response = challenge_response(3, SECRET, challenge)
    peer.feed(
        ControlMessage(MessageType.SCCCN, (make(AttributeType.CHALLENGE_RESPONSE, response),))
    )
    peer.ack()
    assert peer.conn.state is TunnelState.ESTABLISHED
    return peer


def _call_waiting() -> Peer:
    peer = _established()
    icrq = ControlMessage(
        MessageType.ICRQ,
        (
            make(AttributeType.ASSIGNED_SESSION_ID, 9),
            make(AttributeType.CALL_SERIAL_NUMBER, 1),
            make(AttributeType.CALLING_NUMBER, ICCID),
        ),
    )
    peer.feed(icrq)
    [(_, icrp)] = peer.sent()
    session = icrp.get(AttributeType.ASSIGNED_SESSION_ID)
    assert isinstance(session, int)
    peer.call_session = session
    peer.ack()
    return peer


def _call_up() -> Peer:
    peer = _call_waiting()
    assert peer.call_session is not None
    peer.feed(ControlMessage(MessageType.ICCN, MESSAGES[MessageType.ICCN]), peer.call_session)
    return peer


def _closing() -> Peer:
    peer = _call_up()
    peer.conn.close(ResultCode(1), peer.now)
    peer.sent(acknowledge=False)  # the StopCCN is out, not yet acknowledged
    assert peer.conn.state is TunnelState.CLOSING
    return peer


def _closed_by_peer() -> Peer:
    peer = _call_up()
    peer.feed(ControlMessage(MessageType.StopCCN, MESSAGES[MessageType.StopCCN]))
    peer.sent()
    assert peer.conn.state is TunnelState.CLOSED
    return peer


def _closed_after_ack() -> Peer:
    peer = _closing()
    peer.nr = peer.conn.channel.next_ns
    peer.ack()
    assert peer.conn.state is TunnelState.CLOSED
    return peer


def _closed_after_failure() -> Peer:
    peer = _established()
    peer.conn.close(ResultCode(1), 0.0)
    peer.sent()
    for _ in range(10):
        deadline = peer.conn.get_timer()
        assert deadline is not None
        peer.now = deadline
        peer.conn.handle_timer(deadline)
        peer.conn.datagrams_to_send(deadline)
        if peer.conn.state is TunnelState.CLOSED:
            return peer
    raise AssertionError("the StopCCN was never given up")


SCENARIOS: dict[str, Callable[[], Peer]] = {
    "idle": _idle,
    "wait-ctl-conn": _wait_ctl_conn,
    "established": _established,
    "established-call-waiting": _call_waiting,
    "established-call-up": _call_up,
    "closing": _closing,
    "closed-by-peer": _closed_by_peer,
    "closed-after-ack": _closed_after_ack,
    "closed-after-failure": _closed_after_failure,
}


def test_every_tunnel_state_is_reached() -> None:
    reached = {factory().conn.state for factory in SCENARIOS.values()}
    assert reached == set(TunnelState)


def check_outcome(peer: Peer, message: ControlMessage, session_id: int) -> None:
    conn = peer.conn
    before = conn.state
    nr_before = conn.channel.next_nr
    effects = peer.feed(message, session_id)
    sent = [m.message_type for _, m in peer.sent()]

    # Whatever the outcome, the message was taken and will be acknowledged (section 5.8).
    assert conn.channel.next_nr == (nr_before + 1) % 65536
    assert conn.state in set(TunnelState)
    mtype = message.message_type
    if before in (TunnelState.CLOSING, TunnelState.CLOSED):
        assert effects == []  # only acknowledged while the tunnel winds down
        assert sent == []
        # Its Nr may acknowledge our StopCCN, which ends CLOSING; nothing else moves.
        assert conn.state in (before, TunnelState.CLOSED)
        return
    try:
        record = parse(decode_message(encode_message(message, SECRET), SECRET))
    except UnusableMessage:
        record = None
    if record is not None and (before, type(record)) in _TUNNEL_TRANSITIONS:
        return  # a transition ran; its own tests say what it does
    dropped = [e for e in effects if isinstance(e, PacketDropped)]
    # Before the SCCCN a StopCCN may be queued but withheld (no more bytes to an
    # unproven peer than it sent): CLOSING says it is on its way.
    answered = (
        MessageType.StopCCN in sent or MessageType.CDN in sent or conn.state is TunnelState.CLOSING
    )
    assert dropped or answered, (before, mtype, effects, sent)
    if MessageType.StopCCN in sent:
        assert conn.state is TunnelState.CLOSING


def session_ids(peer: Peer) -> list[int]:
    return [0, UNKNOWN_SESSION] + ([peer.call_session] if peer.call_session else [])


@pytest.mark.parametrize("mtype", ALL_TYPES, ids=[str(t) for t in ALL_TYPES])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_state_and_message_type_has_a_defined_outcome(scenario: str, mtype: int) -> None:
    for session_id in session_ids(SCENARIOS[scenario]()):
        peer = SCENARIOS[scenario]()  # a fresh connection for every case
        known = MessageType(mtype) if mtype in MessageType._value2member_map_ else mtype
        avps = MESSAGES.get(mtype, ())
        check_outcome(peer, ControlMessage(known, avps), session_id)


_EXTRA_AVPS = st.lists(
    st.builds(
        Avp,
        attribute=st.sampled_from([40, 99, 1000]),
        value=st.binary(max_size=8),
        mandatory=st.booleans(),
        hidden=st.just(False),
        vendor=st.sampled_from([0, 9]),
    ),
    max_size=2,
)


@settings(max_examples=400, deadline=None)
@given(
    scenario=st.sampled_from(list(SCENARIOS)),
    mtype=st.sampled_from(ALL_TYPES),
    session_choice=st.integers(min_value=0, max_value=2),
    keep=st.lists(st.booleans(), min_size=8, max_size=8),
    extra=_EXTRA_AVPS,
    again=st.booleans(),
)
def test_partial_and_unknown_avps_never_raise(
    scenario: str,
    mtype: int,
    session_choice: int,
    keep: list[bool],
    extra: list[Avp],
    again: bool,
) -> None:
    """The typical message with AVPs left out, unknown ones added (with and without M)."""
    peer = SCENARIOS[scenario]()
    choices = session_ids(peer)
    session_id = choices[session_choice % len(choices)]
    known = MessageType(mtype) if mtype in MessageType._value2member_map_ else mtype
    avps = [
        avp
        for avp, kept in zip(MESSAGES.get(mtype, ()), keep, strict=False)
        # The endpoint only creates a connection for an SCCRQ with an Assigned Tunnel ID.
        if kept
        or (mtype == MessageType.SCCRQ and avp.attribute == AttributeType.ASSIGNED_TUNNEL_ID)
    ]
    message = ControlMessage(known, (*avps, *extra))
    check_outcome(peer, message, session_id)
    if again:  # and whatever state that left, the next message too
        check_outcome(peer, ControlMessage(MessageType.HELLO), 0)
    # Timers keep working in every state reached.
    deadline = peer.conn.get_timer()
    if deadline is not None:
        peer.conn.handle_timer(deadline)
        peer.conn.datagrams_to_send(deadline)
