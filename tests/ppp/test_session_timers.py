"""LCP Echo keepalive on the fake clock.

RFC 1661 section 5.8 (Echo-Request/Reply with the Magic-Number), DESIGN.md section
2 steps 8-9: an Echo-Request every ``echo_interval``; ``echo_failures`` missed
replies end the session (Acct-Terminate-Cause Lost-Service). Session-Timeout and
Idle-Timeout are the session supervisor's: tests/sessions.
"""

from __future__ import annotations

import random

from lns.l2tp.proxy import ProxyLcp
from lns.ppp.auth import Decision
from lns.ppp.frame import Protocol, encode_frame
from lns.ppp.packet import Code, ControlPacket
from lns.ppp.session import PppSettings
from lns.ppp.termination import TerminateCause
from lns.testing.lacsim.device import DeviceBehaviour
from lns.testing.lacsim.lac import LCP_AUTH_CHAP_MD5, LCP_MRU_1450, lcp_magic
from lns.testing.ppp_link import ASSIGNED, Link, packets, protocols, to_l2tp_proxy_auth

OUR_MAGIC = 0x0BADCAFE
DEVICE_LCP = LCP_MRU_1450 + lcp_magic(0x600DF00D)
GOOD_PROXY = ProxyLcp(
    DEVICE_LCP, LCP_MRU_1450 + LCP_AUTH_CHAP_MD5 + lcp_magic(OUR_MAGIC), DEVICE_LCP
)

SETTINGS = PppSettings(echo_interval=30.0, echo_failures=5)
IP_PACKET = encode_frame(Protocol.IP, bytes.fromhex("4500001c000000004001f96e0a0000010a000002"))


def make_link(
    behaviour: DeviceBehaviour | None = None,
    decision: Decision | None = None,
    settings: PppSettings = SETTINGS,
) -> Link:
    link = Link(
        settings,
        proxy_lcp=GOOD_PROXY,
        proxy_auth=to_l2tp_proxy_auth("chap", random.Random(1661)),
        behaviour=behaviour,
        aaa=(lambda request: decision) if decision is not None else lambda request: Decision(True),
    )
    link.now = 1000.0  # nothing depends on starting at zero
    link.start()
    assert link.opened is not None
    return link


def echo_requests(link: Link) -> list[ControlPacket]:
    return [p for p in packets(link.to_device, Protocol.LCP) if p.code == Code.ECHO_REQUEST]


# --- keepalive ---------------------------------------------------------------------------


def test_echo_failure_tears_the_session_down_on_time() -> None:
    link = make_link(DeviceBehaviour(answer_echo=False))
    opened_at = link.now
    interval, failures = SETTINGS.echo_interval, SETTINGS.echo_failures
    # The failures-th Echo-Request goes unanswered for one more interval.
    deadline = opened_at + (failures + 1) * interval
    assert link.session.get_timer() == opened_at + interval

    link.advance(deadline - 0.001 - link.now)
    assert link.closed is None
    echoes = echo_requests(link)
    assert len(echoes) == failures
    assert all(p.data == OUR_MAGIC.to_bytes(4, "big") for p in echoes)
    assert len({p.identifier for p in echoes}) == failures
    assert packets(link.to_lns, Protocol.LCP) == []

    link.advance(0.001)
    closed = link.closed
    assert closed is not None
    assert closed.cause is TerminateCause.LOST_SERVICE
    assert f"no reply to {failures} LCP Echo-Requests" in closed.message
    assert closed.was_open
    assert link.released == [("lease", ASSIGNED)]
    assert packets(link.to_device, Protocol.LCP)[-1].code == Code.TERMINATE_REQUEST
    assert link.session.get_timer() is None


def test_answered_echoes_keep_the_session_up() -> None:
    link = make_link()
    link.advance(100 * SETTINGS.echo_interval)

    assert link.closed is None
    echoes = echo_requests(link)
    assert len(echoes) == 100
    replies = packets(link.to_lns, Protocol.LCP)
    assert [r.code for r in replies] == [Code.ECHO_REPLY] * 100
    assert [r.identifier for r in replies] == [e.identifier for e in echoes]
    assert all(r.data[:4] == link.device.magic.to_bytes(4, "big") for r in replies)


def test_a_reply_resets_the_missed_count() -> None:
    link = make_link()
    answering = {"on": False}
    link.drop_to_device = lambda frame: not answering["on"] and protocols([frame]) == [Protocol.LCP]
    failures = SETTINGS.echo_failures
    link.advance((failures - 1) * SETTINGS.echo_interval)  # four Echo-Requests lost
    assert link.closed is None
    answering["on"] = True
    link.advance(SETTINGS.echo_interval)  # the fifth is answered
    answering["on"] = False
    link.advance(failures * SETTINGS.echo_interval)  # five more lost: still up
    assert link.closed is None
    link.advance(SETTINGS.echo_interval)
    assert link.closed is not None
    assert link.closed.cause is TerminateCause.LOST_SERVICE


def test_echo_requests_from_the_device_are_always_answered_with_our_magic() -> None:
    link = make_link(decision=None)
    for identifier, data in [(1, b""), (2, b"\x00\x00\x00\x00"), (3, b"\x12\x34\x56\x78hello")]:
        request = ControlPacket(Code.ECHO_REQUEST, identifier, data)
        link.send_from_device(encode_frame(Protocol.LCP, request.encode()))

    replies = packets(link.to_device, Protocol.LCP)
    assert [r.code for r in replies] == [Code.ECHO_REPLY] * 3
    assert [r.identifier for r in replies] == [1, 2, 3]
    magic = OUR_MAGIC.to_bytes(4, "big")
    assert [r.data for r in replies] == [magic, magic, magic + b"hello"]


def test_echo_request_answered_while_aaa_is_pending() -> None:
    link = Link(
        SETTINGS,
        proxy_lcp=GOOD_PROXY,
        proxy_auth=to_l2tp_proxy_auth("chap", random.Random(1)),
        aaa=lambda request: None,
    )
    link.start()
    link.send_from_device(encode_frame(Protocol.LCP, ControlPacket(9, 7, b"\0\0\0\0").encode()))
    [reply] = packets(link.to_device, Protocol.LCP)
    assert (reply.code, reply.identifier) == (Code.ECHO_REPLY, 7)


def test_echo_request_before_lcp_is_open_is_discarded() -> None:
    link = Link(PppSettings(lcp_renegotiation="always"), proxy_lcp=GOOD_PROXY)
    link.drop_to_device = lambda frame: True  # LCP stays in Req-Sent
    link.start()
    link.send_from_device(encode_frame(Protocol.LCP, ControlPacket(9, 7, b"\0\0\0\0").encode()))

    codes = [p.code for p in packets(link.to_device, Protocol.LCP)]
    assert codes == [Code.CONFIGURE_REQUEST]
    assert link.session.counters.discarded == 1


# --- no timeouts of its own --------------------------------------------------------------


def test_no_timeouts_without_them_in_the_decision() -> None:
    link = make_link(decision=Decision(True))
    assert link.session.get_timer() == link.now + SETTINGS.echo_interval
    link.advance(86400)
    assert link.closed is None
