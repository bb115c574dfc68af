"""RFC 2661 section 4.4.2: Result Code and Error Code values for StopCCN and CDN."""

from __future__ import annotations

import enum


class StopCcnResult(enum.IntEnum):
    GENERAL_REQUEST = 1  # general request to clear the control connection
    GENERAL_ERROR = 2  # see the Error Code
    CHANNEL_EXISTS = 3
    NOT_AUTHORIZED = 4  # requester is not authorized to establish a control channel
    BAD_PROTOCOL_VERSION = 5
    SHUTTING_DOWN = 6  # requester is being shut down
    FSM_ERROR = 7  # finite state machine error


class CdnResult(enum.IntEnum):
    LOST_CARRIER = 1
    GENERAL_ERROR = 2  # see the Error Code
    ADMINISTRATIVE = 3
    TEMPORARY_LACK_OF_FACILITIES = 4
    PERMANENT_LACK_OF_FACILITIES = 5
    INVALID_DESTINATION = 6
    NO_CARRIER = 7
    BUSY = 8
    NO_DIAL_TONE = 9
    TIMEOUT = 10
    NO_FRAMING = 11


class GeneralError(enum.IntEnum):
    NONE = 0
    NO_CONTROL_CONNECTION = 1
    BAD_LENGTH = 2
    OUT_OF_RANGE = 3  # a field value out of range, or a reserved field non-zero
    INSUFFICIENT_RESOURCES = 4
    INVALID_SESSION_ID = 5
    VENDOR_SPECIFIC = 6
    TRY_ANOTHER = 7
    UNKNOWN_MANDATORY_AVP = 8


def describe(result: int, error: int = 0, *, codes: type[enum.IntEnum] = CdnResult) -> str:
    """ "result 3 (administrative)", with " error 4 (insufficient resources)" when one is
    given: the numbers the RFC defines, and in words for the operator reading the log.

    `codes` is the message's table: CdnResult for a CDN, StopCcnResult for a StopCCN.
    """
    text = f"result {result} ({_words(codes, result)})"
    if error:
        text += f" error {error} ({_words(GeneralError, error)})"
    return text


def _words(codes: type[enum.IntEnum], value: int) -> str:
    try:
        return codes(value).name.lower().replace("_", " ")
    except ValueError:
        return "unknown"
