"""RFC 2661 section 4: Attribute-Value Pairs.

The AVP table (:data:`AVP_TABLE`) is data: one row per attribute with its
name, value kind, whether we send it mandatory, and whether it may be hidden.
Values are decoded into Python types by kind; an attribute we do not know
(or a vendor AVP) survives as raw bytes so it round-trips unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lns.l2tp.wire import MalformedPacket, Reader, u16, u32


class MessageType(enum.IntEnum):
    """Control message types (RFC 2661 section 3.2)."""

    SCCRQ = 1
    SCCRP = 2
    SCCCN = 3
    StopCCN = 4
    HELLO = 6
    OCRQ = 7
    OCRP = 8
    OCCN = 9
    ICRQ = 10
    ICRP = 11
    ICCN = 12
    CDN = 14
    WEN = 15
    SLI = 16


class AttributeType(enum.IntEnum):
    """IETF AVP attribute types (RFC 2661 sections 4.4.1-4.4.6)."""

    MESSAGE_TYPE = 0
    RESULT_CODE = 1
    PROTOCOL_VERSION = 2
    FRAMING_CAPABILITIES = 3
    BEARER_CAPABILITIES = 4
    TIE_BREAKER = 5
    FIRMWARE_REVISION = 6
    HOST_NAME = 7
    VENDOR_NAME = 8
    ASSIGNED_TUNNEL_ID = 9
    RECEIVE_WINDOW_SIZE = 10
    CHALLENGE = 11
    Q931_CAUSE_CODE = 12
    CHALLENGE_RESPONSE = 13
    ASSIGNED_SESSION_ID = 14
    CALL_SERIAL_NUMBER = 15
    MINIMUM_BPS = 16
    MAXIMUM_BPS = 17
    BEARER_TYPE = 18
    FRAMING_TYPE = 19
    CALLED_NUMBER = 21
    CALLING_NUMBER = 22
    SUB_ADDRESS = 23
    TX_CONNECT_SPEED = 24
    PHYSICAL_CHANNEL_ID = 25
    INITIAL_RECEIVED_LCP_CONFREQ = 26
    LAST_SENT_LCP_CONFREQ = 27
    LAST_RECEIVED_LCP_CONFREQ = 28
    PROXY_AUTHEN_TYPE = 29
    PROXY_AUTHEN_NAME = 30
    PROXY_AUTHEN_CHALLENGE = 31
    PROXY_AUTHEN_ID = 32
    PROXY_AUTHEN_RESPONSE = 33
    CALL_ERRORS = 34
    ACCM = 35
    RANDOM_VECTOR = 36
    PRIVATE_GROUP_ID = 37
    RX_CONNECT_SPEED = 38
    SEQUENCING_REQUIRED = 39


@dataclass(frozen=True, slots=True)
class ResultCode:
    """Result Code AVP (RFC 2661 section 4.4.2): result, optional error code and message."""

    result: int
    error: int | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if self.error is None and self.message:
            raise ValueError("a Result Code advisory message needs an error code")


@dataclass(frozen=True, slots=True)
class Q931Cause:
    """Q.931 Cause Code AVP (RFC 2661 section 4.4.5)."""

    cause: int
    message: int
    advisory: str = ""


@dataclass(frozen=True, slots=True)
class CallErrors:
    """Call Errors AVP (RFC 2661 section 4.4.6), sent by a LAC in WEN."""

    crc_errors: int
    framing_errors: int
    hardware_overruns: int
    buffer_overruns: int
    timeout_errors: int
    alignment_errors: int


@dataclass(frozen=True, slots=True)
class Accm:
    """ACCM AVP (RFC 2661 section 4.4.6), sent by a LAC in SLI."""

    send: int
    receive: int


AvpValue = int | bytes | str | ResultCode | Q931Cause | CallErrors | Accm | None


@dataclass(frozen=True, slots=True)
class Avp:
    """One AVP. ``value`` is typed by the table's kind, raw bytes for unknown attributes."""

    attribute: int
    value: AvpValue
    mandatory: bool = True
    hidden: bool = False
    vendor: int = 0
    # Reserved header bits as received; when any is set the AVP is unrecognized
    # (RFC 2661 section 4.1) and its value is kept raw, as it came.
    reserved_bits: int = 0
    # Why a known attribute's value could not be decoded (wrong length for its
    # kind); the value is then kept raw, and the message is answered with a
    # StopCCN or CDN (lns.l2tp.control) instead of being dropped unacknowledged.
    problem: str = ""


# --- value kinds --------------------------------------------------------------


def _text_decode(raw: bytes) -> str:
    # surrogateescape keeps arbitrary octets (RFC 2661 strings are octets) round-trippable.
    return raw.decode("utf-8", "surrogateescape")


def _text_encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _result_decode(raw: bytes) -> ResultCode:
    reader = Reader(raw)
    result = reader.u16("Result Code result")
    if reader.remaining == 0:
        return ResultCode(result)
    error = reader.u16("Result Code error")
    return ResultCode(result, error, _text_decode(reader.rest()))


