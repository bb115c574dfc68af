"""aaa.radius.client on a fake clock and in-memory sockets: identifiers,
retransmission, failover and back, dead servers, reply verification."""

from __future__ import annotations

import ipaddress

import pytest
from pyrad import packet as pyrad_packet
from twisted.internet import defer
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from aaa.radius.client import RadiusClient, RadiusClientService, RadiusUnavailable
from aaa.radius.packet import Code, Reply, access_request, accounting_request, status_server
from lns.config import RadiusServer, Secret
from lns.testing.radius_fakes import (
    FakeUdpReactor,
    Sent,
    forge,
    parse_request,
    reply_bytes,
    strip_message_authenticator,
)

SECRET_A = "secret-of-server-a"
SECRET_B = "secret-of-server-b"
A = ("127.0.0.1", 1812)
B = ("127.0.0.2", 1812)


def server(address: str, secret: str, timeout: float = 3.0, retries: int = 2) -> RadiusServer:
    return RadiusServer(
        address=ipaddress.ip_address(address),
        secret=Secret(secret),
        auth_port=1812,
        acct_port=1813,
        timeout=timeout,
        retries=retries,
    )


SERVER_A = server("127.0.0.1", SECRET_A)
SERVER_B = server("127.0.0.2", SECRET_B, timeout=2.0, retries=1)


@pytest.fixture
def reactor():
    return FakeUdpReactor()


def make_client(reactor, servers=(SERVER_A, SERVER_B), require=True, **kwargs) -> RadiusClient:
    client = RadiusClient(servers, reactor, require, dead_time=30.0, **kwargs)
    client.start()
    return client


def request():
    return access_request([("User-Name", "8944000000000000001")], password=b"pw")


def outcome(deferred: defer.Deferred) -> list:
    results: list = []
    deferred.addBoth(results.append)
    return results


def answer(sent: Sent, secret: str, **kwargs) -> None:
    """Deliver a reply to `sent` from the server it was sent to."""
    sent.port.deliver(reply_bytes(sent.data, secret.encode(), **kwargs), sent.address)


@pytest.fixture
def log_events():
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# --- the happy path ----------------------------------------------------------------------


def test_start_opens_one_socket_per_server_port(reactor):
    make_client(reactor)
    assert len(reactor.ports) == 4  # A and B, authentication and accounting


def test_reply_matched_verified_and_identifier_freed(reactor):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    assert sent.address == A
    answer(sent, SECRET_A, attributes={"Framed-IP-Address": "100.64.0.9"})
    [reply] = result
    assert isinstance(reply, Reply)
    assert reply.code is Code.ACCESS_ACCEPT
    assert reply.ipv4("Framed-IP-Address") == ipaddress.IPv4Address("100.64.0.9")
    assert client.stats()["127.0.0.1:1812"].replies == 1
    assert client.in_flight == 0
    assert all(not p.protocol.outstanding for p in reactor.ports)
    assert reactor.getDelayedCalls() == []


def test_accounting_goes_to_the_accounting_port(reactor):
    client = make_client(reactor)
    result = outcome(client.send_acct(accounting_request([("Acct-Status-Type", "Start")])))
    [sent] = reactor.take()
    assert sent.address == ("127.0.0.1", 1813)
    reply = reply_bytes(sent.data, SECRET_A.encode(), code=pyrad_packet.AccountingResponse)
    sent.port.deliver(reply, sent.address)
    assert result[0].code is Code.ACCOUNTING_RESPONSE


# --- retransmission, failover and back --------------------------------------------------


