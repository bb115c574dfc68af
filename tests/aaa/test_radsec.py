"""RadSec (RFC 6614) in the RADIUS client, on a fake clock with TLS in memory.

The client's connection is real TLS (OpenSSL through Twisted's TLSMemoryBIOProtocol),
pumped in memory by `twisted.test.iosim` to a server end written here: TLS with a
certificate of a throw-away CA (tests/aaa/pki.py, made with `openssl`), requiring
our client certificate, and a RADIUS side that splits the stream by Length and
answers with pyrad (tests/aaa/fakes.py). The reactor is a `MemoryReactorClock`:
`connectTCP` is recorded, and the test decides whether it connects, is refused,
or hangs. So every rule of aaa/radius/radsec.py is driven step by step: framing,
Identifiers per connection, no retransmission, keepalive and watchdog, reconnection
and backoff, requests carried over to the next connection, failover to UDP, and
each certificate refusal with its log line.

The proof against a real server is tests/aaa/test_radsec_freeradius.py.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field

import pytest
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError, UserError
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from aaa.radius.client import RadiusClient, RadiusUnavailable
from aaa.radius.packet import Code, Reply, access_request, accounting_request
from aaa.radius.radsec import RadsecServerPort
from lns.config import RadiusServer, Secret
from lns.testing.pki import CertificateAuthority, Issued
from lns.testing.radius_fakes import FakeUdpPort, Sent, parse_request, reply_bytes

RADSEC = b"radsec"
TIMEOUT = 3.0
KEEPALIVE = 30.0
DEAD_TIME = 30.0


# --- certificates -------------------------------------------------------------------------


@dataclass
class Pki:
    ca: CertificateAuthority
    other: CertificateAuthority
    server: Issued
    expired: Issued
    future: Issued
    foreign: Issued
    not_for_servers: Issued
    client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    base = tmp_path_factory.mktemp("radsec-pki")
    ca = CertificateAuthority(base / "ca")
    other = CertificateAuthority(base / "other", name="other CA")
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    names = {"dns": ["radius.test"], "ips": ["127.0.0.1"]}
    return Pki(
        ca=ca,
        other=other,
        server=ca.issue("radius.test", **names),
        expired=ca.issue("expired", **names, not_before=now - 10 * day, not_after=now - day),
        future=ca.issue("future", **names, not_before=now + day, not_after=now + 10 * day),
        foreign=other.issue("radius.test", **names),
        not_for_servers=ca.issue("client-only", **names, client=True),
        client=ca.issue("lns.test", client=True),
    )


def radsec_server(pki: Pki, **kwargs) -> RadiusServer:
    settings = {
        "address": ipaddress.ip_address("127.0.0.1"),
        "secret": Secret(RADSEC),
        "transport": "tls",
        "port": 2083,
        "ca": str(pki.ca.cert),
        "cert": str(pki.client.cert),
        "key": str(pki.client.key),
        "server_name": "radius.test",
        "timeout": TIMEOUT,
        "keepalive_interval": KEEPALIVE,
    }
    settings.update(kwargs)
    return RadiusServer(**settings)


UDP_SERVER = RadiusServer(
    address=ipaddress.ip_address("127.0.0.2"),
    secret=Secret("udp-secret"),
    timeout=2.0,
    retries=1,
)


# --- the reactor and the server end --------------------------------------------------------


@implementer(IReactorUDP)
class Reactor(MemoryReactorClock):
    """TCP connections recorded (MemoryReactor), UDP sockets in memory, a fake clock."""

    def __init__(self) -> None:
        super().__init__()
        self.udp_ports: list[FakeUdpPort] = []
        self.sent: list[Sent] = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        fake = FakeUdpPort(self, protocol, 40000 + len(self.udp_ports))  # type: ignore[arg-type]
        self.udp_ports.append(fake)
        protocol.makeConnection(fake)
        return fake

    def take(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent


class RadiusEnd(Protocol):
    """The server's RADIUS side: packets split by Length, answered on demand."""

    def __init__(self) -> None:
        self.buffer = b""
        self.packets: list[bytes] = []
        self.records: list[bytes] = []  # what each TLS record carried (one read each)

    def dataReceived(self, data: bytes) -> None:
        self.records.append(data)
        self.buffer += data
        while len(self.buffer) >= 4:
            length = int.from_bytes(self.buffer[2:4], "big")
            if len(self.buffer) < length:
                return
            self.packets.append(self.buffer[:length])
            self.buffer = self.buffer[length:]

    def take(self) -> list[bytes]:
        packets, self.packets = self.packets, []
        return packets

    def answer(self, request: bytes, **kwargs) -> None:
        self.transport.write(reply_bytes(request, RADSEC, **kwargs))


