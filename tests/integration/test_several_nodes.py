"""Issue 13 end to end: two ``twistd -n lns`` nodes on one PostgreSQL database with the
suite's FreeRADIUS, 200 SIMs moved from node-A to node-B by lns-loadgen failing over as a
carrier's LAC does (lns.testing.nodes).

- node-A killed with SIGKILL: every SIM is up again on node-B with the address it had;
  node-B adopts node-A, so each of node-A's sessions has exactly one Start and one Stop
  (Lost-Service) in FreeRADIUS's detail file; no address or ICCID is ever held twice;
  node-A restarted afterwards sends no Stop twice and takes no lease from node-B.
- node-A alive but cut off from the LAC: node-B takes the SIMs over, and node-A clears
  its stale sessions within seconds (told by NOTIFY) without releasing node-B's leases.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lns.testing import sims
from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius, detail_records
from lns.testing.nodes import Deployment, Node

POSTGRES_URL_VARIABLE = "LNS_TEST_POSTGRES_URL"
SIMS = 200
LOADGEN = (
    "--tunnels", "4",
    "--sessions", str(SIMS),
    "--concurrency", "100",
    "--rate", "0",
    "--hello-interval", "0.2",
    "--retransmit", "0.2",
    "--retries", "3",
    "--timeout", "30",
    "--iccid-start", sims.LOADGEN_ICCID_START,
)  # fmt: skip


def fast_liveness(builder: ConfigBuilder, node: Node) -> None:
    builder.lns(heartbeat_interval=0.5, dead_after=3.0)


@pytest.fixture
def deployment(tmp_path: Path, freeradius: FreeRadius) -> Iterator[Deployment]:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set: the nodes need PostgreSQL")
    with Deployment(tmp_path, freeradius, url, nodes=2, configure=fast_liveness) as deployment:
        yield deployment


def statuses(freeradius: FreeRadius, node: Node) -> dict[str, list[str]]:
    """Acct-Status-Type of each session of `node` (this test's runs of it, by the
    Acct-Session-Ids its log names) in FreeRADIUS's detail file, in order."""
    ours = set(node.acct_session_ids())
    found: dict[str, list[str]] = {}
    for record in detail_records(freeradius):
        if record.get("Acct-Session-Id") in ours:
            found.setdefault(record["Acct-Session-Id"], []).append(record["Acct-Status-Type"])
    return found


def causes(freeradius: FreeRadius, node: Node) -> Counter[str]:
    ours = set(node.acct_session_ids())
    return Counter(
        record.get("Acct-Terminate-Cause", "")
        for record in detail_records(freeradius)
        if record.get("Acct-Session-Id") in ours and record.get("Acct-Status-Type") == "Stop"
    )


