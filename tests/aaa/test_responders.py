"""Message-Authenticator enforcement over real UDP, against small pyrad-based servers.

FreeRADIUS 3.2.1 does not sign its replies (notes/peers.md), so these responders
stand in for one that does, and for an attacker who can forge the Response
Authenticator but not the HMAC (BlastRADIUS, CVE-2024-3596).
"""

from __future__ import annotations

import hashlib
import ipaddress

import pytest
import pytest_twisted
from pyrad import packet as pyrad_packet
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

from aaa.radius.auth import RadiusAuthenticator
from lns.ppp.auth import AuthMethod, AuthRequest, AuthSource, CallContext, Decision
from lns.testing.config import ConfigBuilder
from lns.testing.radius_fakes import forge, parse_request, strip_message_authenticator

pytestmark = pytest.mark.integration

SECRET = b"responder-secret"
PASSWORD = b"device-password"
CHALLENGE = bytes(range(100, 116))


class Responder(DatagramProtocol):
    """Answers Access-Requests as a RADIUS server: Accept when the CHAP password is
    right, Reject otherwise; `mode` says how the reply is signed."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "signed", "forged" or "unsigned"
        self.requests = 0
        self.bad_requests = 0

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        request = parse_request(datagram, SECRET)
        self.requests += 1
        # Our requests must carry a valid Message-Authenticator: a server checks it.
        if not (request.message_authenticator and request.verify_message_authenticator()):
            self.bad_requests += 1
            return
        reply = request.CreateReply()
        if request.VerifyChapPasswd(PASSWORD):
            reply.code = pyrad_packet.AccessAccept
            reply.AddAttribute("Framed-IP-Address", "100.64.77.1")
        else:
            reply.code = pyrad_packet.AccessReject
            reply.AddAttribute("Reply-Message", "wrong password")
        data = reply.ReplyPacket()  # signed: pyrad adds the Message-Authenticator
        if self.mode == "forged":
            data = forge(data, request.authenticator, SECRET)
        elif self.mode == "unsigned":
            data = strip_message_authenticator(data, request.authenticator, SECRET)
        assert self.transport is not None
        self.transport.write(data, addr)


@pytest.fixture
def responder_authenticator():
    ports = []
    authenticators = []

    def make(mode: str, require: bool = True):
        responder = Responder(mode)
        port = reactor.listenUDP(0, responder, interface="127.0.0.1")
        ports.append(port)
        server = {
            "address": "127.0.0.1",
            "auth_port": port.getHost().port,
            "secret": SECRET.decode(),
            "timeout": 0.3,
            "retries": 1,
        }
        config = (
            ConfigBuilder().aaa(require_message_authenticator=require).radius(**server).config()
        )
        authenticator = RadiusAuthenticator.from_config(config, reactor)
        authenticator.start()
        authenticators.append(authenticator)
        return responder, authenticator

    yield make
    for authenticator in authenticators:
        pytest_twisted.blockon(authenticator.stop())
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


def chap(password: bytes = PASSWORD) -> AuthRequest:
    return AuthRequest(
        CallContext(iccid="89440000000000000094", session_id=5),
        AuthMethod.CHAP,
        AuthSource.PROXY,
        chap_id=3,
        chap_challenge=CHALLENGE,
        chap_response=hashlib.md5(bytes([3]) + password + CHALLENGE).digest(),
    )


@pytest_twisted.inlineCallbacks
def test_signed_reply_accepted_with_require_on(responder_authenticator):
    responder, authenticator = responder_authenticator("signed")
    decision = yield authenticator.authenticate(chap())
    assert decision == Decision(True, framed_address=ipaddress.IPv4Address("100.64.77.1"))
    assert responder.bad_requests == 0


@pytest_twisted.inlineCallbacks
def test_signed_reject_honoured(responder_authenticator):
    _, authenticator = responder_authenticator("signed")
    decision = yield authenticator.authenticate(chap(b"wrong"))
    assert decision == Decision(False, reason="wrong password")


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize("require", [True, False])
def test_forged_message_authenticator_ignored(responder_authenticator, require):
    responder, authenticator = responder_authenticator("forged", require)
    decision = yield authenticator.authenticate(chap())
    assert not decision.accepted
    assert not decision.reachable
    assert responder.requests == 2  # the request and its retransmission, both answered
    stats = next(iter(authenticator.client.stats().values()))
    # Loopback replies come back before the timeout, but no test bets on timing.
    assert stats.bad_message_authenticator >= 1
    assert stats.replies == 0


@pytest_twisted.inlineCallbacks
def test_missing_message_authenticator_ignored_with_require_on(responder_authenticator):
    _, authenticator = responder_authenticator("unsigned", require=True)
    decision = yield authenticator.authenticate(chap())
    assert not decision.reachable
    stats = next(iter(authenticator.client.stats().values()))
    assert stats.unsigned_dropped >= 1
    assert stats.replies == 0


@pytest_twisted.inlineCallbacks
def test_missing_message_authenticator_accepted_with_require_off(responder_authenticator):
    _, authenticator = responder_authenticator("unsigned", require=False)
    decision = yield authenticator.authenticate(chap())
    assert decision.accepted
