"""The Dynamic Authorization server (RFC 5176), aaa/radius/dae.py.

This is a unit test of the DAE layer: the sessions are an in-memory fake
`SessionDirectory` (`FakeDirectory`), not the PPP adapter's, so what is shown here
is that requests are verified, matched, answered and counted, and that the
directory is called as its Protocol says; not that a real session goes down.

The requests travel over real UDP on 127.0.0.1: built with aaa/radius/packet.py
(and checked against pyrad-free authenticator arithmetic), and sent by the real
`radclient` of freeradius-utils, run as a child process of the reactor so that
the server keeps answering while radclient waits. Nothing sleeps: a request that
must be dropped is followed by one that must be answered, and the answer proves
that the dropped one was processed first (one socket, loopback, in order).
Every request carries an Event-Timestamp of the reactor's clock, as the server
requires by default; replay protection itself is tested on a fake clock in
tests/aaa/test_dae_replay.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass, field

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.utils import getProcessOutputAndValue

from aaa.radius import packet
from aaa.radius.dae import (
    DynamicAuthorizationServer,
    DynamicAuthorizationService,
    SessionMatch,
)
from aaa.radius.packet import Code, ErrorCause
from lns.config import DynauthClient, Secret
from lns.testing.config import ConfigBuilder
from lns.testing.dynauth import (
    SECRET,
    FakeDirectory,
    check_reply,
    make_directory,
)
from lns.testing.ports import free_udp_port

pytestmark = pytest.mark.integration

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


# --- UDP plumbing -----------------------------------------------------------------------


class Peer(DatagramProtocol):
    """A DAC's socket: collects replies, and fires a Deferred per awaited reply."""

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self._waiting: list[defer.Deferred[bytes]] = []

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.replies.append(datagram)
        if self._waiting:
            self._waiting.pop(0).callback(datagram)

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.write(data, ("127.0.0.1", port))

    def exchange(self, data: bytes, port: int) -> defer.Deferred[bytes]:
        waiting: defer.Deferred[bytes] = defer.Deferred()
        self._waiting.append(waiting)
        self.send(data, port)
        return waiting


@dataclass
class Running:
    server: DynamicAuthorizationServer
    directory: FakeDirectory
    port: int
    ports: list = field(default_factory=list)  # the server's and the peers' sockets

    def peer(self, source: str = "127.0.0.1") -> Peer:
        peer = Peer()
        self.ports.append(reactor.listenUDP(0, peer, interface=source))
        return peer


CLIENTS = (DynauthClient(LOOPBACK, Secret(SECRET)),)


def start_server(clients=CLIENTS, **kwargs) -> Running:
    directory = make_directory()
    server = DynamicAuthorizationServer(
        clients, directory, reactor, nas_identifier="lns-test", **kwargs
    )
    port = reactor.listenUDP(0, server, interface="127.0.0.1")
    running = Running(server, directory, port.getHost().port)
    running.ports.append(port)
    return running


@pytest.fixture
def dae():
    running = start_server()
    yield running
    for port in running.ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


@pytest.fixture
def lax_dae():
    running = start_server(require_message_authenticator=False, require_event_timestamp=False)
    yield running
    for port in running.ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def _stamped(attributes, timestamp):
    if timestamp is None:
        return attributes
    if timestamp == "now":
        timestamp = int(reactor.seconds())
    return (*attributes, ("Event-Timestamp", timestamp))


def disconnect(
    *attributes, identifier=1, secret=SECRET, signed=True, timestamp="now"
) -> packet.EncodedRequest:
    return packet.encode_dynauth_request(
        packet.disconnect_request(_stamped(attributes, timestamp)),
        identifier,
        secret,
        message_authenticator=signed,
    )


def coa(
    *attributes, identifier=1, secret=SECRET, signed=True, timestamp="now"
) -> packet.EncodedRequest:
    return packet.encode_dynauth_request(
        packet.coa_request(_stamped(attributes, timestamp)),
        identifier,
        secret,
        message_authenticator=signed,
    )


# --- packet.py: the codec of requests and replies ---------------------------------------


