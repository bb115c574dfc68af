"""Several nodes on one PostgreSQL database, and lns-loadgen failing over between them
as a carrier's LAC does (DESIGN.md section 9): the smoke test of the multi-node rig
(lns.testing.nodes) with the suite's FreeRADIUS and real ``twistd -n lns`` processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lns.testing import sims
from lns.testing.freeradius import FreeRadius
from lns.testing.nodes import Deployment

POSTGRES_URL_VARIABLE = "LNS_TEST_POSTGRES_URL"
SIMS = 20
# Fast failure detection: a HELLO every 0.2 s, unacknowledged after 0.2 + 0.4 + 0.8
# + 1.6 = 3 s; the sessions held long enough for them to come back on the next node.
LOADGEN = (
    "--tunnels", "2",
    "--sessions", str(SIMS),
    "--rate", "0",
    "--hello-interval", "0.2",
    "--retransmit", "0.2",
    "--retries", "3",
    "--timeout", "20",
    "--iccid-start", sims.LOADGEN_ICCID_START,
)  # fmt: skip


@pytest.fixture
def deployment(tmp_path: Path, freeradius: FreeRadius) -> Iterator[Deployment]:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set: the nodes need PostgreSQL")
    with Deployment(tmp_path, freeradius, url, nodes=2) as deployment:
        yield deployment


def test_loadgen_fails_over_from_a_killed_node_and_every_sim_comes_back(
    deployment: Deployment,
):
    a, b = deployment.start().nodes
    watch = deployment.watch_leases()
    loadgen = deployment.loadgen([a, b], *LOADGEN, "--hold", "15")
    loadgen.wait_phase({"hold"}, 60)
    before = deployment.leases_by_iccid()
    assert len(before) == SIMS
    assert {lease.node for lease in before.values()} == {"node-A"}
    # The LAC counts a SIM up when it has acked IPCP; node-A logs it when that ack arrives.
    deployment.wait_until(lambda: len(a.sessions()) == SIMS, 10, f"{SIMS} sessions on node-A")

    a.kill()
    loadgen.wait_line("marked down", 30)
    deployment.wait_until(lambda: len(b.sessions()) == SIMS, 30, f"{SIMS} sessions up on node-B")
    after = deployment.leases_by_iccid()
    assert set(after) == set(before)
    assert {lease.node for lease in after.values()} == {"node-B"}
    listed = b.api_sessions()  # what its management API says
    assert {s["iccid"] for s in listed} == set(before)

    summary = loadgen.wait(60)
    assert summary["ok"], summary
    (failover,) = summary["failovers"]
    assert failover["lns"] == a.endpoint
    assert failover["to"] == b.endpoint
    assert failover["reason"] == "the LNS stopped acknowledging"
    assert (failover["sims_lost"], failover["sims_back"]) == (SIMS, SIMS)
    assert failover["kept_address"] == SIMS
    deployment.wait_until(lambda: not b.sessions(), 10, "node-B's sessions torn down at the end")
    assert {s.iccid for s in b.sessions_started()} == set(before)
    watch.stop()
    watch.check()


def test_loadgen_fails_over_from_a_live_node_it_can_no_longer_reach(deployment: Deployment):
    a, b = deployment.start().nodes
    relay = deployment.relay(a)  # the LAC reaches node-A through it only
    watch = deployment.watch_leases()
    loadgen = deployment.loadgen([relay, b], *LOADGEN, "--hold", "15")
    loadgen.wait_phase({"hold"}, 60)
    before = deployment.leases_by_iccid()
    assert {lease.node for lease in before.values()} == {"node-A"}
    assert len(before) == SIMS

    relay.cut()  # node-A lives on, but nothing passes between it and the LAC
    loadgen.wait_line("marked down", 30)
    deployment.wait_until(lambda: len(b.sessions()) == SIMS, 30, f"{SIMS} sessions up on node-B")
    after = deployment.leases_by_iccid()
    assert set(after) == set(before)
    assert {lease.node for lease in after.values()} == {"node-B"}
    assert a.alive()

    summary = loadgen.wait(60)
    assert summary["ok"], summary
    (failover,) = summary["failovers"]
    assert failover["lns"] == "{}:{}".format(*relay.address)
    assert (failover["sims_lost"], failover["sims_back"]) == (SIMS, SIMS)
    watch.stop()
    watch.check()
