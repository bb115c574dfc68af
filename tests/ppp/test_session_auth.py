"""PPP session authentication on a fake clock: proxy CHAP/PAP and each ``no_proxy_auth``.

DESIGN.md section 2 step 5: proxy PAP/CHAP (RFC 2661 section 4.4.5, AVPs 29-33) is
checked through the Authenticate effect with no PPP exchange; without proxy
authentication the ``no_proxy_auth`` policy decides (ICCID alone, our own CHAP-MD5
per RFC 1994 or PAP per RFC 1334, or reject). Assertions are on the frames on the
wire, decoded, and on the session's effects.
"""

from __future__ import annotations

import random

import pytest

from lns.l2tp.avp import AttributeType, MessageType, make
from lns.l2tp.control import Iccn, parse
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.proxy import ProxyAuth, ProxyAuthenType, ProxyLcp, proxy_auth_from
from lns.ppp import chap, pap
from lns.ppp.auth import AuthMethod, AuthRequest, AuthSource, Decision
from lns.ppp.frame import Protocol
from lns.ppp.lcp import AuthProtocol, LcpOption
from lns.ppp.packet import Code, decode_options
from lns.ppp.session import PppSettings, SessionClosed
from lns.ppp.termination import TerminateCause
from lns.testing.lacsim.device import DeviceBehaviour
from lns.testing.lacsim.lac import LCP_AUTH_PAP, default_proxy_lcp
from lns.testing.ppp_link import (
    ASSIGNED,
    PASSWORD,
    Link,
    packets,
    protocols,
    to_l2tp_proxy_auth,
    to_l2tp_proxy_lcp,
)

AUTH_PROTOCOLS = {Protocol.CHAP, Protocol.PAP}


def proxy_link(kind: str, password: bytes = PASSWORD, **kwargs) -> Link:
    rng = random.Random(2661)
    return Link(
        proxy_lcp=to_l2tp_proxy_lcp(rng),
        proxy_auth=to_l2tp_proxy_auth(kind, rng, password),
        **kwargs,
    )


def auth_frames(link: Link) -> list[int]:
    return [p for p in protocols(link.to_device + link.to_lns) if p in AUTH_PROTOCOLS]


def lcp_auth_options(link: Link) -> list[bytes]:
    """The Authentication-Protocol option data of each of our LCP Configure-Requests."""
    found = []
    for packet in packets(link.to_device, Protocol.LCP):
        if packet.code == Code.CONFIGURE_REQUEST:
            options = decode_options(packet.data)
            auth = [o.data for o in options if o.type == LcpOption.AUTH_PROTOCOL]
            found.append(auth[0] if auth else b"")
    return found


# --- proxy CHAP and PAP ----------------------------------------------------------------


def test_proxy_chap_checked_through_aaa_without_ppp_exchange() -> None:
    rng = random.Random(2661)
    proxy_lcp = to_l2tp_proxy_lcp(rng)
    proxy_auth = to_l2tp_proxy_auth("chap", rng)
    link = Link(proxy_lcp=proxy_lcp, proxy_auth=proxy_auth)
    link.start()

    [request] = link.auth_requests
    assert request.method is AuthMethod.CHAP
    assert request.source is AuthSource.PROXY
    assert request.chap_id == proxy_auth.chap_id
    assert request.chap_challenge == proxy_auth.challenge
    assert request.chap_response == proxy_auth.response
    assert request.password == b""
    assert auth_frames(link) == []
    assert link.opened is not None
    assert link.opened.address == ASSIGNED
    assert link.closed is None


def test_proxy_chap_id_comes_from_the_low_byte_of_avp_32() -> None:
    """RFC 2661 section 4.4.5: Proxy Authen ID is 2 octets, the CHAP Identifier in the low one."""
    challenge = bytes(range(16))
    chap_id = 0x42
    response = chap.md5_response(chap_id, PASSWORD, challenge)
    iccn = ControlMessage(
        MessageType.ICCN,
        (
            make(AttributeType.TX_CONNECT_SPEED, 100_000_000),
            make(AttributeType.FRAMING_TYPE, 1),
            make(AttributeType.PROXY_AUTHEN_TYPE, int(ProxyAuthenType.CHAP)),
            make(AttributeType.PROXY_AUTHEN_NAME, b"device"),
            make(AttributeType.PROXY_AUTHEN_CHALLENGE, challenge),
            make(AttributeType.PROXY_AUTHEN_ID, 0x0100 | chap_id),  # junk in the high byte
            make(AttributeType.PROXY_AUTHEN_RESPONSE, response),
        ),
    )
    record = parse(decode_message(encode_message(iccn)))
    assert isinstance(record, Iccn)
    proxy_auth = proxy_auth_from(record)
    assert proxy_auth is not None

    link = Link(proxy_lcp=to_l2tp_proxy_lcp(random.Random(1)), proxy_auth=proxy_auth)
    link.start()

    [request] = link.auth_requests
    assert request.chap_id == chap_id
    assert request.name == b"device"
    assert link.opened is not None


