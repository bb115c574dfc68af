"""Test doubles for the RADIUS tests: a UDP reactor on a fake clock, and a RADIUS
server side written with pyrad (an implementation independent of ours)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from pyrad import packet as pyrad_packet
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, IReactorUDP, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from zope.interface import implementer

from aaa.radius.packet import dictionary


@dataclass
class Sent:
    port: FakeUdpPort
    data: bytes
    address: tuple[str, int]


@implementer(IListeningPort, IUDPTransport)
class FakeUdpPort:
    def __init__(self, reactor: FakeUdpReactor, protocol: DatagramProtocol, number: int) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.number = number
        self.closed = False

    def write(self, data: bytes, address: tuple[str, int] | None = None) -> None:
        assert not self.closed, "write on a closed port"
        assert address is not None, "the fake port is never connected: name the address"
        self.reactor.sent.append(Sent(self, data, address))

    def connect(self, host: str, port: int) -> None:
        raise NotImplementedError("the fake port is never connected")

    def setBroadcastAllowed(self, enabled: bool) -> None:
        raise NotImplementedError("no broadcast on the fake port")

    def getBroadcastAllowed(self) -> bool:
        return False

    def deliver(self, data: bytes, source: tuple[str, int]) -> None:
        self.protocol.datagramReceived(data, source)

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        self.closed = True
        self.protocol.doStop()  # type: ignore[no-untyped-call]

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", self.number)


@implementer(IReactorUDP)
class FakeUdpReactor(Clock):
    """A Clock whose listenUDP gives in-memory sockets; what they send lands in `sent`."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakeUdpPort] = []
        self.sent: list[Sent] = []

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeUdpPort:
        fake = FakeUdpPort(self, protocol, 40000 + len(self.ports))
        self.ports.append(fake)
        protocol.makeConnection(fake)
        return fake

    def take(self) -> list[Sent]:
        sent, self.sent = self.sent, []
        return sent


def parse_request(data: bytes, secret: bytes) -> Any:
    """The request as a RADIUS server (pyrad) decodes it."""
    return pyrad_packet.AuthPacket(packet=data, secret=secret, dict=dictionary())


def reply_bytes(
    request_data: bytes,
    secret: bytes,
    code: int = pyrad_packet.AccessAccept,
    attributes: dict[str, Any] | None = None,
    *,
    sign: bool = True,
    forge_message_authenticator: bool = False,
) -> bytes:
    """A reply to `request_data` as a pyrad server builds it.

    `sign`: with a Message-Authenticator (pyrad computes it). `forge_message_authenticator`:
    its value altered and the Response Authenticator recomputed, as an attacker who can
    forge the latter (BlastRADIUS) but not the HMAC would send it.
    """
    request = parse_request(request_data, secret)
    reply = request.CreateReply(message_authenticator=sign)
    reply.code = code
    for name, value in (attributes or {}).items():
        reply.AddAttribute(name.replace("_", "-"), value)
    data: bytes = reply.ReplyPacket()
    if forge_message_authenticator:
        data = forge(data, request.authenticator, secret)
    return data


def forge(data: bytes, request_authenticator: bytes, secret: bytes) -> bytes:
    """`data` with its Message-Authenticator value flipped and a valid Response Authenticator."""
    position = 20
    while position < len(data):
        attr_type, length = data[position], data[position + 1]
        if attr_type == 80:
            value = bytes(b ^ 0x5A for b in data[position + 2 : position + length])
            data = data[: position + 2] + value + data[position + length :]
            break
        position += length
    else:
        raise AssertionError("no Message-Authenticator to forge")
    return with_response_authenticator(data, request_authenticator, secret)


def with_response_authenticator(data: bytes, request_authenticator: bytes, secret: bytes) -> bytes:
    """`data` with its Length and Response Authenticator made right (RFC 2865 section 3)."""
    data = data[:2] + struct.pack("!H", len(data)) + data[4:]
    digest = hashlib.md5(data[:4] + request_authenticator + data[20:] + secret).digest()
    return data[:4] + digest + data[20:]


def strip_message_authenticator(data: bytes, request_authenticator: bytes, secret: bytes) -> bytes:
    """`data` without its Message-Authenticator, Response Authenticator recomputed."""
    out = data[:20]
    position = 20
    while position < len(data):
        length = data[position + 1]
        if data[position] != 80:
            out += data[position : position + length]
        position += length
    return with_response_authenticator(out, request_authenticator, secret)
