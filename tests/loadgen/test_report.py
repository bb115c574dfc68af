"""The summary as JSON and as a table, and the progress display."""

from __future__ import annotations

import io
import json

from lns.loadgen.progress import Progress, Snapshot, progress_line
from lns.loadgen.report import format_table, summarize, to_json
from lns.loadgen.stats import RunStats


def finished_run() -> RunStats:
    stats = RunStats(server="192.0.2.1:1701", tunnels_requested=4, sessions_requested=100)
    stats.tunnels_established = 4
    stats.sessions_attempted = 100
    stats.sessions_established = 97
    stats.failures.add("CDN 2/0: authentication failed", 2)
    stats.failures.add("timeout after 60 s: no ICRP")
    stats.sessions_hung_up = 97
    for i in range(97):
        stats.setup_latency.add(0.010 + i / 1000)  # 10 ms .. 106 ms
    for rtt in (0.0004, 0.0005, 0.002):
        stats.hello_setup.add(rtt)
    stats.retransmissions = 3
    stats.datagrams_sent, stats.datagrams_received = 800, 600
    stats.started_at, stats.finished_at = 1000.0, 1004.0
    stats.first_setup_at, stats.last_setup_at = 1000.5, 1002.5
    stats.cpu_seconds, stats.max_rss_kib = 1.0, 40 * 1024
    return stats


def test_summary_in_json_units():
    summary = json.loads(to_json(summarize(finished_run())))
    assert summary["ok"] is False
    assert summary["duration_s"] == 4.0
    assert summary["tunnels"] == {"requested": 4, "established": 4, "failures": {}}
    sessions = summary["sessions"]
    assert (sessions["attempted"], sessions["established"], sessions["failed"]) == (100, 97, 3)
    assert sessions["failures"] == {
        "CDN 2/0: authentication failed": 2,
        "timeout after 60 s: no ICRP": 1,
    }
    assert summary["setup"]["setups_per_s"] == 48.5  # 97 sessions in 2 s
    latency = summary["setup"]["latency_ms"]
    assert latency["count"] == 97
    assert latency["p50"] == 58.0  # the 49th of 97, nearest rank
    assert latency["max"] == 106.0
    assert summary["hello"]["rtt_ms"]["p50"] == 0.5
    assert summary["hello"]["rtt_hold_ms"] is None
    assert summary["control"]["retransmissions"] == 3
    assert summary["ping"] is None
    assert summary["loadgen"] == {"cpu_s": 1.0, "cpu_percent": 25.0, "max_rss_mib": 40.0}


def test_table_says_what_happened():
    table = format_table(summarize(finished_run()))
    lines = table.splitlines()
    assert lines[0].startswith("server ")
    assert "100 requested, 100 attempted, 97 established, 3 failed" in table
    assert "      2  failed: CDN 2/0: authentication failed" in table
    assert "48.5 sessions/s" in table
    assert "p50 58.0 ms" in table
    assert "p99 106.0 ms" in table
    assert "HELLO RTT (setup)" in table
    assert "p50 0.50 ms" in table
    assert "HELLO RTT (hold)" not in table
    assert "3 retransmissions, 800 datagrams sent, 600 received" in table
    assert "25% of one core" in table
    assert lines[-1] == (
        "result             FAILED: 3 of 100 sessions failed: CDN 2/0: authentication failed"
        " (and 1 other reason)"
    )
    width = lines[0].index("192.0.2.1")
    assert all(line[width - 2 : width] == "  " for line in lines)


def test_table_of_an_empty_run():
    stats = RunStats(server="[2001:db8::1]:1701", tunnels_requested=1, sessions_requested=0)
    table = format_table(summarize(stats))
    assert "setup rate" in table
    assert "n/a" in table
    assert "no samples" in table
    assert table.splitlines()[-1].split() == ["result", "OK"]


def test_ping_line_when_pinging():
    stats = finished_run()
    stats.ping_target = "198.51.100.1"
    stats.pings_sent, stats.pings_answered, stats.sessions_unanswered = 10, 9, 1
    summary = summarize(stats)
    assert summary["ping"] == {
        "target": "198.51.100.1",
        "sent": 10,
        "answered": 9,
        "misrouted": 0,
        "sessions_unanswered": 1,
    }
    assert "198.51.100.1: 10 sent, 9 answered" in format_table(summary)


SNAPSHOT = Snapshot(
    elapsed=12.34,
    phase="setup",
    tunnels_up=4,
    tunnels_requested=4,
    sessions_up=5000,
    sessions_failed=2,
    in_flight=480,
    sessions_requested=10000,
    setups_per_second=998.6,
    hello_p99=0.0031,
)


def test_progress_line():
    line = progress_line(SNAPSHOT)
    assert "12.3 s" in line
    assert "tunnels 4/4" in line
    assert "sessions up 5000/10000 failed 2 in flight 480" in line
    assert "999 setups/s" in line
    assert "HELLO p99 3.1 ms" in line
    assert "HELLO p99 -" in progress_line(Snapshot(0, "tunnels", 0, 1, 0, 0, 0, 1, 0.0, None))


def test_progress_on_a_terminal_rewrites_one_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = io.StringIO()
    progress = Progress(out, tty=True)
    assert progress.interval == 1.0
    progress.update(SNAPSHOT)
    progress.update(SNAPSHOT)
    assert out.getvalue().count("\r") == 2
    assert "\n" not in out.getvalue()
    progress.note("tunnel 7: StopCCN 4/0")  # its own line, above the progress
    assert out.getvalue().endswith("\ntunnel 7: StopCCN 4/0\n")
    progress.update(SNAPSHOT)
    progress.finish()
    assert out.getvalue().endswith("\n")
    progress.finish()  # nothing more to end
    assert not out.getvalue().endswith("\n\n")


def test_progress_elsewhere_is_plain_lines():
    out = io.StringIO()
    progress = Progress(out, tty=False)
    assert progress.interval == 5.0
    progress.update(SNAPSHOT)
    progress.phase_changed(SNAPSHOT)
    progress.finish()
    assert "\r" not in out.getvalue()
    assert out.getvalue().count("\n") == 2


def test_quiet_progress_writes_nothing():
    out = io.StringIO()
    progress = Progress(out, tty=True, quiet=True)
    progress.update(SNAPSHOT)
    progress.note("x")
    progress.finish()
    assert out.getvalue() == ""


def test_progress_on_a_narrow_terminal_is_cut_to_its_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    out = io.StringIO()
    Progress(out, tty=True).update(SNAPSHOT)
    assert out.getvalue() == "\r" + progress_line(SNAPSHOT)[:59] + "\x1b[K"