def _result_encode(value: ResultCode) -> bytes:
    out = u16(value.result)
    if value.error is not None:
        out += u16(value.error) + _text_encode(value.message)
    return out


def _q931_decode(raw: bytes) -> Q931Cause:
    reader = Reader(raw)
    cause = reader.u16("Q.931 cause")
    message = reader.u8("Q.931 message")
    return Q931Cause(cause, message, _text_decode(reader.rest()))


def _q931_encode(value: Q931Cause) -> bytes:
    return u16(value.cause) + bytes([value.message]) + _text_encode(value.advisory)


def _call_errors_decode(raw: bytes) -> CallErrors:
    reader = Reader(raw)
    reader.u16("Call Errors reserved")
    counts = [reader.u32("Call Errors counter") for _ in range(6)]
    return CallErrors(*counts)


def _call_errors_encode(value: CallErrors) -> bytes:
    counters = (
        value.crc_errors,
        value.framing_errors,
        value.hardware_overruns,
        value.buffer_overruns,
        value.timeout_errors,
        value.alignment_errors,
    )
    return u16(0) + b"".join(u32(c) for c in counters)


def _accm_decode(raw: bytes) -> Accm:
    reader = Reader(raw)
    reader.u16("ACCM reserved")
    return Accm(reader.u32("ACCM send"), reader.u32("ACCM receive"))


def _accm_encode(value: Accm) -> bytes:
    return u16(0) + u32(value.send) + u32(value.receive)


@dataclass(frozen=True, slots=True)
class ValueKind:
    """How an AVP value is carried: the exact length (None = variable) and its codec."""

    name: str
    python_type: type
    decode: Callable[[bytes], AvpValue]
    encode: Callable[[Any], bytes]
    length: int | None = None
    min_length: int = 0


def _fixed_int(size: int) -> tuple[Callable[[bytes], AvpValue], Callable[[int], bytes]]:
    def decode(raw: bytes) -> AvpValue:
        return int.from_bytes(raw, "big")

    def encode(value: int) -> bytes:
        return value.to_bytes(size, "big")

    return decode, encode


U8 = ValueKind("u8", int, *_fixed_int(1), length=1)
U16 = ValueKind("u16", int, *_fixed_int(2), length=2)
U32 = ValueKind("u32", int, *_fixed_int(4), length=4)
OCTETS = ValueKind("octets", bytes, bytes, bytes)
NONEMPTY_OCTETS = ValueKind("octets", bytes, bytes, bytes, min_length=1)
TEXT = ValueKind("text", str, _text_decode, _text_encode)
EMPTY = ValueKind("empty", type(None), lambda raw: None, lambda value: b"", length=0)
RESULT_CODE = ValueKind("result-code", ResultCode, _result_decode, _result_encode, min_length=2)
Q931 = ValueKind("q931-cause", Q931Cause, _q931_decode, _q931_encode, min_length=3)
CALL_ERRORS = ValueKind(
    "call-errors", CallErrors, _call_errors_decode, _call_errors_encode, length=26
)
ACCM = ValueKind("accm", Accm, _accm_decode, _accm_encode, length=10)
TIE_BREAKER = ValueKind("tie-breaker", bytes, bytes, bytes, length=8)
MD5_DIGEST = ValueKind("md5", bytes, bytes, bytes, length=16)


@dataclass(frozen=True, slots=True)
class AvpSpec:
    """One row of the AVP table: how the attribute is carried and how we send it."""

    attribute: AttributeType
    kind: ValueKind
    mandatory: bool
    may_hide: bool


