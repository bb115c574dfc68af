"""RADIUS packets: building requests and checking replies, with pyrad as the codec.

This is the only module of lns that imports pyrad (STYLE.md section 5). pyrad
encodes and decodes attribute values with our dictionary (`dictionary/`), and
hides User-Password (its `PwCrypt`, RFC 2865 section 5.2). Everything that
authenticates a packet is done here, on the raw bytes, and not left to pyrad:

- the Request Authenticator: random for Access-Request and Status-Server
  (RFC 2865 section 3, RFC 5997 section 3), an MD5 over the packet for
  Accounting-Request, CoA-Request and Disconnect-Request (RFC 2866 section 3,
  RFC 5176 section 3.3);
- a Message-Authenticator (RFC 2869 section 5.14, RFC 3579 section 3.2) on every
  Access-Request and Status-Server, as the first attribute (the BlastRADIUS
  advice, CVE-2024-3596);
- a reply's Response Authenticator, MD5(Code | Identifier | Length | Request
  Authenticator | Attributes | Secret) (RFC 2865 section 3), always checked;
- a reply's Message-Authenticator, HMAC-MD5 keyed with the secret over the reply
  with its Authenticator field replaced by the Request Authenticator and the
  Message-Authenticator's value zeroed (RFC 3579 section 3.2). Whether a reply
  without one is acceptable is the caller's policy (`Reply.message_authenticator`).

Values are plain Python: `str`, `bytes`, `int`, `IPv4Address`, `IPv6Address`,
`IPv6Network`. Secrets never appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import ipaddress
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeAlias

from pyrad import packet as pyrad_packet
from pyrad.dictionary import Dictionary

from aaa.radius.attribute_encoder import TABLE_TYPES, AttributeEncoder, AttributeSpec

__all__ = [
    "AttributeValue",
    "BadMessageAuthenticator",
    "BadResponseAuthenticator",
    "Code",
    "EncodedRequest",
    "RadiusPacketError",
    "Reply",
    "Request",
    "access_request",
    "accounting_request",
    "decode_reply",
    "dictionary",
    "encode_request",
    "message_authenticator",
    "status_server",
]

AttributeValue: TypeAlias = (
    str | bytes | int | ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv6Network
)

HEADER_LENGTH = 20
AUTHENTICATOR_LENGTH = 16
MAX_PACKET_LENGTH = 4096  # RFC 2865 section 3
MESSAGE_AUTHENTICATOR = 80  # attribute type, RFC 2869 section 5.14
USER_PASSWORD = 2  # attribute type, RFC 2865 section 5.2
_ZERO_VECTOR = bytes(AUTHENTICATOR_LENGTH)
# Attributes whose values never go into a repr (the password is kept apart anyway).
_HIDDEN = frozenset({"User-Password", "CHAP-Password", "Tunnel-Password"})


class Code(enum.IntEnum):
    """RADIUS packet codes (RFC 2865 section 3, RFC 2866, RFC 5997, RFC 5176)."""

    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    ACCESS_CHALLENGE = 11
    STATUS_SERVER = 12
    DISCONNECT_REQUEST = 40
    DISCONNECT_ACK = 41
    DISCONNECT_NAK = 42
    COA_REQUEST = 43
    COA_ACK = 44
    COA_NAK = 45


# The replies each request may get.
REPLY_CODES: dict[Code, frozenset[Code]] = {
    Code.ACCESS_REQUEST: frozenset({Code.ACCESS_ACCEPT, Code.ACCESS_REJECT, Code.ACCESS_CHALLENGE}),
    Code.ACCOUNTING_REQUEST: frozenset({Code.ACCOUNTING_RESPONSE}),
    # RFC 5997 section 3: an Access-Accept on the authentication port, an
    # Accounting-Response on the accounting port.
    Code.STATUS_SERVER: frozenset({Code.ACCESS_ACCEPT, Code.ACCOUNTING_RESPONSE}),
    Code.DISCONNECT_REQUEST: frozenset({Code.DISCONNECT_ACK, Code.DISCONNECT_NAK}),
    Code.COA_REQUEST: frozenset({Code.COA_ACK, Code.COA_NAK}),
}
# Requests whose Request Authenticator is random rather than computed.
_RANDOM_AUTHENTICATOR = frozenset({Code.ACCESS_REQUEST, Code.STATUS_SERVER})


class RadiusPacketError(ValueError):
    """A packet that cannot be built or that must be dropped; the message says why."""


class BadResponseAuthenticator(RadiusPacketError):
    """The reply's Response Authenticator is wrong: another secret, or a forgery."""


