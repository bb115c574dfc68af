"""aaa.radius.accounting: records through the spool to a real FreeRADIUS (its detail file),
kept across an outage and a restart, resent in order with Acct-Delay-Time."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_twisted
from sqlalchemy import event
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher

from aaa.radius import spool
from aaa.radius.accounting import AcctStatus, RadiusAccounting, session_attributes
from aaa.radius.attributes import NasIdentity
from aaa.radius.client import RadiusClient, RadiusUnavailable
from aaa.radius.packet import Code, Reply
from lns.config import RadiusServer, Secret
from lns.db.executor import SqlExecutor
from lns.ppp.auth import CallContext
from lns.ppp.termination import TerminateCause
from lns.sessions.accounting import AccountingSession, AcctSessionIds
from lns.testing.freeradius import detail_records, records_of
from lns.testing.ports import free_udp_port
from lns.testing.sims import PLAIN, RADIUS_SECRET, TIMED

NODE = "lns-test"
NAS = NasIdentity(nas_identifier=NODE)
GIGA = 1 << 32


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def executor(engine):
    executor = SqlExecutor(engine, threads=2, reactor=reactor)
    executor.start()
    yield executor
    pytest_twisted.blockon(executor.stop())


def accounting(sender, executor, clock=None, **options) -> RadiusAccounting:
    """The node's accounting, its Acct-Session-Ids a series of its own (a node's run)."""
    clock = clock or reactor
    ids = AcctSessionIds(NODE, clock.seconds())
    return RadiusAccounting(sender, executor, NODE, NAS, ids, clock, **options)


def spooled(engine) -> list[spool.SpooledRecord]:
    with engine.begin() as conn:
        return spool.due(conn, NODE, datetime.max.replace(tzinfo=UTC), 1000)


class Watched:
    """A sender in front of the real client (or none) that says when it was called."""

    def __init__(self, client=None) -> None:
        self.client = client
        self.requests = []
        self.answers: list[defer.Deferred] = []
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def send_acct(self, request):
        self.requests.append(request)
        if self.client is not None:
            d = self.client.send_acct(request)
        else:
            d = defer.Deferred()
            self.answers.append(d)
        ready = [w for w in self._waiters if len(self.requests) >= w[0]]
        self._waiters = [w for w in self._waiters if w not in ready]
        for _, waiter in ready:
            waiter.callback(None)
        return d

    def sent(self, count: int) -> defer.Deferred:
        """Fires once `count` requests have been sent in all."""
        if len(self.requests) >= count:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append((count, waiter))
        return waiter


def ack(watched: Watched, index: int) -> None:
    watched.answers[index].callback(Reply(Code.ACCOUNTING_RESPONSE, 0))


class Relay(DatagramProtocol):
    """A UDP relay to FreeRADIUS: the 'server coming back' on a port that was dead."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.client: tuple[str, int] | None = None

    def datagramReceived(self, datagram, addr):
        if addr == self.target:
            if self.client is not None:
                self.transport.write(datagram, self.client)
        else:
            self.client = addr
            self.transport.write(datagram, self.target)


def radius_client(acct_port: int, clock=None, timeout: float = 2.0, retries: int = 1):
    server = RadiusServer(
        address=ipaddress.ip_address("127.0.0.1"),
        secret=Secret(RADIUS_SECRET),
        auth_port=free_udp_port(),
        acct_port=acct_port,
        timeout=timeout,
        retries=retries,
    )
    client = RadiusClient([server], reactor, False, clock=clock or reactor, dead_time=30.0)
    client.start()
    return client


def session(acct: RadiusAccounting, started_at: float, **changes) -> AccountingSession:
    context = CallContext(
        TIMED.iccid,
        called_number="iot.example",
        lac_hostname="lac1.example",
        lac_address="198.51.100.7",
        session_id=4242,
        acct_session_id=acct.new_acct_session_id(),
    )
    info = AccountingSession(
        context,
        TIMED.iccid,
        started_at=started_at,
        framed_address=ipaddress.IPv4Address("100.64.1.2"),
        class_attribute=b"class-45",
    )
    return dataclasses.replace(info, **changes)


# --- unit: ids and attributes -----------------------------------------------------------


def test_acct_session_ids_unique_across_restarts_and_nodes():
    started = 1_700_000_000.0
    first = AcctSessionIds("lns-1", started)
    a, b = first(), first()
    again = AcctSessionIds("lns-1", started + 0.001)()  # restarted a millisecond later
    other = AcctSessionIds("lns-2", started + 0.001)()
    assert len({a, b, again, other}) == 4
    assert a.startswith("lns-1-")
    assert other.startswith("lns-2-")
    assert len(AcctSessionIds("n" * 64, started)()) <= 64