def _private(issued: Issued) -> ssl.PrivateCertificate:
    return ssl.PrivateCertificate.loadPEM(issued.cert.read_text() + issued.key.read_text())


@dataclass
class Link:
    """One TCP connection the client asked for, accepted by a TLS server end."""

    pump: iosim.IOPump
    radius: RadiusEnd
    client_transport: iosim.FakeTransport
    server_transport: iosim.FakeTransport

    def flush(self) -> None:
        self.pump.flush()

    def drop(self) -> None:
        """The server end closes the TCP connection."""
        self.server_transport.loseConnection()
        self.pump.flush()


def accept(reactor: Reactor, pki: Pki, certificate: Issued | None = None, index=-1) -> Link:
    host, port, connecting, _timeout, _bind = reactor.tcpClients[index]
    client = connecting.buildProtocol(IPv4Address("TCP", host, port))
    identity = _private(certificate or pki.server)
    options = ssl.CertificateOptions(
        privateKey=identity.privateKey.original,
        certificate=identity.original,
        trustRoot=ssl.Certificate.loadPEM(pki.ca.cert.read_text()),  # clients must present one
    )
    factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(RadiusEnd), clock=reactor)
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    radius = server.wrappedProtocol  # before the handshake, which may fail and unlink it
    server_transport = iosim.FakeTransport(server, isServer=True)
    client_transport = iosim.FakeTransport(client, isServer=False)
    pump = iosim.connect(
        server, server_transport, client, client_transport, greet=True, clock=reactor
    )
    return Link(pump, radius, client_transport, server_transport)


def refuse(reactor: Reactor, index=-1, error: Exception | None = None) -> None:
    """The TCP connection the client asked for is refused (or fails with `error`)."""
    _host, _port, factory, _timeout, _bind = reactor.tcpClients[index]
    failure = Failure(error or ConnectionRefusedError())
    factory.clientConnectionFailed(reactor.connectors[index], failure)


def meanwhile(reactor: Reactor, seconds: float, respond) -> None:
    """Let `seconds` pass in steps of 0.5 s; `respond(index)` handles every connection
    the client tries meanwhile (refuse it, or accept it with some certificate)."""
    seen = len(reactor.tcpClients)
    for _ in range(int(seconds / 0.5)):
        reactor.advance(0.5)
        while len(reactor.tcpClients) > seen:
            respond(seen)
            seen += 1


def stopped_connecting(reactor: Reactor, index=-1) -> None:
    """What a real connector does when told to stop connecting (MemoryReactor's does not)."""
    assert reactor.connectors[index].stoppedConnecting
    refuse(reactor, index, UserError())


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Setup:
    reactor: Reactor
    client: RadiusClient
    logs: list[LogEvent] = field(default_factory=list)

    @property
    def port(self) -> RadsecServerPort:
        port = self.client.ports[0]
        assert isinstance(port, RadsecServerPort)
        return port

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.logs]


@pytest.fixture
def logs():
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def make(pki, logs, *servers, require=True) -> Setup:
    reactor = Reactor()
    reactor.advance(1_000_000)
    client = RadiusClient(servers or (radsec_server(pki),), reactor, require, dead_time=DEAD_TIME)
    client.start()
    return Setup(reactor, client, logs)


def outcome(deferred) -> list:
    results: list = []
    deferred.addBoth(results.append)
    return results


def request():
    return access_request([("User-Name", "89440000000000000011")], password=b"pw")


