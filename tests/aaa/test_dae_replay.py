"""Replay protection of the Dynamic Authorization server (RFC 5176 section 6.3), on a
fake clock: Event-Timestamp window, requests remembered by content (not by source
port), Message-Authenticator and Event-Timestamp required.

The server is the real `DynamicAuthorizationServer` on an in-memory UDP port of a
`task.Clock` (lns.testing.radius_fakes); the sessions are a `FakeDirectory`
(lns.testing.dynauth).
Requests are built with aaa/radius/packet.py and replies checked with the client
side's own verification (`check_reply`).
"""

from __future__ import annotations

import ipaddress

import pytest
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from aaa.radius import packet
from aaa.radius.dae import DynamicAuthorizationServer
from aaa.radius.packet import Code, ErrorCause
from lns.config import DynauthClient, Secret
from lns.testing.dynauth import SECRET, check_reply, make_directory
from lns.testing.radius_fakes import FakeUdpReactor

NOW = 1_796_000_000.0  # a Unix time in 2026: the clock's start
WINDOW = 300.0
DAC = ("127.0.0.1", 40001)
DAC_OTHER_PORT = ("127.0.0.1", 40002)


class Dae:
    """A server on a fake clock, and what it sent back."""

    def __init__(self, **kwargs) -> None:
        self.clock = FakeUdpReactor()
        self.clock.advance(NOW)
        self.directory = make_directory()
        self.server = DynamicAuthorizationServer(
            (DynauthClient(ipaddress.ip_address("127.0.0.1"), Secret(SECRET)),),
            self.directory,
            self.clock,
            nas_identifier="lns-test",
            event_timestamp_window=WINDOW,
            **kwargs,
        )
        self.port = self.clock.listenUDP(3799, self.server)

    def send(self, request: packet.EncodedRequest, source=DAC) -> packet.Reply | None:
        """Deliver `request`; its reply (checked), or None when it was dropped."""
        self.port.deliver(request.data, source)
        sent = self.clock.take()
        if not sent:
            return None
        [reply] = sent
        assert reply.address == source
        return check_reply(reply.data, request)

    @property
    def disconnected(self) -> list[str]:
        return [s.acct_session_id for s in self.directory.disconnected]


def disconnect(*attributes, timestamp: float | None = NOW, identifier=1, signed=True):
    if timestamp is not None:
        attributes = (*attributes, ("Event-Timestamp", int(timestamp)))
    return packet.encode_dynauth_request(
        packet.disconnect_request(attributes), identifier, SECRET, message_authenticator=signed
    )


@pytest.fixture
def dae() -> Dae:
    return Dae()


@pytest.fixture
def warnings():
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(e) for e in events if e["log_level"].name == "warn"]
    globalLogPublisher.removeObserver(events.append)


# --- Event-Timestamp window ---------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [
        -(25 * 365 * 86400),  # the year 2000 or so: issue 12's captured packet
        10 * 365 * 86400,  # ten years ahead
        -(WINDOW + 1),
        WINDOW + 1,
    ],
)
def test_timestamp_outside_the_window_is_dropped_unanswered(dae, warnings, offset):
    # RFC 5176 section 6.3: "If the Event-Timestamp Attribute is not current, then
    # the packet MUST be silently discarded." No NAK: nothing goes back.
    assert dae.send(disconnect(("Acct-Session-Id", "acct-alice"), timestamp=NOW + offset)) is None
    assert dae.disconnected == []
    assert dae.directory.queries == []
    assert dae.server.counters["stale_timestamp"] == 1
    assert dae.server.counters["acks"] == dae.server.counters["naks"] == 0
    [line] = warnings()
    assert "Event-Timestamp" in line
    assert f"{offset:+.0f} s from our clock" in line


@pytest.mark.parametrize("offset", [-WINDOW, 0, WINDOW])
def test_timestamp_inside_the_window_is_acted_on(dae, offset):
    reply = dae.send(disconnect(("Acct-Session-Id", "acct-alice"), timestamp=NOW + offset))
    assert reply is not None
    assert reply.code == Code.DISCONNECT_ACK
    assert dae.disconnected == ["acct-alice"]