def test_retransmits_the_same_packet_then_fails_over(reactor):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    first = reactor.take()
    reactor.advance(2.9)
    assert reactor.take() == []
    reactor.advance(0.1)
    second = reactor.take()
    reactor.advance(3.0)
    third = reactor.take()
    # RFC 5080 section 2.2.1: the same Identifier and authenticator, the same octets.
    assert [s.data for s in first + second + third] == [first[0].data] * 3
    assert {s.address for s in first + second + third} == {A}
    reactor.advance(3.0)  # retries exhausted on A: on to B, encoded with B's secret
    [to_b] = reactor.take()
    assert to_b.address == B
    assert parse_request(to_b.data, SECRET_B.encode()).verify_message_authenticator()
    answer(to_b, SECRET_B)
    assert result[0].code is Code.ACCESS_ACCEPT
    stats = client.stats()
    assert stats["127.0.0.1:1812"].retransmissions == 2
    assert stats["127.0.0.1:1812"].timeouts == 1
    assert stats["127.0.0.2:1812"].replies == 1


def test_all_servers_silent_fails_with_each_server_named(reactor):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    reactor.pump([1.0] * 20)
    [failure] = result
    assert isinstance(failure, Failure)
    error = failure.value
    assert isinstance(error, RadiusUnavailable)
    assert str(error) == (
        "no RADIUS server answered: 127.0.0.1:1812: no reply after 3 transmissions; "
        "127.0.0.2:1812: no reply after 2 transmissions"
    )
    sent = reactor.take()
    assert [s.address for s in sent] == [A] * 3 + [B] * 2
    assert client.in_flight == 0


def test_given_up_after_exactly_the_configured_time(reactor):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    reactor.pump([3.0, 3.0, 3.0, 2.0, 1.5])  # A: sent at 0, 3, 6; B: at 9, 11
    assert result == []
    reactor.advance(0.5)  # t = 13: B's second timeout
    assert isinstance(result[0].value, RadiusUnavailable)


def test_dead_server_skipped_then_first_again_after_dead_time(reactor):
    client = make_client(reactor)
    outcome(client.send_auth(request()))
    reactor.pump([3.0] * 3)  # A gave up: dead until t = 39
    [to_b] = [s for s in reactor.take() if s.address == B]
    answer(to_b, SECRET_B)
    second = outcome(client.send_auth(request()))
    [direct] = reactor.take()
    assert direct.address == B  # A is skipped while dead
    answer(direct, SECRET_B)
    assert second[0].code is Code.ACCESS_ACCEPT
    reactor.advance(30.0)
    outcome(client.send_auth(request()))
    [back] = reactor.take()
    assert back.address == A  # failback: A is first again


def test_when_all_are_dead_each_is_tried_once(reactor):
    client = make_client(reactor)
    outcome(client.send_auth(request()))
    reactor.pump([1.0] * 13)  # both dead now
    reactor.take()
    result = outcome(client.send_auth(request()))
    reactor.advance(3.0)
    reactor.advance(2.0)
    assert [s.address for s in reactor.take()] == [A, B]  # no retransmission
    assert "no reply after 1 transmission;" in str(result[0].value)


def test_a_dead_server_that_answers_is_alive_again(reactor, log_events):
    client = make_client(reactor)
    outcome(client.send_auth(request()))
    reactor.pump([1.0] * 13)
    reactor.take()
    result = outcome(client.send_auth(request()))
    [probe] = reactor.take()
    answer(probe, SECRET_A)
    assert result[0].code is Code.ACCESS_ACCEPT
    outcome(client.send_auth(request()))
    reactor.advance(3.0)
    # A is live again: it gets its retransmissions, not one try.
    assert [s.address for s in reactor.take()] == [A, A]
    messages = [formatEvent(e) for e in log_events]
    assert "RADIUS server 127.0.0.1:1812 marked dead for 30 s: no reply" in messages
    assert "RADIUS server 127.0.0.1:1812 answers again" in messages


def test_late_reply_of_the_first_server_after_failover_is_ignored(reactor):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    [to_a] = reactor.take()
    reactor.pump([3.0] * 3)
    [to_b] = [s for s in reactor.take() if s.address == B]
    answer(to_a, SECRET_A)  # too late: that Identifier was released
    assert result == []
    assert client.stats()["127.0.0.1:1812"].unmatched == 1
    answer(to_b, SECRET_B)
    assert result[0].code is Code.ACCESS_ACCEPT


# --- replies that are dropped -------------------------------------------------------------