def test_proxy_chap_wrong_password_closes_with_the_reason() -> None:
    link = proxy_link("chap", password=b"not the password")
    link.start()

    closed = link.closed
    assert closed is not None
    assert closed.cause is TerminateCause.USER_ERROR
    assert "wrong password" in closed.message
    assert not closed.was_open
    assert not closed.temporary
    assert link.opened is None
    assert auth_frames(link) == []
    # Proxy LCP was adopted, so LCP is open: the device is told with a Terminate-Request.
    [terminate] = packets(link.to_device, Protocol.LCP)
    assert terminate.code == Code.TERMINATE_REQUEST
    assert link.released == []


def test_proxy_pap_password_from_proxy_authen_response_blank_name() -> None:
    link = proxy_link("pap")
    link.start()

    [request] = link.auth_requests
    assert request.method is AuthMethod.PAP
    assert request.source is AuthSource.PROXY
    assert request.password == PASSWORD
    assert request.name == b""
    assert request.chap_response == b""
    assert auth_frames(link) == []
    assert link.opened is not None


def test_proxy_pap_wrong_password_closes() -> None:
    link = proxy_link("pap", password=b"nope")
    link.start()

    assert link.closed is not None
    assert "authentication failed" in link.closed.message
    assert auth_frames(link) == []


def test_proxy_authen_type_none_falls_back_to_policy() -> None:
    """Proxy Authen Type 4 (no authentication) is no proxy authentication at all."""
    proxy_auth = ProxyAuth(ProxyAuthenType.NONE, b"", b"", None, b"")
    link = Link(proxy_lcp=to_l2tp_proxy_lcp(random.Random(3)), proxy_auth=proxy_auth)
    link.start()

    [request] = link.auth_requests
    assert request.method is AuthMethod.ICCID
    assert link.opened is not None


def test_aaa_unreachable_is_a_temporary_refusal() -> None:
    link = proxy_link("chap", aaa=lambda r: Decision(False, "timeout", reachable=False))
    link.start()

    closed = link.closed
    assert closed is not None
    assert closed.temporary
    assert closed.cause is TerminateCause.SERVICE_UNAVAILABLE
    assert "timeout" in closed.message


# --- no proxy authentication: iccid ---------------------------------------------------------


@pytest.mark.parametrize("with_proxy_lcp", [True, False])
def test_no_proxy_auth_iccid(with_proxy_lcp: bool) -> None:
    proxy_lcp = to_l2tp_proxy_lcp(random.Random(4)) if with_proxy_lcp else None
    link = Link(PppSettings(no_proxy_auth="iccid"), proxy_lcp=proxy_lcp)
    link.start()

    [request] = link.auth_requests
    assert request.method is AuthMethod.ICCID
    assert request.source is AuthSource.NONE
    assert request.context.iccid == link.session.context.iccid
    assert request.password == b""
    assert auth_frames(link) == []
    # Without proxy LCP we negotiate LCP, and ask for no authentication protocol.
    assert lcp_auth_options(link) == ([] if with_proxy_lcp else [b""])
    assert link.opened is not None


# --- no proxy authentication: challenge -------------------------------------------------


def challenge_settings(**kwargs) -> PppSettings:
    return PppSettings(no_proxy_auth="challenge", **kwargs)


@pytest.mark.parametrize("with_proxy_lcp", [True, False])
def test_challenge_runs_chap_md5_with_the_device(with_proxy_lcp: bool) -> None:
    proxy_lcp = to_l2tp_proxy_lcp(random.Random(5)) if with_proxy_lcp else None
    link = Link(challenge_settings(), proxy_lcp=proxy_lcp)
    link.start()

    if not with_proxy_lcp:
        # LCP negotiated CHAP-MD5 (C2 23 05) in our Configure-Request.
        assert lcp_auth_options(link) == [b"\xc2\x23\x05"]
    [challenge] = packets(link.to_device, Protocol.CHAP)[:1]
    assert challenge.code == chap.ChapCode.CHALLENGE
    value = chap.decode_value(challenge)
    assert len(value.value) == chap.CHALLENGE_LENGTH
    assert value.name == b"lns"

    [response] = packets(link.to_lns, Protocol.CHAP)
    assert response.code == chap.ChapCode.RESPONSE
    assert response.identifier == challenge.identifier

    [request] = link.auth_requests
    assert request.method is AuthMethod.CHAP
    assert request.source is AuthSource.PPP
    assert request.chap_id == challenge.identifier
    assert request.chap_challenge == value.value
    assert request.chap_response == chap.md5_response(challenge.identifier, PASSWORD, value.value)

    success = packets(link.to_device, Protocol.CHAP)[1]
    assert success.code == chap.ChapCode.SUCCESS
    assert success.identifier == challenge.identifier
    assert link.device.state.auth_result == "success"
    assert link.opened is not None


