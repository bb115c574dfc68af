"""What the PPP session does with the unexpected: unknown protocols, bad bytes, missing
resources, answers that arrive after the session ended, teardown from either side.

RFC 1661 section 5.7 (Protocol-Reject once LCP is Opened, silent discard before),
section 3.4 (frames of a protocol not yet in its phase), DESIGN.md section 2 steps
6 and 9 (pool exhausted: a temporary refusal; a lease never leaks).
"""

from __future__ import annotations

import random

import pytest

from lns.l2tp.proxy import ProxyLcp
from lns.ppp.auth import CallContext, Decision
from lns.ppp.frame import Protocol, encode_frame
from lns.ppp.packet import Code, ControlPacket
from lns.ppp.session import (
    AllocateAddress,
    Authenticate,
    Phase,
    PppSession,
    PppSettings,
    ReleaseAddress,
    SendFrame,
    SessionClosed,
)
from lns.ppp.termination import TerminateCause
from lns.testing.lacsim.lac import LCP_AUTH_CHAP_MD5, LCP_MRU_1450, lcp_magic
from lns.testing.ppp_link import ASSIGNED, ICCID, Link, packets, protocols, to_l2tp_proxy_auth

DEVICE_LCP = bytes([1, 4, 0x01, 0x00]) + lcp_magic(0x600DF00D)  # the device's MRU: 256
PROXY = ProxyLcp(DEVICE_LCP, LCP_MRU_1450 + LCP_AUTH_CHAP_MD5 + lcp_magic(0x0BADCAFE), DEVICE_LCP)
ECHO = encode_frame(Protocol.LCP, ControlPacket(Code.ECHO_REQUEST, 99, bytes(4)).encode())
UNKNOWN = 0x8235  # a valid, unassigned-to-us control protocol number


def make_link(**kwargs) -> Link:
    link = Link(proxy_lcp=PROXY, proxy_auth=to_l2tp_proxy_auth("chap", random.Random(8)), **kwargs)
    link.start()
    return link


def lcp_codes(frames: list[bytes]) -> list[int]:
    return [p.code for p in packets(frames, Protocol.LCP)]


def assert_still_working(link: Link) -> None:
    before = len(link.to_device)
    link.send_from_device(ECHO)
    [reply] = packets(link.to_device[before:], Protocol.LCP)
    assert (reply.code, reply.identifier) == (Code.ECHO_REPLY, 99)
    assert link.closed is None
    assert link.session.phase is Phase.OPENED


# --- Protocol-Reject -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "protocol", [Protocol.IPV6CP, Protocol.CCP, UNKNOWN, Protocol.IPV6], ids=hex
)
def test_protocol_reject_once_the_session_is_up(protocol: int) -> None:
    link = make_link()
    assert link.opened is not None
    payload = ControlPacket(Code.CONFIGURE_REQUEST, 4, bytes([1, 10]) + bytes(8)).encode()
    before = len(link.to_device)
    link.send_from_device(encode_frame(protocol, payload))

    [reject] = packets(link.to_device[before:], Protocol.LCP)
    assert reject.code == Code.PROTOCOL_REJECT
    # RFC 1661 section 5.7: Rejected-Protocol, then the rejected Information field.
    assert reject.data == protocol.to_bytes(2, "big") + payload
    assert link.device.state.protocol_rejected == [protocol]
    assert link.session.counters.protocol_rejects == 1
    assert_still_working(link)


def test_protocol_rejects_take_new_identifiers() -> None:
    link = make_link()
    for protocol in (Protocol.IPV6CP, Protocol.CCP, UNKNOWN):
        link.send_from_device(encode_frame(protocol, b"\x01\x01\x00\x04"))
    rejects = packets(link.to_device, Protocol.LCP)
    assert [r.code for r in rejects] == [Code.PROTOCOL_REJECT] * 3
    assert len({r.identifier for r in rejects}) == 3
    assert link.device.state.protocol_rejected == [Protocol.IPV6CP, Protocol.CCP, UNKNOWN]


def test_protocol_reject_is_cut_to_the_peer_mru() -> None:
    link = make_link()
    link.send_from_device(encode_frame(Protocol.CCP, bytes(2000)))
    [reject] = packets(link.to_device, Protocol.LCP)
    assert len(reject.encode()) == 256  # the device's MRU from proxy LCP
    assert reject.data[:2] == b"\x80\xfd"


def test_protocol_reject_with_compressed_protocol_field() -> None:
    """PFC was in proxy LCP: a 1-byte protocol field is accepted (RFC 1661 section 6.5)."""
    link = make_link()
    link.send_from_device(b"\x3d" + bytes(6))  # 0x003D, multilink, in compressed form
    [reject] = packets(link.to_device, Protocol.LCP)
    assert reject.data[:2] == b"\x00\x3d"


