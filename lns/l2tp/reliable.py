"""RFC 2661 section 5.8: reliable delivery of control messages.

One :class:`ReliableChannel` per control connection. It numbers what we send
(Ns), tracks what we have received in order (Nr), retransmits unacknowledged
messages with a doubling timeout up to a cap, respects the peer's receive
window, holds out-of-order messages that fall inside our own window, and
acknowledges: piggybacked on our next message when there is one, else with a
ZLB after a short hold-off (well under the peer's 1 s retransmission timer,
so the LAC never has to retransmit for want of an ack).

Until the peer has shown that it receives what we send (section 5.8: it
acknowledged a message of ours) the channel is ``passive``: it retransmits
only when the peer retransmits (a duplicate arrives), never on its own timer,
so a spoofed SCCRQ draws one answer per datagram sent and no more (the timer
still counts the retransmissions it would have made, so a peer that never
answers fails the channel as usual).

I/O-free: time comes in as ``now`` (seconds, any monotonic origin).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

SEQUENCE_MODULUS = 1 << 16
Received = TypeVar("Received")
_HALF = SEQUENCE_MODULUS // 2


def seq_distance(later: int, earlier: int) -> int:
    """How far ``later`` is ahead of ``earlier`` modulo 2^16 (negative when behind)."""
    distance = (later - earlier) % SEQUENCE_MODULUS
    return distance - SEQUENCE_MODULUS if distance >= _HALF else distance


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A control datagram to frame and send: Ns, Nr, header Session ID, AVPs (empty: a ZLB)."""

    ns: int
    nr: int
    session_id: int
    payload: bytes


@dataclass(slots=True)
class _InFlight:
    ns: int
    session_id: int
    payload: bytes
    deadline: float
    retransmissions: int = 0
    resend: bool = False


@dataclass(frozen=True, slots=True)
class RetransmitPolicy:
    """Retransmission timing (RFC 2661 section 5.8: doubling, cap of at least 8 s)."""

    initial: float = 1.0
    cap: float = 8.0
    max_retransmissions: int = 5

    def timeout(self, retransmissions: int) -> float:
        return min(self.initial * float(2**retransmissions), self.cap)


class ReliableChannel(Generic[Received]):
    """Sequencing, acknowledgement and retransmission for one control connection.

    Received messages are opaque items (the caller decodes before sequencing, so
    a malformed message is dropped without being acknowledged).
    """

    def __init__(
        self,
        policy: RetransmitPolicy,
        *,
        receive_window: int = 16,
        peer_window: int = 4,
        ack_delay: float = 0.05,
    ) -> None:
        self.policy = policy
        self.receive_window = receive_window
        self.peer_window = peer_window
        self.ack_delay = ack_delay
        self.next_ns = 0  # Ns of the next message we send
        self.next_nr = 0  # Ns we expect next from the peer (our Nr)
        self.failed = False  # a message went unacknowledged after every retransmission
        self.passive = False  # retransmit only when the peer does (see the module docstring)
        self.duplicates = 0
        self.acknowledged = 0  # our messages the peer acknowledged, all told
        self.out_of_window = 0
        self.retransmissions = 0
        self._pending: deque[tuple[int, bytes]] = deque()
        self._in_flight: deque[_InFlight] = deque()
        self._held: dict[int, Received] = {}
        self._ack_due: float | None = None

    # --- input ------------------------------------------------------------------

    def receive(self, ns: int, nr: int, item: Received | None, now: float) -> list[Received]:
        """Take a control datagram (``item`` None: a ZLB); returns what is now deliverable."""
        self._acknowledged(nr)
        if item is None:
            return []  # a ZLB only acknowledges
        ahead = seq_distance(ns, self.next_nr)
        if ahead < 0:
            # Our ack was lost: acknowledge again at once so the peer stops resending.
            self.duplicates += 1
            self._ack_due = now
            if self.passive:
                # The peer resends, so it may have lost ours too: answer in kind.
                for flight in self._in_flight:
                    flight.resend = True
            return []
        if ahead >= self.receive_window:
            self.out_of_window += 1
            return []
        if ahead > 0:
            if ns in self._held:
                self.duplicates += 1
            self._held[ns] = item
            self._schedule_ack(now)
            return []
        delivered = [item]
        self.next_nr = (self.next_nr + 1) % SEQUENCE_MODULUS
        while self.next_nr in self._held:
            delivered.append(self._held.pop(self.next_nr))
            self.next_nr = (self.next_nr + 1) % SEQUENCE_MODULUS
        self._schedule_ack(now)
        return delivered

    def _acknowledged(self, nr: int) -> None:
        while self._in_flight and seq_distance(nr, self._in_flight[0].ns) > 0:
            self._in_flight.popleft()
            self.acknowledged += 1

    def _schedule_ack(self, now: float) -> None:
        due = now + self.ack_delay
        if self._ack_due is None or due < self._ack_due:
            self._ack_due = due

    def ack_now(self, now: float) -> None:
        """Send the acknowledgement without the hold-off (HELLO, StopCCN)."""
        self._ack_due = now

    # --- output -----------------------------------------------------------------

    def queue(self, payload: bytes, session_id: int = 0) -> None:
        """Queue a control message body (for ``session_id``, 0: the tunnel) for delivery."""
        self._pending.append((session_id, payload))

    def datagrams_to_send(self, now: float) -> list[Outgoing]:
        """Everything due now: retransmissions, new messages inside the peer's window, a ZLB."""
        out: list[Outgoing] = []
        for flight in self._in_flight:
            if flight.resend:
                flight.resend = False
                out.append(Outgoing(flight.ns, self.next_nr, flight.session_id, flight.payload))
        while self._pending and len(self._in_flight) < self.peer_window:
            session_id, payload = self._pending.popleft()
            flight = _InFlight(self.next_ns, session_id, payload, now + self.policy.timeout(0))
            self._in_flight.append(flight)
            self.next_ns = (self.next_ns + 1) % SEQUENCE_MODULUS
            out.append(Outgoing(flight.ns, self.next_nr, session_id, payload))
        if out:
            self._ack_due = None  # the Nr of these messages acknowledges
        elif self._ack_due is not None and self._ack_due <= now:
            self._ack_due = None
            out.append(Outgoing(self.next_ns, self.next_nr, 0, b""))
        return out

    def handle_timer(self, now: float) -> None:
        """Advance retransmission timers; sets ``failed`` when the retries are spent."""
        if self.failed:
            return
        for flight in self._in_flight:
            if flight.deadline > now:
                continue
            if flight.retransmissions >= self.policy.max_retransmissions:
                self.failed = True
                return
            flight.retransmissions += 1
            flight.deadline = now + self.policy.timeout(flight.retransmissions)
            if not self.passive:
                self.retransmissions += 1
                flight.resend = True

    def get_timer(self) -> float | None:
        """The next instant handle_timer or datagrams_to_send has work to do."""
        if self.failed:
            # Given up: the expired deadline would otherwise be reported for ever, and a
            # caller that fires timers until none is due would never get past it.
            return None
        deadlines = [f.deadline for f in self._in_flight]
        if self._ack_due is not None:
            deadlines.append(self._ack_due)
        return min(deadlines) if deadlines else None

    @property
    def idle(self) -> bool:
        """Nothing waiting to be sent or acknowledged."""
        return not self._pending and not self._in_flight

    @property
    def unacknowledged(self) -> int:
        return len(self._in_flight) + len(self._pending)