class BadMessageAuthenticator(RadiusPacketError):
    """The reply's Message-Authenticator is wrong, malformed or repeated."""


@functools.cache
def dictionary() -> Any:
    """Our RADIUS dictionary (package data `aaa/radius/dictionary/`), read once."""
    root = resources.files("aaa.radius") / "dictionary"
    # pyrad resolves $INCLUDE relative to the file, so it needs a real path.
    with resources.as_file(root) as directory:
        return Dictionary(os.path.join(directory, "dictionary"))


# --- Requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A request before it meets a server: no secret, Identifier or authenticator yet.

    `attributes` are (name, value) pairs in order; a tagged attribute (RFC 2868) is
    named with its tag, "Tunnel-Type:1". `password` is the plain User-Password,
    hidden per server when the request is encoded (it depends on the secret).
    """

    code: Code
    attributes: tuple[tuple[str, AttributeValue], ...] = ()
    password: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}=***" if name.partition(":")[0] in _HIDDEN else f"{name}={value!r}"
            for name, value in self.attributes
        )
        password = ", User-Password=***" if self.password is not None else ""
        return f"Request({self.code.name}: {shown}{password})"

    def get(self, name: str) -> AttributeValue | None:
        """The first value of the attribute `name` (tag included in the name if any)."""
        for key, value in self.attributes:
            if key == name:
                return value
        return None


def access_request(
    attributes: Iterable[tuple[str, AttributeValue]],
    *,
    password: bytes | None = None,
    chap: tuple[int, bytes, bytes] | None = None,
) -> Request:
    """An Access-Request with a User-Password (`password`) or CHAP (`chap`), or neither.

    `chap` is (identifier, challenge, response) of a CHAP-MD5 exchange: it becomes
    CHAP-Password = identifier | response and CHAP-Challenge = challenge
    (RFC 2865 sections 5.3 and 5.40). The Message-Authenticator is always added.
    """
    if password is not None and chap is not None:
        raise RadiusPacketError("an Access-Request carries User-Password or CHAP, not both")
    pairs = list(attributes)
    if chap is not None:
        chap_id, challenge, response = chap
        if not 0 <= chap_id <= 255 or len(response) != 16:
            raise RadiusPacketError("CHAP needs a one-octet identifier and a 16-octet response")
        if not challenge:
            raise RadiusPacketError("CHAP needs a challenge")
        pairs.append(("CHAP-Password", bytes([chap_id]) + response))
        pairs.append(("CHAP-Challenge", challenge))
    if password is not None and len(password) > 128:
        # RFC 2865 section 5.2: at most 128 octets.
        raise RadiusPacketError(f"User-Password longer than 128 octets ({len(password)})")
    return Request(Code.ACCESS_REQUEST, tuple(pairs), password)


def accounting_request(attributes: Iterable[tuple[str, AttributeValue]]) -> Request:
    """An Accounting-Request (RFC 2866); its authenticator is computed at encoding."""
    return Request(Code.ACCOUNTING_REQUEST, tuple(attributes))


def status_server(attributes: Iterable[tuple[str, AttributeValue]] = ()) -> Request:
    """A Status-Server (RFC 5997): is the server alive and does it share our secret?"""
    return Request(Code.STATUS_SERVER, tuple(attributes))


@dataclass(frozen=True, slots=True)
class EncodedRequest:
    """A request as sent to one server: its bytes, and what its reply is checked with."""

    code: Code
    identifier: int
    authenticator: bytes
    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"EncodedRequest({self.code.name}, id={self.identifier}, length={len(self.data)})"


def encode_request(
    request: Request, identifier: int, secret: bytes, authenticator: bytes | None = None
) -> EncodedRequest:
    """The bytes of `request` for a server sharing `secret`, with this Identifier.

    `authenticator` fixes the Request Authenticator of an Access-Request or
    Status-Server (tests); by default it is 16 random octets. Access-Request and
    Status-Server always carry a Message-Authenticator, first.
    """
    if not 0 <= identifier <= 255:
        raise RadiusPacketError(f"identifier out of range: {identifier}")
    code = request.code
    random_vector = code in _RANDOM_AUTHENTICATOR
    if random_vector:
        vector = authenticator if authenticator is not None else os.urandom(AUTHENTICATOR_LENGTH)
        if len(vector) != AUTHENTICATOR_LENGTH:
            raise RadiusPacketError("a Request Authenticator is 16 octets")
    else:
        vector = _ZERO_VECTOR
    attributes = _encode_attributes(request, identifier, secret, vector)
    if random_vector:
        attributes = bytes([MESSAGE_AUTHENTICATOR, 18]) + _ZERO_VECTOR + attributes
    length = HEADER_LENGTH + len(attributes)
    if length > MAX_PACKET_LENGTH:
        raise RadiusPacketError(f"request too long ({length} octets, at most 4096)")
    header = struct.pack("!BBH", code, identifier, length)
    if random_vector:
        signature = _hmac_md5(secret, header + vector + attributes)
        attributes = attributes[:2] + signature + attributes[18:]
    else:
        # RFC 2866 section 3 / RFC 5176 section 3.3: MD5 over the packet with a zero
        # authenticator, followed by the secret.
        vector = hashlib.md5(header + _ZERO_VECTOR + attributes + secret).digest()
    return EncodedRequest(code, identifier, vector, header + vector + attributes)


@functools.cache
def _table_encoder() -> AttributeEncoder:
    """The attributes of our dictionary the table encodes as pyrad does (see
    `aaa.radius.attribute_encoder`): plain ones, no vendor, no TLV, no encryption but
    User-Password's, named values only on integers."""
    specs = []
    for name in dictionary().attributes:
        attribute = dictionary().attributes[name]
        named = attribute.values.forward
        if (
            attribute.vendor
            or attribute.is_sub_attribute
            or attribute.type not in TABLE_TYPES
            or attribute.encrypt not in (0, 1)
            or (attribute.encrypt == 1 and attribute.code != USER_PASSWORD)
            or (attribute.type != "integer" and named)
        ):
            continue
        specs.append(AttributeSpec(name, attribute.code, attribute.type, attribute.has_tag, named))
    return AttributeEncoder(specs)


