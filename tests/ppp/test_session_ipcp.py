"""IPCP in the PPP session: addresses, DNS (RFC 1877), NBNS rejected, Max-Failure.

RFC 1332 and RFC 1877, DESIGN.md section 2 step 7: we ask for our own address,
Nak the device's 0.0.0.0 with the assigned one and its DNS requests with ours
(from the AAA decision, else ``[ppp] dns``), Reject what we do not serve, and
give up on a device that insists on another address after Max-Failure.
"""

from __future__ import annotations

import ipaddress
import random

from lns.ppp.auth import Decision
from lns.ppp.frame import Protocol, encode_frame
from lns.ppp.ipcp import IpcpOption
from lns.ppp.packet import Code, ControlPacket, Option, decode_options
from lns.ppp.session import AllocateAddress, Phase, PppSettings
from lns.ppp.termination import TerminateCause
from lns.testing.lacsim.device import DeviceBehaviour
from lns.testing.ppp_link import (
    ASSIGNED,
    Link,
    packets,
    to_l2tp_proxy_auth,
    to_l2tp_proxy_lcp,
)

IPv4 = ipaddress.IPv4Address
DNS = (IPv4("192.0.2.53"), IPv4("192.0.2.54"))
RADIUS_DNS = (IPv4("198.51.100.1"), IPv4("198.51.100.2"))
LOCAL = IPv4("100.64.0.1")
ZERO = IPv4("0.0.0.0")


def make_link(
    settings: PppSettings | None = None,
    behaviour: DeviceBehaviour | None = None,
    decision: Decision | None = None,
    **kwargs,
) -> Link:
    rng = random.Random(1332)
    if decision is not None:
        kwargs["aaa"] = lambda request: decision
    return Link(
        settings or PppSettings(),
        proxy_lcp=to_l2tp_proxy_lcp(rng),
        proxy_auth=to_l2tp_proxy_auth("chap", rng),
        behaviour=behaviour,
        **kwargs,
    )


def sent(link: Link, code: int) -> list[list[Option]]:
    return [
        decode_options(p.data) for p in packets(link.to_device, Protocol.IPCP) if p.code == code
    ]


def received(link: Link, code: int) -> list[list[Option]]:
    return [decode_options(p.data) for p in packets(link.to_lns, Protocol.IPCP) if p.code == code]


def addr(kind: int, address: IPv4) -> Option:
    return Option(kind, address.packed)


def test_our_request_carries_the_local_address() -> None:
    link = make_link(PppSettings(local_address=LOCAL))
    link.start()

    assert sent(link, Code.CONFIGURE_REQUEST) == [[addr(IpcpOption.IP_ADDRESS, LOCAL)]]
    assert received(link, Code.CONFIGURE_ACK) == [[addr(IpcpOption.IP_ADDRESS, LOCAL)]]
    assert link.device.ipcp_policy.gateway == LOCAL


def test_device_asking_dns_is_naked_and_ends_with_both() -> None:
    link = make_link(PppSettings(dns=DNS))
    link.start()

    first_request = received(link, Code.CONFIGURE_REQUEST)[0]
    assert first_request == [
        addr(IpcpOption.IP_ADDRESS, ZERO),
        addr(IpcpOption.PRIMARY_DNS, ZERO),
        addr(IpcpOption.SECONDARY_DNS, ZERO),
    ]
    [nak] = sent(link, Code.CONFIGURE_NAK)
    assert nak == [
        addr(IpcpOption.IP_ADDRESS, ASSIGNED),
        addr(IpcpOption.PRIMARY_DNS, DNS[0]),
        addr(IpcpOption.SECONDARY_DNS, DNS[1]),
    ]
    assert sent(link, Code.CONFIGURE_REJECT) == []
    [ack] = sent(link, Code.CONFIGURE_ACK)
    assert ack == nak
    assert link.device.address == ASSIGNED
    assert link.device.dns == list(DNS)
    assert link.opened is not None
    assert link.opened.address == ASSIGNED
    assert link.opened.dns == DNS
    assert link.session.phase is Phase.OPENED


def test_without_dns_configured_dns_options_are_rejected() -> None:
    link = make_link(PppSettings(dns=()))
    link.start()

    [reject] = sent(link, Code.CONFIGURE_REJECT)
    assert reject == [addr(IpcpOption.PRIMARY_DNS, ZERO), addr(IpcpOption.SECONDARY_DNS, ZERO)]
    # Rejects first (RFC 1661 section 5.4): the address is Naked on the next round.
    assert sent(link, Code.CONFIGURE_NAK) == [[addr(IpcpOption.IP_ADDRESS, ASSIGNED)]]
    assert sent(link, Code.CONFIGURE_ACK) == [[addr(IpcpOption.IP_ADDRESS, ASSIGNED)]]
    assert link.device.dns == []
    assert link.opened is not None
    assert link.opened.dns == ()


