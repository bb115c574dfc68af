"""RFC 2661 sections 3.2 and 4.1: control message bodies, a sequence of AVPs.

    M H rsvd Length(10) | Vendor ID | Attribute Type | Attribute Value ...

The first AVP is always the Message Type. A Random Vector AVP precedes the
hidden AVPs it covers (section 4.3); decoding consumes it, encoding inserts a
fresh one before the first hidden AVP.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from lns.l2tp import hidden as hiding
from lns.l2tp.avp import (
    AttributeType,
    Avp,
    AvpValue,
    MessageType,
    decode_value,
    encode_value,
    spec_for,
)
from lns.l2tp.wire import MalformedPacket, Reader, u16

M_BIT = 0x8000
H_BIT = 0x4000
RESERVED_MASK = 0x3C00
LENGTH_MASK = 0x03FF
AVP_HEADER_LENGTH = 6
MAX_AVP_LENGTH = LENGTH_MASK
RANDOM_VECTOR_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A decoded control message. ``message_type`` is an int when the type is unknown."""

    message_type: MessageType | int
    avps: tuple[Avp, ...] = ()

    def get(self, attribute: AttributeType) -> AvpValue:
        """The value of the first IETF AVP of this attribute, or None when absent."""
        for avp in self.avps:
            if avp.attribute == attribute and avp.vendor == 0:
                return avp.value
        return None

    def has(self, attribute: AttributeType) -> bool:
        return any(avp.attribute == attribute and avp.vendor == 0 for avp in self.avps)

    def invalid(self) -> tuple[Avp, ...]:
        """Known AVPs whose value did not fit the attribute's kind."""
        return tuple(avp for avp in self.avps if avp.problem)

    def unknown_mandatory(self) -> tuple[Avp, ...]:
        """AVPs with the M bit set that we do not understand (RFC 2661 section 4.1)."""
        return tuple(
            avp
            for avp in self.avps
            if avp.mandatory and (avp.reserved_bits or spec_for(avp.vendor, avp.attribute) is None)
        )


def decode_message(
    payload: bytes, secret: bytes | None = None, max_avps: int | None = None
) -> ControlMessage:
    """Decode the AVPs of a control message; ``secret`` unhides hidden AVPs.

    ``max_avps`` bounds the work done for a peer that has not proven it holds the
    secret: a message with more AVPs is refused before the rest is read.
    A known attribute whose value does not fit its kind is kept raw with its
    ``problem`` set: the framing is sound, so the message is still sequenced and
    answered (lns.l2tp.control turns it into a typed error).
    """
    reader = Reader(payload)
    avps: list[Avp] = []
    vector: bytes | None = None
    message_type: int | None = None
    count = 0
    while reader.remaining:
        count += 1
        if max_avps is not None and count > max_avps:
            raise MalformedPacket(f"more than {max_avps} AVPs")
        bits = reader.u16("AVP header")
        length = bits & LENGTH_MASK
        if length < AVP_HEADER_LENGTH:
            raise MalformedPacket(f"AVP length {length} is below the minimum of 6")
        if length - 2 > reader.remaining:
            raise MalformedPacket(f"AVP length {length} runs past the end of the message")
        vendor = reader.u16("AVP vendor")
        attribute = reader.u16("AVP attribute")
        raw = reader.take(length - AVP_HEADER_LENGTH, "AVP value")
        mandatory = bool(bits & M_BIT)
        is_hidden = bool(bits & H_BIT)
        if message_type is None:
            if vendor != 0 or attribute != AttributeType.MESSAGE_TYPE or is_hidden:
                raise MalformedPacket("the first AVP is not a plain Message Type")
            value = decode_value(0, AttributeType.MESSAGE_TYPE, raw)
            assert isinstance(value, int)
            message_type = value
            continue
        if bits & RESERVED_MASK:
            # RFC 2661 section 4.1: reserved bits set make the AVP unrecognized; its
            # value stays raw (not unhidden) and only its M bit matters.
            reserved = bits & RESERVED_MASK
            avps.append(Avp(attribute, raw, mandatory, is_hidden, vendor, reserved_bits=reserved))
            continue
        if is_hidden:
            spec = spec_for(vendor, attribute)
            if spec is not None and not spec.may_hide:
                # A MUST NOT of section 4.4; accepting it would also yield a message
                # that encode_message refuses to send back.
                raise MalformedPacket(f"{spec.attribute.name} must not be hidden")
            if vector is None:
                raise MalformedPacket(f"hidden AVP {attribute} without a preceding Random Vector")
            if secret is None:
                raise MalformedPacket(f"hidden AVP {attribute} but the tunnel has no secret")
            raw = hiding.unhide(attribute, raw, secret, vector)
        if vendor == 0 and attribute == AttributeType.RANDOM_VECTOR:
            random_vector = decode_value(0, attribute, raw)
            assert isinstance(random_vector, bytes)
            vector = random_vector
            continue
        try:
            value = decode_value(vendor, attribute, raw)
        except MalformedPacket as exc:
            avps.append(Avp(attribute, raw, mandatory, is_hidden, vendor, problem=str(exc)))
            continue
        avps.append(Avp(attribute, value, mandatory, is_hidden, vendor))
    if message_type is None:
        raise MalformedPacket("control message without AVPs")
    known: MessageType | int = (
        MessageType(message_type)
        if message_type in MessageType._value2member_map_
        else message_type
    )
    return ControlMessage(known, tuple(avps))


