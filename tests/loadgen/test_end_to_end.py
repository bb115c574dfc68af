"""lns-loadgen as an operator runs it, against the shipped server: ``twistd -n lns`` with
the session's FreeRADIUS and an SQLite pool (tests/loadgen/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lns.testing.processes import working_tree_env
from lns.testing.sims import LOADGEN_SIMS as SIMS
from lns.testing.sims import loadgen_iccid as iccid

pytestmark = pytest.mark.integration  # twistd, FreeRADIUS and lns-loadgen as processes


def loadgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The working tree's code, whatever copy of lns is installed.
    return subprocess.run(
        [sys.executable, "-m", "lns.loadgen", *args],
        cwd=cwd,
        env=working_tree_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fifty_sessions_over_two_tunnels(tmp_path: Path, lns_server):
    done = loadgen(
        f"127.0.0.1:{lns_server.port}",
        "--tunnels", "2",
        "--sessions", "50",
        "--rate", "0",
        "--secret", lns_server.secret,
        "--iccid-start", iccid(0),
        "--hello-interval", "0.01",
        "--timeout", "20",
        "--json", "-",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + lns_server.log()[-3000:]
    summary = json.loads(done.stdout)  # stdout is the JSON alone
    assert summary["ok"] is True
    assert summary["tunnels"] == {"requested": 2, "established": 2, "failures": {}}
    sessions = summary["sessions"]
    assert sessions["attempted"] == sessions["established"] == 50
    assert sessions["failed"] == 0
    assert sessions["failures"] == {}
    assert sessions["dropped"] == 0
    assert sessions["hung_up"] == 50
    latency = summary["setup"]["latency_ms"]
    assert latency["count"] == 50
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert summary["setup"]["setups_per_s"] > 0
    assert summary["hello"]["rtt_ms"]["count"] > 0
    assert summary["teardown_complete"] is True
    assert summary["control"]["send_errors"] == 0
    # The table went to stderr, out of the JSON's way.
    assert "setup latency" in done.stderr
    # The server saw every session authenticated by RADIUS and torn down by the LAC.
    log = lns_server.log()
    assert all(f"session up: ICCID {iccid(i)}," in log for i in range(50))
    assert "Traceback" not in log


def test_progress_summary_and_failures_by_reason(tmp_path: Path, lns_server):
    # The last two SIMs of the RADIUS users file, then three it does not know.
    done = loadgen(
        f"127.0.0.1:{lns_server.port}",
        "--sessions", "5",
        "--rate", "100",
        "--secret", lns_server.secret,
        "--iccid-start", iccid(SIMS - 2),
        "--auth", "pap",
        "--timeout", "20",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    # Progress on stderr (not a terminal: plain lines, one per phase at least).
    for phase in ("tunnels", "setup", "teardown", "done"):
        assert any(line.split()[2:3] == [phase] for line in done.stderr.splitlines()), phase
    assert "\r" not in done.stderr
    # The summary table on stdout.
    table = done.stdout
    assert "5 requested, 5 attempted, 2 established, 3 failed" in table
    failed = [line for line in table.splitlines() if line.strip().startswith("3  failed: CDN")]
    assert len(failed) == 1
    assert "failed: CDN 2/0: authentication failed" in failed[0]
    # The verdict names the failure and its reason.
    assert table.splitlines()[-1].split()[:2] == ["result", "FAILED:"]
    assert "3 of 5 sessions failed: CDN 2/0: authentication failed" in table.splitlines()[-1]


def test_a_tunnel_refused_for_want_of_a_secret_is_a_failed_run(tmp_path: Path, lns_server):
    # No --secret: the LAC cannot answer the LNS's challenge, the LNS stops the tunnel.
    done = loadgen(
        f"127.0.0.1:{lns_server.port}",
        "--sessions", "3",
        "--iccid-start", iccid(0),
        "--timeout", "10",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    verdict = done.stdout.splitlines()[-1]
    assert verdict.startswith("result             FAILED: 1 of 1 tunnels failed: ")
    assert "tunnel authentication failed: no Challenge Response" in verdict
