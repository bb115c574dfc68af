"""The PPP option negotiation automaton of RFC 1661 section 4, shared by LCP and IPCP.

Everything that decides a transition lives in :data:`TRANSITIONS`: one entry per
(state, event) cell of the RFC 1661 section 4.1 table, giving the actions (named
as in section 4.4) and the next state. A missing key is a cell the RFC marks
'-' (illegal): the automaton answers it with an :class:`Ignored` effect naming
the state and the event, and changes nothing. Footnoted cells follow the
defaults: no Restart option on Open ('r', section 4.3), the passive TO- in the
negotiating states ('p', section 4.2), and the crossed-connection rows ('x',
section 4.3) as printed.

The automaton is I/O-free: events come in as method calls with ``now`` (a plain
number), and it returns effects: packets to send (to be framed by the caller
with its protocol number, LCP or IPCP) and the four this-layer signals. The
restart timer is one absolute deadline read with :meth:`Automaton.get_timer`.
The options themselves belong to an :class:`OptionPolicy`; the automaton only
carries the RFC's counters and rules about who answers what.

Choices the RFC leaves open, made here:

* Identifiers (section 5.1): one counter (modulo 256) for every packet we
  originate (Configure-Request, Terminate-Request, Code-Reject). A Configure-
  Request retransmitted on TO+ keeps its Identifier while its options are
  unchanged and nothing answered it, so a reply to an earlier copy that arrives
  late still counts; any other Configure-Request, and every Terminate-Request,
  takes a new one.
* A Configure-Ack/Nak/Reject is valid only for the outstanding Configure-Request:
  same Identifier, not yet answered, and (Ack) the same options byte for byte,
  (Reject) options taken from it (sections 5.2-5.4). Anything else is silently
  discarded (an :class:`Ignored` effect says why). Since a valid reply makes the
  request answered, the RCA and RCN cells of Ack-Rcvd and Opened are reached
  only through :meth:`Automaton.handle`; :meth:`Automaton.receive` never finds an
  outstanding request there, as pppd does.
* Max-Failure (section 4.6): once ``max_failure`` Configure-Naks have been sent
  without a Configure-Ack in between, a Nak verdict is turned into a Reject of
  the requested options it names.
* The same convergence bound on our side: the irc of the RCN rows refills the
  restart counter, so a peer that Naks every request would keep us negotiating
  for ever. After ``max_configure`` consecutive Naks/Rejects of our requests, the
  next one is taken as TO- (we ran out of restarts): tlf, with a reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol

from lns.ppp.frame import MalformedFrame
from lns.ppp.packet import Code, ControlPacket, Option, decode_options, encode_options


class State(enum.Enum):
    """RFC 1661 section 4.2, with the RFC's names as values."""

    INITIAL = "Initial"
    STARTING = "Starting"
    CLOSED = "Closed"
    STOPPED = "Stopped"
    CLOSING = "Closing"
    STOPPING = "Stopping"
    REQ_SENT = "Req-Sent"
    ACK_RCVD = "Ack-Rcvd"
    ACK_SENT = "Ack-Sent"
    OPENED = "Opened"


class Event(enum.Enum):
    """RFC 1661 section 4.3."""

    UP = "Up"
    DOWN = "Down"
    OPEN = "Open"
    CLOSE = "Close"
    TO_PLUS = "TO+"
    TO_MINUS = "TO-"
    RCR_PLUS = "RCR+"
    RCR_MINUS = "RCR-"
    RCA = "RCA"
    RCN = "RCN"
    RTR = "RTR"
    RTA = "RTA"
    RUC = "RUC"
    RXJ_PLUS = "RXJ+"
    RXJ_MINUS = "RXJ-"
    RXR = "RXR"


class Action(enum.Enum):
    """RFC 1661 section 4.4."""

    TLU = "tlu"  # This-Layer-Up
    TLD = "tld"  # This-Layer-Down
    TLS = "tls"  # This-Layer-Started
    TLF = "tlf"  # This-Layer-Finished
    IRC = "irc"  # Initialize-Restart-Count
    ZRC = "zrc"  # Zero-Restart-Count
    SCR = "scr"  # Send-Configure-Request
    SCA = "sca"  # Send-Configure-Ack
    SCN = "scn"  # Send-Configure-Nak/Rej
    STR = "str"  # Send-Terminate-Request
    STA = "sta"  # Send-Terminate-Ack
    SCJ = "scj"  # Send-Code-Reject
    SER = "ser"  # Send-Echo-Reply


