"""aaa.radius.auth: the Access-Request of DESIGN.md section 4, and replies mapped to Decisions."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress

import pytest
from pyrad import packet as pyrad_packet

from aaa.radius.auth import (
    AccessRequestSettings,
    RadiusAuthenticator,
    decision_from_reply,
    parse_framed_route,
)
from aaa.radius.client import RadiusClient
from aaa.radius.packet import Code, Reply
from lns.ppp.auth import AuthMethod, AuthRequest, AuthSource, CallContext, Decision
from lns.testing.config import ConfigBuilder
from lns.testing.radius_fakes import FakeUdpReactor, parse_request, reply_bytes

SECRET = "auth-test-secret"
ICCID = "89440000000000000011"
CHALLENGE = bytes(range(16))


def config(**aaa):
    return (
        ConfigBuilder()
        .l2tp(listen=aaa.pop("listen", "0.0.0.0:1701"))
        .aaa(nas_identifier="lns-test", **aaa)
        .radius(address="127.0.0.1", secret=SECRET, timeout=1.0)
        .config()
    )


CONTEXT = CallContext(
    iccid=ICCID,
    called_number="iot.example",
    lac_name="op-a",
    lac_hostname="lac1.example",
    lac_address="198.51.100.7",
    tunnel_id=11,
    session_id=4242,
    tx_connect_speed=9600000,
    rx_connect_speed=384000,
    acct_session_id="lns-test-18f0000-2a",
)


def chap_request(password: bytes = b"pw-plain", name: bytes = b"device") -> AuthRequest:
    response = hashlib.md5(bytes([7]) + password + CHALLENGE).digest()
    return AuthRequest(
        CONTEXT,
        AuthMethod.CHAP,
        AuthSource.PROXY,
        name=name,
        chap_id=7,
        chap_challenge=CHALLENGE,
        chap_response=response,
        user_name=ICCID,
    )


def pap_request(password: bytes = b"pw-plain") -> AuthRequest:
    return AuthRequest(
        CONTEXT,
        AuthMethod.PAP,
        AuthSource.PROXY,
        name=b"device",
        password=password,
        user_name=ICCID,
    )


def iccid_request() -> AuthRequest:
    return AuthRequest(CONTEXT, AuthMethod.ICCID, AuthSource.NONE, user_name=ICCID)


@pytest.fixture
def reactor():
    return FakeUdpReactor()


def authenticator(reactor, **aaa) -> RadiusAuthenticator:
    auth = RadiusAuthenticator.from_config(config(**aaa), reactor)
    auth.start()
    return auth


def as_server_sees(reactor, request: AuthRequest, **aaa):
    auth = authenticator(reactor, **aaa)
    auth.authenticate(request)
    [sent] = reactor.take()
    return parse_request(sent.data, SECRET.encode())


# --- the Access-Request ------------------------------------------------------------------


def test_chap_request_carries_every_attribute(reactor):
    server = as_server_sees(reactor, chap_request())
    assert server.code == pyrad_packet.AccessRequest
    assert server.verify_message_authenticator()
    assert server["User-Name"] == [ICCID]
    # The same Acct-Session-Id as the session's accounting records (issue 17).
    assert server["Acct-Session-Id"] == ["lns-test-18f0000-2a"]
    assert server.VerifyChapPasswd(b"pw-plain")
    assert server["CHAP-Challenge"] == [CHALLENGE]
    assert "User-Password" not in server
    assert server["Calling-Station-Id"] == [ICCID]
    assert server["Called-Station-Id"] == ["iot.example"]
    assert server["NAS-Identifier"] == ["lns-test"]
    assert server["NAS-IP-Address"] == ["127.0.0.1"]  # wildcard listen
    assert server["NAS-Port"] == [4242]
    assert server["NAS-Port-Type"] == ["Virtual"]
    assert server["Service-Type"] == ["Framed-User"]
    assert server["Framed-Protocol"] == ["PPP"]
    assert server["Tunnel-Type:1"] == ["L2TP"]
    assert server["Tunnel-Medium-Type:1"] == ["IPv4"]
    assert server["Tunnel-Client-Endpoint:1"] == ["198.51.100.7"]
    assert "Tunnel-Server-Endpoint" not in server  # wildcard listen: unknown
    assert server["Tunnel-Client-Auth-Id:1"] == ["lac1.example"]
    assert server["Connect-Info"] == ["9600000/384000"]


def test_pap_request_hides_the_password(reactor):
    server = as_server_sees(reactor, pap_request(b"pap-password"))
    assert server.PwDecrypt(server[2][0]) == "pap-password"
    assert "CHAP-Password" not in server
    assert b"pap-password" not in server.raw_packet


def test_iccid_only_request_uses_the_iccid_password_template(reactor):
    server = as_server_sees(reactor, iccid_request(), iccid_password="sim-{iccid}")
    assert server.PwDecrypt(server[2][0]) == f"sim-{ICCID}"
    assert "CHAP-Password" not in server
    assert server["User-Name"] == [ICCID]


def test_the_user_name_is_the_sessions(reactor):
    # Formatted once by the session supervisor (lns.sessions.record.format_user_name).
    request = dataclasses.replace(chap_request(), user_name=f"dev\ufffdice@{ICCID}.sim")
    server = as_server_sees(reactor, request)
    assert server["User-Name"] == [f"dev\ufffdice@{ICCID}.sim"]


def test_specific_listen_address_is_nas_ip_and_tunnel_server_endpoint(reactor):
    server = as_server_sees(reactor, chap_request(), listen="192.0.2.10:1701")
    assert server["NAS-IP-Address"] == ["192.0.2.10"]
    assert server["Tunnel-Server-Endpoint:1"] == ["192.0.2.10"]


def test_ipv6_listen_address_is_nas_ipv6_address(reactor):
    server = as_server_sees(reactor, chap_request(), listen="[2001:db8::1]:1701")
    assert server["NAS-IPv6-Address"] == ["2001:db8::1"]
    assert "NAS-IP-Address" not in server


def test_optional_context_left_out(reactor):
    bare = CallContext(iccid=ICCID)
    request = AuthRequest(bare, AuthMethod.ICCID, AuthSource.NONE, user_name=ICCID)
    server = as_server_sees(reactor, request)
    for absent in (
        "Acct-Session-Id",
        "Called-Station-Id",
        "Tunnel-Client-Endpoint",
        "Tunnel-Client-Auth-Id",
        "Connect-Info",
    ):
        assert absent not in server
    assert server["NAS-Port"] == [0]


def test_settings_from_config():
    settings = AccessRequestSettings.from_config(config(listen="[::]:1701", iccid_password="x"))
    assert settings.nas.nas_address == ipaddress.IPv4Address("127.0.0.1")
    assert settings.nas.server_endpoint is None
    assert settings.nas.nas_identifier == "lns-test"
    assert settings.iccid_password == "x"


# --- the answer --------------------------------------------------------------------------


def decide(reactor, reply_code, attributes=None, request=None, sign=True, **aaa):
    auth = authenticator(reactor, **aaa)
    results = []
    auth.authenticate(request or chap_request()).addBoth(results.append)
    [sent] = reactor.take()
    data = reply_bytes(sent.data, SECRET.encode(), reply_code, attributes, sign=sign)
    sent.port.deliver(data, sent.address)
    [decision] = results
    return decision


def test_accept_mapped(reactor):
    decision = decide(
        reactor,
        pyrad_packet.AccessAccept,
        {
            "Framed-IP-Address": "100.64.3.4",
            "Framed-Pool": "gold",
            "Framed-Route": ["10.1.0.0/24 0.0.0.0 1", "bogus route", "10.9.9.9"],
            "Session-Timeout": 3600,
            "Idle-Timeout": 600,
            "Acct-Interim-Interval": 300,
            "Class": b"class-1",
            "MS-Primary-DNS-Server": "192.0.2.53",
            "MS-Secondary-DNS-Server": "192.0.2.54",
        },
    )
    assert decision == Decision(
        True,
        framed_address=ipaddress.IPv4Address("100.64.3.4"),
        framed_pool="gold",
        framed_routes=(
            ipaddress.IPv4Network("10.1.0.0/24"),
            ipaddress.IPv4Network("10.9.9.9/32"),
        ),
        dns=(ipaddress.IPv4Address("192.0.2.53"), ipaddress.IPv4Address("192.0.2.54")),
        session_timeout=3600.0,
        idle_timeout=600.0,
        interim_interval=300.0,
        class_attribute=b"class-1",
    )


@pytest.mark.parametrize("address", ["255.255.255.254", "255.255.255.255"])
def test_nas_chooses_address_means_pool(reactor, address):
    decision = decide(reactor, pyrad_packet.AccessAccept, {"Framed-IP-Address": address})
    assert decision == Decision(True)


def test_reject_with_reply_message(reactor):
    decision = decide(
        reactor, pyrad_packet.AccessReject, {"Reply-Message": ["SIM barred", " by operator "]}
    )
    assert decision == Decision(False, reason="SIM barred by operator")


def test_reject_without_reply_message(reactor):
    assert decide(reactor, pyrad_packet.AccessReject) == Decision(False, reason="Access-Reject")


def test_challenge_is_refused(reactor):
    decision = decide(reactor, pyrad_packet.AccessChallenge, {"State": b"s"})
    assert decision == Decision(False, reason="ACCESS_CHALLENGE is not supported")


def test_no_server_answering_is_unreachable(reactor):
    auth = authenticator(reactor)
    results = []
    auth.authenticate(chap_request()).addBoth(results.append)
    reactor.pump([1.0] * 4)  # timeout 1.0, retries 3 (the default)
    [decision] = results
    assert decision == Decision(
        False,
        reason="no RADIUS server answered (127.0.0.1:1812: no reply after 4 transmissions)",
        reachable=False,
    )


def test_unbuildable_request_is_refused_without_traffic(reactor):
    auth = authenticator(reactor)
    results = []
    request = dataclasses.replace(chap_request(), user_name=ICCID + "x" * 300)
    auth.authenticate(request).addBoth(results.append)
    assert reactor.take() == []
    [decision] = results
    assert not decision.accepted
    assert decision.reachable
    assert decision.reason.startswith("cannot build the Access-Request")


def test_cancel_propagates(reactor):
    from twisted.internet import defer

    auth = authenticator(reactor)
    deferred = auth.authenticate(chap_request())
    results = []
    deferred.addBoth(results.append)
    deferred.cancel()
    assert isinstance(results[0].value, defer.CancelledError)
    assert auth.client.in_flight == 0


def test_stop_refuses_requests_in_flight(reactor):
    auth = authenticator(reactor)
    results = []
    auth.authenticate(chap_request()).addBoth(results.append)
    auth.stop()
    assert not auth.client.running
    assert results == [Decision(False, reason="RADIUS client stopped", reachable=False)]


def test_from_config_needs_a_server(reactor):
    with pytest.raises(ValueError, match="at least one"):
        RadiusAuthenticator.from_config(ConfigBuilder().config(), reactor)


def test_client_is_shareable(reactor):
    auth = authenticator(reactor)
    assert isinstance(auth.client, RadiusClient)


@pytest.mark.parametrize(
    ("value", "route"),
    [
        ("10.1.0.0/24 0.0.0.0 1", "10.1.0.0/24"),
        ("10.1.0.0/24", "10.1.0.0/24"),
        ("10.1.0.5/24 10.1.0.1 5", "10.1.0.0/24"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("  172.16.0.0/12   0.0.0.0  ", "172.16.0.0/12"),
        ("", None),
        ("2001:db8::/32 :: 1", None),
        ("10.1.0.0/33", None),
        ("garbage", None),
    ],
)
def test_parse_framed_route(value, route):
    expected = ipaddress.IPv4Network(route) if route else None
    assert parse_framed_route(value) == expected


def test_zero_timeouts_mean_none():
    reply = Reply(
        Code.ACCESS_ACCEPT,
        1,
        (("Session-Timeout", 0), ("Idle-Timeout", 0), ("Acct-Interim-Interval", 0)),
    )
    decision = decision_from_reply(reply)
    assert decision.session_timeout is None
    assert decision.idle_timeout is None
    assert decision.interim_interval is None
