"""An LCP Echo-Reply never exceeds the peer's MRU (issue 12, item 8).

RFC 1661 section 5.8: the reply carries the request's data; a 60,000-byte
Echo-Request from a device whose MRU is 1450 was echoed at 60,018 bytes.
"""

from __future__ import annotations

import random

import pytest

from lns.l2tp.proxy import ProxyLcp
from lns.ppp.auth import Decision
from lns.ppp.frame import Protocol, encode_frame
from lns.ppp.packet import Code, ControlPacket
from lns.ppp.session import PppSettings
from lns.testing.lacsim.lac import LCP_AUTH_CHAP_MD5, LCP_MRU_1450, lcp_magic
from lns.testing.ppp_link import Link, packets, to_l2tp_proxy_auth

OUR_MAGIC = 0x0BADCAFE
DEVICE_LCP = LCP_MRU_1450 + lcp_magic(0x600DF00D)
PROXY = ProxyLcp(DEVICE_LCP, LCP_MRU_1450 + LCP_AUTH_CHAP_MD5 + lcp_magic(OUR_MAGIC), DEVICE_LCP)


def opened_link() -> Link:
    link = Link(
        PppSettings(),
        proxy_lcp=PROXY,
        proxy_auth=to_l2tp_proxy_auth("chap", random.Random(1661)),
        aaa=lambda request: Decision(True),
    )
    link.start()
    assert link.opened is not None
    return link


@pytest.mark.parametrize(("size", "echoed"), [(60_000, 1450 - 8), (100, 100), (0, 0)])
def test_echo_reply_is_bounded_by_the_peers_mru(size: int, echoed: int) -> None:
    link = opened_link()
    before = len(link.to_device)
    data = (0x600DF00D).to_bytes(4, "big") + bytes(range(256)) * (size // 256) + bytes(size % 256)
    link.send_from_device(
        encode_frame(Protocol.LCP, ControlPacket(Code.ECHO_REQUEST, 7, data).encode())
    )
    [reply] = [
        p for p in packets(link.to_device[before:], Protocol.LCP) if p.code == Code.ECHO_REPLY
    ]
    assert reply.identifier == 7
    assert reply.data[:4] == OUR_MAGIC.to_bytes(4, "big")
    assert reply.data[4:] == data[4 : 4 + echoed]
    assert 4 + len(reply.data) <= 1450  # the LCP packet fits the device's MRU