def test_request_authenticator_is_md5_over_zeroed_packet():
    request = disconnect(("Acct-Session-Id", "x"), identifier=9, signed=False)
    data = request.data
    assert data[0] == 40
    assert data[1] == 9
    assert data[4:20] == hashlib.md5(data[:4] + bytes(16) + data[20:] + SECRET).digest()
    decoded = packet.decode_dynauth_request(data, SECRET)
    assert decoded.code == Code.DISCONNECT_REQUEST
    assert decoded.first("Acct-Session-Id") == "x"
    assert not decoded.message_authenticator


def test_decode_refuses_other_secret_tampering_and_other_codes():
    request = coa(("User-Name", "u"), ("Session-Timeout", 60))
    assert packet.decode_dynauth_request(request.data, SECRET).message_authenticator
    with pytest.raises(packet.BadRequestAuthenticator):
        packet.decode_dynauth_request(request.data, b"another secret")
    tampered = bytearray(request.data)
    tampered[-1] ^= 1  # Session-Timeout 60 -> 61
    with pytest.raises(packet.BadRequestAuthenticator):
        packet.decode_dynauth_request(bytes(tampered), SECRET)
    # A wrong Message-Authenticator under a right Request Authenticator.
    forged = bytearray(request.data)
    forged[22] ^= 1
    forged[4:20] = hashlib.md5(bytes(forged[:4]) + bytes(16) + forged[20:] + SECRET).digest()
    with pytest.raises(packet.BadMessageAuthenticator):
        packet.decode_dynauth_request(bytes(forged), SECRET)
    unsigned = coa(("User-Name", "u"), signed=False)
    with pytest.raises(packet.MissingMessageAuthenticator):
        packet.decode_dynauth_request(unsigned.data, SECRET, require_message_authenticator=True)
    access = packet.encode_request(packet.status_server(), 1, SECRET)
    with pytest.raises(packet.RadiusPacketError):
        packet.decode_dynauth_request(access.data, SECRET)
    with pytest.raises(packet.RadiusPacketError):
        packet.decode_dynauth_request(b"\x28\x01\x00", SECRET)


def test_replies_are_signed_and_echo_proxy_state():
    request = disconnect(("Acct-Session-Id", "x"), ("Proxy-State", b"p1"), ("Proxy-State", b"p2"))
    decoded = packet.decode_dynauth_request(request.data, SECRET)
    assert decoded.proxy_state == (b"p1", b"p2")
    nak = packet.encode_dynauth_reply(
        decoded, SECRET, ack=False, error_cause=ErrorCause.SESSION_CONTEXT_NOT_FOUND
    )
    reply = check_reply(nak, request)
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == 503
    assert reply.values("Proxy-State") == (b"p1", b"p2")
    coa_request = packet.decode_dynauth_request(coa(("User-Name", "u")).data, SECRET)
    ack = packet.encode_dynauth_reply(coa_request, SECRET, ack=True)
    assert ack[0] == Code.COA_ACK


# --- the server over UDP ----------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_disconnect_ack_tears_down_the_matching_session(dae):
    request = disconnect(("Acct-Session-Id", "acct-alice"), ("NAS-Identifier", "lns-test"))
    data = yield dae.peer().exchange(request.data, dae.port)
    reply = check_reply(data, request)
    assert reply.code == Code.DISCONNECT_ACK
    assert reply.first("Error-Cause") is None
    assert [s.acct_session_id for s in dae.directory.disconnected] == ["acct-alice"]
    assert dae.directory.queries == [SessionMatch(acct_session_id="acct-alice")]
    assert dae.server.counters["acks"] == 1
    assert dae.server.counters["sessions_disconnected"] == 1


@pytest_twisted.inlineCallbacks
def test_disconnect_matches_every_attribute_given_and_every_session(dae):
    peer = dae.peer()
    # User-Name and Framed-IP-Address together: only CAROL_2.
    request = disconnect(
        ("User-Name", "carol"),
        ("Framed-IP-Address", ipaddress.IPv4Address("100.64.0.13")),
        identifier=1,
    )
    reply = check_reply((yield peer.exchange(request.data, dae.port)), request)
    assert reply.code == Code.DISCONNECT_ACK
    assert dae.directory.queries[-1] == SessionMatch(
        user_name="carol", framed_ip_address=ipaddress.IPv4Address("100.64.0.13")
    )
    assert [s.acct_session_id for s in dae.directory.disconnected] == ["acct-carol-2"]
    # Calling-Station-Id alone: the SIM's other session, CAROL_1, is the one left.
    request = disconnect(("Calling-Station-Id", "89440000000000000037"), identifier=2)
    reply = check_reply((yield peer.exchange(request.data, dae.port)), request)
    assert reply.code == Code.DISCONNECT_ACK
    assert [s.acct_session_id for s in dae.directory.disconnected] == [
        "acct-carol-2",
        "acct-carol-1",
    ]