def opened(pki, logs, **kwargs) -> tuple[Setup, Link]:
    """A client whose connection is open and whose first Status-Server was answered."""
    setup = make(pki, logs, radsec_server(pki, **kwargs))
    link = accept(setup.reactor, pki)
    [probe] = link.radius.take()
    assert probe[0] == Code.STATUS_SERVER
    link.radius.answer(probe, code=2)  # Access-Accept (RFC 5997 section 3)
    link.flush()
    return setup, link


# --- the connection -----------------------------------------------------------------------------


def test_connects_at_start_verifies_and_probes(pki, logs):
    setup = make(pki, logs)
    [(host, port, _factory, timeout, _bind)] = setup.reactor.tcpClients
    assert (host, port, timeout) == ("127.0.0.1", 2083, TIMEOUT)
    assert setup.port.state == "connecting"
    link = accept(setup.reactor, pki)
    assert setup.port.state == "open"
    assert setup.port.stats.connections == 1
    assert any("RadSec connection to 127.0.0.1:2083 open" in line for line in setup.lines())
    # A Status-Server as soon as it opens: is the secret right, is the server there?
    [probe] = link.radius.take()
    parsed = parse_request(probe, RADSEC)
    assert parsed.code == Code.STATUS_SERVER
    assert "Message-Authenticator" in parsed
    assert setup.port.stats.status_probes == 1


def test_access_request_over_tls_needs_no_message_authenticator(pki, logs):
    setup, link = opened(pki, logs)
    result = outcome(setup.client.send_auth(request()))
    link.flush()
    [sent] = link.radius.take()
    parsed = parse_request(sent, RADSEC)
    assert parsed.code == Code.ACCESS_REQUEST
    assert parsed["User-Name"] == ["89440000000000000011"]
    assert parsed.PwDecrypt(parsed["User-Password"][0]) == "pw"  # hidden with "radsec"
    # No Message-Authenticator in the reply, require_message_authenticator on: over TLS
    # that is accepted (BlastRADIUS needs a reply in the clear).
    link.radius.answer(sent, code=2, attributes={"Framed-IP-Address": "100.64.0.9"}, sign=False)
    link.flush()
    [reply] = result
    assert isinstance(reply, Reply)
    assert reply.code is Code.ACCESS_ACCEPT
    assert not reply.message_authenticator
    assert setup.client.stats()["127.0.0.1:2083"].replies == 2  # the probe and this


def test_accounting_and_authentication_share_the_connection(pki, logs):
    setup, link = opened(pki, logs)
    auth = outcome(setup.client.send_auth(request()))
    acct = outcome(setup.client.send_acct(accounting_request([("Acct-Status-Type", "Start")])))
    link.flush()
    sent = link.radius.take()
    assert [p[0] for p in sent] == [Code.ACCESS_REQUEST, Code.ACCOUNTING_REQUEST]
    assert sent[0][1] != sent[1][1]  # two Identifiers of the one connection
    link.radius.answer(sent[1], code=5)
    link.radius.answer(sent[0], code=3)
    link.flush()
    assert acct[0].code is Code.ACCOUNTING_RESPONSE
    assert auth[0].code is Code.ACCESS_REJECT
    assert len(setup.reactor.tcpClients) == 1
    assert list(setup.client.stats()) == ["127.0.0.1:2083"]


def test_replies_split_and_joined_on_the_stream(pki, logs):
    setup, link = opened(pki, logs)
    results = [outcome(setup.client.send_auth(request())) for _ in range(3)]
    link.flush()
    sent = link.radius.take()
    stream = b"".join(reply_bytes(p, RADSEC, code=2) for p in sent)
    for start in range(0, len(stream), 7):  # seven octets at a time, across packet borders
        link.radius.transport.write(stream[start : start + 7])
        link.flush()
    assert [r[0].code for r in results] == [Code.ACCESS_ACCEPT] * 3


def test_a_bad_length_closes_the_connection_and_it_comes_back(pki, logs):
    setup, link = opened(pki, logs)
    link.radius.transport.write(b"\x02\x01\x00\x05")  # Length 5: no way to find the next
    link.flush()
    assert setup.port.state == "waiting"
    assert setup.port.stats.malformed == 1
    assert any("sent a packet of Length 5" in line for line in setup.lines())
    setup.reactor.advance(1.0)  # backoff: the first retry after 1 s
    assert len(setup.reactor.tcpClients) == 2
    accept(setup.reactor, pki)
    assert setup.port.state == "open"


