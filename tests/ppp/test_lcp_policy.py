"""LcpPolicy (RFC 1661 section 6 options, our side) and judge_proxy_lcp (RFC 2661 4.4.5)."""

from __future__ import annotations

import random

import pytest

from lns.ppp.lcp import AuthProtocol, LcpOption, LcpPolicy, auth_protocol_of, judge_proxy_lcp
from lns.ppp.packet import Option
from lns.testing.lacsim.lac import LCP_ACFC, LCP_AUTH_CHAP_MD5, LCP_AUTH_PAP, LCP_MRU_1450, LCP_PFC
from lns.testing.lacsim.lac import lcp_magic as magic_bytes

MRU = LcpOption.MRU
MAGIC = LcpOption.MAGIC_NUMBER
AUTH = LcpOption.AUTH_PROTOCOL
CHAP_OPTION = Option(AUTH, b"\xc2\x23\x05")
PAP_OPTION = Option(AUTH, b"\xc0\x23")


def policy(auth: list[AuthProtocol] | None = None, mru: int = 1450) -> LcpPolicy:
    return LcpPolicy(mru, random.Random(1661), auth)


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


# --- our request -----------------------------------------------------------------------


def test_request_without_authentication() -> None:
    ours = policy()
    assert ours.request() == [Option(MRU, u16(1450)), Option(MAGIC, u32(ours.magic))]
    assert ours.magic & 1  # never zero


def test_request_with_authentication_best_first() -> None:
    ours = policy([AuthProtocol.CHAP, AuthProtocol.PAP])
    assert ours.request()[1] == CHAP_OPTION
    assert ours.auth is AuthProtocol.CHAP


# --- judging the device's request --------------------------------------------------------


def test_usual_device_options_are_acked_and_recorded() -> None:
    ours = policy()
    options = [
        Option(MRU, u16(1400)),
        Option(LcpOption.ACCM, u32(0)),
        Option(MAGIC, u32(0xCAFEBABE)),
        Option(LcpOption.PFC, b""),
        Option(LcpOption.ACFC, b""),
    ]
    verdict = ours.judge(options)
    assert verdict.kind == "ack"
    assert list(verdict.options) == options
    assert ours.peer_mru == 1400
    assert ours.peer_magic == 0xCAFEBABE


@pytest.mark.parametrize(
    "option",
    [
        CHAP_OPTION,  # we never authenticate ourselves to the device
        PAP_OPTION,
        Option(LcpOption.QUALITY_PROTOCOL, b"\xc0\x25\x00\x00\x00\x0a"),
        Option(13, b"\x06"),  # Callback
        Option(17, b"\x05\xdc"),  # MRRU
        Option(MRU, b"\x05"),  # wrong length
        Option(LcpOption.ACCM, b"\x00\x00"),
        Option(MAGIC, u32(0)),  # zero is not a Magic-Number
        Option(MAGIC, b"\x01\x02\x03"),
        Option(LcpOption.PFC, b"\x00"),
        Option(LcpOption.ACFC, b"\x00"),
    ],
    ids=lambda o: f"{o.type}-{o.data.hex()}",
)
def test_options_we_do_not_take_are_rejected(option: Option) -> None:
    ours = policy()
    verdict = ours.judge([Option(MRU, u16(1450)), option])
    assert verdict.kind == "reject"
    assert verdict.options == (option,)
    assert ours.peer_mru == 1500  # nothing recorded from a request we did not ack


def test_reject_wins_over_nak() -> None:
    verdict = policy().judge([Option(MRU, u16(64)), Option(13, b"\x06")])
    assert verdict.kind == "reject"
    assert verdict.options == (Option(13, b"\x06"),)


def test_mru_below_minimum_is_naked_with_ours() -> None:
    verdict = policy().judge([Option(MRU, u16(127))])
    assert verdict.kind == "nak"
    assert verdict.options == (Option(MRU, u16(1450)),)
    assert policy().judge([Option(MRU, u16(128))]).kind == "ack"


def test_magic_number_collision_is_naked_with_another() -> None:
    ours = policy()
    verdict = ours.judge([Option(MAGIC, u32(ours.magic))])
    assert verdict.kind == "nak"
    [suggestion] = verdict.options
    assert suggestion.type == MAGIC
    assert suggestion.data != u32(ours.magic)
    assert suggestion.data != u32(0)


# --- answers to our request ----------------------------------------------------------------


def test_nak_of_mru_takes_a_smaller_value_only() -> None:
    ours = policy()
    ours.nak_received([Option(MRU, u16(1400))])
    assert ours.mru == 1400
    ours.nak_received([Option(MRU, u16(1500))])  # never above what we were configured with
    assert ours.mru == 1400
    ours.nak_received([Option(MRU, u16(100))])  # below RFC 1661's 128 floor
    assert ours.mru == 1400
    ours.nak_received([Option(MRU, b"\x05")])
    assert ours.mru == 1400


def test_nak_of_magic_picks_a_new_one() -> None:
    ours = policy()
    before = ours.magic
    ours.nak_received([Option(MAGIC, u32(before))])
    assert ours.magic != before
    assert ours.magic & 1