def test_reply_with_wrong_secret_dropped_and_counted(reactor, log_events):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    answer(sent, "not-the-secret")
    assert result == []
    assert client.stats()["127.0.0.1:1812"].bad_authenticator == 1
    answer(sent, SECRET_A)  # the real one still counts
    assert result[0].code is Code.ACCESS_ACCEPT
    text = " ".join(formatEvent(e) for e in log_events)
    assert "bad Response Authenticator" in text
    assert SECRET_A not in text


def test_forged_message_authenticator_dropped_even_when_not_required(reactor):
    client = make_client(reactor, require=False)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    data = reply_bytes(sent.data, SECRET_A.encode())
    authenticator = parse_request(sent.data, SECRET_A.encode()).authenticator
    sent.port.deliver(forge(data, authenticator, SECRET_A.encode()), A)
    assert result == []
    assert client.stats()["127.0.0.1:1812"].bad_message_authenticator == 1


def test_unsigned_reply_dropped_when_required(reactor, log_events):
    client = make_client(reactor, require=True)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    answer(sent, SECRET_A, sign=False)
    assert result == []
    assert client.stats()["127.0.0.1:1812"].unsigned_dropped == 1
    assert any("BlastRADIUS" in formatEvent(e) for e in log_events)
    reactor.pump([1.0] * 20)
    assert isinstance(result[0].value, RadiusUnavailable)


def test_unsigned_reply_accepted_when_not_required(reactor):
    client = make_client(reactor, require=False)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    answer(sent, SECRET_A, sign=False)
    assert result[0].code is Code.ACCESS_ACCEPT
    assert not result[0].message_authenticator


def test_stripped_message_authenticator_dropped_when_required(reactor):
    client = make_client(reactor, require=True)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    data = reply_bytes(sent.data, SECRET_A.encode())
    authenticator = parse_request(sent.data, SECRET_A.encode()).authenticator
    sent.port.deliver(strip_message_authenticator(data, authenticator, SECRET_A.encode()), A)
    assert result == []
    assert client.stats()["127.0.0.1:1812"].unsigned_dropped == 1


def test_status_server_reply_must_be_signed_too(reactor):
    client = make_client(reactor, require=True)
    result = outcome(client.send_auth(status_server()))
    [sent] = reactor.take()
    answer(sent, SECRET_A, sign=False)
    assert result == []
    answer(sent, SECRET_A, sign=True)
    assert result[0].code is Code.ACCESS_ACCEPT


def test_accounting_response_needs_no_message_authenticator(reactor):
    client = make_client(reactor, require=True)
    result = outcome(client.send_acct(accounting_request([("Acct-Status-Type", "Stop")])))
    [sent] = reactor.take()
    reply = reply_bytes(sent.data, SECRET_A.encode(), code=pyrad_packet.AccountingResponse)
    sent.port.deliver(reply, sent.address)
    assert result[0].code is Code.ACCOUNTING_RESPONSE


@pytest.mark.parametrize(
    "source",
    [("127.0.0.9", 1812), ("127.0.0.1", 1645), ("127.0.0.2", 1812)],
)
def test_reply_from_elsewhere_dropped(reactor, source):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    sent.port.deliver(reply_bytes(sent.data, SECRET_A.encode()), source)
    assert result == []
    assert client.stats()["127.0.0.1:1812"].foreign == 1


def test_short_datagram_and_unknown_identifier_dropped(reactor):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    sent.port.deliver(b"\x02\x01", A)
    other_id = bytes([sent.data[0], (sent.data[1] + 1) % 256]) + sent.data[2:]
    sent.port.deliver(reply_bytes(other_id, SECRET_A.encode()), A)
    stats = client.stats()["127.0.0.1:1812"]
    assert (stats.malformed, stats.unmatched) == (1, 1)
    assert result == []


def test_ipv4_mapped_source_is_the_server(reactor):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    sent.port.deliver(reply_bytes(sent.data, SECRET_A.encode()), ("::ffff:127.0.0.1", 1812))
    assert result[0].code is Code.ACCESS_ACCEPT


# --- identifiers and sockets --------------------------------------------------------------


