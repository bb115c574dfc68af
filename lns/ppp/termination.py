"""Why a session ended: RFC 2866 section 5.10 Acct-Terminate-Cause values."""

from __future__ import annotations

import enum


class TerminateCause(enum.IntEnum):
    USER_REQUEST = 1
    LOST_CARRIER = 2
    LOST_SERVICE = 3
    IDLE_TIMEOUT = 4
    SESSION_TIMEOUT = 5
    ADMIN_RESET = 6
    ADMIN_REBOOT = 7
    PORT_ERROR = 8
    NAS_ERROR = 9
    NAS_REQUEST = 10
    NAS_REBOOT = 11
    PORT_UNNEEDED = 12
    SERVICE_UNAVAILABLE = 15
    USER_ERROR = 17
