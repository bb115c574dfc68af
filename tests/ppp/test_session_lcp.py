"""Proxy LCP adoption and LCP renegotiation per ``lcp_renegotiation``, on a fake clock.

RFC 2661 section 4.4.5 (proxy LCP AVPs 26-28) and RFC 1661 sections 4-6: acceptable
proxy LCP is adopted with no LCP packet on the wire; otherwise, per policy, LCP is
renegotiated with the device (which may Nak and Reject options) or the call refused.
"""

from __future__ import annotations

import random

import pytest

from lns.l2tp.proxy import ProxyLcp
from lns.ppp.frame import Protocol, encode_frame
from lns.ppp.lcp import LcpOption
from lns.ppp.packet import Code, ControlPacket, Option, decode_options, encode_options
from lns.ppp.session import PppSettings, SendFrame, SessionClosed
from lns.ppp.termination import TerminateCause
from lns.testing.lacsim.device import DeviceBehaviour
from lns.testing.lacsim.lac import LCP_ACFC, LCP_AUTH_CHAP_MD5, LCP_MRU_1450, LCP_PFC, lcp_magic
from lns.testing.ppp_link import ASSIGNED, Link, packets, protocols, to_l2tp_proxy_auth

OUR_MAGIC = 0x1A2B3C4D  # the LAC's Magic-Number towards the device: ours once adopted
DEVICE_MAGIC = 0x55667788
LCP_MRU_1500 = bytes([1, 4, 0x05, 0xDC])
LCP_MRU_1400 = bytes([1, 4, 0x05, 0x78])
LCP_AUTH_MSCHAP_V2 = bytes([3, 5, 0xC2, 0x23, 0x81])
DEVICE_REQUEST = LCP_MRU_1400 + lcp_magic(DEVICE_MAGIC) + LCP_PFC + LCP_ACFC


def proxy_lcp(sent: bytes | None, received: bytes | None = DEVICE_REQUEST) -> ProxyLcp:
    return ProxyLcp(received, sent, received)


GOOD_PROXY = proxy_lcp(LCP_MRU_1450 + LCP_AUTH_CHAP_MD5 + lcp_magic(OUR_MAGIC))
BIG_MRU_PROXY = proxy_lcp(LCP_MRU_1500 + LCP_AUTH_CHAP_MD5 + lcp_magic(OUR_MAGIC))


def make_link(
    policy: str, proxy: ProxyLcp | None, behaviour: DeviceBehaviour | None = None, **settings
) -> Link:
    return Link(
        PppSettings(lcp_renegotiation=policy, **settings),
        proxy_lcp=proxy,
        proxy_auth=to_l2tp_proxy_auth("chap", random.Random(1994)),
        behaviour=behaviour,
    )


def lcp_sent(link: Link) -> list[ControlPacket]:
    return packets(link.to_device, Protocol.LCP)


def lcp_received(link: Link) -> list[ControlPacket]:
    return packets(link.to_lns, Protocol.LCP)


def our_requests(link: Link) -> list[list[Option]]:
    return [decode_options(p.data) for p in lcp_sent(link) if p.code == Code.CONFIGURE_REQUEST]


def option(options: list[Option], kind: int) -> bytes | None:
    found = [o.data for o in options if o.type == kind]
    return found[0] if found else None


def lcp_frame(code: int, identifier: int, data: bytes) -> bytes:
    return encode_frame(Protocol.LCP, ControlPacket(code, identifier, data).encode())


# --- proxy LCP adopted ----------------------------------------------------------------


@pytest.mark.parametrize("policy", ["on-mismatch", "never"])
def test_acceptable_proxy_lcp_is_adopted_with_zero_lcp_packets(policy: str) -> None:
    settings = PppSettings(lcp_renegotiation=policy)
    link = make_link(policy, GOOD_PROXY)
    link.start()
    assert link.opened is not None
    link.advance(settings.echo_interval - 0.001)

    assert Protocol.LCP not in protocols(link.to_device)
    assert Protocol.LCP not in protocols(link.to_lns)
    assert not link.session.lcp_renegotiated
    assert link.closed is None
    # The adopted state: our magic from the LAC's request, the device's MRU from its own.
    assert link.session.lcp_policy.magic == OUR_MAGIC
    assert link.session.lcp_policy.peer_mru == 1400

    # The first LCP packet is the keepalive, with the adopted Magic-Number.
    link.advance(0.001)
    [echo] = lcp_sent(link)
    assert echo.code == Code.ECHO_REQUEST
    assert echo.data[:4] == OUR_MAGIC.to_bytes(4, "big")
    [reply] = lcp_received(link)
    assert reply.code == Code.ECHO_REPLY
    assert reply.identifier == echo.identifier


