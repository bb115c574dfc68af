"""Hypothesis properties of the L2TP codec (STYLE.md section 8).

(a) every ControlMessage the AVP table can express survives encode then decode;
(b) encode_control / encode_data then decode_packet is the identity;
(c) arbitrary bytes make the decoders return or raise MalformedPacket, nothing else,
    and whatever decodes re-encodes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lns.l2tp import hidden
from lns.l2tp.avp import (
    AVP_TABLE,
    Accm,
    AttributeType,
    Avp,
    AvpSpec,
    AvpValue,
    CallErrors,
    MessageType,
    Q931Cause,
    ResultCode,
    encode_value,
)
from lns.l2tp.header import ControlPacket, DataPacket, decode_packet, encode_control, encode_data
from lns.l2tp.message import ControlMessage, decode_message, encode_message
from lns.l2tp.wire import MalformedPacket

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

# RFC 2661 strings are octets. Text is either any Unicode string (sent as UTF-8) or
# arbitrary octets decoded with surrogateescape, which is how the codec represents
# octets that are not UTF-8.
text = st.one_of(
    st.text(max_size=24),
    st.binary(max_size=48).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
)


def _octets(spec: AvpSpec) -> st.SearchStrategy[bytes]:
    kind = spec.kind
    if kind.length is not None:
        return st.binary(min_size=kind.length, max_size=kind.length)
    return st.binary(min_size=kind.min_length, max_size=48)


VALUES: dict[str, Callable[[AvpSpec], st.SearchStrategy[AvpValue]]] = {
    "u8": lambda spec: u8,
    "u16": lambda spec: u16,
    "u32": lambda spec: u32,
    "octets": _octets,
    "tie-breaker": _octets,
    "md5": _octets,
    "text": lambda spec: text,
    "empty": lambda spec: st.none(),
    "result-code": lambda spec: st.one_of(
        st.builds(ResultCode, u16),
        st.builds(ResultCode, u16, u16, text),
    ),
    "q931-cause": lambda spec: st.builds(Q931Cause, u16, u8, text),
    "call-errors": lambda spec: st.builds(CallErrors, u32, u32, u32, u32, u32, u32),
    "accm": lambda spec: st.builds(Accm, u32, u32),
}


def test_every_kind_has_a_strategy() -> None:
    assert {spec.kind.name for spec in AVP_TABLE.values()} <= set(VALUES)


def _table_avp(spec: AvpSpec) -> st.SearchStrategy[Avp]:
    return st.builds(
        Avp,
        attribute=st.just(int(spec.attribute)),
        value=VALUES[spec.kind.name](spec),
        mandatory=st.booleans(),
        hidden=st.booleans() if spec.may_hide else st.just(False),
    )


# The Message Type is the message's own field and a Random Vector is consumed by the
# decoder (section 4.3); every other row of the table is fair game.
BODY_SPECS = [
    spec
    for spec in AVP_TABLE.values()
    if spec.attribute not in (AttributeType.MESSAGE_TYPE, AttributeType.RANDOM_VECTOR)
]

unknown_avps = st.builds(
    Avp,
    attribute=st.integers(0, 0xFFFF).filter(lambda number: number not in AVP_TABLE),
    value=st.binary(max_size=48),
    mandatory=st.just(False),
    hidden=st.booleans(),
)

vendor_avps = st.builds(
    Avp,
    attribute=u16,
    value=st.binary(max_size=48),
    mandatory=st.booleans(),
    hidden=st.booleans(),
    vendor=st.integers(1, 0xFFFF),
)

avps = st.one_of(*[_table_avp(spec) for spec in BODY_SPECS], unknown_avps, vendor_avps)

messages = st.builds(
    ControlMessage,
    message_type=st.one_of(st.sampled_from(MessageType), u16),
    avps=st.lists(avps, max_size=8).map(tuple),
)


@SETTINGS
@given(
    message=messages,
    secret=st.binary(min_size=1, max_size=32),
    vector=st.binary(min_size=16, max_size=16),
)
def test_message_round_trip(message: ControlMessage, secret: bytes, vector: bytes) -> None:
    body = encode_message(message, secret, lambda count: vector)
    assert decode_message(body, secret) == message


@SETTINGS
@given(
    attribute=st.sampled_from(
        [spec.attribute for spec in BODY_SPECS if spec.kind.name == "octets" and spec.may_hide]
    ),
    size=st.integers(1, 1015),  # Challenge needs at least one octet
)
def test_any_value_that_fits_one_avp_can_be_hidden(attribute: int, size: int) -> None:
    # 6 header octets + 2 Original Length octets + the value must fit the 10-bit Length.
    message = ControlMessage(MessageType.ICCN, (Avp(attribute, b"\xa5" * size, hidden=True),))
    assert decode_message(encode_message(message, b"secret"), b"secret") == message


@SETTINGS
@given(message=messages)
def test_message_without_hidden_avps_needs_no_secret(message: ControlMessage) -> None:
    plain = ControlMessage(
        message.message_type,
        tuple(Avp(a.attribute, a.value, a.mandatory, False, a.vendor) for a in message.avps),
    )
    assert decode_message(encode_message(plain)) == plain


# --- (b) headers ---------------------------------------------------------------------------

control_packets = st.builds(ControlPacket, u16, u16, u16, u16, st.binary(max_size=64))


@SETTINGS
@given(packet=control_packets)
def test_control_header_round_trip(packet: ControlPacket) -> None:
    data = encode_control(packet.tunnel_id, packet.session_id, packet.ns, packet.nr, packet.payload)
    assert decode_packet(data) == packet


@SETTINGS
@given(
    tunnel_id=u16,
    session_id=u16,
    payload=st.binary(max_size=64),
    sequence=st.one_of(st.none(), st.tuples(u16, u16)),
    with_length=st.booleans(),
    offset_pad=st.one_of(st.none(), st.integers(0, 40)),
    priority=st.booleans(),
)
def test_data_header_round_trip(
    tunnel_id: int,
    session_id: int,
    payload: bytes,
    sequence: tuple[int, int] | None,
    with_length: bool,
    offset_pad: int | None,
    priority: bool,
) -> None:
    ns, nr = sequence if sequence is not None else (None, None)
    data = encode_data(
        tunnel_id,
        session_id,
        payload,
        ns,
        nr or 0,
        with_length=with_length,
        offset_pad=offset_pad,
        priority=priority,
    )
    assert decode_packet(data) == DataPacket(tunnel_id, session_id, payload, ns, nr, priority)


# --- (c) arbitrary bytes --------------------------------------------------------------------

SECRETS = st.one_of(st.none(), st.binary(max_size=16))


def _decode_packet_or_malformed(data: bytes) -> ControlPacket | DataPacket | None:
    try:
        return decode_packet(data)
    except MalformedPacket:
        return None


def _check_message(payload: bytes, secret: bytes | None) -> None:
    """Decode, and if that worked, re-encode and decode again to the same message."""
    try:
        message = decode_message(payload, secret)
    except MalformedPacket:
        return
    body = encode_message(message, secret, lambda count: b"\x5a" * count)
    assert decode_message(body, secret) == message


@SETTINGS
@given(data=st.binary(max_size=80))
def test_random_bytes_into_decode_packet(data: bytes) -> None:
    packet = _decode_packet_or_malformed(data)
    if isinstance(packet, ControlPacket):
        framed = encode_control(
            packet.tunnel_id, packet.session_id, packet.ns, packet.nr, packet.payload
        )
        assert decode_packet(framed) == packet


# Headers that pass the first checks, so the random tail reaches the deeper branches.
header_prefixes = st.sampled_from(
    [b"\xc8\x02", b"\x00\x02", b"\x4b\x02", b"\x08\x02", b"\x02\x02", b"\x40\x02", b"\x42\x02"]
)


@SETTINGS
@given(prefix=header_prefixes, tail=st.binary(max_size=40))
def test_plausible_headers_into_decode_packet(prefix: bytes, tail: bytes) -> None:
    _decode_packet_or_malformed(prefix + tail)


@SETTINGS
@given(data=st.binary(max_size=80), secret=SECRETS)
def test_random_bytes_into_decode_message(data: bytes, secret: bytes | None) -> None:
    _check_message(data, secret)


def _avp_chunk(bits: int, length_delta: int, vendor: int, attribute: int, value: bytes) -> bytes:
    # Length usually right, sometimes off by a little either way.
    length = max(0, min(0x03FF, 6 + len(value) + length_delta))
    return struct.pack("!HHH", (bits & 0xFC00) | length, vendor, attribute) + value


avp_chunks = st.builds(
    _avp_chunk,
    bits=st.sampled_from([0x0000, 0x8000, 0x4000, 0xC000, 0x0400]),
    length_delta=st.one_of(st.just(0), st.just(0), st.integers(-7, 3)),
    vendor=st.sampled_from([0, 0, 0, 9, 311]),
    attribute=st.one_of(st.sampled_from(sorted(AVP_TABLE)), u16),
    value=st.binary(max_size=40),
)


@st.composite
def avp_soups(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """A valid Message Type AVP, maybe a Random Vector, then a mix of well-formed AVPs
    (any row of the table, any attribute, hidden or not, whatever the table allows) and
    AVP-shaped noise. This reaches the value decoders and the unhiding that plain random
    bytes rarely do, and checks that the decoder accepts nothing the encoder refuses."""
    secret = draw(SECRETS)
    vector = draw(st.one_of(st.none(), st.binary(min_size=1, max_size=20)))
    body = b"\x80\x08\x00\x00\x00\x00" + draw(st.binary(min_size=2, max_size=2))
    if vector is not None:
        body += _avp_chunk(0x8000, 0, 0, AttributeType.RANDOM_VECTOR, vector)
    for _ in range(draw(st.integers(0, 6))):
        shape = draw(st.sampled_from(["well-formed", "well-formed", "noise"]))
        if shape == "noise":
            body += draw(avp_chunks)
            continue
        spec = draw(st.one_of(st.none(), st.sampled_from(list(AVP_TABLE.values()))))
        if spec is None:
            attribute, wire = draw(u16), draw(st.binary(max_size=40))
        else:
            attribute = int(spec.attribute)
            wire = encode_value(Avp(attribute, draw(VALUES[spec.kind.name](spec))))
        bits = draw(st.sampled_from([0x0000, 0x8000]))
        if vector is not None and secret is not None and draw(st.booleans()):
            wire = hidden.hide(attribute, wire, secret, vector)
            bits |= 0x4000
        body += _avp_chunk(bits, 0, 0, attribute, wire)
    return body, secret


@SETTINGS
@given(soup=avp_soups())
def test_avp_soup_into_decode_message(soup: tuple[bytes, bytes | None]) -> None:
    _check_message(*soup)