def _encode_attributes(request: Request, identifier: int, secret: bytes, vector: bytes) -> bytes:
    """The attribute octets of `request`: from our table when it can (the same bytes,
    a fraction of the cost), else encoded by pyrad with our dictionary."""
    fast = _table_encoder().encode(request.attributes, request.password, secret, vector)
    if fast is not None:
        return fast
    return _pyrad_attributes(request, identifier, secret, vector)


def _pyrad_attributes(request: Request, identifier: int, secret: bytes, vector: bytes) -> bytes:
    """The attribute octets of `request`, encoded by pyrad with our dictionary."""
    # pyrad hides User-Password and salts Tunnel-Password with `vector`; for requests
    # whose authenticator is computed (accounting), pyrad salts with zeros as FreeRADIUS.
    packet = pyrad_packet.AuthPacket(
        code=int(request.code),
        id=identifier,
        secret=secret,
        authenticator=vector,
        dict=dictionary(),
    )
    try:
        # User-Password right after User-Name (or first), where NASes put it.
        if request.password is not None and request.get("User-Name") is None:
            packet["User-Password"] = packet.PwCrypt(request.password)
        for name, value in request.attributes:
            packet.AddAttribute(name, _pyrad_value(value))
            if name == "User-Name" and request.password is not None:
                packet["User-Password"] = packet.PwCrypt(request.password)
        encoded: bytes = packet.RequestPacket()
    except KeyError as exc:
        raise RadiusPacketError(f"attribute not in the dictionary: {exc.args[0]}") from None
    except (ValueError, TypeError, struct.error) as exc:
        # pyrad's messages name the attribute and the problem, never the secret.
        raise RadiusPacketError(f"cannot encode the request: {exc}") from None
    return encoded[HEADER_LENGTH:]


def _pyrad_value(value: AttributeValue) -> object:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv6Network):
        return str(value)
    return value


def _hmac_md5(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.md5).digest()


# --- Replies ----------------------------------------------------------------------------


