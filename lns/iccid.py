"""ICCIDs (ITU-T E.118): the SIM identity a LAC sends as the L2TP Calling Number."""

from __future__ import annotations


class InvalidIccid(ValueError):
    """The Calling Number is not an ICCID; the message says why (never a secret)."""


def parse_iccid(calling_number: str) -> str:
    """Return the ICCID carried in a Calling Number, or raise InvalidIccid.

    An ICCID is 19 or 20 decimal digits (18-19 digits and a Luhn check digit);
    some operators append an F filler nibble when it is printed from the SIM,
    which is stripped.
    """
    text = calling_number.strip()
    if text[-1:] in ("F", "f"):
        text = text[:-1]
    if not text.isascii() or not text.isdigit():
        raise InvalidIccid(f"Calling Number {calling_number!r} is not all digits")
    if not 19 <= len(text) <= 20:
        raise InvalidIccid(
            f"Calling Number {calling_number!r} has {len(text)} digits, an ICCID has 19 or 20"
        )
    return text