@pytest_twisted.inlineCallbacks
def test_disconnect_of_two_sessions_at_once(dae):
    request = disconnect(("User-Name", "carol"))
    reply = check_reply((yield dae.peer().exchange(request.data, dae.port)), request)
    assert reply.code == Code.DISCONNECT_ACK
    assert len(dae.directory.disconnected) == 2
    assert dae.server.counters["sessions_disconnected"] == 2


@pytest_twisted.inlineCallbacks
def test_disconnect_unknown_session_is_nak_503(dae):
    request = disconnect(("Acct-Session-Id", "no-such-session"))
    reply = check_reply((yield dae.peer().exchange(request.data, dae.port)), request)
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == ErrorCause.SESSION_CONTEXT_NOT_FOUND
    assert dae.directory.disconnected == []
    assert dae.server.counters["naks"] == 1


@pytest_twisted.inlineCallbacks
def test_coa_changes_timeouts(dae):
    request = coa(("Acct-Session-Id", "acct-bob"), ("Session-Timeout", 120), ("Idle-Timeout", 30))
    reply = check_reply((yield dae.peer().exchange(request.data, dae.port)), request)
    assert reply.code == Code.COA_ACK
    [(session, session_timeout, idle_timeout)] = dae.directory.changed
    assert (session.acct_session_id, session_timeout, idle_timeout) == ("acct-bob", 120.0, 30.0)
    assert dae.directory.disconnected == []
    # Only one of the two: the other is None (unchanged).
    request = coa(("Acct-Session-Id", "acct-bob"), ("Idle-Timeout", 5), identifier=2)
    reply = check_reply((yield dae.peer().exchange(request.data, dae.port)), request)
    assert reply.code == Code.COA_ACK
    assert dae.directory.changed[-1][1:] == (None, 5.0)
    assert session.session_timeout == 120.0
    assert session.idle_timeout == 5.0


@pytest.mark.parametrize(
    ("request_", "cause"),
    [
        # No session matches.
        (lambda: coa(("User-Name", "nobody"), ("Session-Timeout", 60)), 503),
        # Something we cannot apply.
        (lambda: coa(("Acct-Session-Id", "acct-bob"), ("Filter-Id", "gold")), 401),
        # An identification we cannot match on (it would widen the match).
        (lambda: disconnect(("Acct-Session-Id", "acct-bob"), ("NAS-Port", 7)), 401),
        # Nothing to change.
        (lambda: coa(("Acct-Session-Id", "acct-bob")), 402),
        # Nothing that names a session.
        (lambda: disconnect(("NAS-Identifier", "lns-test")), 402),
        (lambda: coa(("Session-Timeout", 60)), 402),
        # Meant for another NAS.
        (lambda: disconnect(("Acct-Session-Id", "acct-bob"), ("NAS-Identifier", "lns-9")), 403),
        # Ambiguous.
        (lambda: disconnect(("User-Name", "carol"), ("User-Name", "bob")), 404),
    ],
)
@pytest_twisted.inlineCallbacks
def test_naks_with_error_cause(dae, request_, cause):
    request = request_()
    reply = check_reply((yield dae.peer().exchange(request.data, dae.port)), request)
    nak = Code.COA_NAK if request.code == Code.COA_REQUEST else Code.DISCONNECT_NAK
    assert reply.code == nak
    assert reply.integer("Error-Cause") == cause
    assert dae.directory.disconnected == []
    assert dae.directory.changed == []


