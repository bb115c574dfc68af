"""RFC 2661 section 4.3: hiding AVP values with the tunnel secret.

The hidden subformat is ``original length (2 octets) || value || padding``,
XORed with an MD5 chain: b1 = MD5(attribute type || secret || random vector),
bi = MD5(secret || c(i-1)), where c(i-1) is the previous 16 octets of
ciphertext. A final segment shorter than 16 octets is XORed with the leading
octets of its hash, so values hidden by peers that do not pad still unhide.
"""

from __future__ import annotations

import hashlib

from lns.l2tp.wire import MalformedPacket, u16

_BLOCK = 16
# An AVP's 10-bit Length covers its 6-octet header (section 4.1), so at most 1017
# octets of hidden subformat fit in one AVP.
_MAX_SUBFORMAT = 0x03FF - 6


def _keystream_xor(
    attribute: int, secret: bytes, vector: bytes, data: bytes, hiding: bool
) -> bytes:
    out = bytearray()
    digest = hashlib.md5(u16(attribute) + secret + vector).digest()
    for start in range(0, len(data), _BLOCK):
        chunk = data[start : start + _BLOCK]
        mixed = bytes(a ^ b for a, b in zip(chunk, digest, strict=False))
        out += mixed
        cipher_chunk = mixed if hiding else chunk
        digest = hashlib.md5(secret + cipher_chunk).digest()
    return bytes(out)


def hide(attribute: int, value: bytes, secret: bytes, vector: bytes, padding: bytes = b"") -> bytes:
    """Hide ``value`` of AVP ``attribute``; padding (random, chosen by the caller) masks its length.

    When ``padding`` is empty the subformat is padded with zero octets to a
    whole number of 16-octet blocks, but never past what one AVP can carry:
    padding is optional, so a value that fits unpadded must still be sendable.
    """
    plain = u16(len(value)) + value + padding
    if not padding and len(plain) % _BLOCK:
        room = max(0, _MAX_SUBFORMAT - len(plain))
        plain += bytes(min(_BLOCK - len(plain) % _BLOCK, room))
    return _keystream_xor(attribute, secret, vector, plain, hiding=True)


def unhide(attribute: int, hidden: bytes, secret: bytes, vector: bytes) -> bytes:
    """Recover the original value; the decrypted length is checked, never trusted."""
    plain = _keystream_xor(attribute, secret, vector, hidden, hiding=False)
    if len(plain) < 2:
        raise MalformedPacket(f"hidden AVP {attribute}: {len(plain)} bytes, no length field")
    length = int.from_bytes(plain[:2], "big")
    if length > len(plain) - 2:
        raise MalformedPacket(
            f"hidden AVP {attribute}: original length {length} exceeds the "
            f"{len(plain) - 2} bytes hidden (wrong secret?)"
        )
    return plain[2 : 2 + length]