@dataclass(frozen=True, slots=True)
class Transition:
    actions: tuple[Action, ...]
    next_state: State


def _to(state: State, *actions: Action) -> Transition:
    return Transition(actions, state)


_S = State
_E = Event
TLU, TLD, TLS, TLF = Action.TLU, Action.TLD, Action.TLS, Action.TLF
IRC, ZRC, SCR, SCA, SCN = Action.IRC, Action.ZRC, Action.SCR, Action.SCA, Action.SCN
STR, STA, SCJ, SER = Action.STR, Action.STA, Action.SCJ, Action.SER

# RFC 1661 section 4.1, one block per state (a column of the RFC's table).
TRANSITIONS: dict[tuple[State, Event], Transition] = {
    # Initial: lower layer down, no Open yet.
    (_S.INITIAL, _E.UP): _to(_S.CLOSED),
    (_S.INITIAL, _E.OPEN): _to(_S.STARTING, TLS),
    (_S.INITIAL, _E.CLOSE): _to(_S.INITIAL),
    # Starting: opened, waiting for the lower layer.
    (_S.STARTING, _E.UP): _to(_S.REQ_SENT, IRC, SCR),
    (_S.STARTING, _E.OPEN): _to(_S.STARTING),
    (_S.STARTING, _E.CLOSE): _to(_S.INITIAL, TLF),
    # Closed: link up, no Open; Configure-Requests are answered with Terminate-Ack.
    (_S.CLOSED, _E.DOWN): _to(_S.INITIAL),
    (_S.CLOSED, _E.OPEN): _to(_S.REQ_SENT, IRC, SCR),
    (_S.CLOSED, _E.CLOSE): _to(_S.CLOSED),
    (_S.CLOSED, _E.RCR_PLUS): _to(_S.CLOSED, STA),
    (_S.CLOSED, _E.RCR_MINUS): _to(_S.CLOSED, STA),
    (_S.CLOSED, _E.RCA): _to(_S.CLOSED, STA),
    (_S.CLOSED, _E.RCN): _to(_S.CLOSED, STA),
    (_S.CLOSED, _E.RTR): _to(_S.CLOSED, STA),
    (_S.CLOSED, _E.RTA): _to(_S.CLOSED),
    (_S.CLOSED, _E.RUC): _to(_S.CLOSED, SCJ),
    (_S.CLOSED, _E.RXJ_PLUS): _to(_S.CLOSED),
    (_S.CLOSED, _E.RXJ_MINUS): _to(_S.CLOSED, TLF),
    (_S.CLOSED, _E.RXR): _to(_S.CLOSED),
    # Stopped: opened, finished; a Configure-Request restarts the negotiation.
    (_S.STOPPED, _E.DOWN): _to(_S.STARTING, TLS),
    (_S.STOPPED, _E.OPEN): _to(_S.STOPPED),
    (_S.STOPPED, _E.CLOSE): _to(_S.CLOSED),
    (_S.STOPPED, _E.RCR_PLUS): _to(_S.ACK_SENT, IRC, SCR, SCA),
    (_S.STOPPED, _E.RCR_MINUS): _to(_S.REQ_SENT, IRC, SCR, SCN),
    (_S.STOPPED, _E.RCA): _to(_S.STOPPED, STA),
    (_S.STOPPED, _E.RCN): _to(_S.STOPPED, STA),
    (_S.STOPPED, _E.RTR): _to(_S.STOPPED, STA),
    (_S.STOPPED, _E.RTA): _to(_S.STOPPED),
    (_S.STOPPED, _E.RUC): _to(_S.STOPPED, SCJ),
    (_S.STOPPED, _E.RXJ_PLUS): _to(_S.STOPPED),
    (_S.STOPPED, _E.RXJ_MINUS): _to(_S.STOPPED, TLF),
    (_S.STOPPED, _E.RXR): _to(_S.STOPPED),
    # Closing: Terminate-Request sent after a Close.
    (_S.CLOSING, _E.DOWN): _to(_S.INITIAL),
    (_S.CLOSING, _E.OPEN): _to(_S.STOPPING),
    (_S.CLOSING, _E.CLOSE): _to(_S.CLOSING),
    (_S.CLOSING, _E.TO_PLUS): _to(_S.CLOSING, STR),
    (_S.CLOSING, _E.TO_MINUS): _to(_S.CLOSED, TLF),
    (_S.CLOSING, _E.RCR_PLUS): _to(_S.CLOSING),
    (_S.CLOSING, _E.RCR_MINUS): _to(_S.CLOSING),
    (_S.CLOSING, _E.RCA): _to(_S.CLOSING),
    (_S.CLOSING, _E.RCN): _to(_S.CLOSING),
    (_S.CLOSING, _E.RTR): _to(_S.CLOSING, STA),
    (_S.CLOSING, _E.RTA): _to(_S.CLOSED, TLF),
    (_S.CLOSING, _E.RUC): _to(_S.CLOSING, SCJ),
    (_S.CLOSING, _E.RXJ_PLUS): _to(_S.CLOSING),
    (_S.CLOSING, _E.RXJ_MINUS): _to(_S.CLOSED, TLF),
    (_S.CLOSING, _E.RXR): _to(_S.CLOSING),
    # Stopping: terminating without a Close (peer's Terminate-Request, RXJ-).
    (_S.STOPPING, _E.DOWN): _to(_S.STARTING),
    (_S.STOPPING, _E.OPEN): _to(_S.STOPPING),
    (_S.STOPPING, _E.CLOSE): _to(_S.CLOSING),
    (_S.STOPPING, _E.TO_PLUS): _to(_S.STOPPING, STR),
    (_S.STOPPING, _E.TO_MINUS): _to(_S.STOPPED, TLF),
    (_S.STOPPING, _E.RCR_PLUS): _to(_S.STOPPING),
    (_S.STOPPING, _E.RCR_MINUS): _to(_S.STOPPING),
    (_S.STOPPING, _E.RCA): _to(_S.STOPPING),
    (_S.STOPPING, _E.RCN): _to(_S.STOPPING),
    (_S.STOPPING, _E.RTR): _to(_S.STOPPING, STA),
    (_S.STOPPING, _E.RTA): _to(_S.STOPPED, TLF),
    (_S.STOPPING, _E.RUC): _to(_S.STOPPING, SCJ),
    (_S.STOPPING, _E.RXJ_PLUS): _to(_S.STOPPING),
    (_S.STOPPING, _E.RXJ_MINUS): _to(_S.STOPPED, TLF),
    (_S.STOPPING, _E.RXR): _to(_S.STOPPING),
    # Req-Sent: our Configure-Request is out, nothing acked either way.
    (_S.REQ_SENT, _E.DOWN): _to(_S.STARTING),
    (_S.REQ_SENT, _E.OPEN): _to(_S.REQ_SENT),
    (_S.REQ_SENT, _E.CLOSE): _to(_S.CLOSING, IRC, STR),
    (_S.REQ_SENT, _E.TO_PLUS): _to(_S.REQ_SENT, SCR),
    (_S.REQ_SENT, _E.TO_MINUS): _to(_S.STOPPED, TLF),
    (_S.REQ_SENT, _E.RCR_PLUS): _to(_S.ACK_SENT, SCA),
    (_S.REQ_SENT, _E.RCR_MINUS): _to(_S.REQ_SENT, SCN),
    (_S.REQ_SENT, _E.RCA): _to(_S.ACK_RCVD, IRC),
    (_S.REQ_SENT, _E.RCN): _to(_S.REQ_SENT, IRC, SCR),
    (_S.REQ_SENT, _E.RTR): _to(_S.REQ_SENT, STA),
    (_S.REQ_SENT, _E.RTA): _to(_S.REQ_SENT),
    (_S.REQ_SENT, _E.RUC): _to(_S.REQ_SENT, SCJ),
    (_S.REQ_SENT, _E.RXJ_PLUS): _to(_S.REQ_SENT),
    (_S.REQ_SENT, _E.RXJ_MINUS): _to(_S.STOPPED, TLF),
    (_S.REQ_SENT, _E.RXR): _to(_S.REQ_SENT),
    # Ack-Rcvd: the peer acked ours, we have not acked theirs.
    (_S.ACK_RCVD, _E.DOWN): _to(_S.STARTING),
    (_S.ACK_RCVD, _E.OPEN): _to(_S.ACK_RCVD),
    (_S.ACK_RCVD, _E.CLOSE): _to(_S.CLOSING, IRC, STR),
    (_S.ACK_RCVD, _E.TO_PLUS): _to(_S.REQ_SENT, SCR),
    (_S.ACK_RCVD, _E.TO_MINUS): _to(_S.STOPPED, TLF),
    (_S.ACK_RCVD, _E.RCR_PLUS): _to(_S.OPENED, SCA, TLU),
    (_S.ACK_RCVD, _E.RCR_MINUS): _to(_S.ACK_RCVD, SCN),
    (_S.ACK_RCVD, _E.RCA): _to(_S.REQ_SENT, SCR),
    (_S.ACK_RCVD, _E.RCN): _to(_S.REQ_SENT, SCR),
    (_S.ACK_RCVD, _E.RTR): _to(_S.REQ_SENT, STA),
    (_S.ACK_RCVD, _E.RTA): _to(_S.REQ_SENT),
    (_S.ACK_RCVD, _E.RUC): _to(_S.ACK_RCVD, SCJ),
    (_S.ACK_RCVD, _E.RXJ_PLUS): _to(_S.REQ_SENT),
    (_S.ACK_RCVD, _E.RXJ_MINUS): _to(_S.STOPPED, TLF),
    (_S.ACK_RCVD, _E.RXR): _to(_S.ACK_RCVD),
    # Ack-Sent: we acked theirs, ours is still out.
    (_S.ACK_SENT, _E.DOWN): _to(_S.STARTING),
    (_S.ACK_SENT, _E.OPEN): _to(_S.ACK_SENT),
    (_S.ACK_SENT, _E.CLOSE): _to(_S.CLOSING, IRC, STR),
    (_S.ACK_SENT, _E.TO_PLUS): _to(_S.ACK_SENT, SCR),
    (_S.ACK_SENT, _E.TO_MINUS): _to(_S.STOPPED, TLF),
    (_S.ACK_SENT, _E.RCR_PLUS): _to(_S.ACK_SENT, SCA),
    (_S.ACK_SENT, _E.RCR_MINUS): _to(_S.REQ_SENT, SCN),
    (_S.ACK_SENT, _E.RCA): _to(_S.OPENED, IRC, TLU),
    (_S.ACK_SENT, _E.RCN): _to(_S.ACK_SENT, IRC, SCR),
    (_S.ACK_SENT, _E.RTR): _to(_S.REQ_SENT, STA),
    (_S.ACK_SENT, _E.RTA): _to(_S.ACK_SENT),
    (_S.ACK_SENT, _E.RUC): _to(_S.ACK_SENT, SCJ),
    (_S.ACK_SENT, _E.RXJ_PLUS): _to(_S.ACK_SENT),
    (_S.ACK_SENT, _E.RXJ_MINUS): _to(_S.STOPPED, TLF),
    (_S.ACK_SENT, _E.RXR): _to(_S.ACK_SENT),
    # Opened: both acked; anything configuration-related renegotiates.
    (_S.OPENED, _E.DOWN): _to(_S.STARTING, TLD),
    (_S.OPENED, _E.OPEN): _to(_S.OPENED),
    (_S.OPENED, _E.CLOSE): _to(_S.CLOSING, TLD, IRC, STR),
    (_S.OPENED, _E.RCR_PLUS): _to(_S.ACK_SENT, TLD, SCR, SCA),
    (_S.OPENED, _E.RCR_MINUS): _to(_S.REQ_SENT, TLD, SCR, SCN),
    (_S.OPENED, _E.RCA): _to(_S.REQ_SENT, TLD, SCR),
    (_S.OPENED, _E.RCN): _to(_S.REQ_SENT, TLD, SCR),
    (_S.OPENED, _E.RTR): _to(_S.STOPPING, TLD, ZRC, STA),
    (_S.OPENED, _E.RTA): _to(_S.REQ_SENT, TLD, SCR),
    (_S.OPENED, _E.RUC): _to(_S.OPENED, SCJ),
    (_S.OPENED, _E.RXJ_PLUS): _to(_S.OPENED),
    (_S.OPENED, _E.RXJ_MINUS): _to(_S.STOPPING, TLD, IRC, STR),
    (_S.OPENED, _E.RXR): _to(_S.OPENED, SER),
}

