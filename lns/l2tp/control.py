"""RFC 2661 section 6: the control messages, each decoded once into a typed record.

:mod:`lns.l2tp.message` reads a body into a list of AVPs; :func:`parse` turns
that list into one of the records below (``Sccrq``, ``Icrq``, ...) whose fields
are the AVPs section 6 lists for the message, typed by the AVP table. Whatever
makes a message unusable is found here, once, and raised as
:class:`UnusableMessage`: an unknown message type, an unknown AVP with the M
bit set (section 4.1), a value that does not fit its attribute, a required
AVP missing (section 6), an identifier that must not be zero. The tunnel
answers it with a StopCCN or a CDN.

The records are declarative: each field names its attribute in its metadata
(:func:`avp`, :func:`flag`), and a field without a default is one the message
requires, so :func:`parse` and :func:`to_message` are written once for all
of them. AVPs a record has no field for (vendor AVPs without M, a known
attribute that does not belong to the message, a repeated attribute) are kept
in ``other`` so a record survives a round trip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from lns.l2tp.avp import (
    AVP_TABLE,
    Accm,
    AttributeType,
    Avp,
    CallErrors,
    MessageType,
    Q931Cause,
    ResultCode,
)
from lns.l2tp.message import ControlMessage
from lns.l2tp.result import GeneralError

_A = AttributeType
_ATTRIBUTE = "avp"
_NONZERO = "nonzero"
_FLAG = "flag"


def avp(attribute: AttributeType, *, nonzero: bool = False) -> dict[str, object]:
    """A field's metadata: ``attribute`` carries it; a field without a default is required."""
    return {_ATTRIBUTE: attribute, _NONZERO: nonzero}


def flag(attribute: AttributeType) -> dict[str, object]:
    """Metadata of a field that is an AVP without a value (Sequencing Required): present or not."""
    return {_ATTRIBUTE: attribute, _FLAG: True}


class UnusableMessage(Exception):
    """A well-framed control message we cannot act on: the peer gets a StopCCN or a CDN.

    ``assigned_tunnel_id`` / ``assigned_session_id`` are the peer's identifiers from
    the message when it carried them (0 otherwise), so the answer can be addressed;
    ``counter`` names what went wrong for the endpoint's counters.
    """

    def __init__(
        self,
        message_type: int,
        counter: str,
        error: GeneralError,
        text: str,
        *,
        assigned_tunnel_id: int = 0,
        assigned_session_id: int = 0,
        number: str = "",
    ) -> None:
        super().__init__(text)
        self.message_type = message_type
        self.counter = counter
        self.error = error
        self.text = text
        self.assigned_tunnel_id = assigned_tunnel_id
        self.assigned_session_id = assigned_session_id
        self.number = number  # Calling (ICRQ) or Called (OCRQ) Number, for the log

    @property
    def known_type(self) -> MessageType | None:
        return MessageType._value2member_map_.get(self.message_type)  # type: ignore[return-value]


