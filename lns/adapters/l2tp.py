"""The Twisted service around :class:`lns.l2tp.endpoint.LnsEndpoint`.

Feeds it datagrams and reactor time, sends what it returns, keeps one timer
at its next deadline, logs one line per tunnel and session event, and hands
calls and PPP frames to the layer above through :class:`CallHandler`.
Control traffic first (DESIGN.md section 6): the datagrams read in one wake-up
all go through the L2TP core, and its output (acknowledgements, HELLO acks,
ICRPs, CDNs) leaves the socket, before any of the PPP, RADIUS and database
work they start is handed to the layer above, so a HELLO read behind 63 ICCNs
is answered before the first of their sessions is set up.
On the node that work also goes through the node's `Backlog`, a slice per reactor
turn: the socket is read again, and the next HELLO answered, within about a slice
however far behind a storm has put the PPP, RADIUS and database work.
Every line that a peer's datagrams can cause at will (drops, refusals, tunnels
and calls that never came up) goes through a per-kind :class:`RateLimit` of
``PEER_LINES_PER_SECOND``, and says how many of its kind were not logged: a
flood shows in a few lines a second, not in one line per datagram.
On stop it sends StopCCN to every LAC, has the layer above end every session, and
waits (bounded by the node's stop grace) for the acks before it closes the socket.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from functools import partial
from typing import Protocol

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.logger import Logger, LogLevel

from lns.adapters.udp import Address, PktinfoUdpPort, Received
from lns.l2tp.avp import ResultCode
from lns.l2tp.effects import (
    CallCleared,
    CallEstablished,
    CallRefused,
    Effect,
    PacketDropped,
    PppFrameReceived,
    TunnelClosed,
    TunnelEstablished,
    TunnelRefused,
)
from lns.l2tp.endpoint import SHUTDOWN_REASON, LnsEndpoint
from lns.runtime import Backlog, DeadlineTimer, RateLimit, StopGrace, default_reactor

PEER_LINES_PER_SECOND = 2
# Datagrams read per wake-up on the node: the socket read dry (the core is cheap per
# datagram; the work they start waits in the node's backlog).
READ_BATCH = 512
# Within a read, the control output (acks, HELLO acks) leaves every this many datagrams.
CONTROL_FLUSH = 64
STOP_GRACE = 2.0  # seconds a stopping node waits for the LACs to acknowledge its StopCCNs
# What the layer above is told, in arrival order, once the control output has left.
_Upward = CallEstablished | CallCleared | PppFrameReceived


class CallHandler(Protocol):
    """The layer above L2TP (PPP): told of calls and their frames."""

    def call_established(self, event: CallEstablished) -> None: ...

    def ppp_frame_received(self, tunnel_id: int, session_id: int, frame: bytes) -> None: ...

    def call_cleared(self, event: CallCleared) -> None: ...

    def shutdown(self, reason: str) -> defer.Deferred[None]:
        """The node stops, every call cleared by its tunnel's StopCCN: fires when the
        layer above has ended its sessions."""


class NoCalls:
    """Ignores calls: what an L2TP service without a layer above does (tests of L2TP)."""

    def call_established(self, event: CallEstablished) -> None:
        return None

    def ppp_frame_received(self, tunnel_id: int, session_id: int, frame: bytes) -> None:
        return None

    def call_cleared(self, event: CallCleared) -> None:
        return None

    def shutdown(self, reason: str) -> defer.Deferred[None]:
        return defer.succeed(None)


class L2tpService(service.Service):
    log = Logger()

    def __init__(
        self,
        endpoint: LnsEndpoint,
        listen: Address,
        reactor: IReactorTime | None = None,
        calls: CallHandler | None = None,
        stop_grace: StopGrace | None = None,
        backlog: Backlog | None = None,
        read_batch: int = 64,
    ) -> None:
        self.reactor: IReactorTime = default_reactor(reactor)
        self.endpoint = endpoint
        self.listen = listen
        self.calls: CallHandler = calls if calls is not None else NoCalls()
        # The longest wait for the StopCCNs' acknowledgements (the node's, shared).
        self.stop_grace = stop_grace or StopGrace(self.reactor, STOP_GRACE)
        self.port: PktinfoUdpPort | None = None
        self._timer = DeadlineTimer(self.reactor, self._on_timer)
        self._limits: dict[str, RateLimit] = {}
        # Per kind, the count of lines left out that the last line logged showed; and
        # the summary due when a second with lines left out is over.
        self._shown: dict[str, int] = {}
        self._summaries: dict[str, IDelayedCall] = {}
        self._all_acked: defer.Deferred[None] | None = None
        # Where the layer above's work waits its turn (by default: none waits).
        self.backlog = backlog if backlog is not None else Backlog(self.reactor, None)
        self.read_batch = read_batch
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------

    def privilegedStartService(self) -> None:
        # Bound before the node starts anything else (lns.adapters.startup).
        self._bind()
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        port = self._bind()
        self.log.info(
            "L2TP listening on {host}:{port} ({lacs} LAC entries)",
            host=self.listen[0],
            port=port.port,
            lacs=len(self.endpoint.lacs),
        )
        super().startService()  # type: ignore[no-untyped-call]

    def _bind(self) -> PktinfoUdpPort:
        if self.port is None:
            host, port = self.listen
            bound = PktinfoUdpPort(
                host, port, self, IReactorFDSet(self.reactor), batch=self.read_batch
            )
            bound.start()
            self.port = bound
        return self.port

    def stopService(self) -> defer.Deferred[None]:
        """StopCCN to every LAC first; then every session ends (the layer above logs each
        and accounts it Admin-Reboot, not as a call lost); then the acks are waited for."""
        super().stopService()  # type: ignore[no-untyped-call]
        self.stop_grace.begin()
        # Calls and frames still in the backlog end with their tunnels' StopCCN below:
        # the layer above never knew them, so there is nothing of theirs to end.
        self._stopping = True
        tunnels = len(self.endpoint.tunnels)
        for effect in self.endpoint.shutdown(self.reactor.seconds()):
            if not isinstance(effect, CallCleared):
                self._log(effect)
        self._flush()
        acked: defer.Deferred[None] = defer.Deferred()
        if self.endpoint.closing:
            self.log.info("sent StopCCN to {tunnels} tunnels", tunnels=tunnels)
            self._all_acked = acked
            wait = self.stop_grace.remaining()
            grace = self.reactor.callLater(wait, self._acked_or_timeout)
            acked.addBoth(lambda result: grace.cancel() if grace.active() else None)
        else:
            acked.callback(None)
        ended = self.calls.shutdown(SHUTDOWN_REASON)
        both = defer.DeferredList([acked, ended], consumeErrors=True)
        return both.addCallback(lambda _: self._close())

    def _acked_or_timeout(self) -> None:
        if self._all_acked is not None:
            waiting, self._all_acked = self._all_acked, None
            if self.endpoint.closing:
                self.log.warn("some LACs did not acknowledge StopCCN before shutdown")
            waiting.callback(None)

    def _close(self) -> None:
        self._timer.cancel()
        for kind, summary in list(self._summaries.items()):
            summary.cancel()
            self._summarise(kind)  # the last count, before the process ends
        if self.port is not None:
            self.port.stop()
            self.port = None
        self.log.info("L2TP stopped")

    # --- input -------------------------------------------------------------------

    def datagram_received(self, data: bytes, peer: Address, local: str | None) -> None:
        self.datagrams_received(((data, peer, local),))

    def datagrams_received(self, batch: Iterable[Received]) -> None:
        """The datagrams of one read: the L2TP core takes them all and its output is sent
        (every `CONTROL_FLUSH` datagrams of a long read, and at its end); then the layer
        above gets, in order, the calls and frames they carried."""
        endpoint = self.endpoint
        now = self.reactor.seconds()
        upward: list[_Upward] = []
        for count, (data, peer, local) in enumerate(batch, 1):
            effects = endpoint.datagram_received(data, peer, now, local)
            if len(effects) == 1 and isinstance(effects[0], PppFrameReceived):
                upward.append(effects[0])  # the data path: no logging, no control output
            elif effects:
                upward += self._log_all(effects)
            if count % CONTROL_FLUSH == 0:
                self._flush()
        self._flush()
        self._deliver(upward)
        if self._all_acked is not None and not endpoint.closing:
            self._acked_or_timeout()

    def _on_timer(self) -> None:
        self._handle(self.endpoint.handle_timer(self.reactor.seconds()))

    # --- commands from the layer above ------------------------------------------------

    def send_ppp(self, tunnel_id: int, session_id: int, frame: bytes) -> bool:
        datagram = self.endpoint.send_ppp(tunnel_id, session_id, frame)
        if datagram is None or self.port is None:
            return False
        self.port.send(datagram.data, datagram.peer, datagram.local)
        return True

    def disconnect_call(
        self, tunnel_id: int, session_id: int, result: ResultCode, reason: str
    ) -> None:
        now = self.reactor.seconds()
        self._handle(self.endpoint.disconnect_call(tunnel_id, session_id, result, reason, now))

    def close_tunnel(self, tunnel_id: int, result: ResultCode, reason: str) -> bool:
        """Clear a tunnel with a StopCCN (an operator's request); False when there is none."""
        if tunnel_id not in self.endpoint.tunnels:
            return False
        now = self.reactor.seconds()
        self._handle(self.endpoint.close_tunnel(tunnel_id, result, reason, now))
        return True

    # --- output ------------------------------------------------------------------

    def _flush(self) -> None:
        port = self.port
        if port is not None:
            for datagram in self.endpoint.datagrams_to_send(self.reactor.seconds()):
                port.send(datagram.data, datagram.peer, datagram.local)
        self._timer.set(self.endpoint.get_timer())

    def _handle(self, effects: list[Effect]) -> None:
        """Log the core's effects, send its output, then tell the layer above."""
        upward = self._log_all(effects)
        self._flush()
        self._deliver(upward)

    def _log_all(self, effects: list[Effect]) -> list[_Upward]:
        """Log each effect; returns those for the layer above."""
        upward: list[_Upward] = []
        for effect in effects:
            self._log(effect)
            if isinstance(effect, CallEstablished | CallCleared | PppFrameReceived):
                upward.append(effect)
        return upward

    def _deliver(self, upward: list[_Upward]) -> None:
        """Tell the layer above, in order, each in its turn of the node's backlog."""
        add, tell = self.backlog.add, self._tell
        for effect in upward:
            add(partial(tell, effect))

    def _tell(self, effect: _Upward) -> None:
        if isinstance(effect, PppFrameReceived):
            if self._stopping:
                return
            self.calls.ppp_frame_received(effect.tunnel_id, effect.session_id, effect.frame)
        elif isinstance(effect, CallEstablished):
            if not self._stopping:
                self.calls.call_established(effect)
        else:
            self.calls.call_cleared(effect)

    def _limited(self, kind: str) -> RateLimit | None:
        """The limit for one kind of peer-driven line; None when this one is over it.

        A line logged shows how many of its kind were left out so far; when lines are
        left out, a summary follows a second later unless a line of the kind showed the
        count meanwhile (a flood that ends inside one second is still counted)."""
        limit = self._limits.get(kind)
        if limit is None:
            limit = self._limits[kind] = RateLimit(PEER_LINES_PER_SECOND)
        if limit.allow(self.reactor.seconds()):
            self._shown[kind] = limit.suppressed
            return limit
        if kind not in self._summaries:
            self._summaries[kind] = self.reactor.callLater(1.0, self._summarise, kind)
        return None

    def _summarise(self, kind: str) -> None:
        self._summaries.pop(kind, None)
        suppressed = self._limits[kind].suppressed
        if suppressed > self._shown.get(kind, 0):
            self._shown[kind] = suppressed
            self.log.warn(
                "more {kind} lines than {rate} a second [{suppressed} more not logged]",
                kind=kind,
                rate=PEER_LINES_PER_SECOND,
                suppressed=suppressed,
            )

    def _log(self, effect: Effect) -> None:
        if isinstance(effect, TunnelEstablished):
            self.log.info(
                "tunnel up: LAC {lac} ({host}) from {peer_host}:{peer_port}, "
                "tunnel {tunnel} (peer {peer_tunnel})",
                lac=effect.lac_name,
                host=effect.peer_hostname,
                peer_host=effect.peer[0],
                peer_port=effect.peer[1],
                tunnel=effect.tunnel_id,
                peer_tunnel=effect.peer_tunnel_id,
            )
        elif isinstance(effect, TunnelRefused):
            if (limit := self._limited("tunnel refused")) is not None:
                self.log.warn(
                    "tunnel refused from {peer_host}:{peer_port} (host name {host!r}): {reason}"
                    " [{suppressed} more not logged]",
                    peer_host=effect.peer[0],
                    peer_port=effect.peer[1],
                    host=effect.peer_hostname,
                    reason=effect.reason,
                    suppressed=limit.suppressed,
                )
        elif isinstance(effect, TunnelClosed) and not effect.was_established:
            if (limit := self._limited("tunnel not established")) is not None:
                self.log.warn(
                    "tunnel {tunnel} from LAC {lac} not established: {reason}"
                    " [{suppressed} more not logged]",
                    lac=effect.lac_name,
                    tunnel=effect.tunnel_id,
                    reason=effect.reason,
                    suppressed=limit.suppressed,
                )
        elif isinstance(effect, TunnelClosed):
            self.log.info(
                "tunnel down: LAC {lac}, tunnel {tunnel}, {side}: {reason}",
                lac=effect.lac_name,
                tunnel=effect.tunnel_id,
                side="closed by the LAC" if effect.by_peer else "closed by us",
                reason=effect.reason,
            )
        elif isinstance(effect, CallEstablished):
            call = effect.call
            kind = call.proxy_auth.authen_type if call.proxy_auth is not None else "none"
            auth = kind.name if isinstance(kind, enum.Enum) else str(kind)
            self.log.info(
                "call up: ICCID {iccid}, tunnel {tunnel} session {session}, "
                "proxy LCP {proxy_lcp}, proxy auth {auth}",
                iccid=call.iccid,
                tunnel=effect.tunnel_id,
                session=call.session_id,
                proxy_lcp="yes" if call.proxy_lcp is not None else "no",
                auth=auth,
            )
        elif isinstance(effect, CallCleared) and not effect.was_established:
            if (limit := self._limited("call not connected")) is not None:
                self.log.info(
                    "call down before it was connected: ICCID {iccid}, tunnel {tunnel} "
                    "session {session}: {reason} [{suppressed} more not logged]",
                    iccid=effect.iccid,
                    tunnel=effect.tunnel_id,
                    session=effect.session_id,
                    reason=effect.reason,
                    suppressed=limit.suppressed,
                )
        elif isinstance(effect, CallCleared):
            self.log.info(
                "call down: ICCID {iccid}, tunnel {tunnel} session {session}: {reason}",
                iccid=effect.iccid,
                tunnel=effect.tunnel_id,
                session=effect.session_id,
                reason=effect.reason,
            )
        elif isinstance(effect, CallRefused):
            if (limit := self._limited("call refused")) is not None:
                self.log.warn(
                    "call refused: calling number {calling!r}, tunnel {tunnel}: {reason}"
                    " [{suppressed} more not logged]",
                    calling=effect.calling_number,
                    tunnel=effect.tunnel_id,
                    reason=effect.result.message,
                    suppressed=limit.suppressed,
                )
        elif isinstance(effect, PacketDropped) and (limit := self._limited("dropped")):
            # Packets for a session we just cleared keep coming until the LAC has our
            # CDN (its device still sends): expected, so not a warning.
            level = LogLevel.debug if effect.counter == "unknown_session" else LogLevel.warn
            self.log.emit(
                level,
                "dropped a packet from {peer_host}:{peer_port} ({counter}): {reason}"
                " [{suppressed} more not logged]",
                peer_host=effect.peer[0],
                peer_port=effect.peer[1],
                counter=effect.counter,
                reason=effect.reason,
                suppressed=limit.suppressed,
            )