def test_stop_attributes_split_counters_into_gigawords():
    info = AccountingSession(
        CallContext(PLAIN.iccid, session_id=7, acct_session_id="id-1"),
        f"dev@{PLAIN.iccid}",
        started_at=1000.0,
        octets_in=3 * GIGA + 5,
        octets_out=GIGA - 1,
        packets_in=GIGA + 2,
        packets_out=9,
    )
    attrs = dict(
        session_attributes(NAS, AcctStatus.STOP, info, 1061.7, TerminateCause.IDLE_TIMEOUT)
    )
    assert attrs["User-Name"] == f"dev@{PLAIN.iccid}"  # the session's, as it was made
    assert attrs["Acct-Session-Id"] == "id-1"
    assert attrs["NAS-Port"] == 7
    assert attrs["Calling-Station-Id"] == PLAIN.iccid
    assert (attrs["Acct-Input-Octets"], attrs["Acct-Input-Gigawords"]) == (5, 3)
    assert (attrs["Acct-Output-Octets"], attrs["Acct-Output-Gigawords"]) == (GIGA - 1, 0)
    assert attrs["Acct-Input-Packets"] == 2  # packets have no Gigawords: they wrap
    assert attrs["Acct-Session-Time"] == 61
    assert attrs["Acct-Terminate-Cause"] == TerminateCause.IDLE_TIMEOUT
    assert "Framed-IP-Address" not in attrs
    assert "Class" not in attrs
    start = dict(session_attributes(NAS, AcctStatus.START, info, 1000.0))
    assert "Acct-Session-Time" not in start
    assert "Acct-Input-Octets" not in start


# --- the pump with a fake sender and a fake clock -----------------------------------------


@pytest_twisted.inlineCallbacks
def test_failed_record_blocks_later_ones_until_retried_in_order(engine, executor):
    clock = task.Clock()
    clock.advance(1_700_000_000.0)
    watched = Watched()
    acct = accounting(watched, executor, clock=clock, retry_initial=10)
    yield acct.start()
    try:
        info = session(acct, clock.seconds())
        yield acct.session_started(info)
        yield watched.sent(1)
        watched.answers[0].errback(RadiusUnavailable("no RADIUS server answered"))
        yield acct.idle()
        [record] = spooled(engine)
        assert record.attempts == 1
        # During the backoff a Stop is spooled but not sent before the Start.
        clock.advance(4)
        yield acct.session_stopped(info, TerminateCause.USER_REQUEST)
        yield acct.idle()
        assert len(watched.requests) == 1
        assert len(spooled(engine)) == 2
        clock.advance(6)  # the retry: Start first (delay 10 s), then Stop (delay 6 s)
        yield watched.sent(2)
        ack(watched, 1)
        yield watched.sent(3)
        ack(watched, 2)
        yield acct.idle()
        statuses = [r.get("Acct-Status-Type") for r in watched.requests]
        assert statuses == [1, 1, 2]
        assert [r.get("Acct-Delay-Time") for r in watched.requests] == [0, 10, 6]
        assert spooled(engine) == []
        assert (acct.sent, acct.acknowledged, acct.failures) == (3, 2, 1)
    finally:
        yield acct.stop()


@pytest_twisted.inlineCallbacks
def test_records_arriving_together_share_one_commit(engine, executor):
    """Group commit: what arrives while the spool's transaction runs goes in the next."""
    commits = []
    event.listen(engine, "commit", lambda connection: commits.append(1))
    watched = Watched()
    acct = accounting(watched, executor)
    yield acct.start()
    commits.clear()
    try:
        infos = [session(acct, time.time()) for _ in range(40)]
        yield defer.gatherResults([acct.session_started(info) for info in infos])
        # The first alone, the other 39 together, and the pump's look at what is due
        # (one commit per record would be 40 and more).
        assert len(commits) <= 4
        assert len(spooled(engine)) == 40
    finally:
        yield acct.stop()


