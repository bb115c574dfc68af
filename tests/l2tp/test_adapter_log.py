"""The L2TP adapter's log under a flood: a few lines a second per kind, with a count of
what was left out (issue 12, item 5: 40,019 lines in 20 s from one unlisted address)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from lns.adapters.l2tp import PEER_LINES_PER_SECOND, L2tpService
from lns.testing.l2tp_network import make_endpoint, sccrq


def service_with_log() -> tuple[L2tpService, Clock, list[dict[str, Any]]]:
    clock = Clock()
    events: list[dict[str, Any]] = []
    service = L2tpService(make_endpoint(network="192.0.2.0/24"), ("127.0.0.1", 0), reactor=clock)
    service.log = Logger(observer=events.append)  # type: ignore[misc]
    return service, clock, events


def test_refusals_from_a_flood_are_logged_a_few_a_second_with_the_rest_counted() -> None:
    service, clock, events = service_with_log()
    for _second in range(3):
        for n in range(1000):
            service.datagram_received(sccrq(n + 1), ("198.51.100.7", 1024 + n), None)
        clock.advance(1.0)
    lines = [formatEvent(e) for e in events if "tunnel refused from" in formatEvent(e)]
    assert len(lines) == 3 * PEER_LINES_PER_SECOND
    assert lines[0].endswith("[0 more not logged]")
    # The count is kept across seconds: the last line tells what the first two left out.
    assert lines[-1].endswith(f"[{2 * (1000 - PEER_LINES_PER_SECOND)} more not logged]")
    assert service.endpoint.counters["tunnels_refused"] == 3000


def test_each_kind_has_its_own_allowance() -> None:
    service, _clock, events = service_with_log()
    for n in range(50):
        service.datagram_received(b"\x00", ("198.51.100.7", 1701), None)  # malformed
        service.datagram_received(sccrq(n + 1), ("198.51.100.7", 1701), None)  # refused
    texts = [formatEvent(e) for e in events]
    assert sum("dropped a packet" in t for t in texts) == PEER_LINES_PER_SECOND
    assert sum("tunnel refused" in t for t in texts) == PEER_LINES_PER_SECOND


def test_a_flood_inside_one_second_is_counted_a_second_later() -> None:
    """No later line of its kind would show the count: a summary says it."""
    service, clock, events = service_with_log()
    for n in range(100):
        service.datagram_received(sccrq(n + 1), ("198.51.100.7", 1024 + n), None)
    clock.advance(0.9)
    assert not any("more tunnel refused lines" in formatEvent(e) for e in events)
    clock.advance(0.1)
    summaries = [formatEvent(e) for e in events if "more tunnel refused lines" in formatEvent(e)]
    assert summaries == [
        f"more tunnel refused lines than {PEER_LINES_PER_SECOND} a second"
        f" [{100 - PEER_LINES_PER_SECOND} more not logged]"
    ]
    clock.advance(10.0)  # nothing new left out: nothing more said
    assert len([e for e in events if "more tunnel refused lines" in formatEvent(e)]) == 1


def test_no_summary_when_nothing_was_left_out() -> None:
    service, clock, events = service_with_log()
    service.datagram_received(sccrq(1), ("198.51.100.7", 1024), None)
    assert clock.getDelayedCalls() == []  # no summary due
    clock.advance(5.0)
    assert not any("lines than" in formatEvent(e) for e in events)