def test_one_dns_server_rejects_the_secondary() -> None:
    link = make_link(PppSettings(dns=DNS[:1]))
    link.start()

    assert sent(link, Code.CONFIGURE_REJECT) == [[addr(IpcpOption.SECONDARY_DNS, ZERO)]]
    assert link.device.dns == [DNS[0]]
    assert link.opened is not None
    assert link.opened.dns == DNS[:1]


def test_dns_from_the_decision_overrides_settings() -> None:
    link = make_link(PppSettings(dns=DNS), decision=Decision(True, dns=RADIUS_DNS))
    link.start()

    [nak] = sent(link, Code.CONFIGURE_NAK)
    assert addr(IpcpOption.PRIMARY_DNS, RADIUS_DNS[0]) in nak
    assert addr(IpcpOption.SECONDARY_DNS, RADIUS_DNS[1]) in nak
    assert link.device.dns == list(RADIUS_DNS)
    assert link.opened is not None
    assert link.opened.dns == RADIUS_DNS


def test_dns_from_the_decision_without_settings() -> None:
    link = make_link(PppSettings(dns=()), decision=Decision(True, dns=RADIUS_DNS))
    link.start()
    assert link.device.dns == list(RADIUS_DNS)
    assert sent(link, Code.CONFIGURE_REJECT) == []


def test_device_not_asking_dns_gets_none() -> None:
    link = make_link(PppSettings(dns=DNS), DeviceBehaviour(ask_dns=False))
    link.start()

    assert received(link, Code.CONFIGURE_REQUEST)[0] == [addr(IpcpOption.IP_ADDRESS, ZERO)]
    assert sent(link, Code.CONFIGURE_NAK) == [[addr(IpcpOption.IP_ADDRESS, ASSIGNED)]]
    assert sent(link, Code.CONFIGURE_REJECT) == []
    assert link.opened is not None
    assert link.opened.dns == ()


def test_nbns_is_rejected() -> None:
    link = make_link(PppSettings(dns=DNS), DeviceBehaviour(ask_nbns=True))
    link.start()

    [reject] = sent(link, Code.CONFIGURE_REJECT)
    assert reject == [
        addr(IpcpOption.PRIMARY_NBNS, ZERO),
        addr(IpcpOption.SECONDARY_NBNS, ZERO),
    ]
    assert link.device.ipcp_policy.nbns == {}
    assert link.device.dns == list(DNS)
    assert link.opened is not None
    assert all(
        o.type not in (IpcpOption.PRIMARY_NBNS, IpcpOption.SECONDARY_NBNS)
        for ack in sent(link, Code.CONFIGURE_ACK)
        for o in ack
    )


def test_device_asking_for_the_assigned_address_is_acked_at_once() -> None:
    link = make_link(PppSettings(dns=()), DeviceBehaviour(insist_address=ASSIGNED, ask_dns=False))
    link.start()

    assert sent(link, Code.CONFIGURE_NAK) == []
    assert sent(link, Code.CONFIGURE_ACK) == [[addr(IpcpOption.IP_ADDRESS, ASSIGNED)]]
    assert link.opened is not None


def test_device_insisting_on_its_own_address_is_given_up_after_max_failure() -> None:
    settings = PppSettings(dns=DNS)
    wanted = IPv4("10.9.8.7")
    link = make_link(settings, DeviceBehaviour(insist_address=wanted))
    link.start()

    naks = sent(link, Code.CONFIGURE_NAK)
    assert len(naks) == settings.max_failure
    assert all(addr(IpcpOption.IP_ADDRESS, ASSIGNED) in nak for nak in naks)
    assert sent(link, Code.CONFIGURE_ACK) == []
    requests = received(link, Code.CONFIGURE_REQUEST)
    assert all(addr(IpcpOption.IP_ADDRESS, wanted) in r for r in requests)

    closed = link.closed
    assert closed is not None
    assert closed.cause is TerminateCause.USER_ERROR
    assert "insists on address 10.9.8.7" in closed.message
    assert str(ASSIGNED) in closed.message
    assert not closed.was_open
    assert link.opened is None
    assert link.released == [("lease", ASSIGNED)]
    assert packets(link.to_device, Protocol.LCP)[-1].code == Code.TERMINATE_REQUEST
    assert link.session.get_timer() is None