def test_adopted_proxy_lcp_without_magic_number_echoes_with_zero() -> None:
    """RFC 1661 section 5.8: no Magic-Number negotiated, the field is sent as zero."""
    link = make_link("on-mismatch", proxy_lcp(LCP_MRU_1450 + LCP_AUTH_CHAP_MD5))
    link.start()
    link.send_from_device(lcp_frame(Code.ECHO_REQUEST, 9, bytes(4) + b"ping"))
    link.advance(PppSettings().echo_interval)

    reply, echo = lcp_sent(link)
    assert reply.code == Code.ECHO_REPLY
    assert reply.data == bytes(4) + b"ping"
    assert echo.code == Code.ECHO_REQUEST
    assert echo.data == bytes(4)


# --- renegotiation ---------------------------------------------------------------------


def test_always_renegotiates_even_good_proxy_lcp() -> None:
    link = make_link("always", GOOD_PROXY)
    link.start()

    assert link.session.lcp_renegotiated
    first = lcp_sent(link)[0]
    assert first.code == Code.CONFIGURE_REQUEST
    assert protocols(link.to_device)[0] == Protocol.LCP
    [request] = our_requests(link)
    assert option(request, LcpOption.MRU) == (1450).to_bytes(2, "big")
    assert option(request, LcpOption.MAGIC_NUMBER) is not None
    # Proxy CHAP stands: LCP asks for no authentication protocol.
    assert option(request, LcpOption.AUTH_PROTOCOL) is None
    acks = [p for p in lcp_received(link) if p.code == Code.CONFIGURE_ACK]
    assert [a.identifier for a in acks] == [first.identifier]
    assert link.opened is not None
    assert link.opened.address == ASSIGNED


@pytest.mark.parametrize(
    ("proxy", "why"),
    [
        (BIG_MRU_PROXY, "MRU 1500 > ours"),
        (proxy_lcp(LCP_MRU_1450 + LCP_AUTH_MSCHAP_V2 + lcp_magic(OUR_MAGIC)), "MS-CHAPv2"),
        (proxy_lcp(LCP_AUTH_CHAP_MD5 + lcp_magic(OUR_MAGIC)), "no MRU: 1500 by default"),
        (proxy_lcp(GOOD_PROXY.last_sent, received=None), "AVP 28 missing"),
        (proxy_lcp(b"\x01\x01"), "malformed options"),
        (None, "no proxy LCP"),
    ],
)
def test_on_mismatch_renegotiates_unacceptable_proxy_lcp(proxy: ProxyLcp | None, why: str) -> None:
    link = make_link("on-mismatch", proxy)
    link.start()

    assert link.session.lcp_renegotiated, why
    assert lcp_sent(link)[0].code == Code.CONFIGURE_REQUEST
    assert option(our_requests(link)[0], LcpOption.MRU) == (1450).to_bytes(2, "big")
    assert link.opened is not None


@pytest.mark.parametrize(
    ("proxy", "reason"),
    [
        (BIG_MRU_PROXY, "MRU 1500 is larger than ours (1450)"),
        (None, "no proxy LCP"),
        (proxy_lcp(GOOD_PROXY.last_sent, received=None), "incomplete"),
        (proxy_lcp(LCP_MRU_1450 + LCP_AUTH_MSCHAP_V2), "authentication protocol"),
    ],
)
def test_never_refuses_the_call_with_the_reason(proxy: ProxyLcp | None, reason: str) -> None:
    link = make_link("never", proxy)
    link.start()

    closed = link.closed
    assert isinstance(closed, SessionClosed)
    assert reason in closed.message
    assert "renegotiation refused" in closed.message
    assert not closed.was_open
    assert link.to_device == []
    assert link.auth_requests == []
    assert link.session.get_timer() is None


RENEGOTIATING = [("always", GOOD_PROXY), ("on-mismatch", BIG_MRU_PROXY)]


