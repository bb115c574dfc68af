"""RFC 1334 section 2: PAP, the authenticator's side (the LNS checks the device)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lns.ppp.frame import MalformedFrame
from lns.ppp.packet import ControlPacket


class PapCode(enum.IntEnum):
    AUTHENTICATE_REQUEST = 1
    AUTHENTICATE_ACK = 2
    AUTHENTICATE_NAK = 3


@dataclass(frozen=True, slots=True)
class PapRequest:
    identifier: int
    peer_id: bytes
    password: bytes


def decode_request(packet: ControlPacket) -> PapRequest:
    """An Authenticate-Request: Peer-ID-Length, Peer-ID, Passwd-Length, Password."""
    data = packet.data
    if not data:
        raise MalformedFrame("PAP request without Peer-ID-Length")
    id_length = data[0]
    if len(data) < 2 + id_length:
        raise MalformedFrame("PAP Peer-ID runs past the end")
    peer_id = data[1 : 1 + id_length]
    password_length = data[1 + id_length]
    password = data[2 + id_length : 2 + id_length + password_length]
    if len(password) != password_length:
        raise MalformedFrame("PAP Password runs past the end")
    return PapRequest(packet.identifier, peer_id, password)


def reply(identifier: int, accepted: bool, message: str) -> ControlPacket:
    text = message.encode("utf-8", "replace")[:255]
    code = PapCode.AUTHENTICATE_ACK if accepted else PapCode.AUTHENTICATE_NAK
    return ControlPacket(code, identifier, bytes([len(text)]) + text)


def encode_request(identifier: int, peer_id: bytes, password: bytes) -> ControlPacket:
    """The device's side, for the LAC simulator."""
    data = bytes([len(peer_id)]) + peer_id + bytes([len(password)]) + password
    return ControlPacket(PapCode.AUTHENTICATE_REQUEST, identifier, data)