def test_256_in_flight_per_socket_then_another_socket(reactor):
    client = make_client(reactor, servers=(SERVER_A,))
    results = [outcome(client.send_auth(request())) for _ in range(300)]
    sent = reactor.take()
    assert len(sent) == 300
    first, second = reactor.ports[0], reactor.ports[2]  # [1] is A's accounting socket
    on_first = [s for s in sent if s.port is first]
    on_second = [s for s in sent if s.port is second]
    assert len(on_first) == 256
    assert len(on_second) == 44
    assert sorted(s.data[1] for s in on_first) == list(range(256))
    assert len({s.data[1] for s in on_second}) == 44
    for s in sent:
        answer(s, SECRET_A)
    assert all(r[0].code is Code.ACCESS_ACCEPT for r in results)
    # Identifiers are free again: the next request needs no third socket.
    outcome(client.send_auth(request()))
    assert len(reactor.ports) == 3


def test_identifiers_exhausted_everywhere(reactor):
    client = make_client(reactor, servers=(SERVER_A,), max_sockets=1)
    for _ in range(256):
        outcome(client.send_auth(request()))
    result = outcome(client.send_auth(request()))
    assert str(result[0].value) == (
        "no RADIUS server answered: 127.0.0.1:1812: all identifiers in use"
    )


def test_freed_identifier_not_reused_at_once(reactor):
    client = make_client(reactor, servers=(SERVER_A,))
    outcome(client.send_auth(request()))
    [first] = reactor.take()
    answer(first, SECRET_A)
    outcome(client.send_auth(request()))
    [second] = reactor.take()
    assert second.data[1] == (first.data[1] + 1) % 256


# --- life cycle, cancellation, errors ---------------------------------------------------


def test_cancel_frees_identifier_and_timer(reactor):
    client = make_client(reactor)
    deferred = client.send_auth(request())
    result = outcome(deferred)
    deferred.cancel()
    assert isinstance(result[0].value, defer.CancelledError)
    assert reactor.getDelayedCalls() == []
    assert client.in_flight == 0
    assert all(not p.protocol.outstanding for p in reactor.ports)


def test_stop_fails_requests_in_flight_and_closes_sockets(reactor):
    client = make_client(reactor)
    result = outcome(client.send_auth(request()))
    stopped = outcome(client.stop())
    assert stopped == [None]
    assert str(result[0].value) == "RADIUS client stopped"
    assert all(p.closed for p in reactor.ports)
    assert reactor.getDelayedCalls() == []
    late = outcome(client.send_auth(request()))
    assert str(late[0].value) == "RADIUS client not running"


def test_send_before_start_fails_clearly(reactor):
    client = RadiusClient((SERVER_A,), reactor, True)
    result = outcome(client.send_auth(request()))
    assert str(result[0].value) == "RADIUS client not running"


def test_service_starts_and_stops_the_client(reactor):
    client = RadiusClient((SERVER_A,), reactor, True)
    svc = RadiusClientService(client)
    svc.startService()
    assert client.running
    assert len(reactor.ports) == 2
    outcome(svc.stopService())
    assert not client.running


def test_request_that_cannot_be_encoded_fails_without_traffic(reactor):
    from aaa.radius.packet import RadiusPacketError, Request

    client = make_client(reactor)
    result = outcome(client.send_auth(Request(Code.ACCESS_REQUEST, (("Nonexistent", "x"),))))
    assert isinstance(result[0].value, RadiusPacketError)
    assert reactor.take() == []


def test_no_servers_is_an_error(reactor):
    with pytest.raises(ValueError, match="at least one"):
        RadiusClient((), reactor, True)


def test_ipv6_server(reactor):
    v6 = server("::1", SECRET_A)
    client = make_client(reactor, servers=(v6,))
    result = outcome(client.send_auth(request()))
    [sent] = reactor.take()
    assert sent.address == ("::1", 1812)
    answer(sent, SECRET_A)
    assert result[0].code is Code.ACCESS_ACCEPT
    assert "[::1]:1812" in client.stats()