# Section 4.2: the restart timer runs only while a request of ours awaits its answer.
TIMER_STATES = frozenset({_S.CLOSING, _S.STOPPING, _S.REQ_SENT, _S.ACK_RCVD, _S.ACK_SENT})
# Where a reply to our Configure-Request moves the negotiation, so it must answer the
# outstanding request; elsewhere the table only resynchronises (sta) or ignores it.
_REPLY_STATES = frozenset({_S.REQ_SENT, _S.ACK_RCVD, _S.ACK_SENT, _S.OPENED})
# Where RCR+ and RCR- differ; elsewhere the policy is not consulted.
_JUDGING_STATES = frozenset({_S.STOPPED, _S.REQ_SENT, _S.ACK_RCVD, _S.ACK_SENT, _S.OPENED})
# Leaving one of these through irc starts a fresh negotiation.
_RESTING_STATES = frozenset({_S.STARTING, _S.CLOSED, _S.STOPPED})
_MAX_REASON_BYTES = 128
_NEEDED_CODES = range(Code.CONFIGURE_REQUEST, Code.CODE_REJECT + 1)
# tld, tlf, str and zrc report or send why the layer goes down: the event that starts
# a termination sets that reason; the timeouts and the Terminate-Ack that finish one
# in Closing/Stopping keep it.
_REASON_ACTIONS = frozenset({Action.TLD, Action.TLF, Action.STR, Action.ZRC})
_FINISHING_EVENTS = frozenset({Event.TO_PLUS, Event.TO_MINUS, Event.RTA})
_EVENT_REASONS = {
    Event.DOWN: "lower layer down",
    Event.CLOSE: "administrative close",
    Event.RCR_PLUS: "peer renegotiates (Configure-Request)",
    Event.RCR_MINUS: "peer renegotiates (Configure-Request)",
    Event.RCA: "peer sent a Configure-Ack out of turn",
    Event.RCN: "peer sent a Configure-Nak/Reject out of turn",
    Event.RTR: "peer sent Terminate-Request",
    Event.RTA: "peer sent a Terminate-Ack out of turn",
    Event.RXJ_MINUS: "peer rejected a code or protocol the layer needs",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """How we answer a peer's Configure-Request.

    ``options``: for "ack", the options as received; for "nak", our suggestions
    (RFC 1661 section 5.3); for "reject", the rejected options as received
    (section 5.4).
    """

    kind: Literal["ack", "nak", "reject"]
    options: tuple[Option, ...]


class OptionPolicy(Protocol):
    """The options of one protocol (LCP, IPCP): what we ask for and what we accept."""

    def request(self) -> list[Option]:
        """Our Configure-Request options; called for every scr, retransmissions included."""
        ...

    def judge(self, options: list[Option]) -> Verdict:
        """The peer's Configure-Request: "ack" makes it RCR+, anything else RCR-."""
        ...

    def nak_received(self, options: list[Option]) -> None:
        """The peer Naked our request with these hints: adjust what request() returns."""
        ...

    def reject_received(self, options: list[Option]) -> None:
        """The peer Rejected these options of our request: stop asking for them."""
        ...

    def acked(self, options: list[Option]) -> None:
        """The peer acked our request carrying these options."""
        ...


@dataclass(frozen=True, slots=True)
class Send:
    """A control packet, to be framed with the automaton's protocol number (LCP, IPCP)."""

    packet: ControlPacket


@dataclass(frozen=True, slots=True)
class LayerUp:
    """tlu: the layer is open; for LCP, authentication starts; for IPCP, traffic flows."""


@dataclass(frozen=True, slots=True)
class LayerDown:
    """tld: the layer leaves Opened (renegotiation, termination, lower layer down)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class LayerStarted:
    """tls: the layer wants the lower layer up."""


@dataclass(frozen=True, slots=True)
class LayerFinished:
    """tlf: the layer is done with the lower layer; ``reason`` says why."""

    reason: str


@dataclass(frozen=True, slots=True)
class SendEchoReply:
    """ser: answer this Echo-Request; the LCP wrapper adds its Magic-Number (RFC 1661 5.8)."""

    request: ControlPacket


@dataclass(frozen=True, slots=True)
class Ignored:
    """A packet silently discarded or an event illegal in the state: for logs and counters."""

    reason: str


Effect = Send | LayerUp | LayerDown | LayerStarted | LayerFinished | SendEchoReply | Ignored


@dataclass(slots=True)
class _Request:
    """Our last Configure-Request: what a reply must match (RFC 1661 sections 5.2-5.4)."""

    identifier: int
    data: bytes
    answered: bool = False


class Automaton:
    """One RFC 1661 option negotiation automaton (the LCP's or an NCP's)."""

    # One per session: no per-instance __dict__ (memory per session, benchmarks/memory.py).
    __slots__ = (
        "_deadline",
        "_next_identifier",
        "_reason",
        "_request",
        "max_configure",
        "max_failure",
        "max_terminate",
        "naks_received",
        "naks_sent",
        "policy",
        "restart_counter",
        "restart_interval",
        "state",
    )

    def __init__(
        self,
        policy: OptionPolicy,
        *,
        restart_interval: float = 3.0,
        max_configure: int = 10,
        max_terminate: int = 2,
        max_failure: int = 5,
        first_identifier: int = 1,
    ) -> None:
        self.policy = policy
        self.restart_interval = restart_interval
        self.max_configure = max_configure
        self.max_terminate = max_terminate
        self.max_failure = max_failure
        self.state = State.INITIAL
        self.restart_counter = 0
        self.naks_sent = 0  # Configure-Naks sent since our last Configure-Ack (Max-Failure)
        self.naks_received = 0  # Naks/Rejects of our requests since the last Ack
        self._next_identifier = first_identifier % 256
        self._deadline: float | None = None
        self._request: _Request | None = None
        self._reason = ""

    # --- administrative and lower-layer events ------------------------------------

    def up(self, now: float) -> list[Effect]:
        return self._run(Event.UP, now)

    def down(self, now: float) -> list[Effect]:
        return self._run(Event.DOWN, now, reason="lower layer down")

    def open(self, now: float) -> list[Effect]:
        return self._run(Event.OPEN, now)

    def close(self, now: float, reason: str = "") -> list[Effect]:
        """Administrative Close; ``reason`` goes into the Terminate-Request and tld/tlf."""
        return self._run(Event.CLOSE, now, reason=reason or "administrative close")

    def force_opened(self, now: float) -> list[Effect]:
        """Adopt a negotiation done elsewhere (proxy LCP, RFC 2661 section 18): Opened, no packet.

        Stands for Up and Open together, so it is legal from any state but Opened.
        """
        if self.state is State.OPENED:
            return [Ignored("force_opened in state Opened")]
        self.state = State.OPENED
        self._deadline = None
        self._request = None
        # As after the irc of the RCA that opens a negotiated layer: a renegotiation from
        # Opened sends its scr without an irc of its own (section 4.1).
        self.restart_counter = self.max_configure
        self.naks_sent = self.naks_received = 0
        return [LayerUp()]

    # --- timer -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The restart timer's deadline, or None when it is not running."""
        return self._deadline

    def handle_timer(self, now: float) -> list[Effect]:
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        event = Event.TO_PLUS if self.restart_counter > 0 else Event.TO_MINUS
        return self._run(event, now)

    # --- packets ---------------------------------------------------------------------

    def receive(self, packet: ControlPacket, now: float) -> list[Effect]:
        """A control packet of our protocol; codes outside 1-7 are RUC (Code-Reject)."""
        code = packet.code
        if code == Code.CONFIGURE_REQUEST:
            return self._configure_request(packet, now)
        if code == Code.CONFIGURE_ACK:
            return self._configure_ack(packet, now)
        if code in (Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT):
            return self._configure_nak_or_reject(packet, now)
        if code == Code.TERMINATE_REQUEST:
            reason = "peer sent Terminate-Request"
            if packet.data:  # section 5.5: the Data field may say why, as text
                reason += ": " + packet.data.decode("utf-8", "replace")
            return self._run(Event.RTR, now, packet=packet, reason=reason)
        if code == Code.TERMINATE_ACK:
            return self._run(Event.RTA, now, packet=packet)
        if code == Code.CODE_REJECT:
            if not packet.data:
                return [Ignored("Code-Reject without the rejected packet")]
            rejected = packet.data[0]
            if rejected in _NEEDED_CODES:
                reason = f"peer Code-Rejected code {rejected}, which the protocol needs"
                return self._run(Event.RXJ_MINUS, now, packet=packet, reason=reason)
            return self._run(Event.RXJ_PLUS, now, packet=packet)
        return self._run(Event.RUC, now, packet=packet)

    def handle(
        self,
        event: Event,
        now: float,
        packet: ControlPacket | None = None,
        *,
        reason: str | None = None,
    ) -> list[Effect]:
        """Run one table cell for an event the caller classified itself.

        For the LCP wrapper: RXR with the Echo-Request (SendEchoReply in Opened),
        RXJ- or RXJ+ for a Protocol-Reject (RFC 1661 section 5.7). No validation
        and no policy callback happen here; Configure-Requests need a verdict, so
        RCR+ and RCR- go through :meth:`receive` only.
        """
        if event in (Event.RCR_PLUS, Event.RCR_MINUS):
            raise ValueError(f"{event.value} needs the policy's verdict: use receive()")
        return self._run(event, now, packet=packet, reason=reason)

    def _configure_request(self, packet: ControlPacket, now: float) -> list[Effect]:
        try:
            options = decode_options(packet.data)
        except MalformedFrame as exc:
            return [Ignored(f"malformed Configure-Request: {exc}")]
        if self.state not in _JUDGING_STATES:
            return self._run(Event.RCR_PLUS, now, packet=packet)  # RCR+ and RCR- cells agree
        verdict = self._max_failure(self.policy.judge(options), options)
        event = Event.RCR_PLUS if verdict.kind == "ack" else Event.RCR_MINUS
        return self._run(event, now, packet=packet, verdict=verdict)

    def _max_failure(self, verdict: Verdict, requested: list[Option]) -> Verdict:
        """RFC 1661 section 4.6: past Max-Failure Naks, reject the options we would Nak.

        A Nak may also suggest options the peer did not request; those cannot be
        rejected, so a Nak made only of them stays a Nak.
        """
        if verdict.kind != "nak" or self.naks_sent < self.max_failure:
            return verdict
        naked = {option.type for option in verdict.options}
        rejected = tuple(option for option in requested if option.type in naked)
        return Verdict("reject", rejected) if rejected else verdict

    def _outstanding(self, packet: ControlPacket, name: str) -> _Request | Ignored:
        request = self._request
        if request is None or request.answered or request.identifier != packet.identifier:
            return Ignored(
                f"{name} with Identifier {packet.identifier} answers no outstanding "
                "Configure-Request"
            )
        return request

    def _configure_ack(self, packet: ControlPacket, now: float) -> list[Effect]:
        if self.state not in _REPLY_STATES:
            return self._run(Event.RCA, now, packet=packet)
        request = self._outstanding(packet, "Configure-Ack")
        if isinstance(request, Ignored):
            return [request]
        if packet.data != request.data:
            return [Ignored("Configure-Ack options differ from our Configure-Request")]
        request.answered = True
        self.naks_received = 0
        self.policy.acked(decode_options(request.data))
        return self._run(Event.RCA, now, packet=packet)

    def _configure_nak_or_reject(self, packet: ControlPacket, now: float) -> list[Effect]:
        name = "Configure-Nak" if packet.code == Code.CONFIGURE_NAK else "Configure-Reject"
        if self.state not in _REPLY_STATES:
            return self._run(Event.RCN, now, packet=packet)
        request = self._outstanding(packet, name)
        if isinstance(request, Ignored):
            return [request]
        try:
            options = decode_options(packet.data)
        except MalformedFrame as exc:
            return [Ignored(f"malformed {name}: {exc}")]
        if packet.code == Code.CONFIGURE_REJECT:
            requested = decode_options(request.data)
            if not options or any(option not in requested for option in options):
                return [Ignored("Configure-Reject names options we did not request")]
        request.answered = True
        self.naks_received += 1
        if self.naks_received > self.max_configure:
            reason = f"peer answered {self.naks_received} Configure-Requests in a row with {name}"
            return self._run(Event.TO_MINUS, now, reason=reason)
        if packet.code == Code.CONFIGURE_NAK:
            self.policy.nak_received(options)
        else:
            self.policy.reject_received(options)
        return self._run(Event.RCN, now, packet=packet)

    # --- the table and its actions ---------------------------------------------------

    def _run(
        self,
        event: Event,
        now: float,
        *,
        packet: ControlPacket | None = None,
        verdict: Verdict | None = None,
        reason: str | None = None,
    ) -> list[Effect]:
        transition = TRANSITIONS.get((self.state, event))
        if transition is None:
            return [Ignored(f"event {event.value} is illegal in state {self.state.value}")]
        if _REASON_ACTIONS.intersection(transition.actions) and not (
            self.state in (State.CLOSING, State.STOPPING) and event in _FINISHING_EVENTS
        ):
            self._reason = reason or self._default_reason(event)
        effects: list[Effect] = []
        for action in transition.actions:
            self._act(action, event, transition.next_state, now, packet, verdict, effects)
        self.state = transition.next_state
        if self.state not in TIMER_STATES:
            self._deadline = None
        return effects

    def _default_reason(self, event: Event) -> str:
        if event is Event.TO_MINUS:
            return f"no answer to {self.max_configure} Configure-Requests"
        return _EVENT_REASONS.get(event, f"event {event.value} in state {self.state.value}")

    def _act(
        self,
        action: Action,
        event: Event,
        next_state: State,
        now: float,
        packet: ControlPacket | None,
        verdict: Verdict | None,
        effects: list[Effect],
    ) -> None:
        if action is Action.TLU:
            effects.append(LayerUp())
        elif action is Action.TLD:
            effects.append(LayerDown(self._reason))
        elif action is Action.TLS:
            effects.append(LayerStarted())
        elif action is Action.TLF:
            effects.append(LayerFinished(self._reason or "finished"))
        elif action is Action.IRC:
            # Section 4.6: Max-Terminate bounds Terminate-Requests, Max-Configure the rest.
            closing = next_state in (State.CLOSING, State.STOPPING)
            self.restart_counter = self.max_terminate if closing else self.max_configure
            if self.state in _RESTING_STATES:
                self.naks_sent = self.naks_received = 0
        elif action is Action.ZRC:
            # Section 4.4: pause one restart interval before Stopped, so the peer
            # receives our Terminate-Ack before the lower layer goes.
            self.restart_counter = 0
            self._deadline = now + self.restart_interval
        elif action is Action.SCR:
            effects.append(Send(self._configure_request_packet(event)))
            self.restart_counter = max(0, self.restart_counter - 1)
            self._deadline = now + self.restart_interval
        elif action is Action.SCA:
            assert packet is not None, "sca answers a received Configure-Request"
            # Section 5.2: the Ack carries the request's options exactly as received.
            effects.append(Send(ControlPacket(Code.CONFIGURE_ACK, packet.identifier, packet.data)))
            self.naks_sent = 0
        elif action is Action.SCN:
            assert packet is not None, "scn answers a received Configure-Request"
            assert verdict is not None, "scn carries the policy's verdict"
            nak = verdict.kind == "nak"
            code = Code.CONFIGURE_NAK if nak else Code.CONFIGURE_REJECT
            data = encode_options(verdict.options)
            effects.append(Send(ControlPacket(code, packet.identifier, data)))
            if nak:
                self.naks_sent += 1
        elif action is Action.STR:
            # Section 5.5: the Data field is free; our reason, kept well under any MRU.
            data = self._reason.encode("utf-8")[:_MAX_REASON_BYTES]
            packet_out = ControlPacket(Code.TERMINATE_REQUEST, self._new_identifier(), data)
            effects.append(Send(packet_out))
            self.restart_counter = max(0, self.restart_counter - 1)
            self._deadline = now + self.restart_interval
        elif action is Action.STA:
            identifier = packet.identifier if packet is not None else self._new_identifier()
            effects.append(Send(ControlPacket(Code.TERMINATE_ACK, identifier, b"")))
        elif action is Action.SCJ:
            # Section 5.6: the rejected packet from its Code field on, with a fresh Identifier.
            rejected = packet.encode() if packet is not None else b""
            effects.append(Send(ControlPacket(Code.CODE_REJECT, self._new_identifier(), rejected)))
        elif action is Action.SER and packet is not None:
            effects.append(SendEchoReply(packet))

    def _configure_request_packet(self, event: Event) -> ControlPacket:
        data = encode_options(self.policy.request())
        previous = self._request
        if (
            event is Event.TO_PLUS
            and previous is not None
            and not previous.answered
            and previous.data == data
        ):
            identifier = previous.identifier  # a retransmission (section 5.1 allows the same Id)
        else:
            identifier = self._new_identifier()
        self._request = _Request(identifier, data)
        return ControlPacket(Code.CONFIGURE_REQUEST, identifier, data)

    def _new_identifier(self) -> int:
        identifier = self._next_identifier
        self._next_identifier = (identifier + 1) % 256
        return identifier