@pytest.mark.parametrize(("policy", "proxy"), RENEGOTIATING)
def test_unknown_option_from_the_device_is_rejected(policy: str, proxy: ProxyLcp) -> None:
    callback = Option(13, b"\x06")  # RFC 1570 Callback: we do not run it
    mrru = Option(17, b"\x05\xdc")  # RFC 1990 multilink MRRU
    link = make_link(policy, proxy, DeviceBehaviour(extra_lcp_options=(callback, mrru)))
    link.start()

    rejects = [p for p in lcp_sent(link) if p.code == Code.CONFIGURE_REJECT]
    assert len(rejects) == 1
    assert decode_options(rejects[0].data) == [callback, mrru]
    device_requests = [p for p in lcp_received(link) if p.code == Code.CONFIGURE_REQUEST]
    assert rejects[0].identifier == device_requests[0].identifier
    # The device asks again without them, and we ack that.
    acked = [p for p in lcp_sent(link) if p.code == Code.CONFIGURE_ACK]
    assert [decode_options(a.data) for a in acked] == [decode_options(device_requests[-1].data)]
    assert all(o.type not in (13, 17) for o in decode_options(acked[0].data))
    assert link.opened is not None


@pytest.mark.parametrize(("policy", "proxy"), RENEGOTIATING)
def test_device_naking_our_mru(policy: str, proxy: ProxyLcp) -> None:
    link = make_link(policy, proxy, DeviceBehaviour(nak_mru=1400))
    link.start()

    naks = [p for p in lcp_received(link) if p.code == Code.CONFIGURE_NAK]
    assert [decode_options(n.data) for n in naks] == [[Option(LcpOption.MRU, b"\x05\x78")]]
    first, second = our_requests(link)
    assert option(first, LcpOption.MRU) == (1450).to_bytes(2, "big")
    assert option(second, LcpOption.MRU) == (1400).to_bytes(2, "big")
    assert link.session.lcp_policy.mru == 1400
    assert link.opened is not None


@pytest.mark.parametrize(("policy", "proxy"), RENEGOTIATING)
def test_device_naking_for_a_larger_mru_then_rejecting_it(policy: str, proxy: ProxyLcp) -> None:
    """We never raise our MRU; the device's Max-Failure turns its Nak into a Reject.

    RFC 1661 section 4.6: after Max-Failure Naks the device Rejects the MRU option;
    we stop asking for it and the link opens with the default MRU (section 6.1).
    """
    settings = PppSettings()
    link = make_link(policy, proxy, DeviceBehaviour(nak_mru=1500))
    link.start()

    *asked, last = our_requests(link)
    assert all(option(r, LcpOption.MRU) == (1450).to_bytes(2, "big") for r in asked)
    assert option(last, LcpOption.MRU) is None
    replies = [p.code for p in lcp_received(link) if p.code != Code.CONFIGURE_REQUEST]
    naks = [Code.CONFIGURE_NAK] * settings.max_failure
    assert replies == [*naks, Code.CONFIGURE_REJECT, Code.CONFIGURE_ACK]
    assert link.opened is not None


@pytest.mark.parametrize(("policy", "proxy"), RENEGOTIATING)
def test_device_rejecting_our_magic_number(policy: str, proxy: ProxyLcp) -> None:
    behaviour = DeviceBehaviour(reject_lcp_options=(LcpOption.MAGIC_NUMBER,))
    link = make_link(policy, proxy, behaviour)
    link.start()

    first, second = our_requests(link)
    assert option(first, LcpOption.MAGIC_NUMBER) is not None
    assert option(second, LcpOption.MAGIC_NUMBER) is None
    rejects = [p for p in lcp_received(link) if p.code == Code.CONFIGURE_REJECT]
    assert [o.type for o in decode_options(rejects[0].data)] == [LcpOption.MAGIC_NUMBER]
    assert link.opened is not None
    link.advance(PppSettings().echo_interval)
    echo = lcp_sent(link)[-1]
    assert echo.code == Code.ECHO_REQUEST
    assert echo.data[:4] == bytes(4)  # RFC 1661 section 5.8: not negotiated, zero


@pytest.mark.parametrize(("policy", "proxy"), RENEGOTIATING)
def test_device_mru_too_small_is_naked(policy: str, proxy: ProxyLcp) -> None:
    link = make_link(policy, proxy, DeviceBehaviour(mru=64))
    link.start()

    naks = [p for p in lcp_sent(link) if p.code == Code.CONFIGURE_NAK]
    assert [decode_options(n.data) for n in naks] == [[Option(LcpOption.MRU, b"\x05\xaa")]]
    assert link.session.lcp_policy.peer_mru == 1450
    assert link.opened is not None


