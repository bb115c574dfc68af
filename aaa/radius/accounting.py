"""RADIUS accounting through a durable spool (DESIGN.md section 4, RFC 2866, RFC 2869).

The session supervisor (:mod:`lns.sessions`) decides when a session's Start,
Interim-Updates and Stop are due; this module is its accounting back end
(:class:`lns.sessions.accounting.Accounting`). Every record (Start,
Interim-Update, Stop, Accounting-On, Accounting-Off) is written to the
`accounting_spool` table first, then sent with `RadiusClient.send_acct`, and
deleted only once a server acknowledged it. A record no server acknowledged
stays and is tried again later (backing off from `retry_initial` to `retry_cap`
seconds); records left by a previous run of this node (a restart, a crash) are
sent by :meth:`RadiusAccounting.start`. The pump reads the spool in order, a
batch at a time, and sends the records of one session one after another, in the
order they were made, and those of different sessions side by side (`window`
at once); each carries Acct-Delay-Time, the seconds since it was made (RFC 2866
section 5.2).

The spool's SQL runs on the node's SQL executor. Records are written by one
transaction at a time, in the order they are made (the records that arrive
while one runs go in the next: a group commit), as `seq` needs one writer per
node.

Counters are 64-bit: the low 32 bits go in Acct-Input/Output-Octets and the high
ones in Acct-Input/Output-Gigawords (RFC 2869 section 5.1). Acct-Input-* count
what the device sent (received from the LAC), Acct-Output-* what we sent it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aaa.radius import spool
from aaa.radius.attributes import NasIdentity, session_identity
from aaa.radius.client import RadiusUnavailable
from aaa.radius.packet import AttributeValue, RadiusPacketError, Reply, Request, accounting_request
from lns.db.executor import Executor
from lns.ppp.termination import TerminateCause
from lns.runtime import Backlog, StopGrace
from lns.sessions.accounting import AccountingSession

__all__ = [
    "AcctSender",
    "AcctStatus",
    "RadiusAccounting",
    "RadiusAccountingService",
    "session_attributes",
]

_T = TypeVar("_T")
_WORD = 1 << 32
# The longest wait between two tries to spool the records kept during an outage.
OUTAGE_RETRY_CAP = 30.0
# How long a stopping node keeps sending its spool (the Stops of the sessions it just
# ended, its Accounting-Off) when no stop grace is shared with it; what is left stays
# spooled for the next start.
STOP_GRACE = 2.0

log = Logger()


class AcctStatus(enum.IntEnum):
    """Acct-Status-Type (RFC 2866 section 5.1)."""

    START = 1
    STOP = 2
    INTERIM_UPDATE = 3
    ACCOUNTING_ON = 7
    ACCOUNTING_OFF = 8


# Records about the whole node: sent alone, in order with everything else.
_BARRIERS = frozenset({AcctStatus.ACCOUNTING_ON, AcctStatus.ACCOUNTING_OFF})


class AcctSender(Protocol):
    """What the accounting needs of a RadiusClient."""

    def send_acct(self, request: Request) -> defer.Deferred[Reply]: ...


def session_attributes(
    nas: NasIdentity,
    status: AcctStatus,
    info: AccountingSession,
    now: float,
    cause: TerminateCause | None = None,
) -> list[tuple[str, AttributeValue]]:
    """The attributes of a Start, Interim-Update or Stop for `info` at `now`."""
    attributes: list[tuple[str, AttributeValue]] = [("Acct-Status-Type", int(status))]
    attributes += session_identity(nas, info.context, info.user_name)
    attributes.append(("Acct-Authentic", "RADIUS"))
    if info.framed_address is not None:
        attributes.append(("Framed-IP-Address", info.framed_address))
    if info.class_attribute:
        attributes.append(("Class", info.class_attribute))
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


class RadiusAccounting:
    """Accounting-Requests of one node, through the spool, in order, until acknowledged.

    `client` is the node's RadiusClient (anything with `send_acct`), `executor`
    the node's SQL executor (its database's migrations made `accounting_spool`),
    `node` the `[lns] node_name`, `new_acct_session_id` the node's one generator of
    Acct-Session-Ids (shared with the session supervisor; Accounting-On/Off take
    theirs from it). Every record method returns a Deferred that fires once the
    record is in the spool (or, if the database failed, once it was sent without
    it); delivery follows. `flush()` waits for the pump. With the node's `backlog`
    each record is encoded and sent in its turn of it, not a window's worth at once.
    """

    def __init__(
        self,
        client: AcctSender,
        executor: Executor,
        node: str,
        nas: NasIdentity,
        new_acct_session_id: Callable[[], str],
        clock: IReactorTime,
        *,
        retry_initial: float = 5.0,
        retry_cap: float = 300.0,
        batch: int = 100,
        window: int = 32,
        backlog: Backlog | None = None,
    ) -> None:
        self.client = client
        self.executor = executor
        self.node = node
        self.nas = nas
        self.retry_initial = retry_initial
        self.retry_cap = retry_cap
        self.batch = batch
        self.window = window  # records in flight at once (of different sessions)
        self.backlog = backlog  # the node's: where each record waits its turn to be sent
        self.new_acct_session_id = new_acct_session_id
        self._clock = clock
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
        self._to_spool: list[spool.SessionRecord | spool.NodeRecord] = []
        self._spooled_waiters: list[defer.Deferred[None]] = []
        # How many records each live session has had (its records' `seq`).
        self._seq: dict[str, int] = {}
        # Since when the database refuses the spool's writes (None: it does not).
        self._outage: float | None = None
        self._outage_delay = min(retry_initial, OUTAGE_RETRY_CAP)
        self._outage_retry: IDelayedCall | None = None
        self._spooling = False
        self._spool_drained: list[defer.Deferred[None]] = []
        self._idle_waiters: list[defer.Deferred[None]] = []
        self._in_flight: set[defer.Deferred[Any]] = set()
        self.sent = 0
        self.acknowledged = 0
        self.failures = 0

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Send what earlier runs left, in order.

        Fires when that first pass is over (every old record tried once).
        """
        if self._running:
            return self.flush()
        self._running = True
        self._stopping = False
        return self.flush()

    def stop(self) -> defer.Deferred[None]:
        """Stop at once: the record being sent and the rest stay spooled for the next start."""
        if not self._running:
            return defer.succeed(None)
        self._stopping = True
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        for sending in list(self._sending):
            sending.cancel()
        retry, self._outage_retry = self._outage_retry, None
        if retry is not None and retry.active():
            retry.cancel()
            self._spool_waiting()  # one last try; what fails goes out unspooled

        def in_flight(_: object) -> defer.Deferred[Any]:
            return defer.DeferredList(list(self._in_flight), consumeErrors=True)

        d = self._wait_spooled()
        d.addCallback(in_flight)
        d.addCallback(self._wait_pump)
        return d.addCallback(lambda _: None)

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

    def flush_within(self, seconds: float) -> defer.Deferred[None]:
        """`flush`, waited for at most ``seconds``: fires when the pump is idle again or
        the time is up, whichever comes first (what is not sent by then stays spooled)."""
        done: defer.Deferred[None] = defer.Deferred()

        def finish(_: object = None) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        timer = self._clock.callLater(seconds, finish)
        self.flush().addBoth(finish)
        return done

    def idle(self) -> defer.Deferred[None]:
        """Fires when no pass is running (a record being retried later does not count)."""
        if not self._pumping:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    # --- records ----------------------------------------------------------------------

    def session_started(self, info: AccountingSession) -> defer.Deferred[None]:
        """Start."""
        now = self._clock.seconds()
        return self._record(
            info.acct_session_id,
            AcctStatus.START,
            session_attributes(self.nas, AcctStatus.START, info, now),
            info,
        )

    def interim(self, info: AccountingSession) -> defer.Deferred[None]:
        """Interim-Update with the counters of `info`."""
        now = self._clock.seconds()
        return self._record(
            info.acct_session_id,
            AcctStatus.INTERIM_UPDATE,
            session_attributes(self.nas, AcctStatus.INTERIM_UPDATE, info, now),
            info,
        )

    def session_stopped(
        self, info: AccountingSession, cause: TerminateCause
    ) -> defer.Deferred[None]:
        """Stop with the final counters and Acct-Terminate-Cause."""
        now = self._clock.seconds()
        return self._record(
            info.acct_session_id,
            AcctStatus.STOP,
            session_attributes(self.nas, AcctStatus.STOP, info, now, cause),
            info,
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
            *self.nas.attributes(),
            ("Acct-Terminate-Cause", int(TerminateCause.NAS_REBOOT)),
            ("Event-Timestamp", int(now)),
        ]
        if status is AcctStatus.ACCOUNTING_ON:
            attributes = [a for a in attributes if a[0] != "Acct-Terminate-Cause"]
        return self._record(acct_session_id, status, attributes)

    # --- the spool and the pump -------------------------------------------------------

    def _record(
        self,
        acct_session_id: str,
        status: AcctStatus,
        attributes: Sequence[tuple[str, Any]],
        session: AccountingSession | None = None,
    ) -> defer.Deferred[None]:
        created = _datetime(self._clock.seconds())
        if not self._running:
            return defer.fail(RuntimeError("RADIUS accounting is not running"))
        d: defer.Deferred[None] = defer.Deferred()
        entry: spool.SessionRecord | spool.NodeRecord
        if session is None:
            entry = spool.NodeRecord(acct_session_id, int(status), list(attributes), created)
        else:
            counters = (
                session.octets_in,
                session.octets_out,
                session.packets_in,
                session.packets_out,
            )
            seq = self._seq.get(acct_session_id, 0) + 1
            if status is AcctStatus.STOP:
                self._seq.pop(acct_session_id, None)
            else:
                self._seq[acct_session_id] = seq
            entry = spool.SessionRecord(
                acct_session_id, int(status), list(attributes), created, counters, seq
            )
        self._to_spool.append(entry)
        self._spooled_waiters.append(d)
        if not self._spooling:
            self._spool_waiting()

        def stored(_: None) -> None:
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

        def stored(_: None) -> None:
            if self._outage is not None:
                log.info(
                    "accounting spool: the database is usable again; the records kept "
                    "meanwhile are spooled"
                )
                self._outage = None
                self._outage_delay = self.retry_initial
            for waiter in waiters:
                waiter.callback(None)
            self._spool_waiting()

        def failed(failure: Failure) -> None:
            if not self._running:
                # Stopping with the database down: the records go out unspooled.
                for waiter in waiters:
                    waiter.errback(failure)
                self._spool_waiting()
                return
            # The database is down: nothing is lost, the records wait here, ahead of
            # those made meanwhile, and go in once it is back.
            self._to_spool[:0] = records
            self._spooled_waiters[:0] = waiters
            if self._outage is None:
                self._outage = self._clock.seconds()
                log.error(
                    "accounting spool: the database is unavailable ({reason}); records are "
                    "kept in memory until it is back",
                    reason=failure.getErrorMessage(),
                )
            delay, self._outage_delay = (
                self._outage_delay,
                min(self._outage_delay * 2, OUTAGE_RETRY_CAP),
            )
            self._outage_retry = self._clock.callLater(delay, self._spool_waiting)

        work = self._db(spool.enqueue_sessions, self.node, records)
        work.addCallbacks(stored, failed)

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
        those of different sessions side by side (at most `window` at once). An
        Accounting-On or -Off is a barrier: it goes alone, after everything before it was
        answered and before anything after it (an Accounting-On says the sessions before
        it are over). The records answered leave the spool in one transaction. False when
        the pass must stop (a record was not acknowledged, or accounting stopped)."""
        done: list[int] = []
        failures = self.failures
        segment: list[spool.SpooledRecord] = []
        going = True
        for record in [*records, None]:
            if record is not None and record.status not in _BARRIERS:
                segment.append(record)
                continue
            going = await self._send_side_by_side(segment, done)
            segment = []
            if going and record is not None:
                going = await self._send_side_by_side([record], done)
            if not going:
                break
        if self.failures > failures:
            self._retry_delay = min(self._retry_delay * 2, self.retry_cap)
        if done:
            await self._db(spool.acknowledged_many, done)
        return going and self._running

    async def _send_side_by_side(
        self, records: Sequence[spool.SpooledRecord], done: list[int]
    ) -> bool:
        """The records of each session in order, the sessions side by side; the ids of
        those answered go to `done`. False when one was not answered."""
        sessions: dict[str, list[spool.SpooledRecord]] = {}
        for record in records:
            sessions.setdefault(record.acct_session_id, []).append(record)
        window = defer.DeferredSemaphore(self.window)
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

        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(in_order(session)) for session in sessions.values()]
        )
        return not stopped and self._running

    async def _send(self, record: spool.SpooledRecord) -> bool:
        """Send one record; True when it was answered (and may leave the spool), False
        when it was not (it stays, postponed) or accounting stopped."""
        if self.backlog is not None:  # encoded and sent in its turn, not 32 at once
            turn: defer.Deferred[None] = defer.Deferred()
            self.backlog.add(lambda: turn.callback(None))
            await turn
            if not self._running:
                return False
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
        d = self.executor.transaction(work, *args)
        self._in_flight.add(d)

        def done(result: object) -> object:
            self._in_flight.discard(d)
            return result

        return d.addBoth(done)

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
    reverse order) and its Accounting-Off can still be sent. `ready`, when given,
    is waited for before the Accounting-On is spooled (the node's registration,
    which spools the Stops a crashed previous run left owing: they go first).
    On stop it sends what it can until the node's `stop_grace` is over and leaves the
    rest spooled: ten thousand Stops must not hold a SIGTERM up.
    """

    def __init__(
        self,
        accounting: RadiusAccounting,
        ready: Callable[[], defer.Deferred[Any]] | None = None,
        stop_grace: StopGrace | None = None,
    ) -> None:
        self.accounting = accounting
        self.ready = ready
        self.stop_grace = stop_grace or StopGrace(accounting._clock, STOP_GRACE)

    def startService(self) -> None:
        service.Service.startService(self)
        accounting = self.accounting
        accounting.start().addErrback(accounting._log_failure, "start")
        waiting = self.ready() if self.ready is not None else defer.succeed(None)
        waiting.addCallback(lambda _: accounting.accounting_on() if self.running else None)
        waiting.addErrback(accounting._log_failure, "Accounting-On")

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        accounting = self.accounting
        d = accounting.accounting_off()
        d.addErrback(accounting._log_failure, "Accounting-Off")
        d.addCallback(lambda _: accounting.flush_within(self.stop_grace.remaining()))
        d.addErrback(accounting._log_failure, "flush")
        d.addCallback(lambda _: accounting.stop())
        return d
