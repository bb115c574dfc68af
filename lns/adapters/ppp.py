"""The PPP layer on Twisted: one :class:`~lns.ppp.session.PppSession` per L2TP call.

Carries out the sessions' effects: frames go down the L2TP call, Authenticate
goes to the AAA back end, AllocateAddress and ReleaseAddress to the address
pool, SessionClosed becomes a CDN with the result code its cause maps to.
Every session's next deadline lives in one heap behind one reactor timer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aaa.radius.accounting import AccountingSession
from lns.dataplane.forwarder import SessionPath
from lns.deadlines import Deadlines
from lns.l2tp.avp import ResultCode
from lns.l2tp.effects import CallCleared, CallEstablished
from lns.l2tp.result import CdnResult
from lns.l2tp.session import IncomingCall
from lns.pool.allocator import AddressOutsidePool, AllocationRequest, IccidHasLease, Lease
from lns.ppp.auth import AuthRequest, CallContext, Decision
from lns.ppp.frame import ip_packet
from lns.ppp.session import (
    AllocateAddress,
    Authenticate,
    Effect,
    PppSession,
    PppSettings,
    ReleaseAddress,
    SendFrame,
    SessionClosed,
    SessionOpened,
)
from lns.ppp.termination import TerminateCause
from lns.runtime import DeadlineTimer

CallKey = tuple[int, int]  # (our tunnel ID, our session ID)

# The CDN Result Code (RFC 2661 section 4.4.2) sent for each cause (RFC 2866 section 5.10).
CDN_RESULT: dict[TerminateCause, CdnResult] = {
    TerminateCause.USER_REQUEST: CdnResult.ADMINISTRATIVE,
    TerminateCause.LOST_CARRIER: CdnResult.LOST_CARRIER,
    TerminateCause.LOST_SERVICE: CdnResult.LOST_CARRIER,
    TerminateCause.IDLE_TIMEOUT: CdnResult.TIMEOUT,
    TerminateCause.SESSION_TIMEOUT: CdnResult.TIMEOUT,
    TerminateCause.ADMIN_RESET: CdnResult.ADMINISTRATIVE,
    TerminateCause.ADMIN_REBOOT: CdnResult.ADMINISTRATIVE,
    TerminateCause.PORT_ERROR: CdnResult.GENERAL_ERROR,
    TerminateCause.NAS_ERROR: CdnResult.GENERAL_ERROR,
    TerminateCause.NAS_REQUEST: CdnResult.ADMINISTRATIVE,
    TerminateCause.NAS_REBOOT: CdnResult.ADMINISTRATIVE,
    TerminateCause.PORT_UNNEEDED: CdnResult.ADMINISTRATIVE,
    TerminateCause.SERVICE_UNAVAILABLE: CdnResult.TEMPORARY_LACK_OF_FACILITIES,
    TerminateCause.USER_ERROR: CdnResult.GENERAL_ERROR,
}


def session_key(lease: Lease) -> CallKey:
    return (lease.tunnel_id, lease.session_id)


class SessionQuery(Protocol):
    """What a Disconnect- or CoA-Request names a session by (RFC 5176 section 3)."""

    @property
    def acct_session_id(self) -> str | None: ...
    @property
    def user_name(self) -> str | None: ...
    @property
    def calling_station_id(self) -> str | None: ...
    @property
    def framed_ip_address(self) -> ipaddress.IPv4Address | None: ...


class Accounting(Protocol):
    """RADIUS accounting (aaa.radius.accounting.RadiusAccounting)."""

    def new_acct_session_id(self) -> str: ...

    def session_started(
        self, info: AccountingSession, current: Callable[[], AccountingSession] | None = None
    ) -> defer.Deferred[None]: ...

    def session_stopped(
        self, info: AccountingSession, cause: TerminateCause
    ) -> defer.Deferred[None]: ...


class Authenticator(Protocol):
    """The AAA back end (RADIUS in production)."""

    def authenticate(self, request: AuthRequest) -> defer.Deferred[Decision]: ...


class AddressAllocator(Protocol):
    """The address pool (SQL in production)."""

    def allocate(self, request: AllocationRequest) -> defer.Deferred[Lease]: ...

    def release(self, lease: Lease) -> defer.Deferred[None]: ...


class CallLink(Protocol):
    """What the PPP layer needs of the L2TP service."""

    def send_ppp(self, tunnel_id: int, session_id: int, frame: bytes) -> bool: ...

    def disconnect_call(
        self, tunnel_id: int, session_id: int, result: ResultCode, reason: str
    ) -> None: ...


class SessionDataPlane(Protocol):
    """The data plane (lns.adapters.dataplane.DataPlane): IP packets and routes."""

    def session_opened(
        self,
        key: CallKey,
        address: ipaddress.IPv4Address,
        routes: Sequence[ipaddress.IPv4Network],
        mru: int,
    ) -> SessionPath: ...

    def session_closed(self, key: CallKey) -> None: ...

    def from_session(self, key: CallKey, packet: bytes) -> bool: ...


class NoAuthenticator:
    """Refuses every session: the server runs without an AAA back end configured."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def authenticate(self, request: AuthRequest) -> defer.Deferred[Decision]:
        return defer.succeed(Decision(False, reason=self.reason, reachable=False))