def test_timestamp_given_twice_is_nak_404(dae):
    request = disconnect(("Acct-Session-Id", "acct-alice"), ("Event-Timestamp", int(NOW)))
    reply = dae.send(request)
    assert reply is not None
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == ErrorCause.INVALID_REQUEST
    assert dae.disconnected == []


def test_missing_timestamp_is_nak_402_unless_not_required(dae):
    reply = dae.send(disconnect(("Acct-Session-Id", "acct-alice"), timestamp=None))
    assert reply is not None
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == ErrorCause.MISSING_ATTRIBUTE
    assert dae.server.counters["missing_event_timestamp"] == 1
    assert dae.disconnected == []

    lax = Dae(require_event_timestamp=False)
    reply = lax.send(disconnect(("Acct-Session-Id", "acct-alice"), timestamp=None))
    assert reply is not None
    assert reply.code == Code.DISCONNECT_ACK
    assert lax.disconnected == ["acct-alice"]


# --- Message-Authenticator ------------------------------------------------------------------


def test_missing_message_authenticator_is_nak_402_unless_not_required(dae):
    reply = dae.send(disconnect(("Acct-Session-Id", "acct-alice"), signed=False))
    assert reply is not None
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == ErrorCause.MISSING_ATTRIBUTE
    assert reply.message_authenticator  # our NAK is signed all the same
    assert dae.server.counters["missing_message_authenticator"] == 1
    assert dae.disconnected == []

    lax = Dae(require_message_authenticator=False)
    reply = lax.send(disconnect(("Acct-Session-Id", "acct-alice"), signed=False))
    assert reply is not None
    assert reply.code == Code.DISCONNECT_ACK


def test_wrong_message_authenticator_is_dropped_even_when_not_required():
    lax = Dae(require_message_authenticator=False)
    data = bytearray(disconnect(("Acct-Session-Id", "acct-alice")).data)
    data[22] ^= 1  # the Message-Authenticator's value: the Request Authenticator no longer fits
    lax.port.deliver(bytes(data), DAC)
    assert lax.clock.take() == []
    assert (
        lax.server.counters["bad_authenticator"] + lax.server.counters["bad_message_authenticator"]
        == 1
    )
    assert lax.disconnected == []


# --- Replays and retransmissions ----------------------------------------------------------


def test_replay_from_another_port_does_not_disconnect_the_new_session(dae, warnings):
    """Issue 12's attack: a captured Disconnect-Request replayed from a new source port
    6 s later, when the SIM has a new session matched by the same attributes."""
    request = disconnect(("Calling-Station-Id", "89440000000000000029"))
    reply = dae.send(request)
    assert reply is not None
    assert reply.code == Code.DISCONNECT_ACK
    assert dae.disconnected == ["acct-bob"]
    # The SIM attaches again: a new session with the same ICCID.
    dae.directory.sessions.append(
        type(dae.directory.disconnected[0])(
            "acct-bob-2",
            "89440000000000000029",
            "89440000000000000029",
            ipaddress.IPv4Address("100.64.0.11"),
        )
    )
    dae.clock.advance(6)
    assert dae.send(request, source=DAC_OTHER_PORT) is None  # dropped, unanswered
    assert dae.disconnected == ["acct-bob"]
    assert dae.server.counters["replays"] == 1
    assert len(dae.directory.queries) == 1  # the replay never reached the sessions
    assert any("already answered to 127.0.0.1:40001" in line for line in warnings())
    # Later in the window, and at its very end: still a replay.
    dae.clock.advance(WINDOW - 6)
    assert dae.send(request, source=("127.0.0.1", 40003)) is None
    assert dae.server.counters["replays"] == 2
    # After it, the request is forgotten, and its timestamp is stale.
    dae.clock.advance(1)
    assert dae.send(request, source=("127.0.0.1", 40004)) is None
    assert dae.server.counters["stale_timestamp"] == 1
    assert dae.disconnected == ["acct-bob"]
    assert dae.server.remembered == 0


