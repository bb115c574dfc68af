"""The end of a run: one JSON-ready summary, and the table a person reads, made from it.

Durations in the summary are milliseconds (``*_ms``) or seconds (``*_s``), rates
per second; a measurement without samples is ``null``.
"""

from __future__ import annotations

import json
from typing import Any

from lns.loadgen.stats import Distribution, Failover, Reasons, RunStats

Summary = dict[str, Any]


def _ms(distribution: Distribution | None) -> dict[str, float | int] | None:
    if distribution is None:
        return None
    return {
        "count": distribution.count,
        "p50": round(distribution.p50 * 1000, 3),
        "p90": round(distribution.p90 * 1000, 3),
        "p99": round(distribution.p99 * 1000, 3),
        "max": round(distribution.max * 1000, 3),
        "mean": round(distribution.mean * 1000, 3),
    }


def _reasons(reasons: Reasons) -> dict[str, int]:
    return dict(reasons.most_common())


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _failover(failover: Failover, started_at: float) -> dict[str, Any]:
    """One failover; ``down_at_s`` from the start of the run, ``down_at_epoch`` on the
    reactor's clock (Unix time in a real run, to line up with what killed the LNS)."""
    return {
        "lns": failover.lns,
        "reason": failover.reason,
        "down_at_s": round(failover.down_at - started_at, 3),
        "down_at_epoch": round(failover.down_at, 3),
        "to": failover.to,
        "tunnels_lost": failover.tunnels_lost,
        "sims_lost": failover.sims_lost,
        "sims_back": failover.sims_back,
        "kept_address": failover.kept_address,
        "recovery_s": _round(failover.recovery),
        "complete": failover.complete,
        "not_back": _reasons(failover.not_back),
    }


def summarize(stats: RunStats) -> Summary:
    duration = stats.duration
    return {
        "server": stats.server,
        "lns": stats.server.split(","),
        "ok": stats.ok,
        "problems": stats.problems(),
        "interrupted": stats.interrupted,
        "duration_s": round(duration, 3),
        "tunnels": {
            "requested": stats.tunnels_requested,
            "established": stats.tunnels_established,
            "failures": _reasons(stats.tunnel_failures),
        },
        "sessions": {
            "requested": stats.sessions_requested,
            "attempted": stats.sessions_attempted,
            "not_attempted": stats.sessions_not_attempted,
            "established": stats.sessions_established,
            "failed": stats.sessions_failed,
            "failures": _reasons(stats.failures),
            "dropped": stats.drops.total(),
            "drops": _reasons(stats.drops),
            "hung_up": stats.sessions_hung_up,
        },
        "setup": {
            "duration_s": _round(stats.setup_duration),
            "setups_per_s": _round(stats.setups_per_second, 1),
            "latency_ms": _ms(stats.setup_latency.distribution()),
        },
        "hello": {
            "rtt_ms": _ms(stats.hello_setup.distribution()),
            "rtt_hold_ms": _ms(stats.hello_hold.distribution()),
            "skipped": stats.hellos_skipped,
        },
        "control": {
            "retransmissions": stats.retransmissions,
            "datagrams_sent": stats.datagrams_sent,
            "datagrams_received": stats.datagrams_received,
            "send_errors": stats.send_errors,
            "malformed_received": stats.malformed_received,
            "datagrams_unexpected": stats.datagrams_unexpected,
        },
        "failovers": [_failover(f, stats.started_at) for f in stats.failovers],
        "teardown_complete": stats.teardown_complete,
        "ping": None
        if stats.ping_target is None
        else {
            "target": stats.ping_target,
            "sent": stats.pings_sent,
            "answered": stats.pings_answered,
            "misrouted": stats.pings_misrouted,
            "sessions_unanswered": stats.sessions_unanswered,
        },
        "loadgen": {
            "cpu_s": round(stats.cpu_seconds, 3),
            "cpu_percent": round(100 * stats.cpu_seconds / duration, 1) if duration else None,
            "max_rss_mib": round(stats.max_rss_kib / 1024, 1),
        },
    }


def to_json(summary: Summary) -> str:
    return json.dumps(summary, indent=2) + "\n"


def _fmt_ms(value: float) -> str:
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _distribution_text(values: dict[str, float | int] | None, keys: tuple[str, ...]) -> str:
    if values is None:
        return "no samples"
    parts = [f"{key} {_fmt_ms(float(values[key]))}" for key in keys]
    return "  ".join(parts) + f"  (n={values['count']})"


