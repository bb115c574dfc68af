"""The session supervisor on Twisted: events in from L2TP, AAA and the pool; effects out.

:class:`SessionRunner` is the L2TP service's call handler and the dynamic
authorization server's session directory. It feeds the
:class:`~lns.sessions.supervisor.SessionSupervisor` what happens (calls, PPP
frames, answers of AAA and the pool, timers) and carries out what it returns:
frames down the call, Access-Requests, allocations and releases, forwarding,
accounting records, CDNs and log lines. Policy is the supervisor's; this module
only executes. An IP packet of an open session goes straight to the data plane.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from lns.adapters.dataplane import DataPlane
from lns.l2tp.avp import ResultCode
from lns.l2tp.effects import CallCleared, CallEstablished
from lns.pool.allocator import Lease
from lns.ppp.auth import CallContext, Decision
from lns.ppp.frame import ip_packet
from lns.ppp.termination import TerminateCause
from lns.runtime import DeadlineTimer
from lns.sessions import effects as fx
from lns.sessions.accounting import Accounting, RecordKind
from lns.sessions.backends import AddressAllocator, Authenticator
from lns.sessions.record import SessionRecord
from lns.sessions.supervisor import SessionQuery, SessionSupervisor

__all__ = ["CallLink", "SessionRunner"]

SHUTDOWN_SLICE = 500  # sessions ended per reactor turn when the node stops
ADMIN_REBOOT = TerminateCause.ADMIN_REBOOT


class CallLink(Protocol):
    """What the sessions need of the L2TP service."""

    def send_ppp(self, tunnel_id: int, session_id: int, frame: bytes) -> bool: ...

    def disconnect_call(
        self, tunnel_id: int, session_id: int, result: ResultCode, reason: str
    ) -> None: ...


class SessionRunner:
    log = Logger()

    def __init__(
        self,
        supervisor: SessionSupervisor,
        authenticator: Authenticator[defer.Deferred[Decision]],
        allocator: AddressAllocator[defer.Deferred[Any]],
        dataplane: DataPlane,
        clock: IReactorTime,
        accounting: Accounting[defer.Deferred[None]] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.authenticator = authenticator
        self.allocator = allocator
        self.dataplane = dataplane
        self.accounting = accounting
        self.clock = clock
        self.link: CallLink | None = None
        self._timer = DeadlineTimer(clock, self._on_timer)

    # --- the L2TP service's call handler ------------------------------------------------

    def call_established(self, event: CallEstablished) -> None:
        call = event.call
        context = CallContext(
            iccid=call.iccid,
            called_number=call.called_number,
            lac_name=event.lac_name,
            lac_hostname=event.lac_hostname,
            lac_address=event.lac_address,
            tunnel_id=event.tunnel_id,
            session_id=call.session_id,
            tx_connect_speed=call.tx_connect_speed,
            rx_connect_speed=call.rx_connect_speed,
        )
        now = self.clock.seconds()
        self._run(
            self.supervisor.call_established(
                context, call.proxy_lcp, call.proxy_auth, now, call.requested_at
            )
        )

    def ppp_frame_received(self, tunnel_id: int, session_id: int, frame: bytes) -> None:
        key = (tunnel_id, session_id)
        record = self.supervisor.get(key)
        if record is not None and record.path is not None:
            packet = ip_packet(frame)
            if packet is not None:  # the data path: an IP packet of an open session
                self.dataplane.from_session(record.path, packet)
                return
        self._run(self.supervisor.ppp_frame(key, frame, self.clock.seconds()))

    def call_cleared(self, event: CallCleared) -> None:
        key = (event.tunnel_id, event.session_id)
        self._run(self.supervisor.call_cleared(key, self.clock.seconds()))

    def shutdown(self, reason: str) -> defer.Deferred[None]:
        """The node stops (StopCCNs sent): every session ends with an Admin-Reboot Stop, a
        slice a reactor turn, the database storing the slices before meanwhile."""
        ended: defer.Deferred[None] = defer.Deferred()

        def next_slice() -> None:
            left, now = len(self.supervisor), self.clock.seconds()
            self._run(self.supervisor.shutdown(ADMIN_REBOOT, reason, now, SHUTDOWN_SLICE))
            if 0 < len(self.supervisor) < left:
                self.clock.callLater(0, next_slice)
            else:
                ended.callback(None)

        next_slice()
        return ended

    # --- the dynamic authorization server's session directory (RFC 5176) ---------------

    def find(self, match: SessionQuery) -> list[object]:
        return list(self.supervisor.find(match))

    def disconnect(self, handle: object) -> None:
        self.close(
            handle, TerminateCause.ADMIN_RESET, "disconnected by a RADIUS Disconnect-Request"
        )

    def change(
        self, handle: object, session_timeout: float | None, idle_timeout: float | None
    ) -> None:
        if isinstance(handle, SessionRecord):
            now = self.clock.seconds()
            self.supervisor.change_timeouts(handle, session_timeout, idle_timeout, now)
            self._run([])

    def close(self, handle: object, cause: TerminateCause, message: str) -> None:
        """End a session from our side (Disconnect-Request, management API)."""
        if isinstance(handle, SessionRecord):
            now = self.clock.seconds()
            self._run(self.supervisor.disconnect(handle, cause, message, now))

    def close_tunnel(self, tunnel_id: int, cause: TerminateCause, message: str) -> None:
        """End every session of a tunnel that is about to get a StopCCN (no CDN each)."""
        now = self.clock.seconds()
        self._run(self.supervisor.close_tunnel(tunnel_id, cause, message, now))

    def lease_lost(self, record: SessionRecord) -> None:
        """Another node took the session's lease over (a newer attach of the SIM there)."""
        message = "the SIM attached again on another node"
        self._run(self.supervisor.lease_lost(record, message, self.clock.seconds()))

    def abandon(self, message: str) -> None:
        self._run(self.supervisor.abandon(message, self.clock.seconds()))

    # --- effects ------------------------------------------------------------------------

    def _run(self, effects: list[fx.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, fx.SendFrame):
                if self.link is not None:
                    self.link.send_ppp(effect.key[0], effect.key[1], effect.frame)
            elif isinstance(effect, fx.Authenticate):
                self._authenticate(effect)
            elif isinstance(effect, fx.AllocateAddress):
                self._allocate(effect)
            elif isinstance(effect, fx.ReleaseAddress):
                self._release(effect.lease)
            elif isinstance(effect, fx.OpenPath):
                self.dataplane.session_opened(effect.path)
            elif isinstance(effect, fx.ClosePath):
                self.dataplane.session_closed(effect.path)
            elif isinstance(effect, fx.Account):
                self._account(effect)
            elif isinstance(effect, fx.ClearCall):
                if self.link is not None:
                    result = ResultCode(effect.result, 0, effect.message[:200])
                    self.link.disconnect_call(effect.key[0], effect.key[1], result, effect.message)
            else:
                self._log(effect)
        self._timer.set(self.supervisor.get_timer())

    def _authenticate(self, effect: fx.Authenticate) -> None:
        iccid = effect.request.context.iccid

        def unreachable(failure: Failure) -> Decision:
            self.log.failure("AAA back end failed for ICCID {iccid}", failure, iccid=iccid)
            return Decision(False, reason="AAA back end error", reachable=False)

        answer = self.authenticator.authenticate(effect.request).addErrback(unreachable)
        answer.addCallback(
            lambda decision: self._run(
                self.supervisor.authenticated(effect.serial, decision, self.clock.seconds())
            )
        )

    def _allocate(self, effect: fx.AllocateAddress) -> None:
        def assigned(lease: Lease) -> None:
            self._run(self.supervisor.address_assigned(effect.serial, lease, self.clock.seconds()))

        def refused(failure: Failure) -> None:
            error = failure.value
            if not isinstance(error, Exception):
                error = RuntimeError(str(error))
            self._run(self.supervisor.address_refused(effect.serial, error, self.clock.seconds()))

        self.allocator.allocate(effect.request).addCallbacks(assigned, refused)

    def _release(self, lease: Lease) -> None:
        def failed(failure: Failure) -> None:
            # The lease stays recorded; `lns-admin lease release` or the next start frees it.
            self.log.error(
                "could not release {address}: {reason}",
                address=str(lease.address),
                reason=failure.getErrorMessage(),
            )

        self.allocator.release(lease).addErrback(failed)

    def _account(self, effect: fx.Account) -> None:
        accounting = self.accounting
        if accounting is None:
            return
        if effect.kind is RecordKind.START:
            done = accounting.session_started(effect.session)
        elif effect.kind is RecordKind.INTERIM:
            done = accounting.interim(effect.session)
        else:
            assert effect.cause is not None
            done = accounting.session_stopped(effect.session, effect.cause)
        done.addErrback(lambda failure: self.log.failure("accounting record not spooled", failure))

    def _log(self, effect: fx.SessionUp | fx.SessionDown) -> None:
        if isinstance(effect, fx.SessionUp):
            self.log.info(
                "session up: ICCID {iccid}, address {address}, tunnel {key[0]} session {key[1]}"
                ", Acct-Session-Id {acct_session_id}",
                iccid=effect.iccid,
                address=str(effect.address),
                key=effect.key,
                acct_session_id=effect.acct_session_id,
            )
        else:
            self.log.info(
                "session down: ICCID {iccid}, tunnel {key[0]} session {key[1]}, after"
                " {duration:.1f} s ({octets_in} octets in, {octets_out} out): {reason} ({cause})",
                iccid=effect.iccid,
                key=effect.key,
                duration=effect.duration,
                octets_in=effect.octets_in,
                octets_out=effect.octets_out,
                reason=effect.message,
                cause=effect.cause.name.lower().replace("_", "-"),
            )

    def _on_timer(self) -> None:
        self._run(self.supervisor.handle_timer(self.clock.seconds()))
