"""RadiusAuthenticator against a real FreeRADIUS 3.2 on loopback (tests/aaa/conftest.py).

Proxy CHAP, proxy PAP and ICCID-only authentication, each accepted and refused;
every kind of reply mapped; wrong secret, dead servers and failover; and
`require_message_authenticator` against a server that does not sign its replies.
"""

from __future__ import annotations

import hashlib
import ipaddress

import pytest
import pytest_twisted
from twisted.internet import reactor

from aaa.radius.auth import RadiusAuthenticator
from aaa.radius.packet import Code, access_request, status_server
from lns.ppp.auth import AuthMethod, AuthRequest, AuthSource, CallContext, Decision
from lns.testing.config import ConfigBuilder
from lns.testing.ports import free_udp_port
from lns.testing.sims import (
    BARRED,
    BY_ICCID,
    CHECKED,
    PLAIN,
    POOLED,
    RADIUS_SECRET,
    STATIC,
    TIMED,
    Sim,
)

pytestmark = pytest.mark.integration

CHALLENGE = bytes.fromhex("00112233445566778899aabbccddeeff0102")  # 18 octets, not 16


def context(sim: Sim) -> CallContext:
    return CallContext(
        iccid=sim.iccid,
        called_number="iot.example",
        lac_name="op-a",
        lac_hostname="lac1.example",
        lac_address="198.51.100.7",
        tunnel_id=3,
        session_id=4242,
        tx_connect_speed=9600000,
        rx_connect_speed=384000,
        acct_session_id="lns-test-18f0000-1",
    )


def auth_request(method: str, sim: Sim, password: str | None = None) -> AuthRequest:
    secret = (password if password is not None else sim.password).encode()
    if method == "chap":
        response = hashlib.md5(bytes([9]) + secret + CHALLENGE).digest()
        return AuthRequest(
            context(sim),
            AuthMethod.CHAP,
            AuthSource.PROXY,
            name=b"device",
            chap_id=9,
            chap_challenge=CHALLENGE,
            chap_response=response,
            user_name=sim.iccid,
        )
    if method == "pap":
        return AuthRequest(
            context(sim),
            AuthMethod.PAP,
            AuthSource.PROXY,
            name=b"device",
            password=secret,
            user_name=sim.iccid,
        )
    return AuthRequest(context(sim), AuthMethod.ICCID, AuthSource.NONE, user_name=sim.iccid)


def radius(address: str, port: int, secret: str = RADIUS_SECRET, **kwargs) -> dict:
    entry = {"address": address, "auth_port": port, "acct_port": port + 1, "secret": secret}
    entry.setdefault("timeout", 2.0)
    entry.update(kwargs)
    return entry


def dead_server() -> dict:
    # Nothing listens there: requests vanish (the ICMP error is not reported on an
    # unconnected UDP socket), exactly as with a server that is down.
    return radius("127.0.0.1", free_udp_port(), timeout=0.2, retries=1)


@pytest.fixture
def make_authenticator(freeradius):
    created: list[RadiusAuthenticator] = []

    def make(servers=None, require=False) -> RadiusAuthenticator:
        if servers is None:
            servers = [radius("127.0.0.1", freeradius.auth_port, retries=1)]
        builder = ConfigBuilder().aaa(
            nas_identifier="lns-test", require_message_authenticator=require
        )
        for server in servers:
            builder.radius(**server)
        config = builder.config()
        authenticator = RadiusAuthenticator.from_config(config, reactor)
        authenticator.start()
        created.append(authenticator)
        return authenticator

    yield make
    for authenticator in created:
        pytest_twisted.blockon(authenticator.stop())


# --- accepted and refused, by each method ------------------------------------------------


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize(
    ("method", "sim", "address"),
    [
        ("chap", STATIC, "100.64.20.9"),
        ("pap", STATIC, "100.64.20.9"),
        ("iccid", BY_ICCID, "100.64.20.60"),
    ],
)
def test_accepted_with_static_address(make_authenticator, method, sim, address):
    decision = yield make_authenticator().authenticate(auth_request(method, sim))
    assert decision.accepted, decision.reason
    assert decision.framed_address == ipaddress.IPv4Address(address)
    if sim is STATIC:
        assert decision.dns == (
            ipaddress.IPv4Address("192.0.2.53"),
            ipaddress.IPv4Address("192.0.2.54"),
        )


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize(
    ("method", "password"),
    [
        ("chap", "wrong-password"),
        ("pap", "wrong-password"),
        ("iccid", None),  # PLAIN's password is not its ICCID
    ],
)
def test_wrong_password_rejected(make_authenticator, method, password):
    decision = yield make_authenticator().authenticate(auth_request(method, PLAIN, password))
    assert decision == Decision(False, reason="Access-Reject")


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize("method", ["chap", "pap", "iccid"])
def test_barred_sim_rejected_with_reply_message(make_authenticator, method):
    decision = yield make_authenticator().authenticate(auth_request(method, BARRED))
    assert decision == Decision(False, reason="SIM barred by the operator")