def test_framed_address_and_pool_reach_the_allocation() -> None:
    framed = IPv4("100.64.9.9")
    decision = Decision(True, framed_address=framed, framed_pool="fleet")
    link = make_link(decision=decision, pool=lambda request: request.requested)
    link.start()

    [allocate] = link.of_type(AllocateAddress)
    assert allocate == AllocateAddress(link.session.context.iccid, "fleet", framed)
    assert link.opened is not None
    assert link.opened.address == framed
    assert link.device.address == framed


def test_ipcp_before_authentication_is_discarded() -> None:
    # RFC 1661 section 3.4: NCP packets before the network phase are discarded; one that
    # comes while LCP is still being negotiated is not kept either.
    link = Link(
        PppSettings(lcp_renegotiation="always"),
        proxy_lcp=to_l2tp_proxy_lcp(random.Random(7)),
        aaa=lambda request: None,
        behaviour=DeviceBehaviour(),
    )
    session = link.session
    request = ControlPacket(Code.CONFIGURE_REQUEST, 1, addr(IpcpOption.IP_ADDRESS, ZERO).encode())
    session.frame_received(encode_frame(Protocol.IPCP, request.encode()), 0.0)
    assert session.counters.discarded == 1
    assert session.phase is Phase.ESTABLISH


def test_ipcp_request_during_authorization_is_answered_as_soon_as_the_address_is_known() -> None:
    # The device asks for its address while AAA still works: the request is kept and
    # answered the moment the pool gives the address, not after the device's restart
    # timer (3 s with pppd) makes it ask again.
    link = make_link(aaa=lambda request: None)  # AAA answers below
    link.start()
    request = ControlPacket(Code.CONFIGURE_REQUEST, 1, addr(IpcpOption.IP_ADDRESS, ZERO).encode())
    link.send_from_device(encode_frame(Protocol.IPCP, request.encode()))
    assert packets(link.to_device, Protocol.IPCP) == []
    assert link.session.phase is Phase.AUTHORIZE

    link._run(link.session.authenticated(Decision(True), link.now))

    answers = [p for p in packets(link.to_device, Protocol.IPCP) if p.identifier == 1]
    assert [p.code for p in answers] == [Code.CONFIGURE_NAK]
    assert decode_options(answers[0].data) == [addr(IpcpOption.IP_ADDRESS, ASSIGNED)]
    assert link.session.phase is Phase.OPENED
    assert link.now == 0.0  # no timer had to fire


def test_device_protocol_rejecting_ipcp_closes() -> None:
    rejected = ControlPacket(Code.CONFIGURE_REQUEST, 1, b"")
    link = make_link(aaa=lambda request: None)
    link.start()
    link.send_from_device(
        encode_frame(
            Protocol.LCP,
            ControlPacket(Code.PROTOCOL_REJECT, 5, b"\x80\x21" + rejected.encode()).encode(),
        )
    )
    assert link.closed is not None
    assert "rejected IPCP" in link.closed.message


def test_device_renegotiating_ipcp_after_open_ends_the_session() -> None:
    link = make_link()
    link.start()
    assert link.opened is not None
    before = len(link.to_device)
    request = ControlPacket(Code.CONFIGURE_REQUEST, 9, addr(IpcpOption.IP_ADDRESS, ZERO).encode())
    link.send_from_device(encode_frame(Protocol.IPCP, request.encode()))

    assert packets(link.to_device[before:], Protocol.IPCP) == []
    assert [p.code for p in packets(link.to_device[before:], Protocol.LCP)] == [
        Code.TERMINATE_REQUEST
    ]
    assert link.closed is not None
    assert "renegotiated IPCP" in link.closed.message
    assert link.released == [("lease", ASSIGNED)]


def test_device_repeating_its_acked_request_gets_the_ack_again() -> None:
    """Our Configure-Ack was lost: the device sends the same request again after we
    are Opened. Acked again, the session stays up (no renegotiation for a lost packet)."""
    link = make_link()
    link.start()
    assert link.opened is not None
    acked = [p for p in packets(link.to_lns, Protocol.IPCP) if p.code == Code.CONFIGURE_REQUEST][-1]
    before = len(link.to_device)
    repeat = ControlPacket(Code.CONFIGURE_REQUEST, (acked.identifier + 1) % 256, acked.data)
    link.send_from_device(encode_frame(Protocol.IPCP, repeat.encode()))

    (ack,) = packets(link.to_device[before:], Protocol.IPCP)
    assert ack.code == Code.CONFIGURE_ACK
    assert ack.identifier == repeat.identifier
    assert ack.data == acked.data
    assert link.closed is None
    assert link.session.counters.repeated_requests == 1