def _failover_rows(failover: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        (
            "failover",
            f"{failover['lns']} down at {failover['down_at_s']:.2f} s: {failover['reason']}; "
            f"{failover['tunnels_lost']} tunnel(s) moved to {failover['to']}",
        )
    ]
    lost = failover["sims_lost"]
    if lost:
        recovery = failover["recovery_s"]
        took = "" if recovery is None else f" in {recovery:.2f} s"
        rows.append(
            (
                "",
                f"  {failover['sims_back']} of {lost} SIMs back{took} (first lost to last up), "
                f"{failover['kept_address']} with the address they had",
            )
        )
    rows += [("", f"  {n:>7}  not back: {reason}") for reason, n in failover["not_back"].items()]
    return rows


def format_table(summary: Summary) -> str:
    """The summary as aligned ``label  value`` lines, reasons indented under their count."""
    rows: list[tuple[str, str]] = []
    tunnels = summary["tunnels"]
    sessions = summary["sessions"]
    setup = summary["setup"]
    hello = summary["hello"]
    control = summary["control"]

    rows.append(("server", f"{summary['server']}, run of {summary['duration_s']:.2f} s"))
    tunnel_failed = sum(tunnels["failures"].values())
    rows.append(
        (
            "tunnels",
            f"{tunnels['requested']} requested, {tunnels['established']} established"
            + (f", {tunnel_failed} failed" if tunnel_failed else ""),
        )
    )
    rows += [("", f"  {n:>7}  {reason}") for reason, n in tunnels["failures"].items()]
    rows.append(
        (
            "sessions",
            f"{sessions['requested']} requested, {sessions['attempted']} attempted, "
            f"{sessions['established']} established, {sessions['failed']} failed",
        )
    )
    if sessions["not_attempted"]:
        rows.append(("", f"  {sessions['not_attempted']:>7}  not attempted"))
    rows += [("", f"  {n:>7}  failed: {reason}") for reason, n in sessions["failures"].items()]
    if sessions["dropped"]:
        rows.append(("dropped after setup", str(sessions["dropped"])))
        rows += [("", f"  {n:>7}  {reason}") for reason, n in sessions["drops"].items()]
    rate = setup["setups_per_s"]
    rows.append(
        (
            "setup rate",
            "n/a"
            if rate is None
            else f"{rate:.1f} sessions/s over {setup['duration_s']:.2f} s (first ICRQ to last up)",
        )
    )
    rows.append(
        (
            "setup latency",
            _distribution_text(setup["latency_ms"], ("p50", "p90", "p99", "max")),
        )
    )
    rows.append(("HELLO RTT (setup)", _distribution_text(hello["rtt_ms"], ("p50", "p99", "max"))))
    if hello["rtt_hold_ms"] is not None:
        rows.append(
            ("HELLO RTT (hold)", _distribution_text(hello["rtt_hold_ms"], ("p50", "p99", "max")))
        )
    if hello["skipped"]:
        rows.append(("HELLOs skipped", f"{hello['skipped']} (previous one still unacknowledged)"))
    rows.append(
        (
            "control",
            f"{control['retransmissions']} retransmissions, "
            f"{control['datagrams_sent']} datagrams sent, "
            f"{control['datagrams_received']} received"
            + (f", {control['send_errors']} send errors" if control["send_errors"] else "")
            + (
                f", {control['malformed_received']} malformed"
                if control["malformed_received"]
                else ""
            )
            + (
                f", {control['datagrams_unexpected']} from elsewhere"
                if control["datagrams_unexpected"]
                else ""
            ),
        )
    )
    for failover in summary["failovers"]:
        rows += _failover_rows(failover)
    ping = summary["ping"]
    if ping is not None:
        rows.append(
            (
                "ping",
                f"{ping['target']}: {ping['sent']} sent, {ping['answered']} answered, "
                f"{ping['misrouted']} misrouted, "
                f"{ping['sessions_unanswered']} sessions without a reply",
            )
        )
    rows.append(
        (
            "teardown",
            f"{sessions['hung_up']} CDNs sent, "
            + ("all acknowledged" if summary["teardown_complete"] else "not all acknowledged"),
        )
    )
    loadgen = summary["loadgen"]
    cpu = loadgen["cpu_percent"]
    rows.append(
        (
            "loadgen",
            f"CPU {loadgen['cpu_s']:.2f} s"
            + (f" ({cpu:.0f}% of one core)" if cpu is not None else "")
            + f", max RSS {loadgen['max_rss_mib']:.0f} MiB",
        )
    )
    verdict = "OK" if summary["ok"] else "FAILED: " + "; ".join(summary["problems"])
    rows.append(("result", verdict))
    width = max(len(label) for label, _ in rows)
    return "".join(f"{label:<{width}}  {value}".rstrip() + "\n" for label, value in rows)