@pytest_twisted.inlineCallbacks
def test_sessions_are_sent_side_by_side_each_in_order(engine, executor):
    """One batch from the spool: the Starts of two sessions go out without waiting for
    each other's answer; a session's Stop waits for its own Start's."""
    created = datetime.now(UTC)
    with engine.begin() as conn:
        spool.enqueue_many(
            conn,
            NODE,
            [
                ("first", AcctStatus.START, [("Acct-Session-Id", "first")], created),
                ("first", AcctStatus.STOP, [("Acct-Session-Id", "first")], created),
                ("second", AcctStatus.START, [("Acct-Session-Id", "second")], created),
            ],
        )
    watched = Watched()
    acct = accounting(watched, executor, window=8)
    started = acct.start()  # sends what the spool holds
    try:
        yield watched.sent(2)
        sent = [r.get("Acct-Session-Id") for r in watched.requests]
        assert sent == ["first", "second"]
        ack(watched, 1)
        ack(watched, 0)
        yield watched.sent(3)
        assert watched.requests[2].get("Acct-Session-Id") == "first"
        ack(watched, 2)
        yield started
        assert spooled(engine) == []
        assert acct.acknowledged == 3
    finally:
        yield acct.stop()


class Turns:
    """The node's backlog as the accounting sees it: work that runs when the test says."""

    def __init__(self) -> None:
        self.waiting: list = []
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def add(self, work) -> None:
        self.waiting.append(work)
        ready = [w for w in self._waiters if len(self.waiting) >= w[0]]
        self._waiters = [w for w in self._waiters if w not in ready]
        for _, waiter in ready:  # once the caller has returned from add()
            reactor.callLater(0, waiter.callback, None)

    def queued(self, count: int) -> defer.Deferred:
        if len(self.waiting) >= count:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append((count, waiter))
        return waiter

    def run_one(self) -> None:
        self.waiting.pop(0)()


@pytest_twisted.inlineCallbacks
def test_with_the_node_s_backlog_each_record_is_sent_in_its_own_turn(engine, executor):
    created = datetime.now(UTC)
    with engine.begin() as conn:
        spool.enqueue_many(
            conn,
            NODE,
            [
                (f"s{n}", AcctStatus.START, [("Acct-Session-Id", f"s{n}")], created)
                for n in range(3)
            ],
        )
    watched, turns = Watched(), Turns()
    acct = accounting(watched, executor, window=8, backlog=turns)
    started = acct.start()
    try:
        yield turns.queued(3)  # three records, each waiting for its turn: none encoded yet
        assert watched.requests == []
        turns.run_one()
        assert [r.get("Acct-Session-Id") for r in watched.requests] == ["s0"]
        turns.run_one()
        turns.run_one()
        assert [r.get("Acct-Session-Id") for r in watched.requests] == ["s0", "s1", "s2"]
        for index in range(3):
            ack(watched, index)
        yield started
        assert spooled(engine) == []
    finally:
        yield acct.stop()


@pytest_twisted.inlineCallbacks
def test_accounting_on_waits_for_what_came_before_and_goes_alone(engine, executor):
    """An Accounting-On says the node's earlier sessions are over: it is sent only once
    the records spooled before it were answered, and nothing after it overtakes it."""
    created = datetime.now(UTC)
    with engine.begin() as conn:
        spool.enqueue_many(
            conn,
            NODE,
            [
                ("old", AcctStatus.STOP, [("Acct-Session-Id", "old")], created),
                ("on", AcctStatus.ACCOUNTING_ON, [("Acct-Session-Id", "on")], created),
                ("new", AcctStatus.START, [("Acct-Session-Id", "new")], created),
            ],
        )
    watched = Watched()
    acct = accounting(watched, executor, window=8)
    started = acct.start()
    try:
        yield watched.sent(1)
        assert [r.get("Acct-Session-Id") for r in watched.requests] == ["old"]
        ack(watched, 0)
        yield watched.sent(2)
        assert watched.requests[1].get("Acct-Session-Id") == "on"
        assert len(watched.requests) == 2
        ack(watched, 1)
        yield watched.sent(3)
        assert watched.requests[2].get("Acct-Session-Id") == "new"
        ack(watched, 2)
        yield started
        assert spooled(engine) == []
    finally:
        yield acct.stop()


