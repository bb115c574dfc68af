"""lns.testing.nodes.LeaseWatch: what it reports of the leases it polls."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from lns.testing.nodes import LeaseWatch, LiveLease


class _Leases:
    """Stands for the database: the snapshots to hand out, the last one for ever."""

    def __init__(self, snapshots: Sequence[Sequence[LiveLease]]) -> None:
        self._snapshots: Iterator[Sequence[LiveLease]] = iter(snapshots)
        self._last: Sequence[LiveLease] = ()

    def __call__(self) -> Sequence[LiveLease]:
        self._last = next(self._snapshots, self._last)
        return self._last


def lease(address: str, iccid: str, node: str) -> LiveLease:
    return LiveLease(address, iccid, node, 1, 1, {})


def watch_of(*snapshots: Sequence[LiveLease]) -> LeaseWatch:
    watch = LeaseWatch(_Leases(snapshots), interval=0.001)
    for _ in range(len(snapshots)):
        watch.poll()
    return watch


def test_a_takeover_is_a_change_of_holder_not_a_violation():
    watch = watch_of(
        [lease("100.66.0.1", "8944990000000000001", "node-A")],
        [],
        [lease("100.66.0.1", "8944990000000000001", "node-B")],
    )
    watch.check()
    assert watch.history == {
        "8944990000000000001": [("node-A", "100.66.0.1"), None, ("node-B", "100.66.0.1")]
    }


def test_an_address_or_an_iccid_held_twice_is_reported():
    watch = watch_of(
        [
            lease("100.66.0.1", "8944990000000000001", "node-A"),
            lease("100.66.0.1", "8944990000000000002", "node-B"),
            lease("100.66.0.2", "8944990000000000001", "node-B"),
        ]
    )
    assert len(watch.violations) == 2
    assert (
        "100.66.0.1 held by 8944990000000000001 on node-A and by 8944990000000000002"
        in (watch.violations[0])
    )
    assert (
        "ICCID 8944990000000000001 holds 100.66.0.1 on node-A and 100.66.0.2 on node-B"
        in (watch.violations[1])
    )
