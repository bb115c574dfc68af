"""aaa.radius.attribute_encoder: the table gives the very bytes pyrad gives, for every
request our attribute vocabulary can make, and leaves to pyrad what it does not take."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aaa.radius import packet
from aaa.radius.attribute_encoder import AttributeEncoder
from aaa.radius.packet import (
    Code,
    Request,
    _pyrad_attributes,
    _table_encoder,
    dictionary,
    encode_request,
)

SECRET = b"testing123"
VECTOR = bytes(range(16))
_DICTIONARY = dictionary()
NAMES = sorted(name for name in _DICTIONARY.attributes if not _DICTIONARY.attributes[name].vendor)


def values_for(name: str) -> st.SearchStrategy[object]:
    attribute = _DICTIONARY.attributes[name]
    named = list(attribute.values.forward)
    kind = attribute.type
    if kind == "integer":
        numbers = st.integers(min_value=-1, max_value=2**32)
        return st.one_of(numbers, st.sampled_from(named)) if named else numbers
    if kind == "date":
        return st.integers(min_value=0, max_value=2**32 - 1)
    if kind == "ipaddr":
        return st.one_of(
            st.ip_addresses(v=4),
            st.ip_addresses(v=4).map(str),
        )
    if kind in ("string", "octets"):
        return st.one_of(
            st.text(max_size=90),
            st.binary(max_size=260),
            st.binary(max_size=4).map(lambda b: b"0x" + b.hex().encode()),
        )
    return st.binary(max_size=20)


@st.composite
def pairs(
    draw: st.DrawFn,
    names: list[str],
    values: Callable[[str], st.SearchStrategy[object]],
    max_tag: int,
) -> tuple[tuple[str, object], ...]:
    """Attributes of `names` with `values`, tagged ("Name:N", N up to `max_tag`) or not."""
    out = []
    for name in draw(st.lists(st.sampled_from(names), max_size=12)):
        value = draw(values(name))
        if _DICTIONARY.attributes[name].has_tag and draw(st.booleans()):
            name = f"{name}:{draw(st.integers(min_value=0, max_value=max_tag))}"
        out.append((name, value))
    return tuple(out)


TABLE_NAMES = [
    name
    for name in NAMES
    if _DICTIONARY.attributes[name].type in ("string", "octets", "integer", "ipaddr", "date")
    and _DICTIONARY.attributes[name].encrypt == 0
    and not (
        _DICTIONARY.attributes[name].type != "integer"
        and _DICTIONARY.attributes[name].values.forward
    )
]


def usual_values_for(name: str) -> st.SearchStrategy[object]:
    """Values the table takes: what the node's requests carry."""
    attribute = _DICTIONARY.attributes[name]
    kind = attribute.type
    if kind in ("integer", "date"):
        numbers = st.integers(min_value=0, max_value=2**32 - 1)
        named = list(attribute.values.forward)
        return st.one_of(numbers, st.sampled_from(named)) if named else numbers
    if kind == "ipaddr":
        return st.ip_addresses(v=4)
    if kind == "string":
        return st.one_of(st.text(max_size=60), st.binary(max_size=252))
    return st.binary(max_size=252).filter(lambda b: not b.startswith(b"0x"))


@settings(max_examples=600, deadline=None)
@given(
    attributes=pairs(TABLE_NAMES, usual_values_for, max_tag=31),
    password=st.one_of(st.none(), st.binary(max_size=128)),
)
def test_the_node_s_requests_come_from_the_table_with_pyrad_s_bytes(
    attributes: tuple[tuple[str, object], ...], password: bytes | None
) -> None:
    request = Request(Code.ACCESS_REQUEST, attributes, password)
    ours = _table_encoder().encode(request.attributes, request.password, SECRET, VECTOR)
    assert ours is not None
    assert ours == pyrad_or_error(request)


def pyrad_or_error(request: Request) -> bytes | str:
    try:
        return _pyrad_attributes(request, 1, SECRET, VECTOR)
    except Exception as exc:
        return type(exc).__name__


@settings(max_examples=600, deadline=None)
@given(
    attributes=pairs(NAMES, values_for, max_tag=40),
    password=st.one_of(st.none(), st.binary(max_size=130)),
    code=st.sampled_from([Code.ACCESS_REQUEST, Code.ACCOUNTING_REQUEST]),
)
def test_the_table_gives_pyrad_s_bytes_or_leaves_the_request_to_pyrad(
    attributes: tuple[tuple[str, object], ...], password: bytes | None, code: Code
) -> None:
    request = Request(code, attributes, password if code is Code.ACCESS_REQUEST else None)
    ours = _table_encoder().encode(request.attributes, request.password, SECRET, VECTOR)
    if ours is not None:
        assert ours == pyrad_or_error(request)


def test_a_session_s_access_request_and_accounting_record_come_from_the_table() -> None:
    session = (
        ("User-Name", "8944500000000000001"),
        ("Acct-Session-Id", "lns-1-18e2a3c4-1"),
        ("Calling-Station-Id", "8944500000000000001"),
        ("Called-Station-Id", "iot.apn"),
        ("NAS-Identifier", "lns-1"),
        ("NAS-IP-Address", ipaddress.IPv4Address("127.0.0.1")),
        ("NAS-Port", 4711),
        ("NAS-Port-Type", "Virtual"),
        ("Service-Type", "Framed-User"),
        ("Framed-Protocol", "PPP"),
        ("Tunnel-Type:1", "L2TP"),
        ("Tunnel-Medium-Type:1", "IPv4"),
        ("Tunnel-Client-Endpoint:1", "192.0.2.10"),
        ("Tunnel-Server-Endpoint:1", "127.0.0.1"),
        ("Tunnel-Client-Auth-Id:1", "lac1"),
    )
    chap = (("CHAP-Password", bytes(17)), ("CHAP-Challenge", bytes(16)))
    records = (
        ("Acct-Status-Type", "Stop"),
        ("Framed-IP-Address", ipaddress.IPv4Address("100.64.0.1")),
        ("Acct-Input-Octets", 2**32 - 1),
        ("Acct-Input-Gigawords", 3),
        ("Event-Timestamp", 1_800_000_000),
        ("Acct-Terminate-Cause", "Lost-Carrier"),
        ("Acct-Delay-Time", 0),
    )
    for request in (
        Request(Code.ACCESS_REQUEST, session + chap),
        Request(Code.ACCESS_REQUEST, session, b"password"),
        Request(Code.ACCOUNTING_REQUEST, session + records),
    ):
        ours = _table_encoder().encode(request.attributes, request.password, SECRET, VECTOR)
        assert ours is not None
        assert ours == _pyrad_attributes(request, 1, SECRET, VECTOR)
        # And the whole packet, Message-Authenticator and authenticators included.
        table = encode_request(request, 7, SECRET, VECTOR).data
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(packet, "_table_encoder", lambda: AttributeEncoder([]))
            assert encode_request(request, 7, SECRET, VECTOR).data == table