@pytest_twisted.inlineCallbacks
def test_retransmission_answered_again_without_acting_twice(dae):
    peer = dae.peer()
    request = disconnect(("Acct-Session-Id", "acct-alice"), identifier=42)
    first = yield peer.exchange(request.data, dae.port)
    second = yield peer.exchange(request.data, dae.port)
    assert first == second
    assert check_reply(second, request).code == Code.DISCONNECT_ACK
    assert len(dae.directory.disconnected) == 1
    assert len(dae.directory.queries) == 1
    assert dae.server.counters["duplicates"] == 1
    # The same Identifier with a new authenticator is a new request: Alice is gone now.
    again = disconnect(
        ("Acct-Session-Id", "acct-alice"), identifier=42, timestamp=int(reactor.seconds()) + 1
    )
    reply = check_reply((yield peer.exchange(again.data, dae.port)), again)
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == 503


@pytest_twisted.inlineCallbacks
def test_other_secret_forgery_and_garbage_dropped_silently(dae):
    peer = dae.peer()
    peer.send(disconnect(("Acct-Session-Id", "acct-alice"), secret=b"wrong").data, dae.port)
    forged = bytearray(disconnect(("Acct-Session-Id", "acct-alice")).data)
    forged[22] ^= 1  # the Message-Authenticator
    forged[4:20] = hashlib.md5(bytes(forged[:4]) + bytes(16) + forged[20:] + SECRET).digest()
    peer.send(bytes(forged), dae.port)
    peer.send(b"\x28\x01\x00\x10garbage!!!!!", dae.port)
    peer.send(packet.encode_request(packet.status_server(), 3, SECRET).data, dae.port)
    # A good request after them: its answer is the only datagram that comes back.
    request = disconnect(("Acct-Session-Id", "acct-bob"), identifier=5)
    reply = check_reply((yield peer.exchange(request.data, dae.port)), request)
    assert reply.code == Code.DISCONNECT_ACK
    assert len(peer.replies) == 1
    counters = dae.server.counters
    assert counters["bad_authenticator"] == 1
    assert counters["bad_message_authenticator"] == 1
    assert counters["malformed"] == 2
    assert counters["received"] == 5
    assert [s.acct_session_id for s in dae.directory.disconnected] == ["acct-bob"]


@pytest_twisted.inlineCallbacks
def test_unknown_client_dropped_silently(dae):
    stranger = dae.peer("127.0.0.2")  # a source address that is no client
    stranger.send(disconnect(("Acct-Session-Id", "acct-alice")).data, dae.port)
    stranger.send(disconnect(("Acct-Session-Id", "acct-alice"), identifier=2).data, dae.port)
    request = disconnect(("Acct-Session-Id", "acct-bob"), identifier=3)
    yield dae.peer().exchange(request.data, dae.port)
    assert dae.server.counters["unknown_client"] == 2
    assert stranger.replies == []
    assert [s.acct_session_id for s in dae.directory.disconnected] == ["acct-bob"]


@pytest_twisted.inlineCallbacks
def test_message_authenticator_and_event_timestamp_required_by_default(dae):
    peer = dae.peer()
    unsigned = disconnect(("Acct-Session-Id", "acct-alice"), signed=False)
    reply = check_reply((yield peer.exchange(unsigned.data, dae.port)), unsigned)
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == ErrorCause.MISSING_ATTRIBUTE
    unstamped = disconnect(("Acct-Session-Id", "acct-alice"), identifier=2, timestamp=None)
    reply = check_reply((yield peer.exchange(unstamped.data, dae.port)), unstamped)
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == ErrorCause.MISSING_ATTRIBUTE
    assert dae.server.counters["missing_message_authenticator"] == 1
    assert dae.server.counters["missing_event_timestamp"] == 1
    assert dae.directory.disconnected == []
    assert dae.directory.queries == []  # refused before any session was looked up


@pytest_twisted.inlineCallbacks
def test_neither_required_when_configured_off(lax_dae):
    peer = lax_dae.peer()
    request = disconnect(("Acct-Session-Id", "acct-alice"), signed=False, timestamp=None)
    reply = check_reply((yield peer.exchange(request.data, lax_dae.port)), request)
    assert reply.code == Code.DISCONNECT_ACK
    assert [s.acct_session_id for s in lax_dae.directory.disconnected] == ["acct-alice"]


