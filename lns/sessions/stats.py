"""What the node's sessions add up to since it started: set-ups, failures, latency, traffic.

The supervisor counts here as sessions open and end (never per packet): a session
that reached IPCP Opened is a set-up, with its latency from the ICRQ (RFC 2661
section 7.4.1; the ICCN when the L2TP layer gave no ICRQ time); one that ended
before is a failure, by the stage it had reached and why it ended. Traffic of the
sessions that ended is kept here; the live ones carry theirs in their records, so
the node's total is this plus the live sessions' (summed when someone asks).
"""

from __future__ import annotations

import enum
from collections import Counter

from lns.dataplane.forwarder import Traffic
from lns.histogram import SETUP_BUCKETS, Histogram
from lns.ppp.session import Phase
from lns.ppp.termination import TerminateCause

__all__ = ["SessionStats", "SetupFailure", "setup_failure"]


class SetupFailure(enum.StrEnum):
    """Why a session ended before it was up (a label of the set-up failure counter)."""

    LCP = "lcp"  # the proxy LCP refused, or LCP negotiation with the device failed
    DEVICE_AUTHENTICATION = "device_authentication"  # our own CHAP/PAP with the device
    AUTH_REJECTED = "auth_rejected"  # Access-Reject
    AAA_UNAVAILABLE = "aaa_unavailable"  # no RADIUS server answered
    NO_ADDRESS = "no_address"  # the pool had none, or failed
    IPCP = "ipcp"
    CALL_CLEARED = "call_cleared"  # the LAC cleared the call (or the tunnel went) first
    CLOSED_BY_NODE = "closed_by_node"  # an operator, a Disconnect-Request, a newer session


_CLOSED_BY_NODE = frozenset(
    {
        TerminateCause.ADMIN_RESET,
        TerminateCause.ADMIN_REBOOT,
        TerminateCause.NAS_REQUEST,
        TerminateCause.NAS_REBOOT,
        TerminateCause.PORT_UNNEEDED,
    }
)


def setup_failure(phase: Phase, cause: TerminateCause) -> SetupFailure:
    """The failure of a session that ended with ``cause`` while in PPP ``phase``."""
    if cause is TerminateCause.LOST_CARRIER:
        return SetupFailure.CALL_CLEARED
    if cause in _CLOSED_BY_NODE:
        return SetupFailure.CLOSED_BY_NODE
    if phase is Phase.AUTHORIZE:
        if cause is TerminateCause.SERVICE_UNAVAILABLE:
            return SetupFailure.AAA_UNAVAILABLE
        return SetupFailure.AUTH_REJECTED
    if phase is Phase.ADDRESS:
        return SetupFailure.NO_ADDRESS
    if phase is Phase.NETWORK:
        return SetupFailure.IPCP
    if phase is Phase.AUTHENTICATE:
        return SetupFailure.DEVICE_AUTHENTICATION
    return SetupFailure.LCP


class SessionStats:
    """Counters of the node's sessions since start; see the module docstring."""

    __slots__ = ("calls", "ended_traffic", "failures", "setup_latency", "setups")

    def __init__(self) -> None:
        self.calls = 0  # L2TP calls established (ICCN): sessions begun
        self.setups = 0  # sessions that reached IPCP Opened
        self.failures: Counter[SetupFailure] = Counter()
        self.setup_latency = Histogram(SETUP_BUCKETS)
        self.ended_traffic = Traffic()

    def begun(self) -> None:
        self.calls += 1

    def opened(self, latency: float) -> None:
        self.setups += 1
        self.setup_latency.observe(max(latency, 0.0))

    def failed(self, reason: SetupFailure) -> None:
        self.failures[reason] += 1

    def ended(self, traffic: Traffic) -> None:
        total = self.ended_traffic
        total.packets_up += traffic.packets_up
        total.octets_up += traffic.octets_up
        total.packets_down += traffic.packets_down
        total.octets_down += traffic.octets_down
