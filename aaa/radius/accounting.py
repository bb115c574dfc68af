"""RADIUS accounting through a durable spool (DESIGN.md section 4, RFC 2866, RFC 2869).

Every record (Start, Interim-Update, Stop, Accounting-On, Accounting-Off) is
written to the `accounting_spool` table first, then sent with
`RadiusClient.send_acct`, and deleted only once a server acknowledged it. A
record no server acknowledged stays and is tried again later (backing off from
`retry_initial` to `retry_cap` seconds); records left by a previous run of this
node (a restart, a crash) are sent by :meth:`RadiusAccounting.start`. One pump
sends the node's records one at a time in spool order, so the records of a
session arrive in the order they were made; each carries Acct-Delay-Time, the
seconds since it was made (RFC 2866 section 5.2).

The spool's SQL runs on a thread pool of one thread: the records are written in
the order they are made, and `seq` needs one writer per node.

Counters are 64-bit: the low 32 bits go in Acct-Input/Output-Octets and the high
ones in Acct-Input/Output-Gigawords (RFC 2869 section 5.1). Acct-Input-* count
what the device sent (received from the LAC), Acct-Output-* what we sent it.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Engine
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from aaa.radius import spool
from aaa.radius.auth import AccessRequestSettings
from aaa.radius.client import RadiusUnavailable
from aaa.radius.packet import AttributeValue, RadiusPacketError, Reply, Request, accounting_request
from lns.deadlines import Deadlines
from lns.ppp.termination import TerminateCause
from lns.runtime import DeadlineTimer, run_tracked

__all__ = [
    "AccountingSession",
    "AcctSender",
    "AcctSessionIds",
    "AcctStatus",
    "RadiusAccounting",
    "RadiusAccountingService",
    "session_attributes",
]

_T = TypeVar("_T")
_TAG = ":1"
_WORD = 1 << 32
# RFC 2869 section 5.16: an Acct-Interim-Interval below 60 s should not be used.
MIN_INTERIM_INTERVAL = 60.0
# The longest Acct-Session-Id the spool's column holds.
ACCT_SESSION_ID_LENGTH = 64

log = Logger()


class AcctStatus(enum.IntEnum):
    """Acct-Status-Type (RFC 2866 section 5.1)."""

    START = 1
    STOP = 2
    INTERIM_UPDATE = 3
    ACCOUNTING_ON = 7
    ACCOUNTING_OFF = 8


class AcctSender(Protocol):
    """What the accounting needs of a RadiusClient."""

    def send_acct(self, request: Request) -> defer.Deferred[Reply]: ...


class AcctSessionIds:
    """Acct-Session-Ids unique across nodes and restarts: "{node}-{start ms hex}-{n hex}".

    The middle part is the time this generator was made, in milliseconds since
    the epoch: a restarted node starts a new series. The node name is cut so
    that an id fits the spool's 64 characters.
    """

    def __init__(self, node: str, clock: IReactorTime) -> None:
        started = int(clock.seconds() * 1000)
        self.prefix = f"{node[:36]}-{started:x}"
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"{self.prefix}-{self._next:x}"


@dataclass(frozen=True, slots=True)
class AccountingSession:
    """What accounting says about one PPP session; counters as of the record.

    `started_at` is the reactor time (epoch seconds) the session opened (IPCP up).
    `interim_interval`: seconds between Interim-Updates, None for the node's
    `[aaa] interim_interval`, 0 for none (Acct-Interim-Interval of the Access-Accept
    when it had one). Make new counters with `dataclasses.replace`.
    """

    acct_session_id: str
    iccid: str
    nas_port: int  # our L2TP session ID
    started_at: float
    called_number: str = ""
    ppp_name: str = ""  # the `{name}` of the `[aaa] username` template
    framed_address: ipaddress.IPv4Address | None = None
    class_attribute: bytes | None = None
    octets_in: int = 0  # from the device (IncomingCall.octets_in)
    octets_out: int = 0  # to the device (IncomingCall.octets_out)
    packets_in: int = 0  # IncomingCall.frames_in
    packets_out: int = 0  # IncomingCall.frames_out
    interim_interval: float | None = None
    lac_address: str = ""  # Tunnel-Client-Endpoint
    lac_hostname: str = ""  # Tunnel-Client-Auth-ID


def session_attributes(
    settings: AccessRequestSettings,
    status: AcctStatus,
    info: AccountingSession,
    now: float,
    cause: TerminateCause | None = None,
) -> list[tuple[str, AttributeValue]]:
    """The attributes of a Start, Interim-Update or Stop for `info` at `now`."""
    user_name = settings.username.format(iccid=info.iccid, name=info.ppp_name)
    attributes: list[tuple[str, AttributeValue]] = [
        ("Acct-Status-Type", int(status)),
        ("Acct-Session-Id", info.acct_session_id),
        ("User-Name", user_name),
        ("Calling-Station-Id", info.iccid),
    ]
    if info.called_number:
        attributes.append(("Called-Station-Id", info.called_number))
    attributes += _nas_attributes(settings)
    attributes += [
        ("NAS-Port", info.nas_port),
        ("NAS-Port-Type", "Virtual"),
        ("Service-Type", "Framed-User"),
        ("Framed-Protocol", "PPP"),
        ("Acct-Authentic", "RADIUS"),
    ]
    if info.framed_address is not None:
        attributes.append(("Framed-IP-Address", info.framed_address))
    if info.class_attribute:
        attributes.append(("Class", info.class_attribute))
    attributes += [
        ("Tunnel-Type" + _TAG, "L2TP"),
        ("Tunnel-Medium-Type" + _TAG, _medium(info.lac_address)),
    ]
    if info.lac_address:
        attributes.append(("Tunnel-Client-Endpoint" + _TAG, info.lac_address))
    if settings.server_endpoint is not None:
        attributes.append(("Tunnel-Server-Endpoint" + _TAG, str(settings.server_endpoint)))
    if info.lac_hostname:
        attributes.append(("Tunnel-Client-Auth-Id" + _TAG, info.lac_hostname))
    if status is not AcctStatus.START:
        attributes += [
            ("Acct-Session-Time", max(0, int(now - info.started_at))),
            ("Acct-Input-Octets", info.octets_in % _WORD),
            ("Acct-Input-Gigawords", (info.octets_in // _WORD) % _WORD),
            ("Acct-Output-Octets", info.octets_out % _WORD),
            ("Acct-Output-Gigawords", (info.octets_out // _WORD) % _WORD),
            ("Acct-Input-Packets", info.packets_in % _WORD),
            ("Acct-Output-Packets", info.packets_out % _WORD),
        ]
    if cause is not None:
        attributes.append(("Acct-Terminate-Cause", int(cause)))
    attributes.append(("Event-Timestamp", int(now)))
    return attributes


def _nas_attributes(settings: AccessRequestSettings) -> list[tuple[str, AttributeValue]]:
    attributes: list[tuple[str, AttributeValue]] = [("NAS-Identifier", settings.nas_identifier)]
    if isinstance(settings.nas_address, ipaddress.IPv4Address):
        attributes.append(("NAS-IP-Address", settings.nas_address))
    else:
        attributes.append(("NAS-IPv6-Address", settings.nas_address))
    return attributes


def _medium(lac_address: str) -> str:
    try:
        version = ipaddress.ip_address(lac_address).version
    except ValueError:
        version = 4
    return "IPv6" if version == 6 else "IPv4"


class _Interims:
    """What the Interim-Updates of one session need (their times are in one heap)."""

    __slots__ = ("current", "interval")

    def __init__(self, current: Callable[[], AccountingSession], interval: float) -> None:
        self.current = current
        self.interval = interval


class RadiusAccounting:
    """Accounting-Requests of one node, through the spool, in order, until acknowledged.

    `client` is the node's RadiusClient (anything with `send_acct`), `engine` the
    lease database (its migrations made `accounting_spool`), `node` the
    `[lns] node_name`. Every record method returns a Deferred that fires once the
    record is in the spool (or, if the database failed, once it was sent without
    it); delivery follows. `flush()` waits for the pump.
    """

    def __init__(
        self,
        client: AcctSender,
        engine: Engine,
        node: str,
        settings: AccessRequestSettings,
        *,
        reactor: IReactorFromThreads | None = None,
        clock: IReactorTime | None = None,
        interim_interval: float = 600.0,
        retry_initial: float = 5.0,
        retry_cap: float = 300.0,
        batch: int = 100,
        window: int = 32,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor  # type: ignore[assignment]
        assert reactor is not None
        if clock is None:
            clock = IReactorTime(reactor)
        self.client = client
        self.engine = engine
        self.node = node
        self.settings = settings
        self.interim_interval = interim_interval
        self.retry_initial = retry_initial
        self.retry_cap = retry_cap
        self.batch = batch
        self.window = window  # records in flight at once (of different sessions)
        self.new_acct_session_id = AcctSessionIds(node, clock)
        self._reactor = reactor
        self._clock = clock
        self._threadpool = ThreadPool(minthreads=0, maxthreads=1, name="lns-acct-spool")
        self._running = False
        self._stopping = False
        self._pumping = False
        self._again = False
        self._everything = False  # the next pass ignores next_attempt_at (start, flush)
        self._retry_delay = retry_initial
        self._retry: IDelayedCall | None = None
        self._sending: set[defer.Deferred[Reply]] = set()
        # Records waiting for the spool's next transaction, with the Deferred each
        # caller holds; `_spooling` while a transaction runs (group commit).
        self._to_spool: list[tuple[str, int, list[tuple[str, Any]], datetime]] = []
        self._spooled_waiters: list[defer.Deferred[int]] = []
        self._spooling = False
        self._spool_drained: list[defer.Deferred[None]] = []
        self._idle_waiters: list[defer.Deferred[None]] = []
        self._in_flight: set[defer.Deferred[Any]] = set()
        self._interims: dict[str, _Interims] = {}
        # Every session's next Interim-Update in one heap behind one reactor timer (a
        # timer per session would cost each of tens of thousands a DelayedCall).
        self._interims_due: Deadlines[str] = Deadlines()
        self._interim_timer = DeadlineTimer(clock, self._send_interims)
        self.sent = 0
        self.acknowledged = 0
        self.failures = 0

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Start the spool's thread and send what earlier runs left, in order.

        Fires when that first pass is over (every old record tried once).
        """
        if self._running:
            return self.flush()
        self._running = True
        self._stopping = False
        self._threadpool.start()
        return self.flush()

    def stop(self) -> defer.Deferred[None]:
        """Stop at once: the record being sent and the rest stay spooled for the next start."""
        if not self._running:
            return defer.succeed(None)
        self._stopping = True
        self._running = False
        self._interim_timer.cancel()
        self._interims_due = Deadlines()
        self._interims.clear()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        for sending in list(self._sending):
            sending.cancel()

        def shut(_: object) -> None:
            self._threadpool.stop()

        def in_flight(_: object) -> defer.Deferred[Any]:
            return defer.DeferredList(list(self._in_flight), consumeErrors=True)

        d = self._wait_spooled()
        d.addCallback(in_flight)
        d.addCallback(self._wait_pump)
        d.addCallback(shut)
        return d

    def _wait_spooled(self) -> defer.Deferred[Any]:
        """Fires when the records handed to `_record` are all in the spool (or failed)."""
        if not self._spooling:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._spool_drained.append(waiter)
        return waiter

    def _wait_pump(self, _: object) -> defer.Deferred[None]:
        if not self._pumping:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def flush(self) -> defer.Deferred[None]:
        """Try every spooled record now, backoff or not; fires when the pump is idle again."""
        if not self._running:
            return defer.succeed(None)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._everything = True
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        self._kick()
        return waiter

    def idle(self) -> defer.Deferred[None]:
        """Fires when no pass is running (a record being retried later does not count)."""
        if not self._pumping:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    # --- records ----------------------------------------------------------------------

    def session_started(
        self,
        info: AccountingSession,
        current: Callable[[], AccountingSession] | None = None,
    ) -> defer.Deferred[None]:
        """Start. With `current` (the session's info with fresh counters), this object
        sends its Interim-Updates every interval until `session_stopped`."""
        now = self._clock.seconds()
        if current is not None and self._running:
            interval = self._interval(info)
            if interval:
                self._interims[info.acct_session_id] = _Interims(current, interval)
                self._interims_due.set(info.acct_session_id, now + interval)
                self._interim_timer.set(self._interims_due.earliest())
        return self._record(
            info.acct_session_id,
            AcctStatus.START,
            session_attributes(self.settings, AcctStatus.START, info, now),
        )

    def interim(self, info: AccountingSession) -> defer.Deferred[None]:
        """Interim-Update with the counters of `info`."""
        now = self._clock.seconds()
        return self._record(
            info.acct_session_id,
            AcctStatus.INTERIM_UPDATE,
            session_attributes(self.settings, AcctStatus.INTERIM_UPDATE, info, now),
        )

    def session_stopped(
        self, info: AccountingSession, cause: TerminateCause
    ) -> defer.Deferred[None]:
        """Stop with the final counters and Acct-Terminate-Cause; ends the Interim-Updates."""
        if self._interims.pop(info.acct_session_id, None) is not None:
            self._interims_due.discard(info.acct_session_id)
        now = self._clock.seconds()
        return self._record(
            info.acct_session_id,
            AcctStatus.STOP,
            session_attributes(self.settings, AcctStatus.STOP, info, now, cause),
        )

    def accounting_on(self) -> defer.Deferred[None]:
        """Accounting-On: this node (re)started, its sessions from before are over."""
        return self._node_record(AcctStatus.ACCOUNTING_ON)

    def accounting_off(self) -> defer.Deferred[None]:
        """Accounting-Off: this node stops cleanly."""
        return self._node_record(AcctStatus.ACCOUNTING_OFF)

    def _node_record(self, status: AcctStatus) -> defer.Deferred[None]:
        now = self._clock.seconds()
        acct_session_id = self.new_acct_session_id()
        attributes: list[tuple[str, AttributeValue]] = [
            ("Acct-Status-Type", int(status)),
            ("Acct-Session-Id", acct_session_id),
            *_nas_attributes(self.settings),
            ("Acct-Terminate-Cause", int(TerminateCause.NAS_REBOOT)),
            ("Event-Timestamp", int(now)),
        ]
        if status is AcctStatus.ACCOUNTING_ON:
            attributes = [a for a in attributes if a[0] != "Acct-Terminate-Cause"]
        return self._record(acct_session_id, status, attributes)

    # --- interim timers ---------------------------------------------------------------

    def _interval(self, info: AccountingSession) -> float:
        interval = self.interim_interval if info.interim_interval is None else info.interim_interval
        if not interval:
            return 0.0
        return max(float(interval), MIN_INTERIM_INTERVAL)

    def _send_interims(self) -> None:
        now = self._clock.seconds()
        for acct_session_id in self._interims_due.pop_due(now):
            interims = self._interims.get(acct_session_id)
            if interims is None:
                continue
            try:
                info = interims.current()
            except Exception:
                log.failure("cannot read the counters of {session}", session=acct_session_id)
            else:
                self.interim(info).addErrback(self._log_failure, "Interim-Update")
            self._interims_due.set(acct_session_id, now + interims.interval)
        self._interim_timer.set(self._interims_due.earliest())

    # --- the spool and the pump -------------------------------------------------------

    def _record(
        self, acct_session_id: str, status: AcctStatus, attributes: Sequence[tuple[str, Any]]
    ) -> defer.Deferred[None]:
        created = self._clock.seconds()
        if not self._running:
            return defer.fail(RuntimeError("RADIUS accounting is not running"))
        d: defer.Deferred[int] = defer.Deferred()
        self._to_spool.append((acct_session_id, int(status), list(attributes), _datetime(created)))
        self._spooled_waiters.append(d)
        if not self._spooling:
            self._spool_waiting()

        def stored(_: int) -> None:
            self._kick()

        def not_stored(failure: Failure) -> None:
            # The database is down: send it anyway rather than lose it; nothing retries it.
            log.error(
                "accounting record {status} of {session} not spooled ({reason}): sent unspooled",
                status=status.name,
                session=acct_session_id,
                reason=failure.getErrorMessage(),
            )
            request = accounting_request(attributes)
            self.client.send_acct(request).addErrback(
                lambda f: log.error(
                    "accounting record {status} of {session} lost: {reason}",
                    status=status.name,
                    session=acct_session_id,
                    reason=f.getErrorMessage(),
                )
            )

        return d.addCallbacks(stored, not_stored)

    def _spool_waiting(self) -> None:
        """One transaction for every record waiting; those arriving meanwhile go in the
        next (a commit per record was a third of the database work of a setup storm)."""
        records, self._to_spool = self._to_spool, []
        waiters, self._spooled_waiters = self._spooled_waiters, []
        if not records:
            self._spooling = False
            drained, self._spool_drained = self._spool_drained, []
            for waiter in drained:
                waiter.callback(None)
            return
        self._spooling = True

        def stored(ids: list[int]) -> None:
            for waiter, record_id in zip(waiters, ids, strict=True):
                waiter.callback(record_id)

        def failed(failure: Failure) -> None:
            for waiter in waiters:
                waiter.errback(failure)

        work = self._db(spool.enqueue_many, self.node, records)
        work.addCallbacks(stored, failed)
        work.addBoth(lambda _: self._spool_waiting())

    def _kick(self) -> None:
        if not self._running:
            return
        if self._pumping:
            self._again = True
            return
        if self._retry is not None and self._retry.active():
            return  # backing off: the retry timer runs the next pass
        self._pumping = True
        defer.Deferred.fromCoroutine(self._pump()).addErrback(self._log_failure, "pump")

    async def _pump(self) -> None:
        try:
            while self._running:
                self._again = False
                everything = self._everything
                self._everything = False
                now = self._clock.seconds()
                horizon = datetime.max.replace(tzinfo=UTC) if everything else _datetime(now)
                records = await self._db(spool.due, self.node, horizon, self.batch)
                if not await self._send_batch(records):
                    return
                if len(records) < self.batch and not self._again:
                    return
        finally:
            self._pumping = False
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    async def _send_batch(self, records: Sequence[spool.SpooledRecord]) -> bool:
        """Send a batch: the records of one Acct-Session-Id one after another, in order,
        those of different sessions side by side (at most `window` at once). The records
        answered leave the spool in one transaction. False when the pass must stop (a
        record was not acknowledged, or accounting stopped)."""
        sessions: dict[str, list[spool.SpooledRecord]] = {}
        for record in records:
            sessions.setdefault(record.acct_session_id, []).append(record)
        window = defer.DeferredSemaphore(self.window)
        done: list[int] = []
        stopped = False

        async def in_order(session: list[spool.SpooledRecord]) -> None:
            nonlocal stopped
            for record in session:
                if stopped or not self._running:
                    return
                await window.acquire()
                try:
                    left = await self._send(record)
                finally:
                    window.release()
                if not left:
                    stopped = True
                    return
                done.append(record.id)

        failures = self.failures
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(in_order(session)) for session in sessions.values()]
        )
        if self.failures > failures:
            self._retry_delay = min(self._retry_delay * 2, self.retry_cap)
        if done:
            await self._db(spool.acknowledged_many, done)
        return not stopped and self._running

    async def _send(self, record: spool.SpooledRecord) -> bool:
        """Send one record; True when it was answered (and may leave the spool), False
        when it was not (it stays, postponed) or accounting stopped."""
        now = self._clock.seconds()
        # Rounded: created_at went through the database at microsecond precision.
        delay = max(0, round(now - record.created_at.timestamp()))
        request = accounting_request([*record.attributes, ("Acct-Delay-Time", delay)])
        self.sent += 1
        sending = self.client.send_acct(request)
        self._sending.add(sending)
        if not self._running:  # stopped while send_acct ran
            sending.cancel()
        try:
            await sending
        except defer.CancelledError:
            return False  # stopped: it stays spooled
        except RadiusPacketError as exc:
            # The record itself cannot be encoded (a bug): keeping it would block the rest.
            log.error(
                "accounting record {record!r} dropped: {reason}", record=record, reason=str(exc)
            )
        except Exception as exc:  # RadiusUnavailable, or anything else: try again later
            self.failures += 1
            if not self._running:
                return False
            delay_s = self._retry_delay  # doubled once per pass that failed (_send_batch)
            retry_at = self._clock.seconds() + delay_s
            reason = str(exc) if isinstance(exc, RadiusUnavailable) else repr(exc)
            log.warn(
                "accounting record {session} (#{id}) not acknowledged: {reason}; "
                "trying again in {delay:g} s",
                session=record.acct_session_id,
                id=record.id,
                reason=reason,
                delay=delay_s,
            )
            await self._db(spool.postpone, record.id, _datetime(retry_at))
            if self._running and (self._retry is None or not self._retry.active()):
                self._retry = self._clock.callLater(delay_s, self._retry_due)
            return False
        finally:
            self._sending.discard(sending)
        self._retry_delay = self.retry_initial
        self.acknowledged += 1
        return True

    def _retry_due(self) -> None:
        self._retry = None
        self._everything = True  # the postponed record first, then those made meanwhile
        self._kick()

    def _db(self, work: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
        return run_tracked(
            self._reactor, self._threadpool, self._in_flight, self._transaction, work, *args
        )

    def _transaction(self, work: Callable[..., _T], *args: Any) -> _T:
        with self.engine.begin() as connection:
            return work(connection, *args)

    @staticmethod
    def _log_failure(failure: Failure, what: str) -> None:
        log.failure("RADIUS accounting: {what} failed", failure, what=what)

    # --- introspection ----------------------------------------------------------------

    def pending(self) -> defer.Deferred[int]:
        """How many records of this node wait in the spool."""
        return self._db(spool.pending, self.node)


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class RadiusAccountingService(service.Service):
    """Accounting with the node's services: resend, Accounting-On; Accounting-Off, stop.

    Add it to the parent after the RadiusClientService and the address pool
    service, so that it stops before them (a MultiService stops its children in
    reverse order) and its Accounting-Off can still be sent.
    """

    def __init__(self, accounting: RadiusAccounting) -> None:
        self.accounting = accounting

    def startService(self) -> None:
        service.Service.startService(self)
        self.accounting.start().addErrback(self.accounting._log_failure, "start")
        self.accounting.accounting_on().addErrback(self.accounting._log_failure, "Accounting-On")

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        accounting = self.accounting
        d = accounting.accounting_off()
        d.addErrback(accounting._log_failure, "Accounting-Off")
        d.addCallback(lambda _: accounting.flush())
        d.addErrback(accounting._log_failure, "flush")
        d.addCallback(lambda _: accounting.stop())
        return d
