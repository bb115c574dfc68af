"""Prometheus metrics of the node, collected at scrape time (DESIGN.md section 10).

Nothing is updated per packet for Prometheus: a scrape reads the live objects (the
session records and the supervisor's counters, the L2TP endpoint and its tunnels,
the RADIUS client's per-server counters, the data plane's drop counters) through
one custom collector, and the database's figures (accounting spool, pools) come from
the SQL executor, asked at most every FIGURES_REFRESH seconds in the background so that
a scrape never queues behind a setup storm's transactions (they are never shown older
than FIGURES_MAX_AGE). The session records are summed a slice at a time,
one slice per reactor turn, so that a scrape of 50,000 sessions never holds up a HELLO
for more than a slice's worth of work. Names follow Prometheus's conventions: ``lns_``
prefix, counters end in ``_total``, seconds and bytes.

    lns_info{node,version}                                    1
    lns_start_time_seconds                                    when the node started
    lns_sessions{lac,state}                                   live sessions
    lns_tunnels{lac,state}                                    live tunnels
    lns_session_calls_total                                   calls established (ICCN)
    lns_session_setups_total                                  sessions that came up
    lns_session_setup_failures_total{reason}                  sessions that ended before
    lns_session_setup_duration_seconds                        histogram: ICRQ to IPCP Opened
    lns_session_setups_in_progress                            ICRQ answered, not up nor failed
    lns_session_setups_refused_total                          ICRQs refused: too many in progress
    lns_radius_requests_total{server,type}                    per server port and request type
    lns_radius_timeouts_total{server,type}
    lns_radius_request_duration_seconds{server,type}          histogram: request to reply
    lns_radius_server_up{server}                              1 alive, 0 marked dead
    lns_accounting_spool_records                              records waiting in the spool
    lns_accounting_spool_oldest_age_seconds                   age of the oldest (0 if none)
    lns_pool_addresses{pool,state}                            free, used, reserved
    lns_database_up                                           1 when the database answered
    lns_dataplane_packets_total{direction}                    up: from sessions, down: to them
    lns_dataplane_bytes_total{direction}
    lns_dataplane_dropped_total{reason}                       malformed, no_route, spoofed, too_big
    lns_l2tp_control_retransmissions_total                    our control messages sent again
    lns_l2tp_hello_rtt_seconds                                histogram: our HELLOs acknowledged
    lns_l2tp_events_total{event}                              the endpoint's counters
    lns_backlog_items                                         work waiting for a later turn
    lns_backlog_waited_total                                  work that waited for one
plus the process's own (``process_*``: CPU, memory, file descriptors).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from twisted.internet import defer

from lns.adapters.node_state import DatabaseFigures, NodeState
from lns.histogram import Histogram
from lns.l2tp.tunnel import TunnelState
from lns.sessions.record import SessionRecord, SessionState

__all__ = ["CONTENT_TYPE", "MetricsExporter", "NodeCollector"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
SLICE = 2000  # session records summed per reactor turn (about 2 ms of work)
FIGURES_REFRESH = 5.0  # seconds: older database figures are fetched again for the next scrape
FIGURES_MAX_AGE = 30.0  # seconds: older ones are not shown; the scrape waits for new ones
_DROPS = ("malformed", "no_route", "spoofed", "too_big")


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), float(count))
        for bound, count in histogram.cumulative()
    ]


class SessionTotals:
    """Live sessions by (LAC, state) and their traffic, summed over records."""

    __slots__ = ("by_lac", "octets_down", "octets_up", "packets_down", "packets_up")

    def __init__(self) -> None:
        self.by_lac: Counter[tuple[str, str]] = Counter()
        self.packets_up = self.octets_up = self.packets_down = self.octets_down = 0

    def add(self, records: list[SessionRecord]) -> None:
        by_lac = self.by_lac
        for record in records:
            state = record.state
            if state is SessionState.CLOSED:
                continue  # ended since the snapshot: its traffic is in the ended total
            by_lac[(record.context.lac_name, state.value)] += 1
            traffic = record.traffic
            self.packets_up += traffic.packets_up
            self.octets_up += traffic.octets_up
            self.packets_down += traffic.packets_down
            self.octets_down += traffic.octets_down


class NodeCollector:
    """A prometheus_client collector over :class:`NodeState`; ``figures`` are the
    database's, fetched just before the scrape."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self.figures = DatabaseFigures(error="not fetched")
        self.totals: SessionTotals | None = None  # summed before the scrape

    def collect(self) -> Iterator[Metric]:
        yield from self._node()
        yield from self._sessions()
        yield from self._tunnels()
        yield from self._radius()
        yield from self._database()
        yield from self._dataplane()

    def _node(self) -> Iterator[Metric]:
        state = self.state
        info = GaugeMetricFamily(
            "lns_info", "The node's name and version", labels=["node", "version"]
        )
        info.add_metric([state.node_name, state.version], 1)
        yield info
        yield GaugeMetricFamily(
            "lns_start_time_seconds", "When the node started (Unix time)", value=state.started_at
        )

    def _sessions(self) -> Iterator[Metric]:
        supervisor = self.state.runner.supervisor
        totals = self.totals
        if totals is None:  # not summed ahead (a direct collect): sum them now
            totals = SessionTotals()
            totals.add(list(supervisor))
        by_lac = self._zero_per_lac((SessionState.SETTING_UP.value, SessionState.UP.value))
        by_lac.update(totals.by_lac)
        up_packets, up_bytes = totals.packets_up, totals.octets_up
        down_packets, down_bytes = totals.packets_down, totals.octets_down
        sessions = GaugeMetricFamily(
            "lns_sessions", "Live sessions by LAC and state", labels=["lac", "state"]
        )
        for (lac, state), count in sorted(by_lac.items()):
            sessions.add_metric([lac, state], count)
        yield sessions
        stats = supervisor.stats
        yield CounterMetricFamily(
            "lns_session_calls", "L2TP calls established (ICCN): sessions begun", value=stats.calls
        )
        yield CounterMetricFamily(
            "lns_session_setups", "Sessions that reached IPCP Opened", value=stats.setups
        )
        failures = CounterMetricFamily(
            "lns_session_setup_failures",
            "Sessions that ended before they were up, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(stats.failures.items()):
            failures.add_metric([str(reason)], count)
        yield failures
        latency = HistogramMetricFamily(
            "lns_session_setup_duration_seconds", "Session set-up time, ICRQ to IPCP Opened"
        )
        latency.add_metric([], _buckets(stats.setup_latency), stats.setup_latency.sum)
        yield latency
        admission = self.state.l2tp.endpoint.admission
        yield GaugeMetricFamily(
            "lns_session_setups_in_progress",
            "Session setups in progress: calls waiting for their ICCN and sessions not up yet",
            value=admission.in_progress,
        )
        backlog = self.state.l2tp.backlog
        yield GaugeMetricFamily(
            "lns_backlog_items",
            "The node's work (calls and frames read, RADIUS answers, addresses, accounting"
            " records) waiting for a later reactor turn: the node is behind",
            value=len(backlog),
        )
        yield CounterMetricFamily(
            "lns_backlog_waited",
            "Work that waited for a later reactor turn, its slice being used",
            value=backlog.waited,
        )
        yield CounterMetricFamily(
            "lns_session_setups_refused",
            "ICRQs refused with a CDN (temporarily out of resources) because"
            " [l2tp] max_setups_in_progress setups were in progress",
            value=admission.refused,
        )
        ended = stats.ended_traffic
        packets = CounterMetricFamily(
            "lns_dataplane_packets",
            "IP packets forwarded (up: from the sessions, down: to them)",
            labels=["direction"],
        )
        packets.add_metric(["up"], ended.packets_up + up_packets)
        packets.add_metric(["down"], ended.packets_down + down_packets)
        yield packets
        octets = CounterMetricFamily(
            "lns_dataplane_bytes",
            "IP bytes forwarded (up: from the sessions, down: to them)",
            labels=["direction"],
        )
        octets.add_metric(["up"], ended.octets_up + up_bytes)
        octets.add_metric(["down"], ended.octets_down + down_bytes)
        yield octets

    def _zero_per_lac(self, states: tuple[str, ...]) -> Counter[tuple[str, str]]:
        """Every configured LAC in every state at 0, so that a sum over none is 0, not empty."""
        counts: Counter[tuple[str, str]] = Counter()
        for match in self.state.l2tp.endpoint.lacs:
            for state in states:
                counts[(match.peer.name, state)] = 0
        return counts

    def _tunnels(self) -> Iterator[Metric]:
        endpoint = self.state.l2tp.endpoint
        by_lac = self._zero_per_lac((TunnelState.ESTABLISHED.value,))
        for conn in endpoint.tunnels.values():
            by_lac[(conn.lac.name, conn.state.value)] += 1
        tunnels = GaugeMetricFamily(
            "lns_tunnels", "Live tunnels by LAC and state", labels=["lac", "state"]
        )
        for (lac, state), count in sorted(by_lac.items()):
            tunnels.add_metric([lac, state], count)
        yield tunnels
        yield CounterMetricFamily(
            "lns_l2tp_control_retransmissions",
            "Our control messages sent again for want of an acknowledgement",
            value=endpoint.counters["retransmissions"],
        )
        hello = HistogramMetricFamily(
            "lns_l2tp_hello_rtt_seconds", "Round trip of our HELLOs (sent to acknowledged)"
        )
        hello.add_metric([], _buckets(endpoint.hello_rtts), endpoint.hello_rtts.sum)
        yield hello
        events = CounterMetricFamily(
            "lns_l2tp_events",
            "L2TP endpoint counters (messages, refusals, drops by kind)",
            labels=["event"],
        )
        for event, count in sorted(endpoint.counters.items()):
            if event != "retransmissions":
                events.add_metric([event], count)
        yield events

    def _radius(self) -> Iterator[Metric]:
        radius = self.state.radius
        ports = radius.client.ports if radius is not None else []
        now = self.state.clock.seconds()
        requests = CounterMetricFamily(
            "lns_radius_requests",
            "RADIUS requests sent, by server and type",
            labels=["server", "type"],
        )
        timeouts = CounterMetricFamily(
            "lns_radius_timeouts",
            "RADIUS requests that got no reply in time, by server and type",
            labels=["server", "type"],
        )
        latency = HistogramMetricFamily(
            "lns_radius_request_duration_seconds",
            "RADIUS request to accepted reply, by server and type",
            labels=["server", "type"],
        )
        up = GaugeMetricFamily(
            "lns_radius_server_up",
            "1 when the server is live, 0 when marked dead",
            labels=["server"],
        )
        for port in ports:
            up.add_metric([port.label], 1 if port.alive(now) else 0)
            for code, kind in sorted(port.stats.by_type.items()):
                labels = [port.label, code.name.lower()]
                requests.add_metric(labels, kind.requests)
                timeouts.add_metric(labels, kind.timeouts)
                latency.add_metric(labels, _buckets(kind.latency), kind.latency.sum)
        yield from (requests, timeouts, latency, up)

    def _database(self) -> Iterator[Metric]:
        figures = self.figures
        now = self.state.clock.seconds()
        yield GaugeMetricFamily(
            "lns_database_up",
            "1 when the database answered this scrape's queries",
            value=0 if figures.error else 1,
        )
        if figures.error:
            return
        if figures.spool_depth is not None:
            yield GaugeMetricFamily(
                "lns_accounting_spool_records",
                "Accounting records waiting in the spool",
                value=figures.spool_depth,
            )
            yield GaugeMetricFamily(
                "lns_accounting_spool_oldest_age_seconds",
                "Age of the oldest record in the spool (0 when empty)",
                value=figures.spool_oldest_age(now) or 0.0,
            )
        pools = GaugeMetricFamily(
            "lns_pool_addresses", "Pool addresses by state", labels=["pool", "state"]
        )
        for pool in figures.pools:
            pools.add_metric([pool.name, "free"], pool.free)
            pools.add_metric([pool.name, "used"], pool.in_use)
            pools.add_metric([pool.name, "reserved"], pool.reserved)
        yield pools

    def _dataplane(self) -> Iterator[Metric]:
        counters = self.state.dataplane.forwarder.counters
        dropped = CounterMetricFamily(
            "lns_dataplane_dropped", "IP packets dropped, by reason", labels=["reason"]
        )
        for reason in _DROPS:
            dropped.add_metric([reason], counters.get(reason, 0))
        yield dropped
        for name, text in (
            ("icmp_sent", "ICMP Fragmentation Needed messages returned to senders"),
            ("fragmented", "Packets to sessions fragmented to their MRU"),
            ("mss_clamped", "TCP SYNs whose MSS was lowered"),
        ):
            yield CounterMetricFamily(f"lns_dataplane_{name}", text, value=counters.get(name, 0))


class MetricsExporter:
    """One registry: the node's collector and the process's."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self.collector = NodeCollector(state)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.registry.register(ProcessCollector(registry=None))
        self._figures: DatabaseFigures | None = None
        self._figures_at = 0.0
        self._fetching: defer.Deferred[DatabaseFigures] | None = None

    def scrape(self) -> defer.Deferred[bytes]:
        """The text exposition, once the sessions are summed and the database's figures
        known (see :meth:`figures`)."""
        figures: list[DatabaseFigures] = []

        def render(totals: SessionTotals) -> bytes:
            self.collector.figures = figures[0]
            self.collector.totals = totals
            try:
                return generate_latest(self.registry)
            finally:
                self.collector.totals = None

        d = self.figures().addCallback(figures.append)
        return d.addCallback(lambda _: self._sum_sessions()).addCallback(render)

    def figures(self) -> defer.Deferred[DatabaseFigures]:
        """The database's figures, at most FIGURES_MAX_AGE seconds old.

        A scrape does not wait for the database while the last figures are younger
        than that (the database may be busy with a setup storm's allocations and
        accounting); it asks for new ones in the background once they are
        FIGURES_REFRESH old, and only the first scrape, or one after a long silence,
        waits for them.
        """
        now = self.state.clock.seconds()
        if self._fetching is None and (
            self._figures is None or now - self._figures_at >= FIGURES_REFRESH
        ):
            fetching = self.state.database_figures()
            self._fetching = fetching
            fetching.addCallback(self._fetched)  # may run at once
        if self._figures is not None and now - self._figures_at < FIGURES_MAX_AGE:
            return defer.succeed(self._figures)
        waiting: defer.Deferred[DatabaseFigures] = defer.Deferred()
        # Not fresh, so a fetch is in flight (one that answered at once was fresh).
        assert self._fetching is not None

        def hand_over(figures: DatabaseFigures) -> DatabaseFigures:
            waiting.callback(figures)
            return figures

        self._fetching.addCallback(hand_over)
        return waiting

    def _fetched(self, figures: DatabaseFigures) -> DatabaseFigures:
        self._figures = figures
        self._figures_at = self.state.clock.seconds()
        self._fetching = None
        return figures

    def _sum_sessions(self) -> defer.Deferred[SessionTotals]:
        records = list(self.state.runner.supervisor)  # a snapshot: sessions come and go
        totals = SessionTotals()
        done: defer.Deferred[SessionTotals] = defer.Deferred()
        clock = self.state.clock

        def next_slice(start: int) -> None:
            totals.add(records[start : start + SLICE])
            if start + SLICE < len(records):
                clock.callLater(0, next_slice, start + SLICE)
            else:
                done.callback(totals)

        next_slice(0)
        return done