def test_each_packet_in_a_tls_record_of_its_own(pki, logs):
    # FreeRADIUS 3.2 reads one RADIUS packet per TLS record: requests sent in the same
    # reactor turn must not share one.
    setup, link = opened(pki, logs)
    link.radius.records.clear()
    for _ in range(3):
        setup.client.send_auth(request())
    setup.client.send_acct(accounting_request([("Acct-Status-Type", "Start")]))
    link.flush()
    packets = link.radius.take()
    assert len(packets) == 4
    assert link.radius.records == packets


def test_identifiers_are_per_connection_and_the_rest_wait(pki, logs):
    setup, link = opened(pki, logs)
    results = [outcome(setup.client.send_auth(request())) for _ in range(257)]
    link.flush()
    sent = link.radius.take()
    assert len(sent) == 256
    assert len({p[1] for p in sent}) == 256
    assert len(setup.port.pending) == 1
    link.radius.answer(sent[10], code=2)
    link.flush()
    [last] = link.radius.take()  # sent as soon as an Identifier was free
    assert last[1] == sent[10][1]
    assert results[10][0].code is Code.ACCESS_ACCEPT
    assert results[256] == []


# --- timeouts, keepalive, reconnection --------------------------------------------------------


def test_no_retransmission_a_timeout_fails_over_and_probes_the_connection(pki, logs):
    setup, link = opened(pki, logs)
    result = outcome(setup.client.send_auth(request()))
    link.flush()
    assert len(link.radius.take()) == 1
    setup.reactor.advance(TIMEOUT - 0.1)
    link.flush()
    assert link.radius.take() == []  # never sent twice on one connection
    setup.reactor.advance(0.1)
    link.flush()
    [failure] = result
    assert isinstance(failure.value, RadiusUnavailable)
    assert "127.0.0.1:2083: no reply within 3 s" in str(failure.value)
    assert setup.port.stats.timeouts == 1
    assert not setup.port.alive(setup.reactor.seconds())  # dead for dead_time
    [probe] = link.radius.take()  # the watchdog asks whether the connection still works
    assert probe[0] == Code.STATUS_SERVER
    link.radius.answer(probe, code=2)
    link.flush()
    assert setup.port.alive(setup.reactor.seconds())  # it answered: live again
    assert any("RadSec server 127.0.0.1:2083 answers again" in line for line in setup.lines())


def test_keepalive_when_idle_and_a_silent_connection_is_closed(pki, logs):
    setup, link = opened(pki, logs)
    setup.reactor.advance(KEEPALIVE)
    link.flush()
    [probe] = link.radius.take()
    assert probe[0] == Code.STATUS_SERVER
    link.radius.answer(probe, code=2)
    link.flush()
    setup.reactor.advance(KEEPALIVE)
    link.flush()
    [probe] = link.radius.take()
    # No answer this time: after `timeout` the connection is given up and reopened,
    # after the backoff's first step.
    setup.reactor.advance(TIMEOUT)
    link.flush()
    assert setup.port.state == "waiting"
    assert any("no reply to Status-Server within 3 s" in line for line in setup.lines())
    assert len(setup.reactor.tcpClients) == 1
    setup.reactor.advance(1.0)
    assert len(setup.reactor.tcpClients) == 2
    assert setup.port.stats.status_probes == 3


def test_requests_in_flight_go_to_the_next_connection(pki, logs):
    setup, link = opened(pki, logs)
    results = [outcome(setup.client.send_auth(request())) for _ in range(2)]
    link.flush()
    first = link.radius.take()
    assert len(first) == 2
    link.drop()  # e.g. the server restarts
    assert any("RadSec connection to 127.0.0.1:2083 lost" in line for line in setup.lines())
    # It had worked: reconnect at once, and the two requests wait for it.
    assert len(setup.reactor.tcpClients) == 2
    assert results == [[], []]
    second = accept(setup.reactor, pki)
    again = [p for p in second.radius.take() if p[0] == Code.ACCESS_REQUEST]
    assert len(again) == 2
    for packet in again:
        second.radius.answer(packet, code=2)
    second.flush()
    assert [r[0].code for r in results] == [Code.ACCESS_ACCEPT] * 2
    assert setup.port.stats.retransmissions == 2  # sent again, on the new connection
    assert setup.port.stats.timeouts == 0