def test_a_killed_node_s_sims_come_back_on_the_other_with_their_addresses_and_stops(
    deployment: Deployment, freeradius: FreeRadius
):
    a, b = deployment.start().nodes
    watch = deployment.watch_leases()
    loadgen = deployment.loadgen([a, b], *LOADGEN, "--hold", "40")
    loadgen.wait_phase({"hold"}, 90)
    before = deployment.leases_by_iccid()
    assert len(before) == SIMS
    assert {lease.node for lease in before.values()} == {"node-A"}
    # The LAC saw every IPCP Opened; node-A's log line of each comes with its next write.
    deployment.wait_until(lambda: len(a.acct_session_ids()) == SIMS, 10, "sessions logged")
    sessions_on_a = a.acct_session_ids()
    assert len(sessions_on_a) == SIMS
    deployment.wait_until(
        lambda: sum(s == ["Start"] for s in statuses(freeradius, a).values()) == SIMS,
        30,
        "node-A's Starts delivered",
    )

    a.kill()
    loadgen.wait_line("marked down", 30)
    deployment.wait_until(lambda: len(b.sessions()) == SIMS, 10, f"{SIMS} sessions on node-B")
    after = deployment.leases_by_iccid()
    assert {lease.node for lease in after.values()} == {"node-B"}
    assert {iccid: lease.address for iccid, lease in after.items()} == {
        iccid: lease.address for iccid, lease in before.items()
    }  # every SIM kept its address

    # node-B adopts node-A: one Stop per session node-A had, Lost-Service.
    deployment.wait_until(
        lambda: "adoption of node node-A done" in b.log(), 30, "node-B adopts node-A"
    )
    deployment.wait_until(
        lambda: sum(s == ["Start", "Stop"] for s in statuses(freeradius, a).values()) == SIMS,
        30,
        "a Stop for every session of node-A",
    )
    assert set(statuses(freeradius, a)) == set(sessions_on_a)
    assert causes(freeradius, a) == Counter({"Lost-Service": SIMS})

    # node-A comes back: nothing twice, no lease taken from node-B.
    a.restart()
    deployment.wait_until(
        lambda: (
            "Accounting-On"
            in [
                r.get("Acct-Status-Type")
                for r in detail_records(freeradius)
                if r.get("NAS-Identifier") == "node-A"
            ][-1:]
        ),
        30,
        "node-A's Accounting-On after its restart",
    )
    assert all(s == ["Start", "Stop"] for s in statuses(freeradius, a).values())
    assert {lease.node for lease in deployment.leases_by_iccid().values()} == {"node-B"}

    summary = loadgen.wait(90)
    assert summary["ok"], summary
    (failover,) = summary["failovers"]
    assert (failover["sims_lost"], failover["sims_back"], failover["kept_address"]) == (
        SIMS,
        SIMS,
        SIMS,
    )
    # The SIMs' sessions on node-B: a Start each, and a Stop at the end of the run.
    on_b = statuses(freeradius, b)
    assert len(on_b) == SIMS
    assert all(s[0] == "Start" and s.count("Stop") <= 1 for s in on_b.values())
    watch.stop()
    watch.check()  # no address, no ICCID ever held twice
    assert "Traceback" not in a.all_logs() + b.all_logs()


def test_a_live_node_cut_off_from_the_lac_clears_its_stale_sessions_and_keeps_out(
    deployment: Deployment, freeradius: FreeRadius
):
    a, b = deployment.start().nodes
    relay = deployment.relay(a)
    watch = deployment.watch_leases()
    loadgen = deployment.loadgen([relay, b], *LOADGEN, "--hold", "30")
    loadgen.wait_phase({"hold"}, 90)
    before = deployment.leases_by_iccid()
    assert {lease.node for lease in before.values()} == {"node-A"}
    # The LAC counts a SIM up when it has acked IPCP; node-A logs it when that ack arrives.
    deployment.wait_until(lambda: len(a.sessions()) == SIMS, 10, f"{SIMS} sessions on node-A")

    relay.cut()  # node-A lives on; nothing passes between it and the LAC
    loadgen.wait_line("marked down", 30)
    deployment.wait_until(lambda: len(b.sessions()) == SIMS, 10, f"{SIMS} sessions on node-B")
    # Told by NOTIFY, node-A ends its stale sessions (a Stop each) within seconds.
    deployment.wait_until(lambda: len(a.sessions()) == 0, 5, "node-A's stale sessions cleared")
    assert a.alive()
    assert {lease.node for lease in deployment.leases_by_iccid().values()} == {"node-B"}
    assert {iccid: lease.address for iccid, lease in deployment.leases_by_iccid().items()} == {
        iccid: lease.address for iccid, lease in before.items()
    }
    deployment.wait_until(
        lambda: sum(s == ["Start", "Stop"] for s in statuses(freeradius, a).values()) == SIMS,
        30,
        "a Stop for every stale session of node-A",
    )
    assert "could not release" not in a.log()

    summary = loadgen.wait(90)
    assert summary["ok"], summary
    watch.stop()
    watch.check()
    # node-A never released what node-B holds: every lease ended by node-B's own teardown.
    assert all(s == ["Start", "Stop"] for s in statuses(freeradius, a).values())