def test_challenge_rejected_sends_failure_then_terminate_request() -> None:
    link = Link(challenge_settings(), behaviour=DeviceBehaviour(password=b"wrong"))
    link.start()

    chap_packets = packets(link.to_device, Protocol.CHAP)
    assert [p.code for p in chap_packets] == [chap.ChapCode.CHALLENGE, chap.ChapCode.FAILURE]
    assert chap_packets[1].identifier == chap_packets[0].identifier
    assert link.device.state.auth_result == "failure"
    # The Failure goes out first, then LCP Terminate-Request, then the session ends.
    frame_protocols = protocols(link.to_device)
    failure_at = frame_protocols.index(Protocol.CHAP, frame_protocols.index(Protocol.CHAP) + 1)
    last_lcp = packets(link.to_device, Protocol.LCP)[-1]
    assert last_lcp.code == Code.TERMINATE_REQUEST
    assert frame_protocols[failure_at + 1 :] == [Protocol.LCP]
    closed = link.closed
    assert closed is not None
    assert closed.cause is TerminateCause.USER_ERROR
    assert "wrong password" in closed.message
    assert link.effects[-1] == closed
    assert link.device.state.terminated


def pap_device_link(password: bytes = PASSWORD, **settings) -> Link:
    behaviour = DeviceBehaviour(auth=(AuthProtocol.PAP,), password=password, name=b"sim")
    return Link(challenge_settings(**settings), behaviour=behaviour)


def test_device_refusing_chap_falls_back_to_pap() -> None:
    link = pap_device_link()
    link.start()

    # First request asks CHAP-MD5; the device Naks it with PAP; the next asks PAP.
    assert lcp_auth_options(link) == [b"\xc2\x23\x05", b"\xc0\x23"]
    naks = [p for p in packets(link.to_lns, Protocol.LCP) if p.code == Code.CONFIGURE_NAK]
    assert [decode_options(n.data)[0].data for n in naks] == [b"\xc0\x23"]

    assert packets(link.to_device, Protocol.CHAP) == []
    [request_packet] = packets(link.to_lns, Protocol.PAP)
    credentials = pap.decode_request(request_packet)
    [ack] = packets(link.to_device, Protocol.PAP)
    assert ack.code == pap.PapCode.AUTHENTICATE_ACK
    assert ack.identifier == credentials.identifier

    [request] = link.auth_requests
    assert request.method is AuthMethod.PAP
    assert request.source is AuthSource.PPP
    assert request.name == b"sim"
    assert request.password == PASSWORD
    assert link.device.state.auth_result == "success"
    assert link.opened is not None


def test_pap_rejected_sends_nak_then_terminate_request() -> None:
    link = pap_device_link(password=b"wrong")
    link.start()

    [nak] = packets(link.to_device, Protocol.PAP)
    assert nak.code == pap.PapCode.AUTHENTICATE_NAK
    assert link.device.state.auth_result == "failure"
    assert packets(link.to_device, Protocol.LCP)[-1].code == Code.TERMINATE_REQUEST
    assert protocols(link.to_device)[-2:] == [Protocol.PAP, Protocol.LCP]
    assert link.closed is not None
    assert "authentication failed" in link.closed.message
    assert link.opened is None


def test_device_refusing_the_only_protocol_we_offer_closes() -> None:
    link = pap_device_link(auth=(AuthProtocol.CHAP,))
    link.start()

    # No second Configure-Request without authentication: a Terminate-Request instead.
    codes = [p.code for p in packets(link.to_device, Protocol.LCP)]
    assert codes.count(Code.CONFIGURE_REQUEST) == 1
    assert codes[-1] == Code.TERMINATE_REQUEST
    assert link.closed is not None
    assert "refused CHAP" in link.closed.message
    assert link.auth_requests == []