def test_unknown_protocols_are_discarded_before_lcp_is_open() -> None:
    link = Link(PppSettings(lcp_renegotiation="always"), proxy_lcp=PROXY)
    link.drop_to_device = lambda frame: True  # the device never answers: LCP stays in Req-Sent
    link.start()
    for protocol in (Protocol.IPV6CP, Protocol.CCP, UNKNOWN):
        link.send_from_device(encode_frame(protocol, b"\x01\x01\x00\x04"))

    assert lcp_codes(link.to_device) == [Code.CONFIGURE_REQUEST]
    assert link.session.counters.discarded == 3
    assert link.session.counters.protocol_rejects == 0


# --- bad bytes --------------------------------------------------------------------------

LCP = b"\xff\x03\xc0\x21"
IPCP = b"\xff\x03\x80\x21"
BAD_FRAMES = {
    "empty": b"",
    "address only": b"\xff",
    "no protocol": b"\xff\x03",
    "bad control": b"\xff\x05\xc0\x21\x09\x01\x00\x08\x00\x00\x00\x00",
    "protocol truncated": b"\xff\x03\xc0",
    "protocol even low byte": b"\xff\x03\xc0\x20\x09\x01\x00\x08\x00\x00\x00\x00",
    "protocol 0x8000": b"\x80\x00",
    "lcp header truncated": LCP + b"\x09\x01",
    "lcp length below 4": LCP + b"\x09\x01\x00\x02",
    "lcp length past the end": LCP + b"\x09\x01\x00\x20\x00\x00\x00\x00",
    "lcp option length 0": LCP + b"\x01\x07\x00\x06\x01\x00",
    "lcp option length 1": LCP + b"\x01\x07\x00\x06\x01\x01",
    "lcp option past the end": LCP + b"\x01\x07\x00\x08\x01\x08\x05\xaa",
    "lcp option header cut": LCP + b"\x01\x07\x00\x09\x01\x04\x05\xaa\x07",
    "lcp nak bad option": LCP + b"\x03\x07\x00\x06\x05\x00",
    "lcp reject bad option": LCP + b"\x04\x07\x00\x06\x05\x01",
    "lcp ack bad option": LCP + b"\x02\x07\x00\x06\x05\x09",
    "ipcp header truncated": IPCP + b"\x01",
    "ipcp option length 0": IPCP + b"\x01\x07\x00\x06\x03\x00",
    "ipcp option past the end": IPCP + b"\x01\x07\x00\x08\x03\x06\x00\x00",
    "chap header truncated": b"\xff\x03\xc2\x23\x02\x01\x00",
    "pap length past the end": b"\xff\x03\xc0\x23\x01\x01\x00\x40",
}


@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_bytes_are_dropped_and_counted(frame: bytes) -> None:
    link = make_link()
    assert link.opened is not None
    before = len(link.to_device)
    link.send_from_device(frame)

    assert link.session.counters.bad_frames == 1
    assert link.to_device[before:] == []
    assert link.of_type(SessionClosed) == []
    assert_still_working(link)
    assert link.session.counters.bad_frames == 1


def test_bad_bytes_during_negotiation_do_not_disturb_it() -> None:
    link = Link(PppSettings(lcp_renegotiation="always"), proxy_lcp=PROXY)
    held: list[bytes] = []
    link.drop_to_device = lambda frame: not held and not held.append(frame)
    link.start()  # our Configure-Request is held back
    for frame in BAD_FRAMES.values():
        link.send_from_device(frame)
    # IPCP packets before the network phase are discarded with their options unread
    # (RFC 1661 section 3.4): the two whose header parses.
    counters = link.session.counters
    assert (counters.bad_frames, counters.discarded) == (len(BAD_FRAMES) - 2, 2)
    assert lcp_codes(link.to_device) == [Code.CONFIGURE_REQUEST]
    link.drop_to_device = lambda frame: False
    link.advance(PppSettings().restart_interval)  # retransmitted, answered
    assert link.opened is not None


def test_random_bytes_never_raise() -> None:
    """Whatever the device sends, the session answers with effects, never an exception."""
    rng = random.Random(5)
    headers = [LCP, IPCP, b"\xff\x03\xc2\x23", b"\xff\x03\xc0\x23", b"\xff\x03", b""]
    link = make_link()
    for _ in range(2000):
        if link.closed is not None:  # a random valid Terminate-Request or renegotiation
            link = make_link()
        frame = rng.choice(headers) + rng.randbytes(rng.randrange(0, 16))
        link.send_from_device(frame)
    assert link.session.counters.frames_in > 0


# --- missing resources --------------------------------------------------------------


