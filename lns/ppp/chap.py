"""RFC 1994: CHAP with MD5, the authenticator's side (the LNS challenges the device)."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from lns.ppp.frame import MalformedFrame
from lns.ppp.packet import ControlPacket

CHALLENGE_LENGTH = 16


class ChapCode(enum.IntEnum):
    CHALLENGE = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


@dataclass(frozen=True, slots=True)
class ChapValue:
    """A Challenge or a Response: identifier, value and the sender's name."""

    identifier: int
    value: bytes
    name: bytes


def decode_value(packet: ControlPacket) -> ChapValue:
    data = packet.data
    if not data:
        raise MalformedFrame("CHAP packet without Value-Size")
    size = data[0]
    if len(data) < 1 + size:
        raise MalformedFrame("CHAP Value runs past the end")
    return ChapValue(packet.identifier, data[1 : 1 + size], data[1 + size :])


def challenge(identifier: int, value: bytes, name: bytes) -> ControlPacket:
    return ControlPacket(ChapCode.CHALLENGE, identifier, bytes([len(value)]) + value + name)


def response(identifier: int, value: bytes, name: bytes) -> ControlPacket:
    """The device's side, for the LAC simulator."""
    return ControlPacket(ChapCode.RESPONSE, identifier, bytes([len(value)]) + value + name)


def md5_response(identifier: int, secret: bytes, challenge_value: bytes) -> bytes:
    """RFC 1994 section 4.1: MD5 over Identifier, secret and Challenge."""
    return hashlib.md5(bytes([identifier]) + secret + challenge_value).digest()


def result(identifier: int, success: bool, message: str) -> ControlPacket:
    code = ChapCode.SUCCESS if success else ChapCode.FAILURE
    return ControlPacket(code, identifier, message.encode("utf-8", "replace"))