_A = AttributeType
AVP_TABLE: dict[int, AvpSpec] = {
    spec.attribute: spec
    for spec in (
        AvpSpec(_A.MESSAGE_TYPE, U16, mandatory=True, may_hide=False),
        AvpSpec(_A.RESULT_CODE, RESULT_CODE, mandatory=True, may_hide=False),
        AvpSpec(_A.PROTOCOL_VERSION, U16, mandatory=True, may_hide=False),
        AvpSpec(_A.FRAMING_CAPABILITIES, U32, mandatory=True, may_hide=True),
        AvpSpec(_A.BEARER_CAPABILITIES, U32, mandatory=True, may_hide=True),
        AvpSpec(_A.TIE_BREAKER, TIE_BREAKER, mandatory=False, may_hide=False),
        AvpSpec(_A.FIRMWARE_REVISION, U16, mandatory=False, may_hide=True),
        AvpSpec(_A.HOST_NAME, TEXT, mandatory=True, may_hide=False),
        AvpSpec(_A.VENDOR_NAME, TEXT, mandatory=False, may_hide=True),
        AvpSpec(_A.ASSIGNED_TUNNEL_ID, U16, mandatory=True, may_hide=True),
        AvpSpec(_A.RECEIVE_WINDOW_SIZE, U16, mandatory=True, may_hide=False),
        AvpSpec(_A.CHALLENGE, NONEMPTY_OCTETS, mandatory=True, may_hide=True),
        AvpSpec(_A.Q931_CAUSE_CODE, Q931, mandatory=True, may_hide=False),
        AvpSpec(_A.CHALLENGE_RESPONSE, MD5_DIGEST, mandatory=True, may_hide=True),
        AvpSpec(_A.ASSIGNED_SESSION_ID, U16, mandatory=True, may_hide=True),
        AvpSpec(_A.CALL_SERIAL_NUMBER, U32, mandatory=True, may_hide=True),
        AvpSpec(_A.MINIMUM_BPS, U32, mandatory=True, may_hide=True),
        AvpSpec(_A.MAXIMUM_BPS, U32, mandatory=True, may_hide=True),
        AvpSpec(_A.BEARER_TYPE, U32, mandatory=True, may_hide=True),
        AvpSpec(_A.FRAMING_TYPE, U32, mandatory=True, may_hide=True),
        AvpSpec(_A.CALLED_NUMBER, TEXT, mandatory=True, may_hide=True),
        AvpSpec(_A.CALLING_NUMBER, TEXT, mandatory=True, may_hide=True),
        AvpSpec(_A.SUB_ADDRESS, TEXT, mandatory=True, may_hide=True),
        AvpSpec(_A.TX_CONNECT_SPEED, U32, mandatory=True, may_hide=True),
        AvpSpec(_A.PHYSICAL_CHANNEL_ID, U32, mandatory=False, may_hide=True),
        AvpSpec(_A.INITIAL_RECEIVED_LCP_CONFREQ, OCTETS, mandatory=False, may_hide=True),
        AvpSpec(_A.LAST_SENT_LCP_CONFREQ, OCTETS, mandatory=False, may_hide=True),
        AvpSpec(_A.LAST_RECEIVED_LCP_CONFREQ, OCTETS, mandatory=False, may_hide=True),
        AvpSpec(_A.PROXY_AUTHEN_TYPE, U16, mandatory=False, may_hide=True),
        AvpSpec(_A.PROXY_AUTHEN_NAME, OCTETS, mandatory=False, may_hide=True),
        AvpSpec(_A.PROXY_AUTHEN_CHALLENGE, OCTETS, mandatory=False, may_hide=True),
        AvpSpec(_A.PROXY_AUTHEN_ID, U16, mandatory=False, may_hide=True),
        AvpSpec(_A.PROXY_AUTHEN_RESPONSE, OCTETS, mandatory=False, may_hide=True),
        AvpSpec(_A.CALL_ERRORS, CALL_ERRORS, mandatory=True, may_hide=True),
        AvpSpec(_A.ACCM, ACCM, mandatory=True, may_hide=True),
        AvpSpec(_A.RANDOM_VECTOR, NONEMPTY_OCTETS, mandatory=True, may_hide=False),
        AvpSpec(_A.PRIVATE_GROUP_ID, OCTETS, mandatory=False, may_hide=True),
        AvpSpec(_A.RX_CONNECT_SPEED, U32, mandatory=False, may_hide=True),
        AvpSpec(_A.SEQUENCING_REQUIRED, EMPTY, mandatory=True, may_hide=False),
    )
}


def spec_for(vendor: int, attribute: int) -> AvpSpec | None:
    """The table row for an IETF attribute; None for vendor-specific or unknown ones."""
    if vendor != 0:
        return None
    return AVP_TABLE.get(attribute)


def decode_value(vendor: int, attribute: int, raw: bytes) -> AvpValue:
    """Decode a (plain or unhidden) value by the table's kind; unknown attributes stay raw."""
    spec = spec_for(vendor, attribute)
    if spec is None:
        return raw
    kind = spec.kind
    if kind.length is not None and len(raw) != kind.length:
        raise MalformedPacket(
            f"{spec.attribute.name}: value is {len(raw)} bytes, expected {kind.length}"
        )
    if len(raw) < kind.min_length:
        raise MalformedPacket(
            f"{spec.attribute.name}: value is {len(raw)} bytes, at least {kind.min_length} needed"
        )
    return kind.decode(raw)


def encode_value(avp: Avp) -> bytes:
    """Encode an AVP's value by the table's kind; raw bytes for unknown attributes."""
    spec = spec_for(avp.vendor, avp.attribute)
    if spec is None:
        if not isinstance(avp.value, bytes):
            raise TypeError(f"AVP {avp.vendor}:{avp.attribute} is unknown: its value must be bytes")
        return avp.value
    if not isinstance(avp.value, spec.kind.python_type):
        raise TypeError(
            f"{spec.attribute.name} takes {spec.kind.python_type.__name__}, "
            f"got {type(avp.value).__name__}"
        )
    return spec.kind.encode(avp.value)


def make(attribute: AttributeType, value: AvpValue, *, hidden: bool = False) -> Avp:
    """An IETF AVP with the M bit the table says we send it with."""
    return Avp(attribute, value, mandatory=AVP_TABLE[attribute].mandatory, hidden=hidden)