def test_nak_of_auth_moves_to_the_suggested_protocol() -> None:
    ours = policy([AuthProtocol.CHAP, AuthProtocol.PAP])
    ours.nak_received([PAP_OPTION])
    assert ours.auth is AuthProtocol.PAP
    assert ours.request()[1] == PAP_OPTION
    assert ours.failure is None


def test_nak_of_auth_with_an_unknown_protocol_drops_the_current_one() -> None:
    ours = policy([AuthProtocol.CHAP, AuthProtocol.PAP])
    ours.nak_received([Option(AUTH, b"\xc2\x23\x81")])  # MS-CHAPv2
    assert ours.auth is AuthProtocol.PAP
    ours.nak_received([Option(AUTH, b"\xc2\x23\x81")])
    assert ours.auth is None
    assert ours.failure is not None
    assert "refused PAP" in ours.failure


def test_nak_of_auth_suggesting_a_protocol_we_do_not_offer() -> None:
    ours = policy([AuthProtocol.CHAP])
    ours.nak_received([PAP_OPTION])
    assert ours.failure == "the device refused CHAP and we offer nothing else"


def test_reject_of_auth_is_a_failure() -> None:
    ours = policy([AuthProtocol.CHAP])
    ours.reject_received([CHAP_OPTION])
    assert ours.failure == "the device rejected authentication"


def test_reject_of_mru_and_magic_stops_asking() -> None:
    ours = policy()
    ours.reject_received([Option(MRU, u16(1450)), Option(MAGIC, u32(ours.magic))])
    assert ours.request() == []
    assert ours.failure is None


def test_echo_magic_is_zero_until_acked() -> None:
    """RFC 1661 section 5.8: the Magic-Number field is zero until negotiated."""
    ours = policy()
    assert ours.echo_magic == 0
    ours.acked([Option(MRU, u16(1450))])
    assert ours.echo_magic == 0
    ours.acked(ours.request())
    assert ours.echo_magic == ours.magic


def test_auth_protocol_of() -> None:
    assert auth_protocol_of(CHAP_OPTION) is AuthProtocol.CHAP
    assert auth_protocol_of(PAP_OPTION) is AuthProtocol.PAP
    assert auth_protocol_of(Option(AUTH, b"\xc2\x23\x80")) is None  # MS-CHAPv1
    assert AuthProtocol.CHAP.option() == CHAP_OPTION
    assert AuthProtocol.PAP.option() == PAP_OPTION


# --- proxy LCP -------------------------------------------------------------------------

DEVICE = LCP_MRU_1450 + magic_bytes(0x11111111) + LCP_PFC + LCP_ACFC
CHAP_ONLY = [AuthProtocol.CHAP]
BOTH = [AuthProtocol.CHAP, AuthProtocol.PAP]


def test_proxy_lcp_acceptable() -> None:
    sent = LCP_MRU_1450 + LCP_AUTH_CHAP_MD5 + magic_bytes(0x22222222)
    verdict = judge_proxy_lcp(sent, DEVICE, 1450, BOTH)
    assert verdict.acceptable
    assert verdict.our_magic == 0x22222222
    assert verdict.peer_magic == 0x11111111
    assert verdict.peer_mru == 1450
    assert verdict.auth is AuthProtocol.CHAP


def test_proxy_lcp_with_a_smaller_mru_and_pap() -> None:
    sent = bytes([1, 4, 0x05, 0xDC - 200]) + LCP_AUTH_PAP
    verdict = judge_proxy_lcp(sent, b"", 1450, BOTH)
    assert verdict.acceptable
    assert verdict.auth is AuthProtocol.PAP
    assert verdict.our_magic is None
    assert verdict.peer_mru == 1500  # the device asked for nothing: the default


def test_proxy_lcp_without_authentication() -> None:
    verdict = judge_proxy_lcp(LCP_MRU_1450, DEVICE, 1450, BOTH)
    assert verdict.acceptable
    assert verdict.auth is None


@pytest.mark.parametrize(
    ("sent", "received", "accepted", "reason"),
    [
        (None, DEVICE, BOTH, "incomplete"),
        (LCP_MRU_1450, None, BOTH, "incomplete"),
        (b"\x01\x04\x05", DEVICE, BOTH, "malformed"),
        (LCP_MRU_1450, b"\x05\x01", BOTH, "malformed"),
        (bytes([1, 4, 0x05, 0xDC]), DEVICE, BOTH, "MRU 1500 is larger than ours (1450)"),
        (LCP_AUTH_CHAP_MD5, DEVICE, BOTH, "MRU 1500"),  # no MRU option: the default
        (LCP_MRU_1450 + LCP_AUTH_PAP, DEVICE, CHAP_ONLY, "authentication protocol"),
        (LCP_MRU_1450 + b"\x03\x05\xc2\x23\x81", DEVICE, BOTH, "c22381"),
    ],
)
def test_proxy_lcp_unacceptable(
    sent: bytes | None, received: bytes | None, accepted: list[AuthProtocol], reason: str
) -> None:
    verdict = judge_proxy_lcp(sent, received, 1450, accepted)
    assert not verdict.acceptable
    assert reason in verdict.reason