def test_requests_in_flight_fail_over_when_the_next_connection_is_refused(pki, logs):
    setup = make(pki, logs, radsec_server(pki), UDP_SERVER)
    link = accept(setup.reactor, pki)
    link.radius.take()
    result = outcome(setup.client.send_auth(request()))
    link.flush()
    assert len(link.radius.take()) == 1
    link.drop()
    refuse(setup.reactor)  # the immediate reconnection
    [sent] = setup.reactor.take()  # at once on the UDP server, no waiting for the timeout
    assert sent.address == ("127.0.0.2", 1812)
    sent.port.deliver(reply_bytes(sent.data, b"udp-secret", code=2), sent.address)
    assert result[0].code is Code.ACCESS_ACCEPT


def test_closed_before_any_reply_means_backoff(pki, logs):
    # A server that closes every connection at once (it refuses our certificate after
    # a TLS 1.3 handshake, or what we send) is not hammered: 1 s, 2 s, ...
    setup = make(pki, logs)
    for number, delay in enumerate((1.0, 2.0, 4.0), start=1):
        link = accept(setup.reactor, pki)
        link.drop()
        assert setup.port.state == "waiting"
        setup.reactor.advance(delay - 0.5)
        assert len(setup.reactor.tcpClients) == number
        setup.reactor.advance(0.5)
        assert len(setup.reactor.tcpClients) == number + 1


def test_tls_server_down_fails_over_to_udp_at_once(pki, logs):
    setup = make(pki, logs, radsec_server(pki), UDP_SERVER)
    refuse(setup.reactor)
    assert setup.port.state == "waiting"
    assert any(
        "RadSec server 127.0.0.1:2083 (radius.test): cannot connect" in line
        for line in setup.lines()
    )
    result = outcome(setup.client.send_auth(request()))
    [sent] = setup.reactor.take()
    assert sent.address == ("127.0.0.2", 1812)
    sent.port.deliver(reply_bytes(sent.data, b"udp-secret", code=2), sent.address)
    assert result[0].code is Code.ACCESS_ACCEPT
    # With the UDP server silent too, the message says what happened on each.
    # The RadSec server is still tried once after the UDP one, within its timeout
    # (it may be connecting again by then); the message says what happened on each.
    result = outcome(setup.client.send_acct(accounting_request([("Acct-Status-Type", "Start")])))
    meanwhile(setup.reactor, 2.0 * 2 + TIMEOUT, lambda index: refuse(setup.reactor, index))
    [failure] = result
    text = str(failure.value)
    assert "127.0.0.2:1813: no reply after 2 transmissions" in text
    assert "127.0.0.1:2083: " in text
    assert "cannot connect" in text


def test_request_waits_for_the_connection_being_opened(pki, logs):
    setup = make(pki, logs)
    result = outcome(setup.client.send_auth(request()))
    assert setup.port.pending  # connecting: it waits
    link = accept(setup.reactor, pki)
    packets = link.radius.take()
    [sent] = [p for p in packets if p[0] == Code.ACCESS_REQUEST]
    link.radius.answer(sent, code=2)
    link.flush()
    assert result[0].code is Code.ACCESS_ACCEPT


def test_request_waiting_for_a_connection_times_out(pki, logs):
    setup = make(pki, logs, radsec_server(pki), UDP_SERVER)
    result = outcome(setup.client.send_auth(request()))
    # The TCP connection neither opens nor fails: after `timeout`, the request goes
    # on to the UDP server, and the connection attempt is abandoned.
    setup.reactor.advance(TIMEOUT)
    stopped_connecting(setup.reactor)
    assert any("no TLS connection within 3 s" in line for line in setup.lines())
    [sent] = setup.reactor.take()
    assert sent.address == ("127.0.0.2", 1812)
    sent.port.deliver(reply_bytes(sent.data, b"udp-secret", code=2), sent.address)
    assert result[0].code is Code.ACCESS_ACCEPT


