"""Request attributes encoded from a table, without pyrad's per-packet objects.

A setup storm encodes an Access-Request per session and an Accounting-Request per
record; through pyrad (a packet object, a dictionary lookup and a type dispatch per
attribute, values through its bidirectional maps) that was a tenth of the reactor's
time. `AttributeEncoder` holds a table of the attributes it can encode itself, which
`aaa.radius.packet` (pyrad's one home) reads once from our dictionary: plain RFC
attributes (no vendor, no TLV, no encryption other than User-Password's) of the types
string, octets, integer (named values included), ipaddr and date, tagged or not (RFC
2868). For anything else, or a value it does not take as it is, it answers None and
the caller asks pyrad, whose checks and messages then apply: the bytes are the same
either way (a property test holds the two to it).

pyrad's rules that the bytes depend on, kept here:
- attributes of one type are grouped at the place of the first (a pyrad packet is a
  mapping from attribute code to its values);
- a tag "Name:N" replaces the first octet of an integer and precedes anything else;
  an untagged value of a tagged string type that starts with an octet up to 0x1F gets
  the tag 0 (RFC 2868 section 3);
- User-Password is hidden as RFC 2865 section 5.2 says, padded with zeros to a
  multiple of 16 octets (at least 16), and put right after User-Name, or first.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["TABLE_TYPES", "AttributeEncoder", "AttributeSpec"]

USER_NAME = 1
USER_PASSWORD = 2
MAX_VALUE = 253
TABLE_TYPES = frozenset({"string", "octets", "integer", "ipaddr", "date"})
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One dictionary attribute the table encodes."""

    name: str
    code: int
    type: str  # one of TABLE_TYPES
    has_tag: bool
    named: Mapping[str, bytes] = field(default_factory=dict)  # an integer's named values


class AttributeEncoder:
    """Encodes (name, value) pairs, as pyrad would, or says it cannot (None)."""

    def __init__(self, specs: Iterable[AttributeSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs if spec.type in TABLE_TYPES}

    def encode(
        self,
        pairs: Sequence[tuple[str, object]],
        password: bytes | None,
        secret: bytes,
        vector: bytes,
    ) -> bytes | None:
        """The attribute octets; None when pyrad must do it (see the module docstring)."""
        groups: dict[int, list[bytes]] = {}
        hidden = None
        if password is not None:
            if len(password) > 128:
                return None
            hidden = _hide(password, secret, vector)
            if not any(name == "User-Name" for name, _ in pairs):
                groups[USER_PASSWORD] = [hidden]
        specs = self._specs
        for name, value in pairs:
            base, colon, tag_text = name.partition(":")
            spec = specs.get(base)
            if spec is None or spec.code == USER_PASSWORD:
                return None
            encoded = _value(spec, value)
            if encoded is None:
                return None
            if colon:
                if not tag_text.isdecimal() or int(tag_text) > 0x1F:
                    return None
                tag = bytes((int(tag_text),))
                encoded = tag + (encoded[1:] if spec.type == "integer" else encoded)
            elif spec.has_tag and spec.type != "integer" and encoded and encoded[0] <= 0x1F:
                encoded = b"\x00" + encoded
            if len(encoded) > MAX_VALUE:
                return None
            groups.setdefault(spec.code, []).append(encoded)
            if spec.code == USER_NAME and hidden is not None:
                groups[USER_PASSWORD] = [hidden]
        return b"".join(
            bytes((code, len(encoded) + 2)) + encoded
            for code, values in groups.items()
            for encoded in values
        )


def _value(spec: AttributeSpec, value: object) -> bytes | None:
    kind = spec.type
    if kind == "string":
        if isinstance(value, str):
            return value.encode("utf-8")
        return value if type(value) is bytes else None
    if kind == "octets":
        if type(value) is bytes and not value.startswith(b"0x"):
            return value
        return None
    if kind == "integer":
        if isinstance(value, str):
            return spec.named.get(value)
        if type(value) is int and 0 <= value <= 0xFFFFFFFF:
            return _U32.pack(value)
        return None
    if kind == "ipaddr":
        if isinstance(value, ipaddress.IPv4Address):
            return value.packed
        return None
    if type(value) is int and 0 <= value <= 0xFFFFFFFF:  # date
        return _U32.pack(value)
    return None


def _hide(password: bytes, secret: bytes, vector: bytes) -> bytes:
    """User-Password hidden with the secret and the Request Authenticator (RFC 2865 5.2)."""
    padded = password + b"\x00" * (-len(password) % 16 or (16 if not password else 0))
    hidden = bytearray()
    last = vector
    for start in range(0, len(padded), 16):
        pad = hashlib.md5(secret + last).digest()
        block = bytes(a ^ b for a, b in zip(padded[start : start + 16], pad, strict=True))
        hidden += block
        last = block
    return bytes(hidden)
