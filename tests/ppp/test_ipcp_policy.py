"""IpcpPolicy: RFC 1332 (IP-Address, IP-Compression-Protocol) and RFC 1877 (DNS, NBNS)."""

from __future__ import annotations

import ipaddress

import pytest

from lns.ppp.ipcp import IpcpOption, IpcpPolicy, address_option
from lns.ppp.packet import Option

IPv4 = ipaddress.IPv4Address
LOCAL = IPv4("100.64.0.1")
PEER = IPv4("100.64.1.23")
ZERO = IPv4("0.0.0.0")
DNS = (IPv4("192.0.2.53"), IPv4("192.0.2.54"))


def addr(kind: IpcpOption, address: IPv4) -> Option:
    return address_option(kind, address)


def policy(dns: tuple[IPv4, ...] = DNS, max_failure: int = 5) -> IpcpPolicy:
    return IpcpPolicy(LOCAL, PEER, dns, max_failure)


def test_request_is_our_address() -> None:
    assert policy().request() == [addr(IpcpOption.IP_ADDRESS, LOCAL)]


def test_zero_address_and_dns_are_naked_with_ours() -> None:
    verdict = policy().judge(
        [
            addr(IpcpOption.IP_ADDRESS, ZERO),
            addr(IpcpOption.PRIMARY_DNS, ZERO),
            addr(IpcpOption.SECONDARY_DNS, ZERO),
        ]
    )
    assert verdict.kind == "nak"
    assert verdict.options == (
        addr(IpcpOption.IP_ADDRESS, PEER),
        addr(IpcpOption.PRIMARY_DNS, DNS[0]),
        addr(IpcpOption.SECONDARY_DNS, DNS[1]),
    )


def test_right_values_are_acked_and_dns_recorded() -> None:
    ours = policy()
    options = [
        addr(IpcpOption.IP_ADDRESS, PEER),
        addr(IpcpOption.PRIMARY_DNS, DNS[0]),
        addr(IpcpOption.SECONDARY_DNS, DNS[1]),
    ]
    verdict = ours.judge(options)
    assert verdict.kind == "ack"
    assert list(verdict.options) == options
    assert ours.dns_given == DNS
    assert ours.failure is None


def test_missing_address_is_naked_in() -> None:
    """RFC 1332 section 3.3: a Nak may carry an option the peer did not request."""
    verdict = policy().judge([addr(IpcpOption.PRIMARY_DNS, DNS[0])])
    assert verdict.kind == "nak"
    assert verdict.options == (addr(IpcpOption.IP_ADDRESS, PEER),)


@pytest.mark.parametrize(
    "option",
    [
        addr(IpcpOption.PRIMARY_NBNS, ZERO),
        addr(IpcpOption.SECONDARY_NBNS, ZERO),
        Option(IpcpOption.IP_COMPRESSION_PROTOCOL, b"\x00\x2d\x0f\x01"),  # Van Jacobson
        Option(IpcpOption.IP_ADDRESSES, bytes(8)),
        Option(IpcpOption.IP_ADDRESS, b"\x01\x02"),  # wrong length
        Option(IpcpOption.PRIMARY_DNS, b"\x01"),
        Option(200, b""),
    ],
    ids=lambda o: f"{o.type}-{o.data.hex()}",
)
def test_unsupported_options_are_rejected(option: Option) -> None:
    verdict = policy().judge([addr(IpcpOption.IP_ADDRESS, ZERO), option])
    assert verdict.kind == "reject"
    assert verdict.options == (option,)


def test_dns_without_servers_is_rejected() -> None:
    options = [addr(IpcpOption.PRIMARY_DNS, ZERO), addr(IpcpOption.SECONDARY_DNS, ZERO)]
    verdict = policy(dns=()).judge([addr(IpcpOption.IP_ADDRESS, PEER), *options])
    assert verdict.kind == "reject"
    assert list(verdict.options) == options


def test_secondary_dns_rejected_with_one_server() -> None:
    verdict = policy(dns=DNS[:1]).judge(
        [addr(IpcpOption.PRIMARY_DNS, ZERO), addr(IpcpOption.SECONDARY_DNS, ZERO)]
    )
    assert verdict.kind == "reject"
    assert verdict.options == (addr(IpcpOption.SECONDARY_DNS, ZERO),)


def test_insisting_on_another_address_fails_after_max_failure() -> None:
    ours = policy(max_failure=3)
    wanted = [addr(IpcpOption.IP_ADDRESS, IPv4("10.0.0.7"))]
    for _ in range(2):
        assert ours.judge(wanted).kind == "nak"
        assert ours.failure is None
    assert ours.judge(wanted).kind == "nak"
    assert ours.failure is not None
    assert "10.0.0.7" in ours.failure
    assert str(PEER) in ours.failure


def test_asking_zero_does_not_count_as_insisting() -> None:
    ours = policy(max_failure=2)
    for _ in range(5):
        ours.judge([addr(IpcpOption.IP_ADDRESS, ZERO)])
    assert ours.failure is None


def test_our_address_rejected_is_a_failure() -> None:
    ours = policy()
    ours.nak_received([addr(IpcpOption.IP_ADDRESS, IPv4("10.1.1.1"))])
    assert ours.request() == [addr(IpcpOption.IP_ADDRESS, LOCAL)]  # not negotiable
    ours.reject_received([addr(IpcpOption.IP_ADDRESS, LOCAL)])
    assert ours.failure == "the device rejected our IP-Address option"