# --- the messages (RFC 2661 section 6, in its order) ---------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Sccrq:
    """Start-Control-Connection-Request (section 6.1)."""

    TYPE: ClassVar[MessageType] = MessageType.SCCRQ
    protocol_version: int = field(metadata=avp(_A.PROTOCOL_VERSION))
    host_name: str = field(metadata=avp(_A.HOST_NAME))
    framing_capabilities: int = field(metadata=avp(_A.FRAMING_CAPABILITIES))
    bearer_capabilities: int | None = field(default=None, metadata=avp(_A.BEARER_CAPABILITIES))
    tie_breaker: bytes | None = field(default=None, metadata=avp(_A.TIE_BREAKER))
    firmware_revision: int | None = field(default=None, metadata=avp(_A.FIRMWARE_REVISION))
    vendor_name: str | None = field(default=None, metadata=avp(_A.VENDOR_NAME))
    assigned_tunnel_id: int = field(metadata=avp(_A.ASSIGNED_TUNNEL_ID, nonzero=True))
    receive_window_size: int | None = field(default=None, metadata=avp(_A.RECEIVE_WINDOW_SIZE))
    challenge: bytes | None = field(default=None, metadata=avp(_A.CHALLENGE))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sccrp:
    """Start-Control-Connection-Reply (section 6.2)."""

    TYPE: ClassVar[MessageType] = MessageType.SCCRP
    protocol_version: int = field(metadata=avp(_A.PROTOCOL_VERSION))
    host_name: str = field(metadata=avp(_A.HOST_NAME))
    framing_capabilities: int = field(metadata=avp(_A.FRAMING_CAPABILITIES))
    bearer_capabilities: int | None = field(default=None, metadata=avp(_A.BEARER_CAPABILITIES))
    firmware_revision: int | None = field(default=None, metadata=avp(_A.FIRMWARE_REVISION))
    vendor_name: str | None = field(default=None, metadata=avp(_A.VENDOR_NAME))
    assigned_tunnel_id: int = field(metadata=avp(_A.ASSIGNED_TUNNEL_ID, nonzero=True))
    receive_window_size: int | None = field(default=None, metadata=avp(_A.RECEIVE_WINDOW_SIZE))
    challenge_response: bytes | None = field(default=None, metadata=avp(_A.CHALLENGE_RESPONSE))
    challenge: bytes | None = field(default=None, metadata=avp(_A.CHALLENGE))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Scccn:
    """Start-Control-Connection-Connected (section 6.3)."""

    TYPE: ClassVar[MessageType] = MessageType.SCCCN
    challenge_response: bytes | None = field(default=None, metadata=avp(_A.CHALLENGE_RESPONSE))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StopCcn:
    """Stop-Control-Connection-Notification (section 6.4).

    Both AVPs are required by the RFC, but a peer that leaves is let go even when
    it forgets them: answering its StopCCN with ours would help no one.
    """

    TYPE: ClassVar[MessageType] = MessageType.StopCCN
    assigned_tunnel_id: int | None = field(default=None, metadata=avp(_A.ASSIGNED_TUNNEL_ID))
    result_code: ResultCode | None = field(default=None, metadata=avp(_A.RESULT_CODE))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Hello (section 6.5): a keepalive with no AVP of its own."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ocrq:
    """Outgoing-Call-Request (section 6.6); an LNS receives it only to refuse it."""

    TYPE: ClassVar[MessageType] = MessageType.OCRQ
    assigned_session_id: int = field(metadata=avp(_A.ASSIGNED_SESSION_ID, nonzero=True))
    call_serial_number: int = field(metadata=avp(_A.CALL_SERIAL_NUMBER))
    minimum_bps: int = field(metadata=avp(_A.MINIMUM_BPS))
    maximum_bps: int = field(metadata=avp(_A.MAXIMUM_BPS))
    bearer_type: int = field(metadata=avp(_A.BEARER_TYPE))
    framing_type: int = field(metadata=avp(_A.FRAMING_TYPE))
    called_number: str = field(metadata=avp(_A.CALLED_NUMBER))
    sub_address: str | None = field(default=None, metadata=avp(_A.SUB_ADDRESS))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ocrp:
    """Outgoing-Call-Reply (section 6.7)."""

    TYPE: ClassVar[MessageType] = MessageType.OCRP
    assigned_session_id: int = field(metadata=avp(_A.ASSIGNED_SESSION_ID, nonzero=True))
    physical_channel_id: int | None = field(default=None, metadata=avp(_A.PHYSICAL_CHANNEL_ID))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Occn:
    """Outgoing-Call-Connected (section 6.8)."""

    TYPE: ClassVar[MessageType] = MessageType.OCCN
    tx_connect_speed: int = field(metadata=avp(_A.TX_CONNECT_SPEED))
    framing_type: int = field(metadata=avp(_A.FRAMING_TYPE))
    rx_connect_speed: int | None = field(default=None, metadata=avp(_A.RX_CONNECT_SPEED))
    sequencing_required: bool = field(default=False, metadata=flag(_A.SEQUENCING_REQUIRED))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Icrq:
    """Incoming-Call-Request (section 6.9): the Calling Number carries the SIM's ICCID."""

    TYPE: ClassVar[MessageType] = MessageType.ICRQ
    assigned_session_id: int = field(metadata=avp(_A.ASSIGNED_SESSION_ID, nonzero=True))
    call_serial_number: int = field(metadata=avp(_A.CALL_SERIAL_NUMBER))
    bearer_type: int | None = field(default=None, metadata=avp(_A.BEARER_TYPE))
    physical_channel_id: int | None = field(default=None, metadata=avp(_A.PHYSICAL_CHANNEL_ID))
    calling_number: str | None = field(default=None, metadata=avp(_A.CALLING_NUMBER))
    called_number: str | None = field(default=None, metadata=avp(_A.CALLED_NUMBER))
    sub_address: str | None = field(default=None, metadata=avp(_A.SUB_ADDRESS))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Icrp:
    """Incoming-Call-Reply (section 6.10)."""

    TYPE: ClassVar[MessageType] = MessageType.ICRP
    assigned_session_id: int = field(metadata=avp(_A.ASSIGNED_SESSION_ID, nonzero=True))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Iccn:
    """Incoming-Call-Connected (section 6.11), with the proxy LCP and authentication AVPs."""

    TYPE: ClassVar[MessageType] = MessageType.ICCN
    tx_connect_speed: int = field(metadata=avp(_A.TX_CONNECT_SPEED))
    framing_type: int = field(metadata=avp(_A.FRAMING_TYPE))
    initial_received_lcp_confreq: bytes | None = field(
        default=None, metadata=avp(_A.INITIAL_RECEIVED_LCP_CONFREQ)
    )
    last_sent_lcp_confreq: bytes | None = field(
        default=None, metadata=avp(_A.LAST_SENT_LCP_CONFREQ)
    )
    last_received_lcp_confreq: bytes | None = field(
        default=None, metadata=avp(_A.LAST_RECEIVED_LCP_CONFREQ)
    )
    proxy_authen_type: int | None = field(default=None, metadata=avp(_A.PROXY_AUTHEN_TYPE))
    proxy_authen_name: bytes | None = field(default=None, metadata=avp(_A.PROXY_AUTHEN_NAME))
    proxy_authen_challenge: bytes | None = field(
        default=None, metadata=avp(_A.PROXY_AUTHEN_CHALLENGE)
    )
    proxy_authen_id: int | None = field(default=None, metadata=avp(_A.PROXY_AUTHEN_ID))
    proxy_authen_response: bytes | None = field(
        default=None, metadata=avp(_A.PROXY_AUTHEN_RESPONSE)
    )
    private_group_id: bytes | None = field(default=None, metadata=avp(_A.PRIVATE_GROUP_ID))
    rx_connect_speed: int | None = field(default=None, metadata=avp(_A.RX_CONNECT_SPEED))
    sequencing_required: bool = field(default=False, metadata=flag(_A.SEQUENCING_REQUIRED))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Cdn:
    """Call-Disconnect-Notify (section 6.12).

    Result Code and Assigned Session ID are required by the RFC, but a peer that
    hangs up is let go even without them (the header's Session ID names the call).
    """

    TYPE: ClassVar[MessageType] = MessageType.CDN
    result_code: ResultCode | None = field(default=None, metadata=avp(_A.RESULT_CODE))
    q931_cause_code: Q931Cause | None = field(default=None, metadata=avp(_A.Q931_CAUSE_CODE))
    assigned_session_id: int | None = field(default=None, metadata=avp(_A.ASSIGNED_SESSION_ID))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Wen:
    """WAN-Error-Notify (section 6.13)."""

    TYPE: ClassVar[MessageType] = MessageType.WEN
    call_errors: CallErrors = field(metadata=avp(_A.CALL_ERRORS))
    other: tuple[Avp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sli:
    """Set-Link-Info (section 6.14)."""

    TYPE: ClassVar[MessageType] = MessageType.SLI
    accm: Accm = field(metadata=avp(_A.ACCM))
    other: tuple[Avp, ...] = ()


TypedMessage = (
    Sccrq
    | Sccrp
    | Scccn
    | StopCcn
    | Hello
    | Ocrq
    | Ocrp
    | Occn
    | Icrq
    | Icrp
    | Iccn
    | Cdn
    | Wen
    | Sli
)
MESSAGES: tuple[type[TypedMessage], ...] = (
    Sccrq,
    Sccrp,
    Scccn,
    StopCcn,
    Hello,
    Ocrq,
    Ocrp,
    Occn,
    Icrq,
    Icrp,
    Iccn,
    Cdn,
    Wen,
    Sli,
)
# Messages that belong to one call (section 4.1: an unusable one clears that call only).
CALL_MESSAGES = frozenset(
    {
        MessageType.OCRQ,
        MessageType.OCRP,
        MessageType.OCCN,
        MessageType.ICRQ,
        MessageType.ICRP,
        MessageType.ICCN,
        MessageType.CDN,
        MessageType.WEN,
        MessageType.SLI,
    }
)


# --- the schema, read once from the field declarations ---------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    attribute: AttributeType
    required: bool
    nonzero: bool
    is_flag: bool


@dataclass(frozen=True, slots=True)
class _Schema:
    cls: type[TypedMessage]
    fields: tuple[_Field, ...]
    by_attribute: dict[int, _Field]


def _schema(cls: type[TypedMessage]) -> _Schema:
    fields = tuple(
        _Field(
            f.name,
            f.metadata[_ATTRIBUTE],
            f.default is dataclasses.MISSING,
            bool(f.metadata.get(_NONZERO)),
            bool(f.metadata.get(_FLAG)),
        )
        for f in dataclasses.fields(cls)
        if _ATTRIBUTE in f.metadata
    )
    return _Schema(cls, fields, {f.attribute: f for f in fields})


_SCHEMAS: dict[int, _Schema] = {cls.TYPE: _schema(cls) for cls in MESSAGES}


def _first_int(message: ControlMessage, attribute: AttributeType) -> int:
    value = message.get(attribute)
    return value if isinstance(value, int) else 0


def _first_text(message: ControlMessage, attribute: AttributeType) -> str:
    value = message.get(attribute)
    return value if isinstance(value, str) else ""


def _unusable(message: ControlMessage, counter: str, error: GeneralError, text: str) -> Exception:
    number_attribute = (
        _A.CALLED_NUMBER if message.message_type == MessageType.OCRQ else _A.CALLING_NUMBER
    )
    return UnusableMessage(
        int(message.message_type),
        counter,
        error,
        text,
        assigned_tunnel_id=_first_int(message, _A.ASSIGNED_TUNNEL_ID),
        assigned_session_id=_first_int(message, _A.ASSIGNED_SESSION_ID),
        number=_first_text(message, number_attribute),
    )


def parse(message: ControlMessage) -> TypedMessage:
    """The typed record of a decoded message; raises UnusableMessage."""
    schema = _SCHEMAS.get(message.message_type)
    if schema is None:
        text = f"unknown message type {message.message_type}"
        raise _unusable(message, "unknown_message_type", GeneralError.UNKNOWN_MANDATORY_AVP, text)
    name = schema.cls.TYPE.name
    unknown = message.unknown_mandatory()
    if unknown:
        text = "unknown mandatory AVP " + ", ".join(f"{a.vendor}:{a.attribute}" for a in unknown)
        raise _unusable(message, "unknown_mandatory_avp", GeneralError.UNKNOWN_MANDATORY_AVP, text)
    invalid = message.invalid()
    if invalid:
        text = f"{name}: " + "; ".join(a.problem for a in invalid)
        raise _unusable(message, "invalid_avp", GeneralError.BAD_LENGTH, text)
    values: dict[str, object] = {}
    other: list[Avp] = []
    for item in message.avps:
        spec = schema.by_attribute.get(item.attribute) if item.vendor == 0 else None
        if spec is None or item.reserved_bits or spec.name in values:
            other.append(item)
        else:
            values[spec.name] = True if spec.is_flag else item.value
    for spec in schema.fields:
        if spec.required and spec.name not in values:
            text = f"{name} without {_title(spec.attribute)} (required, RFC 2661 section 6)"
            raise _unusable(message, "missing_avp", GeneralError.BAD_LENGTH, text)
        if spec.nonzero and values.get(spec.name) == 0:
            text = f"{name} with {_title(spec.attribute)} 0"
            raise _unusable(message, "invalid_avp", GeneralError.OUT_OF_RANGE, text)
    return schema.cls(**values, other=tuple(other))  # type: ignore[arg-type]


def to_message(record: TypedMessage, *, hide: bool = False) -> ControlMessage:
    """The AVP list of a record, in field order; ``hide`` hides every AVP the table lets us."""
    schema = _SCHEMAS[record.TYPE]
    avps: list[Avp] = []
    for spec in schema.fields:
        value = getattr(record, spec.name)
        if value is None or value is False:
            continue
        row = AVP_TABLE[spec.attribute]
        avps.append(
            Avp(
                spec.attribute,
                None if spec.is_flag else value,
                mandatory=row.mandatory,
                hidden=hide and row.may_hide,
            )
        )
    return ControlMessage(record.TYPE, (*avps, *record.other))


def _title(attribute: AttributeType) -> str:
    return attribute.name.replace("_", " ").title().replace("Id", "ID")