class AttributeList:
    """What a decoded packet's attribute list answers: values by name, typed.

    Mixed into the packets we receive (:class:`Reply`, :class:`DynauthRequest`), whose
    `attributes` are (name, value) pairs in packet order; passwords never show in a repr.
    """

    __slots__ = ()
    attributes: tuple[tuple[str, AttributeValue], ...]
    code: Code
    identifier: int

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}=***" if name in _HIDDEN else f"{name}={value!r}"
            for name, value in self.attributes
        )
        return f"{type(self).__name__}({self.code.name}, id={self.identifier}: {shown})"

    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.attributes)

    def values(self, name: str) -> tuple[AttributeValue, ...]:
        return tuple(value for key, value in self.attributes if key == name)

    def first(self, name: str) -> AttributeValue | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def string(self, name: str) -> str | None:
        """The first value as text (invalid UTF-8 replaced), or None."""
        value = self.first(name)
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return value if isinstance(value, str) else None

    def strings(self, name: str) -> tuple[str, ...]:
        return tuple(
            value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
            for value in self.values(name)
            if isinstance(value, str | bytes)
        )

    def integer(self, name: str) -> int | None:
        value = self.first(name)
        return value if isinstance(value, int) else None

    def octets(self, name: str) -> bytes | None:
        value = self.first(name)
        if isinstance(value, str):
            return value.encode("utf-8")
        return value if isinstance(value, bytes) else None

    def ipv4(self, name: str) -> ipaddress.IPv4Address | None:
        value = self.first(name)
        return value if isinstance(value, ipaddress.IPv4Address) else None


@dataclass(frozen=True, slots=True)
class Reply(AttributeList):
    """A verified reply: its code and attributes as plain values, in order.

    `message_authenticator` is True when the reply carried a Message-Authenticator
    and it was valid (a present but invalid one is never accepted: the reply is
    rejected by `decode_reply`). Attributes our dictionary does not know are kept
    raw in `unknown`, keyed by type or (vendor, type).
    """

    code: Code
    identifier: int
    attributes: tuple[tuple[str, AttributeValue], ...] = ()
    message_authenticator: bool = False
    unknown: tuple[tuple[int | tuple[int, int], bytes], ...] = ()
    # Attributes that failed to decode (wrong length for their type...), by name.
    undecodable: tuple[str, ...] = ()


def message_authenticator_vector(reply_code: Code, request: EncodedRequest) -> bytes:
    """The Authenticator field a reply's Message-Authenticator is computed with.

    The Request Authenticator of the request (RFC 3579 section 3.2, RFC 5176
    section 3.3, RFC 5997 section 3), except for an Accounting-Response to an
    Accounting-Request, computed with zeros as FreeRADIUS and pyrad do.
    """
    if reply_code == Code.ACCOUNTING_RESPONSE and request.code == Code.ACCOUNTING_REQUEST:
        return _ZERO_VECTOR
    return request.authenticator


def message_authenticator(packet: bytes, secret: bytes, vector: bytes) -> bytes:
    """HMAC-MD5 of `packet` (a whole RADIUS packet with a Message-Authenticator)
    with `vector` in its Authenticator field and the Message-Authenticator zeroed."""
    offset = _message_authenticator_offset(packet)
    if offset is None:
        raise BadMessageAuthenticator("no Message-Authenticator")
    zeroed = packet[:4] + vector + packet[HEADER_LENGTH:offset] + _ZERO_VECTOR
    zeroed += packet[offset + AUTHENTICATOR_LENGTH :]
    return _hmac_md5(secret, zeroed)


def _message_authenticator_offset(packet: bytes) -> int | None:
    """Offset of the Message-Authenticator's value, None without one; raises when it
    is malformed or repeated (RFC 3579 section 3.2: at most one, 16 octets)."""
    found: int | None = None
    for attr_type, start, end in _walk_attributes(packet):
        if attr_type != MESSAGE_AUTHENTICATOR:
            continue
        if found is not None:
            raise BadMessageAuthenticator("more than one Message-Authenticator")
        if end - start != AUTHENTICATOR_LENGTH:
            raise BadMessageAuthenticator(f"Message-Authenticator of {end - start} octets, not 16")
        found = start
    return found