@pytest_twisted.inlineCallbacks
def test_records_made_while_the_database_is_down_wait_and_are_spooled_when_it_is_back(
    engine, executor
):
    """Issue 16: an outage loses no record; it is logged once, and so is the recovery."""
    clock = task.Clock()
    clock.advance(1_700_000_000.0)
    watched = Watched()
    acct = accounting(watched, executor, clock=clock, retry_initial=2)
    path = Path(engine.url.database)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield acct.start()
    try:
        path.rename(path.with_suffix(".away"))  # the database file is gone
        info = session(acct, clock.seconds())
        started = acct.session_started(info)
        stopped = acct.session_stopped(info, TerminateCause.USER_REQUEST)
        for _ in range(3):  # the tries back off; nothing is sent unspooled meanwhile
            yield task.deferLater(reactor, 0.05, lambda: None)
            clock.advance(30)
        assert not started.called
        assert watched.requests == []
        path.with_suffix(".away").rename(path)  # back
        clock.advance(30)
        yield started
        yield stopped
        yield watched.sent(1)
        ack(watched, 0)
        yield watched.sent(2)
        ack(watched, 1)
        yield acct.idle()
        assert [r.get("Acct-Status-Type") for r in watched.requests] == [1, 2]
        assert spooled(engine) == []
    finally:
        globalLogPublisher.removeObserver(events.append)
        yield acct.stop()
    lines = [e["log_format"] for e in events if "accounting spool" in e.get("log_format", "")]
    assert len([line for line in lines if "unavailable" in line]) == 1
    assert len([line for line in lines if "usable again" in line]) == 1


@pytest_twisted.inlineCallbacks
def test_stop_leaves_unacknowledged_records_spooled(engine, executor):
    watched = Watched()
    acct = accounting(watched, executor)
    yield acct.start()
    yield acct.accounting_on()
    yield watched.sent(1)
    yield acct.stop()  # the request in flight is cancelled; the record stays
    assert [r.status for r in spooled(engine)] == [AcctStatus.ACCOUNTING_ON]
    with pytest.raises(RuntimeError):
        yield acct.accounting_off()


@pytest_twisted.inlineCallbacks
def test_flush_within_gives_up_waiting_at_its_time_and_stop_keeps_the_rest(engine, executor):
    """A stopping node with RADIUS silent: the wait for its Stops to be sent is bounded
    (fake clock), and what was not acknowledged stays spooled for the next start."""
    clock = task.Clock()
    watched = Watched()  # never answers
    acct = accounting(watched, executor, clock)
    yield acct.start()
    yield acct.accounting_on()
    info = session(acct, clock.seconds())
    yield acct.session_started(info)
    yield acct.session_stopped(info, TerminateCause.ADMIN_REBOOT)
    yield watched.sent(1)
    flushed = acct.flush_within(2.0)
    clock.advance(1.9)
    assert not flushed.called
    clock.advance(0.1)
    assert flushed.called
    yield acct.stop()
    assert [r.status for r in spooled(engine)] == [
        AcctStatus.ACCOUNTING_ON,
        AcctStatus.START,
        AcctStatus.STOP,
    ]


@pytest_twisted.inlineCallbacks
def test_flush_within_fires_as_soon_as_everything_is_acknowledged(engine, executor):
    clock = task.Clock()
    watched = Watched()
    acct = accounting(watched, executor, clock)
    yield acct.start()
    yield acct.accounting_on()
    yield watched.sent(1)
    flushed = acct.flush_within(2.0)
    ack(watched, 0)
    yield flushed  # before the clock moved at all
    assert not any(call.getTime() == 2.0 for call in clock.getDelayedCalls())  # cancelled
    assert spooled(engine) == []
    yield acct.stop()