@pytest_twisted.inlineCallbacks
def test_directory_failure_is_a_nak_not_an_exception(dae):
    def broken(handle: object) -> None:
        raise RuntimeError("tunnel gone")

    dae.directory.disconnect = broken  # type: ignore[method-assign]
    request = disconnect(("Acct-Session-Id", "acct-alice"))
    reply = check_reply((yield dae.peer().exchange(request.data, dae.port)), request)
    assert reply.code == Code.DISCONNECT_NAK
    assert reply.integer("Error-Cause") == ErrorCause.SESSION_CONTEXT_NOT_REMOVABLE


def dynauth_config(port: int, client: str = "127.0.0.1", secret: bytes = SECRET, **dynauth):
    return (
        ConfigBuilder()
        .aaa(nas_identifier="lns-test")
        .dynauth(listen=f"127.0.0.1:{port}", **dynauth)
        .dynauth_client(address=client, secret=secret.decode())
        .config()
    )


def test_from_config_takes_the_protection_keys():
    config = dynauth_config(
        3799,
        require_message_authenticator=False,
        require_event_timestamp=False,
        event_timestamp_window=30,
    )
    svc = DynamicAuthorizationService.from_config(config, make_directory(), reactor)
    assert svc.server.require_message_authenticator is False
    assert svc.server.require_event_timestamp is False
    assert svc.server.event_timestamp_window == 30.0
    defaults = DynamicAuthorizationService.from_config(
        dynauth_config(3799), make_directory(), reactor
    )
    assert defaults.server.require_message_authenticator is True
    assert defaults.server.require_event_timestamp is True
    assert defaults.server.event_timestamp_window == 300.0


@pytest_twisted.inlineCallbacks
def test_service_listens_from_config_and_stops():
    port = free_udp_port()
    directory = make_directory()
    svc = DynamicAuthorizationService.from_config(dynauth_config(port), directory, reactor)
    svc.startService()
    try:
        assert svc.port is not None
        assert svc.port.getHost().port == port
        peer = Peer()
        peer_port = reactor.listenUDP(0, peer, interface="127.0.0.1")
        try:
            request = disconnect(("Acct-Session-Id", "acct-alice"))
            reply = check_reply((yield peer.exchange(request.data, port)), request)
            assert reply.code == Code.DISCONNECT_ACK
        finally:
            yield peer_port.stopListening()
    finally:
        yield svc.stopService()
    assert svc.port is None
    assert not svc.running


def test_from_config_without_dynauth_section():
    with pytest.raises(ValueError, match=r"\[aaa\.dynauth\]"):
        DynamicAuthorizationService.from_config(ConfigBuilder().config(), make_directory(), reactor)


# --- the real radclient -----------------------------------------------------------------


@pytest.fixture
def service(request):
    """A DynamicAuthorizationService from config; `request.param` is the client address."""
    client = getattr(request, "param", "127.0.0.1")
    port = free_udp_port()
    directory = make_directory()
    svc = DynamicAuthorizationService.from_config(dynauth_config(port, client), directory, reactor)
    svc.startService()
    yield svc, directory, port
    pytest_twisted.blockon(svc.stopService())


def run_radclient(
    radclient, tmp_path, port, command, lines, *, retries=3, signed=True, timestamp=True
):
    """radclient as a child of the reactor; fires with (output, exit code).

    The request carries an Event-Timestamp of now and a Message-Authenticator
    (radclient computes it for the line `Message-Authenticator = 0x00`) unless told not to.
    """
    lines = list(lines)
    if timestamp:
        lines.append(f"Event-Timestamp = {int(reactor.seconds())}")
    if signed:
        lines.append("Message-Authenticator = 0x00")
    request_file = tmp_path / f"{command}.txt"
    request_file.write_text("\n".join(lines) + "\n")
    args = ["-x", "-t", "1", "-r", str(retries), "-f", str(request_file)]
    args += [f"127.0.0.1:{port}", command, SECRET.decode()]
    done = getProcessOutputAndValue(radclient, args, reactor=reactor)
    return done.addCallback(lambda r: ((r[0] + r[1]).decode(errors="replace"), r[2]))


