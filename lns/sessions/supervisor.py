"""The node's sessions and their lifecycle policy, I/O-free (DESIGN.md section 2).

One :class:`SessionSupervisor` per node holds a :class:`~lns.sessions.record.SessionRecord`
per session and decides, as plain code, everything between the L2TP call and the
PPP automata on one side and AAA, the address pool, accounting and the data plane on
the other:

- A call established by an ICCN becomes a record with its Acct-Session-Id (made
  before the Access-Request, so authentication and accounting name it alike) and
  a :class:`~lns.ppp.session.PppSession`.
- Authentication goes out with the session's User-Name (one place formats it).
- The newest attach of a SIM wins (DESIGN.md section 5): when the pool hands over
  the live lease of an older session of the same SIM on this node, that session is
  closed (CDN, Stop) and its lease, which is no longer its own, is never released.
- An address RADIUS names outside every pool is used as it is, with no lease.
- IPCP Opened: forwarding starts (``OpenPath``) with the record's counters, the
  accounting Start goes out, Interim-Updates follow every Acct-Interim-Interval
  (the node's ``[aaa] interim_interval`` when RADIUS gave none; at least 60 s,
  RFC 2869 section 5.16), Session-Timeout counts from here and Idle-Timeout from the
  device's last forwarded packet.
- A session ends once: forwarding stops before its Stop is counted, the Stop
  carries Acct-Terminate-Cause, the lease is released, the call is cleared with the
  CDN result its cause maps to (unless the call went first), and the log line says
  how long it lived and what it moved.
- Sessions are found by key, Acct-Session-Id, ICCID, User-Name or address (the
  index Disconnect/CoA-Requests and the management API use).

Answers to the effects ``Authenticate`` and ``AllocateAddress`` come back as events
carrying the record's serial; an answer for a session that ended meanwhile is
dropped (a lease in it is released). Time is a number; one deadline from
:meth:`get_timer`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from lns.dataplane.forwarder import SessionPath
from lns.deadlines import Deadlines
from lns.l2tp.proxy import ProxyAuth, ProxyLcp
from lns.l2tp.result import CdnResult
from lns.pool.allocator import AddressOutsidePool, AllocationRequest, Lease, PoolUnavailable
from lns.ppp import session as ppp
from lns.ppp.auth import CallContext, Decision
from lns.ppp.session import PppSession, PppSettings
from lns.ppp.termination import TerminateCause
from lns.sessions.accounting import MIN_INTERIM_INTERVAL, AccountingSession, RecordKind
from lns.sessions.effects import (
    Account,
    AllocateAddress,
    Authenticate,
    CallKey,
    ClearCall,
    ClosePath,
    Effect,
    OpenPath,
    ReleaseAddress,
    SendFrame,
    SessionDown,
    SessionUp,
)
from lns.sessions.record import SessionRecord, SessionState, format_user_name
from lns.sessions.stats import SessionStats, setup_failure

__all__ = ["CDN_RESULT", "SessionQuery", "SessionSupervisor", "SupervisorSettings"]

IPv4 = ipaddress.IPv4Address

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
SUPERSEDED = "superseded by a new session of the same SIM"


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    node_name: str = "lns-1"
    username_template: str = "{iccid}"  # [aaa] username
    interim_interval: float = 600.0  # [aaa] interim_interval, when RADIUS gives none
    accounting: bool = True  # an accounting back end takes the records


class SessionQuery(Protocol):
    """What a Disconnect- or CoA-Request names sessions by (RFC 5176 section 3); None: any."""

    @property
    def acct_session_id(self) -> str | None: ...
    @property
    def user_name(self) -> str | None: ...
    @property
    def calling_station_id(self) -> str | None: ...
    @property
    def framed_ip_address(self) -> IPv4 | None: ...


class SessionSupervisor:
    """Every session of the node; see the module docstring."""

    def __init__(
        self,
        settings: SupervisorSettings,
        ppp_settings: PppSettings,
        acct_session_ids: Iterator[str],
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.ppp_settings = ppp_settings
        self._acct_session_ids = acct_session_ids
        self._rng = rng
        self._serial = 0
        self._by_key: dict[CallKey, SessionRecord] = {}
        self._by_serial: dict[int, SessionRecord] = {}
        self._by_acct: dict[str, SessionRecord] = {}
        self._by_iccid: dict[str, list[SessionRecord]] = {}
        self._by_address: dict[IPv4, SessionRecord] = {}
        self._deadlines: Deadlines[int] = Deadlines()
        self._setting_up = 0  # records in state SETTING_UP
        self.stats = SessionStats()

    # --- queries ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[SessionRecord]:
        return iter(list(self._by_key.values()))

    @property
    def setups_in_progress(self) -> int:
        """Sessions between their ICCN and IPCP Opened (or failure): the part of the
        node's setups in progress that L2TP's admission control cannot see."""
        return self._setting_up

    def get(self, key: CallKey) -> SessionRecord | None:
        return self._by_key.get(key)

    def by_acct_session_id(self, acct_session_id: str) -> SessionRecord | None:
        return self._by_acct.get(acct_session_id)

    def by_iccid(self, iccid: str) -> list[SessionRecord]:
        return list(self._by_iccid.get(iccid, ()))

    def by_address(self, address: IPv4) -> SessionRecord | None:
        return self._by_address.get(address)

    def find(self, query: SessionQuery) -> list[SessionRecord]:
        """The sessions matching every attribute the query gives (from the narrowest index)."""
        if query.acct_session_id is not None:
            found = self._by_acct.get(query.acct_session_id)
            candidates = [found] if found is not None else []
        elif query.calling_station_id is not None:
            candidates = self.by_iccid(query.calling_station_id)
        elif query.framed_ip_address is not None:
            by_address = self._by_address.get(query.framed_ip_address)
            candidates = [by_address] if by_address is not None else []
        else:
            candidates = list(self._by_key.values())
        return [record for record in candidates if _matches(record, query)]

    def get_timer(self) -> float | None:
        """The earliest deadline of any session."""
        return self._deadlines.earliest()

    # --- events from L2TP and the device ------------------------------------------------

    def call_established(
        self,
        context: CallContext,
        proxy_lcp: ProxyLcp | None,
        proxy_auth: ProxyAuth | None,
        now: float,
        requested_at: float | None = None,
    ) -> list[Effect]:
        """An ICCN arrived: a new session, PPP started (proxy LCP adopted or renegotiated).

        ``requested_at``: when the call's ICRQ arrived, if known (set-up latency).
        """
        effects: list[Effect] = []
        key = (context.tunnel_id, context.session_id)
        stale = self._by_key.get(key)
        if stale is not None:  # L2TP reused an ID whose call we never heard end
            stale.call_gone = True
            effects += self._ppp(stale, stale.ppp.call_cleared(now), now)
        context = dataclasses.replace(context, acct_session_id=next(self._acct_session_ids))
        self._serial += 1
        session: PppSession[Lease] = PppSession(
            context, self.ppp_settings, self._rng, proxy_lcp, proxy_auth
        )
        name = proxy_auth.name if proxy_auth is not None else b""
        user_name = format_user_name(self.settings.username_template, context.iccid, name)
        record = SessionRecord(self._serial, context, session, user_name, now, requested_at)
        self._setting_up += 1
        self.stats.begun()
        self._by_key[key] = record
        self._by_serial[record.serial] = record
        self._by_acct[record.acct_session_id] = record
        self._by_iccid.setdefault(record.iccid, []).append(record)
        return effects + self._ppp(record, session.start(now), now)

    def ppp_frame(self, key: CallKey, frame: bytes, now: float) -> list[Effect]:
        """A PPP frame of the call that the data plane did not take."""
        record = self._by_key.get(key)
        if record is None:
            return []
        return self._ppp(record, record.ppp.frame_received(frame, now), now)

    def call_cleared(self, key: CallKey, now: float) -> list[Effect]:
        """The call is gone (CDN from the LAC, tunnel down): the session ends, no CDN sent."""
        record = self._by_key.get(key)
        if record is None:
            return []
        record.call_gone = True
        return self._ppp(record, record.ppp.call_cleared(now), now)

    # --- answers from AAA and the pool --------------------------------------------------

    def authenticated(self, serial: int, decision: Decision, now: float) -> list[Effect]:
        record = self._by_serial.get(serial)
        if record is None:
            return []
        return self._ppp(record, record.ppp.authenticated(decision, now), now)

    def address_assigned(self, serial: int, lease: Lease, now: float) -> list[Effect]:
        record = self._by_serial.get(serial)
        if record is None:
            # The session ended while the pool worked: its lease goes back, but the leases
            # the allocation took over are gone all the same, so their sessions end too.
            return [*self._superseded(None, lease, now), ReleaseAddress(lease)]
        record.address = lease.address
        effects = self._superseded(record, lease, now)
        return effects + self._ppp(
            record, record.ppp.address_assigned(lease.address, lease, now), now
        )

    def address_refused(self, serial: int, error: Exception, now: float) -> list[Effect]:
        """The pool refused; ``error`` is its PoolError (or what went wrong on the way)."""
        record = self._by_serial.get(serial)
        if record is None:
            return []
        requested = record.decision.framed_address if record.decision is not None else None
        if isinstance(error, AddressOutsidePool) and error.pool is None and requested is not None:
            # RADIUS named an address no pool manages: it is the operator's to give,
            # used as it is, with no lease to record or release.
            record.address = requested
            return self._ppp(record, record.ppp.address_assigned(requested, None, now), now)
        if isinstance(error, PoolUnavailable):
            # The database is down: the LAC hears it is temporary; the detail is for our
            # log (the pool logs it once per outage), not for the operator's gateway.
            reason = "address pool temporarily unavailable"
        else:
            reason = str(error) or type(error).__name__
        return self._ppp(record, record.ppp.address_failed(reason, now), now)

    def _superseded(self, record: SessionRecord | None, lease: Lease, now: float) -> list[Effect]:
        """The pool moved live leases of this SIM to ``record``: their old sessions end."""
        effects: list[Effect] = []
        for taken in lease.taken_over:
            if taken.node != self.settings.node_name:
                continue  # another node's session: that node clears it (DESIGN.md section 9)
            old = self._by_key.get((taken.tunnel_id, taken.session_id))
            if old is None or old is record or old.lease is None or old.iccid != taken.iccid:
                continue
            if (old.lease.address, old.lease.generation) == (taken.address, taken.generation):
                effects += self.lease_lost(old, SUPERSEDED, now)
        return effects

    def lease_lost(self, record: SessionRecord, message: str, now: float) -> list[Effect]:
        """The session's lease now belongs to a newer session (of this node or another):
        close it (CDN, Stop), and never release the lease."""
        if self._by_serial.get(record.serial) is not record:
            return []
        record.lease_moved = True
        return self._ppp(record, record.ppp.close(TerminateCause.NAS_REQUEST, message, now), now)

    def abandon(self, message: str, now: float) -> list[Effect]:
        """This node was declared dead and adopted by another: its sessions end with a CDN
        but no Stop (the adopter wrote them) and no release (the adopter ended the leases)."""
        effects: list[Effect] = []
        for record in list(self._by_key.values()):
            record.accounted = False
            record.lease_moved = True
            effects += self.disconnect(record, TerminateCause.NAS_ERROR, message, now)
        return effects

    # --- commands -----------------------------------------------------------------------

    def disconnect(
        self, record: SessionRecord, cause: TerminateCause, message: str, now: float
    ) -> list[Effect]:
        """End a session from our side (admin kill, Disconnect-Request, shutdown)."""
        if self._by_serial.get(record.serial) is not record:
            return []
        return self._ppp(record, record.ppp.close(cause, message, now), now)

    def change_timeouts(
        self,
        record: SessionRecord,
        session_timeout: float | None,
        idle_timeout: float | None,
        now: float,
    ) -> None:
        """A CoA-Request (RFC 5176) changed the limits; None leaves one as it is, 0 removes it.

        The new Session-Timeout counts from the start of the session, as the first did.
        """
        if session_timeout is not None:
            record.session_timeout = session_timeout or None
        if idle_timeout is not None:
            record.idle_timeout = idle_timeout or None
        self._schedule(record)

    def close_tunnel(
        self, tunnel_id: int, cause: TerminateCause, message: str, now: float
    ) -> list[Effect]:
        """End every session of a tunnel about to be closed with a StopCCN (which clears
        its calls: no CDN each), their Stops saying ``cause``."""
        effects: list[Effect] = []
        for record in list(self._by_key.values()):
            if record.context.tunnel_id == tunnel_id:
                record.call_gone = True
                effects += self.disconnect(record, cause, message, now)
        return effects

    def shutdown(
        self, cause: TerminateCause, message: str, now: float, limit: int | None = None
    ) -> list[Effect]:
        """End every session (or the first ``limit`` of them), the node stopping: Stops
        saying ``cause`` and releases. Every tunnel has had its StopCCN, which clears its
        calls: no CDN or LCP Terminate-Request each."""
        effects: list[Effect] = []
        for record in list(itertools.islice(self._by_key.values(), limit)):
            record.call_gone = True
            effects += self.disconnect(record, cause, message, now)
        return effects

    # --- timers -------------------------------------------------------------------------

    def handle_timer(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for serial in self._deadlines.pop_due(now):
            record = self._by_serial.get(serial)
            if record is not None:
                effects += self._record_timers(record, now)
        return effects

    def _record_timers(self, record: SessionRecord, now: float) -> list[Effect]:
        due = {name for name, at in record.deadlines().items() if at <= now}
        if "session_timeout" in due:
            return self.disconnect(
                record, TerminateCause.SESSION_TIMEOUT, "Session-Timeout reached", now
            )
        if "idle_timeout" in due:
            return self.disconnect(record, TerminateCause.IDLE_TIMEOUT, "Idle-Timeout reached", now)
        effects: list[Effect] = []
        if "interim" in due:
            record.interim_at = now + record.interim_interval
            effects.append(Account(RecordKind.INTERIM, _snapshot(record)))
        ppp_timer = record.ppp.get_timer()
        if ppp_timer is not None and ppp_timer <= now:
            return effects + self._ppp(record, record.ppp.handle_timer(now), now)
        self._schedule(record)
        return effects

    def _schedule(self, record: SessionRecord) -> None:
        if self._by_serial.get(record.serial) is record:
            self._deadlines.set(record.serial, record.next_deadline())

    # --- what the PPP session asks for --------------------------------------------------

    def _ppp(
        self, record: SessionRecord, effects: list[ppp.Effect[Lease]], now: float
    ) -> list[Effect]:
        out: list[Effect] = []
        for effect in effects:
            if isinstance(effect, ppp.SendFrame):
                if not record.call_gone:
                    out.append(SendFrame(record.key, effect.frame))
            elif isinstance(effect, ppp.Authenticate):
                request = effect.request
                record.user_name = format_user_name(
                    self.settings.username_template, record.iccid, request.name
                )
                request = dataclasses.replace(request, user_name=record.user_name)
                out.append(Authenticate(record.serial, request))
            elif isinstance(effect, ppp.AllocateAddress):
                record.decision = record.ppp.decision
                out.append(AllocateAddress(record.serial, _allocation(record, effect)))
            elif isinstance(effect, ppp.ReleaseAddress):
                if not record.lease_moved:
                    out.append(ReleaseAddress(effect.lease))
            elif isinstance(effect, ppp.SessionOpened):
                out += self._opened(record, effect, now)
            elif isinstance(effect, ppp.SessionClosed):
                out += self._ended(record, effect.cause, effect.message, now)
        if record.ppp.phase is not ppp.Phase.CLOSED:
            record.phase = record.ppp.phase
        self._schedule(record)
        return out

    def _opened(self, record: SessionRecord, effect: ppp.SessionOpened, now: float) -> list[Effect]:
        decision = effect.decision
        if record.state is SessionState.SETTING_UP:
            self._setting_up -= 1
        record.state = SessionState.UP
        record.opened_at = now
        self.stats.opened(now - record.requested_at)
        record.decision = decision
        record.address = effect.address
        self._by_address[effect.address] = record
        record.session_timeout = decision.session_timeout
        record.idle_timeout = decision.idle_timeout
        record.path = SessionPath.for_session(
            record.key,
            effect.address,
            decision.framed_routes,
            record.ppp.lcp_policy.peer_mru,
            record.traffic,
        )
        out: list[Effect] = [OpenPath(record.path)]
        if self.settings.accounting:
            record.accounted = True
            interval = (
                self.settings.interim_interval
                if decision.interim_interval is None
                else decision.interim_interval
            )
            if interval:
                record.interim_interval = max(float(interval), MIN_INTERIM_INTERVAL)
                record.interim_at = now + record.interim_interval
            out.append(Account(RecordKind.START, _snapshot(record)))
        out.append(SessionUp(record.key, record.iccid, effect.address, record.acct_session_id))
        return out

    def _ended(
        self, record: SessionRecord, cause: TerminateCause, message: str, now: float
    ) -> list[Effect]:
        was_up = record.state is SessionState.UP
        if record.state is SessionState.SETTING_UP:
            self._setting_up -= 1
        record.state = SessionState.CLOSED
        self._forget(record)
        if not was_up:
            self.stats.failed(setup_failure(record.phase, cause))
        self.stats.ended(record.traffic)
        out: list[Effect] = []
        if record.path is not None:
            out.append(ClosePath(record.path))  # routes gone before the Stop is counted
        if record.accounted:
            record.accounted = False
            out.append(Account(RecordKind.STOP, _snapshot(record), cause))
        if not record.call_gone:
            out.append(ClearCall(record.key, CDN_RESULT[cause], message))
        traffic = record.traffic
        out.append(
            SessionDown(
                record.key,
                record.iccid,
                cause,
                message,
                was_up,
                now - record.created_at,
                traffic.octets_up,
                traffic.octets_down,
            )
        )
        return out

    def _forget(self, record: SessionRecord) -> None:
        if self._by_key.get(record.key) is record:
            del self._by_key[record.key]
        self._by_serial.pop(record.serial, None)
        self._deadlines.discard(record.serial)
        if self._by_acct.get(record.acct_session_id) is record:
            del self._by_acct[record.acct_session_id]
        same_sim = self._by_iccid.get(record.iccid, [])
        if record in same_sim:
            same_sim.remove(record)
            if not same_sim:
                del self._by_iccid[record.iccid]
        if record.address is not None and self._by_address.get(record.address) is record:
            del self._by_address[record.address]


def _allocation(record: SessionRecord, effect: ppp.AllocateAddress) -> AllocationRequest:
    return AllocationRequest(
        iccid=effect.iccid,
        tunnel_id=record.context.tunnel_id,
        session_id=record.context.session_id,
        pool=effect.pool,
        requested_address=effect.requested,
    )


def _snapshot(record: SessionRecord) -> AccountingSession:
    decision = record.decision
    traffic = record.traffic
    return AccountingSession(
        context=record.context,
        user_name=record.user_name,
        started_at=record.opened_at if record.opened_at is not None else record.created_at,
        framed_address=record.address,
        class_attribute=decision.class_attribute if decision is not None else None,
        octets_in=traffic.octets_up,
        octets_out=traffic.octets_down,
        packets_in=traffic.packets_up,
        packets_out=traffic.packets_down,
    )


def _matches(record: SessionRecord, query: SessionQuery) -> bool:
    return (
        (query.acct_session_id is None or record.acct_session_id == query.acct_session_id)
        and (query.calling_station_id is None or record.iccid == query.calling_station_id)
        and (query.user_name is None or record.user_name == query.user_name)
        and (query.framed_ip_address is None or record.address == query.framed_ip_address)
    )
