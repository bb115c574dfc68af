"""Per server and per kind of request: how many went there, how many timed out, and how
long the replies took (aaa/radius/exchange.py), on a fake clock and in-memory sockets."""

from __future__ import annotations

import ipaddress

import pytest
from pyrad import packet as pyrad_packet

from aaa.radius.client import RadiusClient
from aaa.radius.packet import Code, access_request, accounting_request
from lns.config import RadiusServer, Secret
from lns.testing.radius_fakes import FakeUdpReactor, reply_bytes

SECRET = "stats-secret"


def make_client(reactor: FakeUdpReactor) -> RadiusClient:
    servers = [
        RadiusServer(ipaddress.ip_address(host), Secret(SECRET), timeout=2.0, retries=1)
        for host in ("127.0.0.1", "127.0.0.2")
    ]
    client = RadiusClient(servers, reactor, False, dead_time=30.0)
    client.start()
    return client


def test_requests_timeouts_and_latency_by_server_and_type():
    reactor = FakeUdpReactor()
    client = make_client(reactor)
    client.send_auth(access_request([("User-Name", "a")], password=b"pw"))
    [sent] = reactor.take()
    reactor.advance(0.25)
    sent.port.deliver(reply_bytes(sent.data, SECRET.encode()), sent.address)

    client.send_acct(accounting_request([("Acct-Status-Type", "Start")]))
    [sent] = reactor.take()
    reactor.advance(2.0)  # no reply: sent again
    [again] = reactor.take()
    assert again.data == sent.data
    reactor.advance(2.0)  # none again: server A is dead, B gets it
    [to_b] = reactor.take()
    assert to_b.address == ("127.0.0.2", 1813)
    reactor.advance(0.5)
    reply = reply_bytes(to_b.data, SECRET.encode(), code=pyrad_packet.AccountingResponse)
    to_b.port.deliver(reply, to_b.address)

    stats = client.stats()
    auth_a = stats["127.0.0.1:1812"].by_type[Code.ACCESS_REQUEST]
    assert (auth_a.requests, auth_a.timeouts, auth_a.latency.count) == (1, 0, 1)
    assert auth_a.latency.sum == pytest.approx(0.25)
    acct_a = stats["127.0.0.1:1813"].by_type[Code.ACCOUNTING_REQUEST]
    assert (acct_a.requests, acct_a.timeouts, acct_a.latency.count) == (1, 1, 0)
    assert stats["127.0.0.1:1813"].timeouts == 1
    acct_b = stats["127.0.0.2:1813"].by_type[Code.ACCOUNTING_REQUEST]
    assert (acct_b.requests, acct_b.timeouts) == (1, 0)
    assert acct_b.latency.sum == pytest.approx(0.5)
    assert Code.ACCESS_REQUEST not in stats["127.0.0.2:1812"].by_type