# --- against FreeRADIUS -------------------------------------------------------------------


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_start_interim_stop_arrive_with_their_values(freeradius, engine, executor):
    client = radius_client(freeradius.acct_port)
    acct = accounting(client, executor)
    yield acct.start()
    try:
        now = reactor.seconds()
        info = session(acct, now - 125)
        yield acct.session_started(info)
        yield acct.interim(
            dataclasses.replace(
                info, octets_in=5 * GIGA + 1234, octets_out=777, packets_in=10, packets_out=11
            )
        )
        final = dataclasses.replace(
            info,
            octets_in=6 * GIGA + 1,
            octets_out=2 * GIGA + 2,
            packets_in=20,
            packets_out=21,
        )
        yield acct.session_stopped(final, TerminateCause.USER_REQUEST)
        yield acct.flush()
        assert spooled(engine) == []
        start, interim, stop = records_of(freeradius, info.acct_session_id)
    finally:
        yield acct.stop()
        yield client.stop()
    assert [r["Acct-Status-Type"] for r in (start, interim, stop)] == [
        "Start",
        "Interim-Update",
        "Stop",
    ]
    for record in (start, interim, stop):
        assert record["User-Name"] == TIMED.iccid
        assert record["Calling-Station-Id"] == TIMED.iccid
        assert record["Called-Station-Id"] == "iot.example"
        assert record["Framed-IP-Address"] == "100.64.1.2"
        assert record["Class"] == "0x" + b"class-45".hex()
        assert record["NAS-Port"] == "4242"
        assert record["NAS-Identifier"] == NODE
        assert record["Acct-Delay-Time"] == "0"
    assert (interim["Acct-Input-Octets"], interim["Acct-Input-Gigawords"]) == ("1234", "5")
    assert (stop["Acct-Input-Octets"], stop["Acct-Input-Gigawords"]) == ("1", "6")
    assert (stop["Acct-Output-Octets"], stop["Acct-Output-Gigawords"]) == ("2", "2")
    assert (stop["Acct-Input-Packets"], stop["Acct-Output-Packets"]) == ("20", "21")
    assert stop["Acct-Terminate-Cause"] == "User-Request"
    assert 125 <= int(stop["Acct-Session-Time"]) <= 127
    assert "Acct-Session-Time" not in start


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_stop_during_outage_arrives_when_the_server_is_back(freeradius, engine, executor):
    clock = task.Clock()
    clock.advance(time.time())
    port = free_udp_port()  # nothing listens there yet: the server is down
    client = radius_client(port, clock=clock, timeout=2.0, retries=1)
    watched = Watched(client)
    acct = accounting(watched, executor, clock=clock, retry_initial=10)
    relay = None
    yield acct.start()
    try:
        info = session(acct, clock.seconds() - 60, octets_out=3 * GIGA)
        yield acct.session_stopped(info, TerminateCause.LOST_CARRIER)
        yield watched.sent(1)
        clock.advance(2)  # retransmission
        clock.advance(2)  # no reply: RadiusUnavailable, the record is postponed
        yield acct.idle()
        [record] = spooled(engine)
        assert record.attempts == 1
        relay = reactor.listenUDP(
            port, Relay(("127.0.0.1", freeradius.acct_port)), interface="127.0.0.1"
        )
        clock.advance(10)  # the retry
        yield watched.sent(2)
        yield acct.idle()
        assert spooled(engine) == []
        [stop] = records_of(freeradius, info.acct_session_id)
    finally:
        yield acct.stop()
        yield client.stop()
        if relay is not None:
            yield relay.stopListening()
    assert stop["Acct-Status-Type"] == "Stop"
    assert stop["Acct-Delay-Time"] == "14"
    assert stop["Acct-Terminate-Cause"] == "Lost-Carrier"
    assert stop["Acct-Session-Time"] == "60"
    assert (stop["Acct-Output-Octets"], stop["Acct-Output-Gigawords"]) == ("0", "3")


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_records_of_a_killed_node_are_delivered_by_the_next_start(freeradius, engine, executor):
    # The first run spools a Start and a Stop and dies before any is acknowledged.
    old_clock = task.Clock()
    old_clock.advance(time.time())
    silent = Watched()
    old = accounting(silent, executor, clock=old_clock)
    yield old.start()
    info = session(old, old_clock.seconds() - 30)
    yield old.session_started(info)
    yield old.session_stopped(info, TerminateCause.NAS_REBOOT)
    yield silent.sent(1)
    assert len(spooled(engine)) == 2
    # The restarted node, 40 s later: what was left goes first, then its Accounting-On.
    new_clock = task.Clock()
    new_clock.advance(old_clock.seconds() + 40)
    client = radius_client(freeradius.acct_port)
    new = accounting(client, executor, clock=new_clock)
    try:
        yield new.start()
        yield new.accounting_on()
        yield new.flush()
        assert spooled(engine) == []
        start, stop = records_of(freeradius, info.acct_session_id)
        assert new.new_acct_session_id() != old.new_acct_session_id()
    finally:
        yield new.stop()
        yield old.stop()
        yield client.stop()
    assert (start["Acct-Status-Type"], stop["Acct-Status-Type"]) == ("Start", "Stop")
    assert start["Acct-Delay-Time"] == stop["Acct-Delay-Time"] == "40"
    assert stop["Acct-Terminate-Cause"] == "NAS-Reboot"
    names = [r.get("Acct-Status-Type") for r in detail_records(freeradius)]
    on = len(names) - 1 - names[::-1].index("Accounting-On")
    ours = [r.get("Acct-Session-Id") for r in detail_records(freeradius)]
    assert ours.index(info.acct_session_id) < on
