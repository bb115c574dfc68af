"""A session directory in memory, and the check of a reply, for tests of the Dynamic
Authorization server (RFC 5176, aaa/radius/dae.py).

`FakeDirectory` stands for the node's sessions behind the `SessionDirectory` Protocol
and records what the server asked of it; `check_reply` verifies a reply with the client
side's own checks plus the Response Authenticator computed here (RFC 5176 section 3.5).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from aaa.radius import packet
from aaa.radius.dae import SessionMatch

SECRET = b"dae-test-secret"


@dataclass
class FakeSession:
    acct_session_id: str
    user_name: str
    calling_station_id: str
    framed_ip_address: ipaddress.IPv4Address
    session_timeout: float | None = None
    idle_timeout: float | None = None


@dataclass
class FakeDirectory:
    """The live sessions in a list; records what the server asked of it."""

    sessions: list[FakeSession] = field(default_factory=list)
    queries: list[SessionMatch] = field(default_factory=list)
    disconnected: list[FakeSession] = field(default_factory=list)
    changed: list[tuple[FakeSession, float | None, float | None]] = field(default_factory=list)

    def find(self, match: SessionMatch) -> list[object]:
        self.queries.append(match)
        return [
            s
            for s in self.sessions
            if match.acct_session_id in (None, s.acct_session_id)
            and match.user_name in (None, s.user_name)
            and match.calling_station_id in (None, s.calling_station_id)
            and match.framed_ip_address in (None, s.framed_ip_address)
        ]

    def disconnect(self, handle: object) -> None:
        assert isinstance(handle, FakeSession)
        self.sessions.remove(handle)
        self.disconnected.append(handle)

    def change(
        self, handle: object, session_timeout: float | None, idle_timeout: float | None
    ) -> None:
        assert isinstance(handle, FakeSession)
        if session_timeout is not None:
            handle.session_timeout = session_timeout
        if idle_timeout is not None:
            handle.idle_timeout = idle_timeout
        self.changed.append((handle, session_timeout, idle_timeout))


ALICE = ("acct-alice", "89440000000000000011", "89440000000000000011", "100.64.0.10")
BOB = ("acct-bob", "89440000000000000029", "89440000000000000029", "100.64.0.11")
# Two sessions of one SIM (a reconnect not yet torn down).
CAROL_1 = ("acct-carol-1", "carol", "89440000000000000037", "100.64.0.12")
CAROL_2 = ("acct-carol-2", "carol", "89440000000000000037", "100.64.0.13")


def make_directory() -> FakeDirectory:
    return FakeDirectory(
        [
            FakeSession(a, u, c, ipaddress.IPv4Address(ip))
            for a, u, c, ip in (ALICE, BOB, CAROL_1, CAROL_2)
        ]
    )


def check_reply(
    data: bytes, request: packet.EncodedRequest, secret: bytes = SECRET
) -> packet.Reply:
    """The reply decoded with the client side's checks, plus our own arithmetic."""
    reply = packet.decode_reply(data, request, secret)
    assert reply.message_authenticator  # every reply is signed
    expected = hashlib.md5(data[:4] + request.authenticator + data[20:] + secret).digest()
    assert data[4:20] == expected
    return reply