def _walk_attributes(packet: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, value start, value end) of each attribute; raises on a bad length."""
    position = HEADER_LENGTH
    while position < len(packet):
        if position + 2 > len(packet):
            raise RadiusPacketError("truncated attribute header")
        attr_type, attr_length = packet[position], packet[position + 1]
        if attr_length < 2 or position + attr_length > len(packet):
            raise RadiusPacketError(f"attribute {attr_type} has a bad length ({attr_length})")
        yield attr_type, position + 2, position + attr_length
        position += attr_length


def decode_reply(data: bytes, request: EncodedRequest, secret: bytes) -> Reply:
    """Check that `data` is a reply to `request` from a server sharing `secret`, and decode it.

    Raises `RadiusPacketError` (malformed, wrong Identifier or code),
    `BadResponseAuthenticator` or `BadMessageAuthenticator`: the reply must then be
    dropped. A reply without a Message-Authenticator is returned with
    `message_authenticator=False`; refusing it is the caller's policy.
    """
    if len(data) < HEADER_LENGTH:
        raise RadiusPacketError(f"{len(data)} octets: shorter than a RADIUS header")
    code_value, identifier, length = struct.unpack("!BBH", data[:4])
    if not HEADER_LENGTH <= length <= min(len(data), MAX_PACKET_LENGTH):
        raise RadiusPacketError(f"bad Length field {length} for {len(data)} octets")
    data = data[:length]  # octets beyond Length are padding (RFC 2865 section 3)
    if identifier != request.identifier:
        raise RadiusPacketError(f"identifier {identifier} is not the request's")
    try:
        code = Code(code_value)
    except ValueError:
        raise RadiusPacketError(f"unknown code {code_value}") from None
    if code not in REPLY_CODES.get(request.code, frozenset()):
        raise RadiusPacketError(f"{code.name} is no reply to {request.code.name}")
    expected = hashlib.md5(data[:4] + request.authenticator + data[20:] + secret).digest()
    if not hmac.compare_digest(expected, data[4:20]):
        raise BadResponseAuthenticator("bad Response Authenticator")
    offset = _message_authenticator_offset(data)  # also checks every attribute's length
    signed = False
    if offset is not None:
        vector = message_authenticator_vector(code, request)
        if not hmac.compare_digest(
            message_authenticator(data, secret, vector), data[offset : offset + 16]
        ):
            raise BadMessageAuthenticator("bad Message-Authenticator")
        signed = True
    attributes, unknown, undecodable = _decode_attributes(data, request, secret)
    return Reply(code, identifier, attributes, signed, unknown, undecodable)


_INTEGER_TYPES = frozenset({"integer", "short", "byte", "signed", "integer64", "date"})


def _decode_attributes(
    data: bytes, request: EncodedRequest, secret: bytes
) -> tuple[
    tuple[tuple[str, AttributeValue], ...],
    tuple[tuple[int | tuple[int, int], bytes], ...],
    tuple[str, ...],
]:
    rad_dict = dictionary()
    try:
        packet = pyrad_packet.AuthPacket(packet=data, secret=secret, dict=rad_dict)
    except pyrad_packet.PacketError as exc:
        raise RadiusPacketError(f"cannot decode the reply: {exc}") from None
    # Salt-encrypted attributes of a reply use the request's authenticator (RFC 2868 3.5).
    packet.request_authenticator = request.authenticator
    attributes: list[tuple[str, AttributeValue]] = []
    unknown: list[tuple[int | tuple[int, int], bytes]] = []
    undecodable: list[str] = []
    # pyrad's keys() names the attributes it knows; iterating the packet gives raw codes.
    for key in packet.keys():  # noqa: SIM118
        if not isinstance(key, str):
            unknown.extend((key, bytes(raw)) for raw in packet[key] if isinstance(raw, bytes))
            continue
        if key == "Message-Authenticator":
            continue  # verified above; its value means nothing to the caller
        definition = rad_dict.attributes[key]
        try:
            values = packet[key]
            attributes.extend((key, _plain_value(definition, value)) for value in values)
        except (pyrad_packet.PacketError, ValueError, TypeError, KeyError, struct.error):
            undecodable.append(key)
    return tuple(attributes), tuple(unknown), tuple(undecodable)


def _plain_value(definition: Any, value: object) -> AttributeValue:
    kind = definition.type
    if kind in _INTEGER_TYPES:
        if isinstance(value, str):
            # pyrad gives the VALUE name of an enumerated integer; its table holds the
            # encoded octets of the number.
            encoded = definition.values.GetForward(value)
            value = int.from_bytes(encoded, "big", signed=kind == "signed")
        if not isinstance(value, int):
            raise ValueError(f"{definition.name}: not an integer")
        return value
    if kind == "ipaddr":
        return ipaddress.IPv4Address(str(value))
    if kind == "ipv6addr":
        return ipaddress.IPv6Address(str(value))
    if kind == "ipv6prefix":
        return ipaddress.IPv6Network(str(value), strict=False)
    if isinstance(value, str | bytes):
        return value
    raise ValueError(f"{definition.name}: unexpected {type(value).__name__} value")


# --- Dynamic authorization (RFC 5176): requests we receive, replies we send --------------
#
# The Request Authenticator of a Disconnect-Request or CoA-Request is
# MD5(Code | Identifier | Length | 16 zero octets | Attributes | Secret) (RFC 5176
# section 3.3, as RFC 2866 section 3); a Message-Authenticator in such a request is
# computed with a zero Authenticator field, as for Accounting-Request (RFC 3579
# section 3.2). A reply's Response Authenticator and Message-Authenticator are
# computed with the Request Authenticator, as for any reply (RFC 2865 section 3).

_DYNAUTH_REPLIES: dict[Code, tuple[Code, Code]] = {
    Code.DISCONNECT_REQUEST: (Code.DISCONNECT_ACK, Code.DISCONNECT_NAK),
    Code.COA_REQUEST: (Code.COA_ACK, Code.COA_NAK),
}


class BadRequestAuthenticator(RadiusPacketError):
    """The request's Request Authenticator is wrong: another secret, or a forgery."""