# --- replies mapped ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_plain_accept_leaves_everything_to_the_node(make_authenticator):
    decision = yield make_authenticator().authenticate(auth_request("chap", PLAIN))
    assert decision == Decision(True)


@pytest_twisted.inlineCallbacks
def test_framed_pool(make_authenticator):
    decision = yield make_authenticator().authenticate(auth_request("pap", POOLED))
    assert decision == Decision(True, framed_pool="gold")


@pytest_twisted.inlineCallbacks
def test_session_timeout_route_and_the_rest(make_authenticator):
    decision = yield make_authenticator().authenticate(auth_request("chap", TIMED))
    assert decision == Decision(
        True,
        framed_routes=(ipaddress.IPv4Network("10.1.0.0/24"),),
        session_timeout=3600.0,
        idle_timeout=600.0,
        interim_interval=300.0,
        class_attribute=b"class-45",
    )


@pytest_twisted.inlineCallbacks
def test_freeradius_reads_our_attributes_as_meant(make_authenticator):
    # CHECKED matches only if every NAS and tunnel attribute arrived as intended.
    decision = yield make_authenticator().authenticate(auth_request("chap", CHECKED))
    assert decision.accepted, decision.reason


@pytest_twisted.inlineCallbacks
def test_freeradius_replies_are_not_signed(make_authenticator):
    # notes/peers.md: FreeRADIUS 3.2.1 sends no Message-Authenticator in replies.
    client = make_authenticator().client
    request = access_request([("User-Name", PLAIN.iccid)], password=PLAIN.password.encode())
    reply = yield client.send_auth(request)
    assert reply.code is Code.ACCESS_ACCEPT
    assert not reply.message_authenticator


@pytest_twisted.inlineCallbacks
def test_status_server_answered_unsigned(make_authenticator):
    reply = yield make_authenticator().client.send_auth(status_server())
    assert reply.code is Code.ACCESS_ACCEPT
    # Unsigned here too, although RFC 5997 asks for a Message-Authenticator: with
    # require_message_authenticator on, Status-Server cannot probe this server.
    assert not reply.message_authenticator


# --- faults --------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_wrong_secret_is_unreachable(make_authenticator, freeradius):
    server = radius("127.0.0.1", freeradius.auth_port, secret="not-the-secret", timeout=0.3)
    server["retries"] = 1
    authenticator = make_authenticator([server])
    decision = yield authenticator.authenticate(auth_request("chap", PLAIN))
    # FreeRADIUS drops a request whose Message-Authenticator it cannot verify.
    assert decision == Decision(
        False,
        reason=(
            f"no RADIUS server answered (127.0.0.1:{freeradius.auth_port}: "
            "no reply after 2 transmissions)"
        ),
        reachable=False,
    )
    assert "not-the-secret" not in decision.reason


@pytest_twisted.inlineCallbacks
def test_first_server_down_second_answers(make_authenticator, freeradius):
    dead = dead_server()
    live = radius("127.0.0.1", freeradius.auth_port)
    authenticator = make_authenticator([dead, live])
    decision = yield authenticator.authenticate(auth_request("chap", STATIC))
    assert decision.accepted
    assert decision.framed_address == ipaddress.IPv4Address("100.64.20.9")
    stats = authenticator.client.stats()
    assert stats[f"127.0.0.1:{dead['auth_port']}"].timeouts == 1
    assert stats[f"127.0.0.1:{freeradius.auth_port}"].replies == 1
    # The dead server is now skipped: the next request goes straight to the live one.
    decision = yield authenticator.authenticate(auth_request("pap", POOLED))
    assert decision.framed_pool == "gold"
    assert stats[f"127.0.0.1:{dead['auth_port']}"].requests == 1


@pytest_twisted.inlineCallbacks
def test_all_servers_down_refused_with_a_clear_reason(make_authenticator):
    first, second = dead_server(), dead_server()
    authenticator = make_authenticator([first, second])
    decision = yield authenticator.authenticate(auth_request("chap", PLAIN))
    assert decision == Decision(
        False,
        reason=(
            f"no RADIUS server answered (127.0.0.1:{first['auth_port']}: no reply after "
            f"2 transmissions; 127.0.0.1:{second['auth_port']}: no reply after 2 transmissions)"
        ),
        reachable=False,
    )


@pytest_twisted.inlineCallbacks
def test_required_message_authenticator_drops_freeradius_replies(make_authenticator, freeradius):
    server = radius("127.0.0.1", freeradius.auth_port, timeout=0.3, retries=1)
    authenticator = make_authenticator([server], require=True)
    decision = yield authenticator.authenticate(auth_request("chap", PLAIN))
    assert not decision.accepted
    assert not decision.reachable
    stats = authenticator.client.stats()[f"127.0.0.1:{freeradius.auth_port}"]
    # Its Access-Accept came back (FreeRADIUS answers a retransmission from its cache
    # too) and was dropped each time for want of a Message-Authenticator.
    assert stats.unsigned_dropped >= 1
    assert stats.replies == 0