def test_pool_exhausted_is_a_temporary_refusal() -> None:
    link = make_link(pool=lambda request: None)

    closed = link.closed
    assert closed is not None
    assert closed.temporary
    assert closed.cause is TerminateCause.SERVICE_UNAVAILABLE
    assert "no address" in closed.message
    assert "pool exhausted" in closed.message
    assert link.released == []
    assert packets(link.to_device, Protocol.IPCP) == []
    assert lcp_codes(link.to_device) == [Code.TERMINATE_REQUEST]


def test_aaa_reject_is_not_temporary() -> None:
    link = make_link(aaa=lambda request: Decision(False, "unknown SIM"))
    assert link.closed is not None
    assert not link.closed.temporary
    assert "unknown SIM" in link.closed.message
    assert link.of_type(AllocateAddress) == []


def test_aaa_unreachable_is_temporary() -> None:
    link = make_link(aaa=lambda request: Decision(False, "no server", reachable=False))
    assert link.closed is not None
    assert link.closed.temporary


# --- late answers ---------------------------------------------------------------------


def bare_session() -> PppSession:
    return PppSession(
        CallContext(ICCID),
        PppSettings(),
        random.Random(9),
        PROXY,
        to_l2tp_proxy_auth("chap", random.Random(10)),
    )


def test_late_aaa_answer_after_the_session_closed_does_nothing() -> None:
    session = bare_session()
    [authenticate] = session.start(0.0)
    assert isinstance(authenticate, Authenticate)
    closed = session.call_cleared(1.0)
    assert [type(e) for e in closed] == [SessionClosed]
    assert closed[0].cause is TerminateCause.LOST_CARRIER

    assert session.authenticated(Decision(True), 2.0) == []
    assert session.authenticated(Decision(False, "no"), 2.0) == []
    assert session.get_timer() is None


def test_late_address_after_the_session_closed_is_released() -> None:
    session = bare_session()
    session.start(0.0)
    [allocate] = session.authenticated(Decision(True), 0.5)
    assert isinstance(allocate, AllocateAddress)
    closed = session.close(TerminateCause.ADMIN_RESET, "killed by the operator", 1.0)
    assert [type(e) for e in closed] == [SendFrame, SessionClosed]  # no lease yet

    assert session.address_assigned(ASSIGNED, "lease-1", 2.0) == [ReleaseAddress("lease-1")]
    assert session.address_failed("too late anyway", 2.0) == []
    assert session.get_timer() is None


def test_late_address_after_call_cleared_is_released() -> None:
    session = bare_session()
    session.start(0.0)
    session.authenticated(Decision(True), 0.0)
    session.call_cleared(1.0)
    assert session.address_assigned(ASSIGNED, "lease-2", 2.0) == [ReleaseAddress("lease-2")]


def test_a_second_address_answer_is_released() -> None:
    session = bare_session()
    session.start(0.0)
    session.authenticated(Decision(True), 0.0)
    first = session.address_assigned(ASSIGNED, "lease-1", 1.0)
    assert not any(isinstance(e, ReleaseAddress) for e in first)
    assert session.address_assigned(ASSIGNED, "lease-9", 1.0) == [ReleaseAddress("lease-9")]
    assert session.lease == "lease-1"


# --- teardown ------------------------------------------------------------------------


def test_call_cleared_when_open_releases_and_sends_nothing() -> None:
    link = make_link()
    before = len(link.to_device)
    link._run(link.session.call_cleared(link.now))

    assert link.to_device[before:] == []
    assert link.released == [("lease", ASSIGNED)]
    closed = link.closed
    assert closed is not None
    assert closed.cause is TerminateCause.LOST_CARRIER
    assert closed.was_open


def test_close_from_our_side_terminates_then_releases() -> None:
    link = make_link()
    effects = link.session.close(TerminateCause.ADMIN_RESET, "killed by the operator", link.now)

    assert [type(e) for e in effects] == [SendFrame, ReleaseAddress, SessionClosed]
    assert isinstance(effects[0], SendFrame)
    [terminate] = packets([effects[0].frame], Protocol.LCP)
    assert terminate.code == Code.TERMINATE_REQUEST
    assert terminate.data == b"killed by the operator"
    assert link.session.close(TerminateCause.ADMIN_RESET, "again", link.now) == []
    assert link.session.call_cleared(link.now) == []


def test_frames_after_close_are_ignored() -> None:
    link = make_link()
    link._run(link.session.close(TerminateCause.ADMIN_RESET, "bye", link.now))
    before = len(link.to_device)
    for frame in (ECHO, encode_frame(Protocol.CCP, b"\x01\x01\x00\x04"), b""):
        assert link.session.frame_received(frame, link.now) == []
    assert link.to_device[before:] == []
    assert Protocol.LCP in protocols(link.to_device)