@pytest_twisted.inlineCallbacks
def test_radclient_disconnect_ack(radclient, service, tmp_path):
    svc, directory, port = service
    output, code = yield run_radclient(
        radclient, tmp_path, port, "disconnect", ['Acct-Session-Id = "acct-alice"']
    )
    assert "Disconnect-ACK" in output, output
    assert code == 0, output
    assert [s.acct_session_id for s in directory.disconnected] == ["acct-alice"]
    assert svc.counters["acks"] == 1


@pytest_twisted.inlineCallbacks
def test_radclient_disconnect_nak_unknown_session(radclient, service, tmp_path):
    svc, directory, port = service
    output, code = yield run_radclient(
        radclient,
        tmp_path,
        port,
        "disconnect",
        ['User-Name = "nobody"'],
    )
    assert "Disconnect-NAK" in output, output
    assert "Session-Context-Not-Found" in output, output
    assert code == 1, output  # radclient: "Expected Disconnect-ACK got Disconnect-NAK"
    assert directory.disconnected == []
    assert svc.counters["naks"] == 1


@pytest_twisted.inlineCallbacks
def test_radclient_coa_ack_changes_session_timeout(radclient, service, tmp_path):
    _svc, directory, port = service
    output, code = yield run_radclient(
        radclient,
        tmp_path,
        port,
        "coa",
        ['Calling-Station-Id = "89440000000000000029"', "Session-Timeout = 900"],
    )
    assert "CoA-ACK" in output, output
    assert code == 0, output
    [(session, session_timeout, idle_timeout)] = directory.changed
    assert session.acct_session_id == "acct-bob"
    assert (session_timeout, idle_timeout) == (900.0, None)


@pytest.mark.parametrize("required", [True, False])
@pytest_twisted.inlineCallbacks
def test_radclient_without_message_authenticator(radclient, tmp_path, required):
    """Refused with a NAK 402 when required (the default), acted on when not; a signed
    request from radclient (FreeRADIUS's own Message-Authenticator) is accepted either way."""
    port = free_udp_port()
    directory = make_directory()
    config = dynauth_config(port, require_message_authenticator=required)
    svc = DynamicAuthorizationService.from_config(config, directory, reactor)
    svc.startService()
    try:
        output, code = yield run_radclient(
            radclient,
            tmp_path,
            port,
            "disconnect",
            ['Acct-Session-Id = "acct-alice"'],
            signed=False,
        )
        if required:
            assert "Disconnect-NAK" in output, output
            assert "Missing-Attribute" in output, output
            assert code != 0, output
        else:
            assert "Disconnect-ACK" in output, output
            assert code == 0, output
        output, code = yield run_radclient(
            radclient, tmp_path, port, "disconnect", ['Acct-Session-Id = "acct-bob"']
        )
        assert "Disconnect-ACK" in output, output
        assert code == 0, output
    finally:
        yield svc.stopService()
    expected = ["acct-bob"] if required else ["acct-alice", "acct-bob"]
    assert [s.acct_session_id for s in directory.disconnected] == expected
    assert svc.counters["missing_message_authenticator"] == (1 if required else 0)


@pytest.mark.parametrize("service", ["127.0.0.2"], indirect=True)
@pytest_twisted.inlineCallbacks
def test_radclient_unknown_client_ignored(radclient, service, tmp_path):
    svc, directory, port = service
    output, code = yield run_radclient(
        radclient, tmp_path, port, "disconnect", ['Acct-Session-Id = "acct-alice"'], retries=1
    )
    assert code != 0, output
    assert "No reply" in output or "timed out" in output.lower(), output
    assert "Disconnect-ACK" not in output
    assert "Disconnect-NAK" not in output
    assert directory.disconnected == []
    assert svc.counters["unknown_client"] >= 1
    assert svc.counters["acks"] == svc.counters["naks"] == 0


def test_error_cause_wire_value():
    # Error-Cause is a 4-octet integer (RFC 5176 section 3.5).
    decoded = packet.decode_dynauth_request(disconnect(("User-Name", "u")).data, SECRET)
    nak = packet.encode_dynauth_reply(decoded, SECRET, ack=False, error_cause=ErrorCause(402))
    assert struct.pack("!BBI", 101, 6, 402) in nak