def _avp_bytes(bits: int, vendor: int, attribute: int, value: bytes) -> bytes:
    length = AVP_HEADER_LENGTH + len(value)
    if length > MAX_AVP_LENGTH:
        raise ValueError(f"AVP {vendor}:{attribute} is {length} bytes, the maximum is 1023")
    return u16(bits | length) + u16(vendor) + u16(attribute) + value


def encode_message(
    message: ControlMessage,
    secret: bytes | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encode a control message body; AVPs marked hidden are hidden with ``secret``."""
    parts = [_avp_bytes(M_BIT, 0, AttributeType.MESSAGE_TYPE, u16(int(message.message_type)))]
    vector: bytes | None = None
    for avp in message.avps:
        bits = M_BIT if avp.mandatory else 0
        if avp.reserved_bits:
            if not isinstance(avp.value, bytes):
                raise TypeError("an unrecognized AVP keeps its value as bytes")
            bits |= (H_BIT if avp.hidden else 0) | (avp.reserved_bits & RESERVED_MASK)
            parts.append(_avp_bytes(bits, avp.vendor, avp.attribute, avp.value))
            continue
        if avp.problem:
            if not isinstance(avp.value, bytes):
                raise TypeError("an AVP with a problem keeps its value as bytes")
            value = avp.value
        else:
            value = encode_value(avp)
        if avp.hidden:
            spec = spec_for(avp.vendor, avp.attribute)
            if spec is not None and not spec.may_hide:
                raise ValueError(f"{spec.attribute.name} must not be hidden (RFC 2661 section 4.4)")
            if secret is None:
                raise ValueError("hiding an AVP needs the tunnel secret")
            if vector is None:
                vector = random_bytes(RANDOM_VECTOR_LENGTH)
                parts.append(_avp_bytes(M_BIT, 0, AttributeType.RANDOM_VECTOR, vector))
            value = hiding.hide(avp.attribute, value, secret, vector)
            bits |= H_BIT
        parts.append(_avp_bytes(bits, avp.vendor, avp.attribute, value))
    return b"".join(parts)


def peek(payload: bytes, wanted: frozenset[int], max_avps: int) -> tuple[int, dict[int, bytes]]:
    """The Message Type and the raw values of the ``wanted`` plain IETF AVPs, unchecked.

    A bounded look at the AVP headers (at most ``max_avps`` of them), for answering
    a peer without decoding its message: a StopCCN to an address no LAC entry
    allows, or to a tunnel this node does not know, needs only the peer's tunnel
    ID. Hidden values are skipped; the first occurrence of an attribute wins.
    """
    reader = Reader(payload)
    found: dict[int, bytes] = {}
    message_type: int | None = None
    for _ in range(max_avps):
        if not reader.remaining:
            break
        bits = reader.u16("AVP header")
        length = bits & LENGTH_MASK
        if length < AVP_HEADER_LENGTH:
            raise MalformedPacket(f"AVP length {length} is below the minimum of 6")
        vendor = reader.u16("AVP vendor")
        attribute = reader.u16("AVP attribute")
        raw = reader.take(length - AVP_HEADER_LENGTH, "AVP value")
        if message_type is None:
            if vendor or attribute != AttributeType.MESSAGE_TYPE or bits & H_BIT or len(raw) != 2:
                raise MalformedPacket("the first AVP is not a plain Message Type")
            message_type = int.from_bytes(raw, "big")
        elif vendor == 0 and not bits & (H_BIT | RESERVED_MASK) and attribute in wanted:
            found.setdefault(attribute, raw)
    if message_type is None:
        raise MalformedPacket("control message without AVPs")
    return message_type, found
