"""Issue 16 item 2: the database goes away under a running ``twistd -n lns`` (PostgreSQL
refusing every connection) and comes back.

New SIMs are refused with a CDN that says "temporarily unavailable" (the detail only in
the node's log, once); the sessions already up stay up; the accounting records made
meanwhile (the Stops of those sessions) are kept, and reach FreeRADIUS once the database
is back, without a restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lns.testing import sims
from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius, records_of
from lns.testing.nodes import Deployment, Node

POSTGRES_URL_VARIABLE = "LNS_TEST_POSTGRES_URL"
HELD = 5
COMMON = ("--rate", "0", "--hello-interval", "1", "--retransmit", "0.5", "--retries", "3")


def quick_retries(builder: ConfigBuilder, node: Node) -> None:
    builder.lns(heartbeat_interval=1.0, dead_after=30.0)


def test_an_outage_refuses_new_sims_keeps_live_ones_and_loses_no_record(
    tmp_path: Path, freeradius: FreeRadius
):
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set: this test needs PostgreSQL")
    with Deployment(tmp_path, freeradius, url, nodes=1, configure=quick_retries) as rig:
        (node,) = rig.start().nodes
        held = rig.loadgen(
            [node],
            "--sessions", str(HELD),
            "--hold", "20",
            "--iccid-start", sims.loadgen_iccid(0),
            *COMMON,
        )  # fmt: skip
        held.wait_phase({"hold"}, 60)
        rig.wait_until(lambda: len(node.acct_session_ids()) == HELD, 10, "sessions logged")
        ids = node.acct_session_ids()
        rig.wait_until(
            lambda: all(len(records_of(freeradius, i)) == 1 for i in ids), 20, "the Starts"
        )

        rig.database.refuse_connections()
        late = rig.loadgen(
            [node],
            "--sessions", "1",
            "--iccid-start", sims.loadgen_iccid(100),
            "--timeout", "15",
            *COMMON,
        )  # fmt: skip
        refused = late.wait(60)
        assert not refused["ok"]
        assert "temporarily unavailable" in json.dumps(refused)
        assert "database error" not in json.dumps(refused)  # the detail stays here

        summary = held.wait(90)  # the hold went on through the outage; then teardown
        assert summary["sessions"]["established"] == HELD
        assert summary["sessions"]["dropped"] == 0
        rig.wait_until(lambda: "records are kept in memory" in node.log(), 20, "the Stops kept")
        assert all(len(records_of(freeradius, i)) == 1 for i in ids)  # not yet

        rig.database.accept_connections()
        rig.wait_until(
            lambda: all(
                [r["Acct-Status-Type"] for r in records_of(freeradius, i)] == ["Start", "Stop"]
                for i in ids
            ),
            45,
            "every Stop delivered after the outage",
        )
        log = node.log()
    assert log.count("address pool: the database is unavailable") == 1
    assert log.count("accounting spool: the database is unavailable") == 1
    assert "accounting spool: the database is usable again" in log
    assert "sent unspooled" not in log
    assert "Traceback" not in log, log[log.find("Traceback") - 300 : log.find("Traceback") + 2500]