def test_handshake_that_never_ends_is_abandoned(pki, logs):
    setup = make(pki, logs)
    host, port, factory, _timeout, _bind = setup.reactor.tcpClients[0]
    client = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = iosim.FakeTransport(client, isServer=False)
    client.makeConnection(transport)  # TCP connected; the server never answers the hello
    setup.reactor.advance(TIMEOUT)
    assert transport.disconnecting
    client.connectionLost(Failure(ConnectionRefusedError()))
    assert setup.port.state == "waiting"
    assert any("no TLS connection within 3 s" in line for line in setup.lines())


def test_backoff_doubles_to_30_s_and_starts_over_after_an_answer(pki, logs):
    setup = make(pki, logs)
    delays = []
    for _ in range(7):
        refuse(setup.reactor)
        before = len(setup.reactor.tcpClients)
        waited = 0.0
        while len(setup.reactor.tcpClients) == before:
            setup.reactor.advance(0.5)
            waited += 0.5
        delays.append(waited)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    link = accept(setup.reactor, pki)
    [probe] = link.radius.take()
    link.radius.answer(probe, code=2)
    link.flush()
    link.drop()
    assert len(setup.reactor.tcpClients) == 9  # at once again
    # The same failure is logged once, not at every attempt.
    refusals = [line for line in setup.lines() if "cannot connect" in line]
    assert len(refusals) == 1


def test_stop_closes_the_connection_and_leaves_no_timer(pki, logs):
    setup, link = opened(pki, logs)
    pending = outcome(setup.client.send_auth(request()))
    link.flush()
    stopped = outcome(setup.client.stop())
    link.flush()
    assert stopped == [None]
    assert isinstance(pending[0].value, RadiusUnavailable)
    assert setup.port.state == "closed"
    assert setup.reactor.getDelayedCalls() == []


def test_stop_while_connecting(pki, logs):
    setup = make(pki, logs)
    stopped = outcome(setup.client.stop())
    stopped_connecting(setup.reactor)
    assert stopped == [None]
    assert setup.reactor.getDelayedCalls() == []


# --- certificates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("certificate", "server_name", "expected"),
    [
        ("foreign", "radius.test", "certificate not issued by a CA in ca = "),
        ("server", "other.test", "certificate does not carry the name 'other.test'"),
        ("server", "127.0.0.2", "certificate does not carry the name '127.0.0.2'"),
        ("expired", "radius.test", "certificate expired on "),
        ("future", "radius.test", "certificate not valid before "),
        ("not_for_servers", "radius.test", "certificate is not for a TLS server"),
    ],
)
def test_certificate_refused_with_the_reason(pki, logs, certificate, server_name, expected):
    setup = make(pki, logs, radsec_server(pki, server_name=server_name), UDP_SERVER)
    link = accept(setup.reactor, pki, getattr(pki, certificate))
    assert link.radius.take() == []  # not one RADIUS octet reached that server
    assert setup.port.state == "waiting"
    assert setup.port.stats.connection_failures == 1
    assert setup.port.stats.connections == 0
    [line] = [line for line in setup.lines() if "RadSec server 127.0.0.1:2083" in line]
    assert f"RadSec server 127.0.0.1:2083 ({server_name}): {expected}" in line, line
    key = pki.client.key.read_text()
    assert all(key.splitlines()[1] not in text for text in setup.lines())
    # Requests go to the UDP server meanwhile, saying why the RadSec one failed.
    result = outcome(setup.client.send_auth(request()))
    meanwhile(
        setup.reactor,
        2.0 * 2 + TIMEOUT,
        lambda index: accept(setup.reactor, pki, getattr(pki, certificate), index),
    )
    assert expected in str(result[0].value)
    # Logged once, however often it is tried again.
    assert sum("RadSec server 127.0.0.1:2083" in line for line in setup.lines()) == 1


def test_certificate_by_ip_address(pki, logs):
    # No server_name: the address itself, checked against the IP subject alternative name.
    server = radsec_server(pki, server_name=None)
    setup = make(pki, logs, server)
    accept(setup.reactor, pki)
    assert setup.port.state == "open"
    assert setup.port.tls.name == "127.0.0.1"