class MissingMessageAuthenticator(BadMessageAuthenticator):
    """The request carries no Message-Authenticator while one is required."""


class ErrorCause(enum.IntEnum):
    """Error-Cause values (RFC 5176 section 3.5) that a NAK may carry."""

    RESIDUAL_CONTEXT_REMOVED = 201
    UNSUPPORTED_ATTRIBUTE = 401
    MISSING_ATTRIBUTE = 402
    NAS_IDENTIFICATION_MISMATCH = 403
    INVALID_REQUEST = 404
    UNSUPPORTED_SERVICE = 405
    INVALID_ATTRIBUTE_VALUE = 407
    ADMINISTRATIVELY_PROHIBITED = 501
    SESSION_CONTEXT_NOT_FOUND = 503
    SESSION_CONTEXT_NOT_REMOVABLE = 504
    RESOURCES_UNAVAILABLE = 506


def disconnect_request(attributes: Iterable[tuple[str, AttributeValue]]) -> Request:
    """A Disconnect-Request (RFC 5176), as a Dynamic Authorization Client sends it."""
    return Request(Code.DISCONNECT_REQUEST, tuple(attributes))


def coa_request(attributes: Iterable[tuple[str, AttributeValue]]) -> Request:
    """A CoA-Request (RFC 5176), as a Dynamic Authorization Client sends it."""
    return Request(Code.COA_REQUEST, tuple(attributes))


def encode_dynauth_request(
    request: Request, identifier: int, secret: bytes, *, message_authenticator: bool = True
) -> EncodedRequest:
    """The bytes of a Disconnect-Request or CoA-Request, as a DAC (or a test) sends it.

    With `message_authenticator`, a Message-Authenticator comes first, computed with
    a zero Authenticator field; the Request Authenticator is then computed over it.
    """
    if request.code not in _DYNAUTH_REPLIES:
        raise RadiusPacketError(f"{request.code.name} is no dynamic authorization request")
    if not 0 <= identifier <= 255:
        raise RadiusPacketError(f"identifier out of range: {identifier}")
    attributes = _encode_attributes(request, identifier, secret, _ZERO_VECTOR)
    if message_authenticator:
        attributes = bytes([MESSAGE_AUTHENTICATOR, 18]) + _ZERO_VECTOR + attributes
    length = HEADER_LENGTH + len(attributes)
    if length > MAX_PACKET_LENGTH:
        raise RadiusPacketError(f"request too long ({length} octets, at most 4096)")
    header = struct.pack("!BBH", request.code, identifier, length)
    if message_authenticator:
        signature = _hmac_md5(secret, header + _ZERO_VECTOR + attributes)
        attributes = attributes[:2] + signature + attributes[18:]
    vector = hashlib.md5(header + _ZERO_VECTOR + attributes + secret).digest()
    return EncodedRequest(request.code, identifier, vector, header + vector + attributes)


@dataclass(frozen=True, slots=True)
class DynauthRequest(AttributeList):
    """A verified Disconnect-Request or CoA-Request: its attributes as plain values.

    `message_authenticator` is True when it carried a valid Message-Authenticator.
    Attributes our dictionary does not know are kept raw in `unknown`; those that
    failed to decode are named in `undecodable`. `proxy_state` holds the raw
    Proxy-State values, which every reply must echo in order (RFC 5176 section 3).
    """

    code: Code
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[str, AttributeValue], ...] = ()
    message_authenticator: bool = False
    unknown: tuple[tuple[int | tuple[int, int], bytes], ...] = ()
    undecodable: tuple[str, ...] = ()
    proxy_state: tuple[bytes, ...] = ()