def test_device_rejecting_authentication_closes() -> None:
    link = Link(challenge_settings(), behaviour=DeviceBehaviour(auth=()))
    link.start()

    assert link.closed is not None
    assert "rejected authentication" in link.closed.message
    assert link.auth_requests == []
    assert packets(link.to_device, Protocol.LCP)[-1].code == Code.TERMINATE_REQUEST


def test_unanswered_challenge_is_retransmitted_then_the_session_closes() -> None:
    settings = challenge_settings()
    link = Link(settings)
    link.drop_to_device = lambda frame: protocols([frame]) == [Protocol.CHAP]
    link.start()
    # One Challenge every restart interval, max_configure of them; the last waits too.
    end = settings.max_configure * settings.restart_interval
    link.advance(end - 0.001)
    assert link.closed is None
    link.advance(0.001)

    challenges = packets(link.to_device, Protocol.CHAP)
    assert len(challenges) == settings.max_configure
    assert all(p.code == chap.ChapCode.CHALLENGE for p in challenges)
    # RFC 1994 section 4.1: each Challenge has a new Identifier (and a new value).
    identifiers = [p.identifier for p in challenges]
    assert identifiers == [(identifiers[0] + i) % 256 for i in range(len(identifiers))]
    assert len({chap.decode_value(p).value for p in challenges}) == len(challenges)
    closed = link.closed
    assert closed is not None
    assert "did not authenticate" in closed.message
    assert packets(link.to_device, Protocol.LCP)[-1].code == Code.TERMINATE_REQUEST
    assert link.session.get_timer() is None


def test_answer_to_a_retransmitted_challenge_is_accepted() -> None:
    link = Link(challenge_settings())
    dropped: list[bytes] = []

    def drop_first_challenge(frame: bytes) -> bool:
        if protocols([frame]) == [Protocol.CHAP] and not dropped:
            dropped.append(frame)
            return True
        return False

    link.drop_to_device = drop_first_challenge
    link.start()
    assert link.opened is None
    link.advance(3.0)

    first, second = packets(link.to_device, Protocol.CHAP)[:2]
    [request] = link.auth_requests
    assert request.chap_id == second.identifier != first.identifier
    assert request.chap_challenge == chap.decode_value(second).value
    assert link.opened is not None


def test_response_with_a_stale_identifier_is_discarded() -> None:
    link = Link(challenge_settings())
    link.drop_to_device = lambda frame: protocols([frame]) == [Protocol.CHAP]
    link.start()
    [challenge] = packets(link.to_device, Protocol.CHAP)
    stale = chap.response((challenge.identifier + 1) % 256, b"x" * 16, b"")
    before = link.session.counters.discarded
    link.send_from_device(b"\xff\x03\xc2\x23" + stale.encode())

    assert link.auth_requests == []
    assert link.session.counters.discarded == before + 1


def test_pap_device_that_never_authenticates_times_out() -> None:
    """Proxy LCP agreed PAP, no proxy auth, and the device stays silent: auth_timeout."""
    spec = default_proxy_lcp(random.Random(6), auth=LCP_AUTH_PAP)
    proxy_lcp = ProxyLcp(spec.initial_received, spec.last_sent, spec.last_received)
    settings = challenge_settings(auth_timeout=20.0)
    link = Link(settings, proxy_lcp=proxy_lcp)
    link.start()
    assert link.session.lcp_policy.auth is AuthProtocol.PAP
    assert packets(link.to_device, Protocol.LCP) == []

    link.advance(19.9)
    assert link.closed is None
    link.advance(0.1)
    assert link.closed is not None
    assert "did not authenticate" in link.closed.message
    assert packets(link.to_device, Protocol.LCP)[-1].code == Code.TERMINATE_REQUEST


# --- no proxy authentication: reject ----------------------------------------------------


def test_no_proxy_auth_reject_closes_at_start() -> None:
    link = Link(PppSettings(no_proxy_auth="reject"), proxy_lcp=to_l2tp_proxy_lcp(random.Random(7)))
    link.start()

    closed = link.closed
    assert isinstance(closed, SessionClosed)
    assert "no_proxy_auth = reject" in closed.message
    assert "no proxy authentication" in closed.message
    assert not closed.temporary
    assert link.to_device == []
    assert link.auth_requests == []
    assert link.session.get_timer() is None


def test_reject_policy_does_not_apply_with_proxy_auth() -> None:
    link = proxy_link("chap", settings=PppSettings(no_proxy_auth="reject"))
    link.start()
    assert link.opened is not None


def test_auth_request_repr_hides_secrets() -> None:
    link = proxy_link("pap")
    link.start()
    [request] = link.auth_requests
    assert isinstance(request, AuthRequest)
    assert PASSWORD.decode() not in repr(request)
