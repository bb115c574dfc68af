"""RFC 2661 section 7.4.1: an incoming call (LAC-originated session) as the LNS sees it.

ICRQ -> ICRP -> ICCN brings the call to ESTABLISHED; a CDN from either side
clears it. The tunnel (:mod:`lns.l2tp.tunnel`) routes messages here; this
object keeps what the ICRQ and ICCN said and frames the session's PPP
frames as data messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lns.l2tp.avp import Accm, CallErrors
from lns.l2tp.control import Iccn
from lns.l2tp.header import encode_data
from lns.l2tp.proxy import ProxyAuth, ProxyLcp, proxy_auth_from, proxy_lcp_from
from lns.l2tp.reliable import SEQUENCE_MODULUS


class CallState(enum.Enum):
    WAIT_CONNECT = "wait-connect"  # ICRP sent, waiting for ICCN
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass(slots=True, eq=False)
class IncomingCall:
    """One session in a tunnel: identifiers and what the LAC told us (the session's traffic is
    counted by the data plane, lns.dataplane.forwarder.Traffic)."""

    session_id: int  # ours, unique within the tunnel
    peer_session_id: int  # the LAC's
    tunnel_id: int
    peer_tunnel_id: int
    call_serial: int
    iccid: str
    called_number: str
    state: CallState = CallState.WAIT_CONNECT
    proxy_lcp: ProxyLcp | None = None
    proxy_auth: ProxyAuth | None = None
    sequencing_required: bool = False
    framing_type: int | None = None
    tx_connect_speed: int | None = None
    rx_connect_speed: int | None = None
    accm: Accm | None = None
    call_errors: CallErrors | None = None
    requested_at: float | None = None  # when its ICRQ arrived (set-up latency counts from it)
    _data_ns: int = 0

    def connect(self, iccn: Iccn) -> None:
        """Adopt the ICCN: framing, speeds, sequencing and the proxy AVPs for the PPP layer."""
        self.state = CallState.ESTABLISHED
        self.framing_type = iccn.framing_type
        self.tx_connect_speed = iccn.tx_connect_speed
        self.rx_connect_speed = iccn.rx_connect_speed
        self.sequencing_required = iccn.sequencing_required
        self.proxy_lcp = proxy_lcp_from(iccn)
        self.proxy_auth = proxy_auth_from(iccn)

    def frame_ppp(self, ppp: bytes) -> bytes:
        """A PPP frame of ours as a data message (Ns on every one when sequencing is required)."""
        if not self.sequencing_required:
            return encode_data(self.peer_tunnel_id, self.peer_session_id, ppp)
        ns = self._data_ns
        self._data_ns = (ns + 1) % SEQUENCE_MODULUS
        return encode_data(self.peer_tunnel_id, self.peer_session_id, ppp, ns=ns, nr=0)