def test_renegotiated_magic_is_used_in_echoes() -> None:
    link = make_link("always", GOOD_PROXY)
    link.start()
    [request] = our_requests(link)
    magic = option(request, LcpOption.MAGIC_NUMBER)
    link.advance(PppSettings().echo_interval)

    echo = lcp_sent(link)[-1]
    assert echo.code == Code.ECHO_REQUEST
    assert echo.data[:4] == magic


def test_silent_device_ends_lcp_after_max_configure() -> None:
    settings = PppSettings(lcp_renegotiation="always")
    link = make_link("always", GOOD_PROXY)
    link.drop_to_device = lambda frame: True
    link.start()
    end = settings.max_configure * settings.restart_interval
    link.advance(end - 0.001)
    assert link.closed is None
    link.advance(0.001)

    requests = [p for p in lcp_sent(link) if p.code == Code.CONFIGURE_REQUEST]
    assert len(requests) == settings.max_configure
    assert len({p.identifier for p in requests}) == 1  # retransmissions keep the Identifier
    assert link.closed is not None
    assert "no answer to 10 Configure-Requests" in link.closed.message
    assert link.auth_requests == []


# --- LCP after the session is up ---------------------------------------------------------


@pytest.mark.parametrize(("policy", "proxy"), [("on-mismatch", GOOD_PROXY), *RENEGOTIATING])
def test_device_renegotiating_lcp_after_open_ends_the_session(policy: str, proxy: ProxyLcp) -> None:
    link = make_link(policy, proxy)
    link.start()
    assert link.opened is not None
    sent_before = len(link.to_device)
    link.now = 100.0

    options = encode_options([Option(LcpOption.MRU, b"\x05\xaa"), Option(5, b"\x0a\x0b\x0c\x0d")])
    link.send_from_device(lcp_frame(Code.CONFIGURE_REQUEST, 200, options))

    closed = link.closed
    assert closed is not None
    assert closed.cause is TerminateCause.NAS_REQUEST
    assert "renegotiated LCP" in closed.message
    assert closed.was_open
    # No Configure-Request nor Ack from us: one Terminate-Request, the lease released.
    after = packets(link.to_device[sent_before:], Protocol.LCP)
    assert [p.code for p in after] == [Code.TERMINATE_REQUEST]
    assert link.released == [("lease", ASSIGNED)]
    assert link.effects[-1] == closed
    assert link.session.get_timer() is None


def test_device_terminate_request_is_acked_then_the_session_closes() -> None:
    link = make_link("on-mismatch", GOOD_PROXY)
    link.start()
    link.send_from_device(lcp_frame(Code.TERMINATE_REQUEST, 33, b"bye"))

    [ack] = lcp_sent(link)
    assert ack.code == Code.TERMINATE_ACK
    assert ack.identifier == 33
    closed = link.closed
    assert closed is not None
    assert closed.cause is TerminateCause.USER_REQUEST
    assert "bye" in closed.message
    assert link.released == [("lease", ASSIGNED)]
    # The Terminate-Ack leaves before the session reports closed (the call ends after it).
    frames = [i for i, e in enumerate(link.effects) if isinstance(e, SendFrame)]
    assert frames[-1] < link.effects.index(closed)


def test_stray_terminate_ack_in_opened_does_not_renegotiate() -> None:
    """RTA in Opened is tld+scr (RFC 1661 4.1): we end the session rather than renegotiate."""
    link = make_link("on-mismatch", GOOD_PROXY)
    link.start()
    link.send_from_device(lcp_frame(Code.TERMINATE_ACK, 1, b""))

    assert [p.code for p in lcp_sent(link)] == [Code.TERMINATE_REQUEST]
    assert link.closed is not None
    assert link.released == [("lease", ASSIGNED)]


def test_renegotiated_lcp_request_repeated_after_open_is_acked_again() -> None:
    link = make_link("always", GOOD_PROXY)
    link.start()
    assert link.opened is not None
    acked = [p for p in lcp_received(link) if p.code == Code.CONFIGURE_REQUEST][-1]
    before = len(link.to_device)
    link.send_from_device(encode_frame(Protocol.LCP, acked.encode()))

    (ack,) = packets(link.to_device[before:], Protocol.LCP)
    assert (ack.code, ack.identifier, ack.data) == (
        Code.CONFIGURE_ACK,
        acked.identifier,
        acked.data,
    )
    assert link.closed is None
    # Other options are a renegotiation: the session ends, as before.
    changed = ControlPacket(Code.CONFIGURE_REQUEST, 77, acked.data + LCP_MRU_1500)
    link.send_from_device(encode_frame(Protocol.LCP, changed.encode()))
    assert link.closed is not None