def decode_dynauth_request(
    data: bytes, secret: bytes, *, require_message_authenticator: bool = False
) -> DynauthRequest:
    """Check that `data` is a Disconnect-Request or CoA-Request signed with `secret`,
    and decode it.

    Raises `RadiusPacketError` (malformed, another code), `BadRequestAuthenticator`,
    `BadMessageAuthenticator` (present and wrong, or repeated), or its subclass
    `MissingMessageAuthenticator` when `require_message_authenticator` is on and
    there is none: the datagram must then be dropped, unanswered.
    """
    if len(data) < HEADER_LENGTH:
        raise RadiusPacketError(f"{len(data)} octets: shorter than a RADIUS header")
    code_value, identifier, length = struct.unpack("!BBH", data[:4])
    if not HEADER_LENGTH <= length <= min(len(data), MAX_PACKET_LENGTH):
        raise RadiusPacketError(f"bad Length field {length} for {len(data)} octets")
    data = data[:length]
    if code_value not in _DYNAUTH_REPLIES:
        raise RadiusPacketError(f"code {code_value} is no dynamic authorization request")
    code = Code(code_value)
    authenticator = data[4:20]
    expected = hashlib.md5(data[:4] + _ZERO_VECTOR + data[20:] + secret).digest()
    if not hmac.compare_digest(expected, authenticator):
        raise BadRequestAuthenticator("bad Request Authenticator")
    offset = _message_authenticator_offset(data)  # also checks every attribute's length
    if offset is None:
        if require_message_authenticator:
            raise MissingMessageAuthenticator("no Message-Authenticator")
    elif not hmac.compare_digest(
        message_authenticator(data, secret, _ZERO_VECTOR), data[offset : offset + 16]
    ):
        raise BadMessageAuthenticator("bad Message-Authenticator")
    proxy_state = tuple(
        data[start:end] for attr_type, start, end in _walk_attributes(data) if attr_type == 33
    )
    encoded = EncodedRequest(code, identifier, authenticator, data)
    attributes, unknown, undecodable = _decode_attributes(data, encoded, secret)
    attributes = tuple((name, value) for name, value in attributes if name != "Proxy-State")
    return DynauthRequest(
        code,
        identifier,
        authenticator,
        attributes,
        offset is not None,
        unknown,
        undecodable,
        proxy_state,
    )


def encode_dynauth_reply(
    request: DynauthRequest,
    secret: bytes,
    *,
    ack: bool,
    error_cause: ErrorCause | None = None,
) -> bytes:
    """The ACK or NAK answering `request`: Disconnect-ACK/NAK or CoA-ACK/NAK.

    It carries a Message-Authenticator (first), the Error-Cause when given (RFC
    5176 section 3.5 allows it in an ACK only as 201, in practice a NAK's), and the
    request's Proxy-State attributes, last and in order (RFC 5176 section 3).
    """
    ack_code, nak_code = _DYNAUTH_REPLIES[request.code]
    code = ack_code if ack else nak_code
    attributes = bytes([MESSAGE_AUTHENTICATOR, 18]) + _ZERO_VECTOR
    if error_cause is not None:
        attributes += struct.pack("!BBI", 101, 6, int(error_cause))
    for state in request.proxy_state:
        attributes += bytes([33, len(state) + 2]) + state
    length = HEADER_LENGTH + len(attributes)
    if length > MAX_PACKET_LENGTH:
        raise RadiusPacketError(f"reply too long ({length} octets, at most 4096)")
    header = struct.pack("!BBH", code, request.identifier, length)
    signature = _hmac_md5(secret, header + request.authenticator + attributes)
    attributes = attributes[:2] + signature + attributes[18:]
    response = hashlib.md5(header + request.authenticator + attributes + secret).digest()
    return header + response + attributes


__all__ += [
    "BadRequestAuthenticator",
    "DynauthRequest",
    "ErrorCause",
    "MissingMessageAuthenticator",
    "coa_request",
    "decode_dynauth_request",
    "disconnect_request",
    "encode_dynauth_reply",
    "encode_dynauth_request",
]