class PppCalls:
    """The CallHandler of the L2TP service: PPP for every established call."""

    log = Logger()

    def __init__(
        self,
        settings: PppSettings,
        authenticator: Authenticator,
        allocator: AddressAllocator,
        clock: IReactorTime,
        rng: random.Random | None = None,
        username_template: str = "{iccid}",
        accounting: Accounting | None = None,
        dataplane: SessionDataPlane | None = None,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.allocator = allocator
        self.clock = clock
        self.link: CallLink | None = None
        self.sessions: dict[CallKey, PppSession] = {}
        self._rng = rng if rng is not None else random.Random()
        self._deadlines: Deadlines[CallKey] = Deadlines()
        self._timer = DeadlineTimer(clock, self._on_timer)
        self._released: dict[CallKey, defer.Deferred[None]] = {}
        self.username_template = username_template
        self.acct_session_ids: dict[CallKey, str] = {}
        self.accounting = accounting
        self._calls: dict[CallKey, IncomingCall] = {}
        self._accounted: dict[CallKey, tuple[PppSession, Callable[[], AccountingSession]]] = {}
        self.dataplane = dataplane
        # The sessions forwarding IP (from IPCP Opened to their end) and their counters.
        self.paths: dict[CallKey, tuple[PppSession, SessionPath]] = {}

    # --- CallHandler ----------------------------------------------------------------

    def call_established(self, event: CallEstablished) -> None:
        call = event.call
        key = (event.tunnel_id, call.session_id)
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
        session = PppSession(context, self.settings, self._rng, call.proxy_lcp, call.proxy_auth)
        self.sessions[key] = session
        self._calls[key] = call
        self._apply(key, session, session.start(self.clock.seconds()))

    def ppp_frame_received(self, tunnel_id: int, session_id: int, frame: bytes) -> None:
        key = (tunnel_id, session_id)
        session = self.sessions.get(key)
        if session is None:
            return
        forwarding = self.paths.get(key)
        if self.dataplane is not None and forwarding is not None:
            # The data path: an IP packet of an open session goes straight to the
            # data plane; everything else (LCP, IPCP, ...) to the session.
            packet = ip_packet(frame)
            if packet is not None and self.dataplane.from_session(key, packet):
                # Idle-Timeout counts what the device sent and was forwarded (a dropped,
                # spoofed packet does not keep a session alive).
                last_up = forwarding[1].last_up
                if last_up > session.last_activity:
                    session.last_activity = last_up
                session.counters.frames_in += 1
                session.counters.ip_packets_in += 1
                return
        effects = session.frame_received(frame, self.clock.seconds())
        if effects:
            self._apply(key, session, effects)

    def call_cleared(self, event: CallCleared) -> None:
        key = (event.tunnel_id, event.session_id)
        session = self.sessions.pop(key, None)
        if session is not None:
            self._apply(key, session, session.call_cleared(self.clock.seconds()))

    # --- commands ---------------------------------------------------------------------

    def close(self, key: CallKey, cause: TerminateCause, message: str) -> bool:
        """End a session from our side (admin kill, shutdown)."""
        session = self.sessions.get(key)
        if session is None:
            return False
        self._apply(key, session, session.close(cause, message, self.clock.seconds()))
        return True

    # --- session directory (RFC 5176 dynamic authorization) ----------------------------

    def find(self, match: SessionQuery) -> list[object]:
        """Keys of the live sessions matching every attribute the request gave."""
        found: list[object] = []
        for key, session in self.sessions.items():
            iccid = session.context.iccid
            if match.acct_session_id is not None and (
                self.acct_session_ids.get(key) != match.acct_session_id
            ):
                continue
            if match.calling_station_id is not None and iccid != match.calling_station_id:
                continue
            if match.user_name is not None and self.user_name(session) != match.user_name:
                continue
            if match.framed_ip_address is not None and session.address != match.framed_ip_address:
                continue
            found.append(key)
        return found

    def disconnect(self, handle: object) -> None:
        assert isinstance(handle, tuple)
        self.close(
            handle, TerminateCause.ADMIN_RESET, "disconnected by a RADIUS Disconnect-Request"
        )

    def change(
        self, handle: object, session_timeout: float | None, idle_timeout: float | None
    ) -> None:
        assert isinstance(handle, tuple)
        session = self.sessions.get(handle)
        if session is not None:
            session.change_timeouts(session_timeout, idle_timeout, self.clock.seconds())
            self._apply(handle, session, [])

    def user_name(self, session: PppSession) -> str:
        """The User-Name RADIUS knows the session by (the `[aaa] username` template)."""
        name = session.proxy_auth.name if session.proxy_auth is not None else b""
        return self.username_template.format(
            iccid=session.context.iccid, name=name.decode("utf-8", "replace")
        )

    # --- effects ----------------------------------------------------------------------

    def _apply(self, key: CallKey, session: PppSession, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendFrame):
                if self.link is not None:
                    self.link.send_ppp(key[0], key[1], effect.frame)
            elif isinstance(effect, Authenticate):
                self._authenticate(key, session, effect.request)
            elif isinstance(effect, AllocateAddress):
                self._allocate(key, session, effect)
            elif isinstance(effect, ReleaseAddress):
                self._release(effect.lease)
            elif isinstance(effect, SessionOpened):
                self._opened(key, session, effect)
            elif isinstance(effect, SessionClosed):
                self._closed(key, session, effect)
        if self.sessions.get(key) is session:
            self._deadlines.set(key, session.get_timer())
        else:
            self._deadlines.discard(key)
        self._timer.set(self._deadlines.earliest())

    def _feed(
        self, key: CallKey, session: PppSession, event: Callable[[float], list[Effect]]
    ) -> None:
        """Deliver an asynchronous result (AAA, pool) to the session that asked for it."""
        self._apply(key, session, event(self.clock.seconds()))

    def _authenticate(self, key: CallKey, session: PppSession, request: AuthRequest) -> None:
        def unreachable(failure: Failure) -> Decision:
            self.log.failure(
                "AAA back end failed for ICCID {iccid}", failure, iccid=request.context.iccid
            )
            return Decision(False, reason="AAA back end error", reachable=False)

        answer = self.authenticator.authenticate(request)
        answer.addErrback(unreachable)
        answer.addCallback(
            lambda decision: self._feed(
                key, session, lambda now: session.authenticated(decision, now)
            )
        )

    def _allocate(
        self, key: CallKey, session: PppSession, effect: AllocateAddress, retry: bool = True
    ) -> None:
        request = AllocationRequest(
            iccid=effect.iccid,
            tunnel_id=key[0],
            session_id=key[1],
            pool=effect.pool,
            requested_address=effect.requested,
        )

        def assigned(lease: Lease) -> None:
            self._feed(
                key, session, lambda now: session.address_assigned(lease.address, lease, now)
            )

        def failed(failure: Failure) -> None:
            error = failure.value
            outside = isinstance(error, AddressOutsidePool) and error.pool is None
            if outside and effect.requested is not None:
                # RADIUS named an address no pool manages: it is the operator's to
                # give; used as it is, with no lease to record or release.
                address = effect.requested
                self._feed(key, session, lambda now: session.address_assigned(address, None, now))
                return
            old = error.lease if isinstance(error, IccidHasLease) else None
            if retry and old is not None and self._supersede(old, session):
                released = self._released.pop(session_key(old), None)
                waiting = released if released is not None else defer.succeed(None)
                waiting.addBoth(lambda _: self._allocate(key, session, effect, retry=False))
                return
            reason = str(error) or type(error).__name__
            self._feed(key, session, lambda now: session.address_failed(reason, now))

        self.allocator.allocate(request).addCallbacks(assigned, failed)

    def _supersede(self, lease: Lease, newcomer: PppSession) -> bool:
        """A SIM attached again while its old session still holds an address here: the
        old session is closed (its call cleared with a CDN) so the new one gets the address.
        """
        old_key = session_key(lease)
        old = self.sessions.get(old_key)
        if old is None or old is newcomer or old.context.iccid != lease.iccid:
            return False
        self.log.info(
            "ICCID {iccid} attached again: closing its previous session "
            "(tunnel {tunnel} session {session})",
            iccid=lease.iccid,
            tunnel=old_key[0],
            session=old_key[1],
        )
        message = "superseded by a new session of the same SIM"
        self._apply(
            old_key, old, old.close(TerminateCause.NAS_REQUEST, message, self.clock.seconds())
        )
        return True

    def _release(self, lease: object) -> None:
        assert isinstance(lease, Lease)
        done = self.allocator.release(lease)
        # Kept so a newcomer of the same SIM can wait for the address (see _supersede).
        self._released[session_key(lease)] = done
        done.addBoth(self._forget_release, session_key(lease), done)

        def failed(failure: Failure) -> None:
            # The lease stays recorded; `lns-admin lease release` or the next start frees it.
            self.log.error(
                "could not release {address}: {reason}",
                address=str(lease.address),
                reason=str(failure.value),
            )

        done.addErrback(failed)

    def _forget_release(self, result: object, key: CallKey, done: defer.Deferred[None]) -> object:
        if self._released.get(key) is done:
            del self._released[key]
        return result

    def _opened(self, key: CallKey, session: PppSession, effect: SessionOpened) -> None:
        if self.dataplane is not None:
            path = self.dataplane.session_opened(
                key,
                effect.address,
                effect.decision.framed_routes,
                session.lcp_policy.peer_mru,
            )
            self.paths[key] = (session, path)
        call = self._calls.get(key)
        if self.accounting is not None and call is not None:
            self._start_accounting(key, session, call, effect)
        self.log.info(
            "session up: ICCID {iccid}, address {address}, tunnel {tunnel} session {session}",
            iccid=session.context.iccid,
            address=str(effect.address),
            tunnel=key[0],
            session=key[1],
        )

    def _start_accounting(
        self, key: CallKey, session: PppSession, call: IncomingCall, effect: SessionOpened
    ) -> None:
        assert self.accounting is not None
        decision = effect.decision
        context = session.context
        info = AccountingSession(
            acct_session_id=self.accounting.new_acct_session_id(),
            iccid=context.iccid,
            nas_port=key[1],
            started_at=self.clock.seconds(),
            called_number=context.called_number,
            ppp_name=(session.proxy_auth.name if session.proxy_auth else b"").decode(
                "utf-8", "replace"
            ),
            framed_address=effect.address,
            class_attribute=decision.class_attribute,
            interim_interval=decision.interim_interval,
            lac_address=context.lac_address,
            lac_hostname=context.lac_hostname,
        )

        forwarding = self.paths.get(key)
        path = forwarding[1] if forwarding is not None and forwarding[0] is session else None

        def current() -> AccountingSession:
            if path is not None:  # the data plane's IP counters: what the user moved
                return dataclasses.replace(
                    info,
                    octets_in=path.octets_up,
                    octets_out=path.octets_down,
                    packets_in=path.packets_up,
                    packets_out=path.packets_down,
                )
            return dataclasses.replace(
                info,
                octets_in=call.octets_in,
                octets_out=call.octets_out,
                packets_in=call.frames_in,
                packets_out=call.frames_out,
            )

        self.acct_session_ids[key] = info.acct_session_id
        self._accounted[key] = (session, current)
        self.accounting.session_started(info, current).addErrback(self._accounting_failed)

    def _accounting_failed(self, failure: Failure) -> None:
        self.log.failure("accounting record not spooled", failure)

    def _closed(self, key: CallKey, session: PppSession, effect: SessionClosed) -> None:
        forwarding = self.paths.get(key)
        if forwarding is not None and forwarding[0] is session:
            del self.paths[key]
            if self.dataplane is not None:
                self.dataplane.session_closed(key)  # routes gone before the Stop is counted
        accounted = self._accounted.get(key)
        if accounted is not None and accounted[0] is session:
            del self._accounted[key]
            self.acct_session_ids.pop(key, None)
            if self.accounting is not None:
                stopped = self.accounting.session_stopped(accounted[1](), effect.cause)
                stopped.addErrback(self._accounting_failed)
        if self._calls.get(key) is not None and self.sessions.get(key) in (session, None):
            self._calls.pop(key, None)
        self.log.info(
            "session down: ICCID {iccid}, tunnel {tunnel} session {session}: {reason}",
            iccid=session.context.iccid,
            tunnel=key[0],
            session=key[1],
            reason=effect.message,
        )
        if self.sessions.get(key) is not session:
            return  # the call is already gone (CDN from the LAC, tunnel down)
        del self.sessions[key]
        if self.link is not None:
            result = ResultCode(CDN_RESULT[effect.cause], 0, effect.message[:200])
            self.link.disconnect_call(key[0], key[1], result, effect.message)

    def _on_timer(self) -> None:
        now = self.clock.seconds()
        for key in self._deadlines.pop_due(now):
            session = self.sessions.get(key)
            if session is not None:
                self._apply(key, session, session.handle_timer(now))
        self._timer.set(self._deadlines.earliest())
