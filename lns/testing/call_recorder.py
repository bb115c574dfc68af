"""A stand-in for the PPP layer above an L2TP service: it keeps the established calls
and counts their frames (tests of the L2TP adapter alone)."""

from __future__ import annotations

from twisted.internet import defer

from lns.l2tp.effects import CallCleared, CallEstablished

__all__ = ["CallRecorder"]


class CallRecorder:
    """Keeps established calls and counts their frames."""

    def __init__(self) -> None:
        self.calls: dict[tuple[int, int], CallEstablished] = {}
        self.frames = 0

    def call_established(self, event: CallEstablished) -> None:
        self.calls[(event.tunnel_id, event.call.session_id)] = event

    def ppp_frame_received(self, tunnel_id: int, session_id: int, frame: bytes) -> None:
        self.frames += 1

    def call_cleared(self, event: CallCleared) -> None:
        self.calls.pop((event.tunnel_id, event.session_id), None)

    def shutdown(self, reason: str) -> defer.Deferred[None]:
        return defer.succeed(None)