def test_replay_with_a_future_timestamp_is_remembered_until_it_is_stale(dae):
    # A DAC whose clock runs ahead by the whole window: its request is current, and
    # must be remembered until its timestamp leaves the window, 2 x WINDOW from now.
    request = disconnect(("Acct-Session-Id", "acct-alice"), timestamp=NOW + WINDOW)
    assert dae.send(request).code == Code.DISCONNECT_ACK
    dae.clock.advance(2 * WINDOW)
    assert dae.send(request, source=DAC_OTHER_PORT) is None
    assert dae.server.counters["replays"] == 1
    dae.clock.advance(1)
    assert dae.send(request, source=DAC_OTHER_PORT) is None
    assert dae.server.counters["stale_timestamp"] == 1
    assert dae.disconnected == ["acct-alice"]


def test_retransmission_from_the_same_port_gets_the_first_answer_again(dae):
    # RFC 5176 section 2.3 / RFC 5080 section 2.2.2: same source, Identifier and
    # authenticator: answered again, not acted on twice.
    request = disconnect(("Acct-Session-Id", "acct-alice"), identifier=7)
    first = dae.send(request)
    dae.clock.advance(3)
    second = dae.send(request)
    assert first is not None
    assert second is not None
    assert (first.code, second.code) == (Code.DISCONNECT_ACK, Code.DISCONNECT_ACK)
    assert dae.disconnected == ["acct-alice"]
    assert dae.server.counters["duplicates"] == 1
    assert len(dae.directory.queries) == 1


def test_a_nak_is_remembered_too(dae):
    # A request refused for want of a Message-Authenticator stays refused: its
    # retransmission gets the same NAK, its replay nothing.
    request = disconnect(("Acct-Session-Id", "acct-alice"), signed=False)
    assert dae.send(request).integer("Error-Cause") == ErrorCause.MISSING_ATTRIBUTE
    assert dae.send(request).integer("Error-Cause") == ErrorCause.MISSING_ATTRIBUTE
    assert dae.send(request, source=DAC_OTHER_PORT) is None
    assert dae.server.counters["naks"] == 1
    assert dae.server.counters["duplicates"] == 1
    assert dae.server.counters["replays"] == 1


def test_same_attributes_new_timestamp_is_a_new_request(dae):
    # What a DAC sends anew (not a retransmission) carries a new Event-Timestamp,
    # hence new bytes: it is acted on.
    assert dae.send(disconnect(("User-Name", "carol"))).code == Code.DISCONNECT_ACK
    assert dae.disconnected == ["acct-carol-1", "acct-carol-2"]
    dae.clock.advance(1)
    reply = dae.send(disconnect(("User-Name", "carol"), timestamp=NOW + 1))
    assert reply.code == Code.DISCONNECT_NAK  # no session left: acted on, and found none
    assert reply.integer("Error-Cause") == ErrorCause.SESSION_CONTEXT_NOT_FOUND


def test_memory_is_bounded_and_full_means_nak_506():
    dae = Dae(max_remembered=3)
    for n in range(3):
        request = disconnect(("Acct-Session-Id", f"gone-{n}"), identifier=n)
        assert dae.send(request).integer("Error-Cause") == ErrorCause.SESSION_CONTEXT_NOT_FOUND
    assert dae.server.remembered == 3
    # A fourth request inside the window cannot be remembered: refused, not acted on.
    fourth = disconnect(("Acct-Session-Id", "acct-alice"), identifier=3)
    reply = dae.send(fourth)
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == ErrorCause.RESOURCES_UNAVAILABLE
    assert dae.disconnected == []
    assert dae.server.counters["memory_full"] == 1
    # Once the first three left the window, there is room again.
    dae.clock.advance(WINDOW + 1)
    fresh = disconnect(("Acct-Session-Id", "acct-alice"), identifier=4, timestamp=NOW + WINDOW + 1)
    assert dae.send(fresh).code == Code.DISCONNECT_ACK
    assert dae.server.remembered == 1
    assert dae.disconnected == ["acct-alice"]
