"""`lns-admin session|tunnel|status`: clients of a running node's management API.

    lns-admin --config lns.toml session list [--iccid ICCID] [--lac NAME] [--json]
    lns-admin --config lns.toml session show ACCT_SESSION_ID [--json]
    lns-admin --config lns.toml session kill (--iccid ICCID | ACCT_SESSION_ID)
    lns-admin --config lns.toml tunnel list [--json]
    lns-admin --config lns.toml tunnel kill TUNNEL_ID
    lns-admin --config lns.toml status [--json]

The node's address and token come from the ``[management]`` section of the same
configuration file the node runs with (DESIGN.md section 10). Tables for people,
JSON for scripts; every error is one line on stderr and a non-zero exit status:
the node not running, a wrong token, an unknown session or tunnel.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

from lns.config import Config, ConfigError, ManagementSection, load_config
from lns.iccid import InvalidIccid, parse_iccid

__all__ = ["NodeApi", "NodeApiError", "add_commands", "run"]

PROG = "lns-admin"
TIMEOUT = 15.0  # seconds for one request


class NodeApiError(Exception):
    """What went wrong talking to the node, in one line."""


class NodeApi:
    """A blocking client of one node's management API."""

    def __init__(self, section: ManagementSection, source: str) -> None:
        host = ipaddress.ip_address(section.listen_host)
        if host.is_unspecified:  # listening everywhere: this host's loopback reaches it
            host = ipaddress.ip_address("::1" if host.version == 6 else "127.0.0.1")
        shown = f"[{host}]" if host.version == 6 else str(host)
        self.base = f"http://{shown}:{section.listen_port}"
        self.token = section.token
        self.source = source

    def get(self, path: str, **query: str | None) -> Any:
        return self.request("GET", path, query)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path, {})

    def request(self, method: str, path: str, query: dict[str, str | None]) -> Any:
        given = {name: value for name, value in query.items() if value is not None}
        url = self.base + path + (f"?{urllib.parse.urlencode(given)}" if given else "")
        request = urllib.request.Request(url, method=method)
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token.value.decode()}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise NodeApiError(self._refused(exc)) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                raise NodeApiError(
                    f"cannot reach the node at {self.base}: connection refused"
                    f" (is it running with the [management] section of {self.source}?)"
                ) from None
            raise NodeApiError(f"cannot reach the node at {self.base}: {reason}") from None
        except TimeoutError:
            raise NodeApiError(
                f"the node at {self.base} did not answer within {TIMEOUT:g} s"
            ) from None
        except (ValueError, ConnectionError, OSError) as exc:
            raise NodeApiError(f"bad answer from the node at {self.base}: {exc}") from None

    def _refused(self, exc: urllib.error.HTTPError) -> str:
        try:
            message = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError, OSError):
            message = ""
        if exc.code == 401:
            if self.token is None:
                return f"the node requires a token: {self.source} has no [management] token"
            return f"the node refused the token ([management] token of {self.source})"
        return message or f"the node answered HTTP {exc.code}"


# --- commands ----------------------------------------------------------------------------

Command = Callable[[NodeApi, argparse.Namespace, TextIO], int]


def _session_list(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    sessions: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = api.get(
            "/api/v1/sessions", iccid=args.iccid, lac=args.lac, after=after, limit="1000"
        )
        sessions += page["sessions"]
        after = page["next"]
        if after is None:
            break
    if args.json:
        _json(out, sessions)
        return 0
    _table(
        out,
        ["ICCID", "ADDRESS", "LAC", "TUNNEL", "SESSION", "STATE", "UPTIME", "IN", "OUT", "ID"],
        [
            [
                s["iccid"],
                s["address"] or "-",
                s["lac"]["name"],
                s["tunnel_id"],
                s["session_id"],
                s["state"],
                _duration(s["uptime"]),
                _octets(s["octets_in"]),
                _octets(s["octets_out"]),
                s["acct_session_id"],
            ]
            for s in sessions
        ],
        empty="no sessions",
    )
    return 0


def _session_show(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    session = api.get(f"/api/v1/sessions/{urllib.parse.quote(args.id, safe='')}")
    if args.json:
        _json(out, session)
        return 0
    lac = session["lac"]
    rows = [
        ("Acct-Session-Id", session["acct_session_id"]),
        ("ICCID", session["iccid"]),
        ("User-Name", session["user_name"]),
        ("state", f"{session['state']} ({session['phase']})"),
        ("address", session["address"] or "-"),
        ("LAC", f"{lac['name']} ({lac['hostname']}, {lac['address']})"),
        ("tunnel", f"{session['tunnel_id']} (LAC's {session['peer_tunnel_id']})"),
        ("session", f"{session['session_id']} (LAC's {session['peer_session_id']})"),
        ("called number", session["called_number"] or "-"),
        ("started", session["started_at"] or "-"),
        ("uptime", _duration(session["uptime"])),
        ("in", f"{session['octets_in']} octets, {session['packets_in']} packets"),
        ("out", f"{session['octets_out']} octets, {session['packets_out']} packets"),
        ("authentication", session["auth"]),
        ("LCP", session["lcp"]),
        ("Session-Timeout", _seconds(session["session_timeout"])),
        ("Idle-Timeout", _seconds(session["idle_timeout"])),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}", file=out)
    return 0


def _session_kill(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    if args.iccid is not None:
        found = api.get("/api/v1/sessions", iccid=args.iccid)["sessions"]
        if not found:
            raise NodeApiError(f"no session of ICCID {args.iccid}")
        ids = [s["acct_session_id"] for s in found]
    else:
        ids = [args.id]
    for acct_session_id in ids:
        cleared = api.delete(f"/api/v1/sessions/{urllib.parse.quote(acct_session_id, safe='')}")
        session = cleared["cleared"]
        print(
            f"cleared session {session['acct_session_id']} (ICCID {session['iccid']}, "
            f"address {session['address'] or '-'})",
            file=out,
        )
    return 0


def _tunnel_list(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    tunnels = api.get("/api/v1/tunnels")["tunnels"]
    if args.json:
        _json(out, tunnels)
        return 0
    _table(
        out,
        ["TUNNEL", "LAC", "PEER", "PEER TUNNEL", "STATE", "SESSIONS", "AGE", "HELLO RTT", "RETX"],
        [
            [
                t["tunnel_id"],
                f"{t['lac']} ({t['peer_hostname']})",
                f"{t['peer']['address']}:{t['peer']['port']}",
                t["peer_tunnel_id"],
                t["state"],
                t["sessions"],
                _duration(t["age"]),
                "-" if t["hello_rtt"] is None else f"{t['hello_rtt'] * 1000:.1f} ms",
                t["retransmissions"],
            ]
            for t in tunnels
        ],
        empty="no tunnels",
    )
    return 0


def _tunnel_kill(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    tunnel = api.delete(f"/api/v1/tunnels/{args.id}")["cleared"]
    print(
        f"sent StopCCN to tunnel {tunnel['tunnel_id']} of LAC {tunnel['lac']} "
        f"({tunnel['sessions']} sessions cleared)",
        file=out,
    )
    return 0


def _status(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    status = api.get("/api/v1/status")
    if args.json:
        _json(out, status)
        return 0
    sessions, tunnels, setups = status["sessions"], status["tunnels"], status["setups"]
    failed = ", ".join(f"{reason} {n}" for reason, n in setups["failed"].items()) or "none"
    latency = setups["latency_mean"]
    lines = [
        f"node {status['node']} (lns {status['version']}), up {_duration(status['uptime'])}"
        f" since {status['started_at']}",
        f"sessions: {sessions['total']} ({sessions['up']} up, {sessions['setting_up']} setting up)",
        f"tunnels: {tunnels['total']} ({tunnels['established']} established)",
        f"set-ups since start: {setups['calls']} calls, {setups['up']} up"
        + ("" if latency is None else f", mean {latency * 1000:.0f} ms"),
        f"set-up failures: {failed}",
    ]
    for server in status["radius"]:
        mean = server["latency_mean"]
        lines.append(
            f"RADIUS {server['server']} ({server['transport']}): {server['state']},"
            f" {server['requests']} requests, {server['timeouts']} timeouts"
            + ("" if mean is None else f", mean {mean * 1000:.1f} ms")
        )
    accounting = status["accounting"]
    if accounting is not None:
        oldest = accounting["oldest_age"]
        lines.append(
            f"accounting spool: {accounting['spool_depth']} records"
            + ("" if oldest is None else f", oldest {_duration(oldest)}")
        )
    for pool in status["pools"]:
        lines.append(
            f"pool {pool['name']}: {pool['in_use']} used, {pool['free']} free,"
            f" {pool['reserved']} reserved of {pool['size']}"
        )
    if status["database"] != "ok":
        lines.append(f"database: {status['database']}")
    for line in lines:
        print(line, file=out)
    return 0


# --- output --------------------------------------------------------------------------------


def _json(out: TextIO, value: object) -> None:
    print(json.dumps(value, indent=2), file=out)


def _table(out: TextIO, headers: list[str], rows: list[list[Any]], *, empty: str) -> None:
    if not rows:
        print(empty, file=out)
        return
    cells = [headers, *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{seconds:.0f}s"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def _octets(count: int) -> str:
    """Octets for a table: 950, 12.3k, 4.5M ..."""
    if count < 1000:
        return str(count)
    value = float(count)
    for unit in ("k", "M", "G", "T"):
        value /= 1000
        if value < 1000 or unit == "T":
            break
    return f"{value:.1f}{unit}"


# --- the command line ----------------------------------------------------------------------


def _iccid(text: str) -> str:
    try:
        return parse_iccid(text)
    except InvalidIccid:
        raise argparse.ArgumentTypeError(f"not an ICCID (19 or 20 digits): {text!r}") from None


def _tunnel_id(text: str) -> str:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a tunnel ID (1 to 65535): {text!r}")
    return text


def add_commands(commands: Any) -> None:
    """Register `session`, `tunnel` and `status` on lns-admin's subcommand parser."""

    def command(group: Any, name: str, handler: Command, text: str, *, lists: bool = False) -> Any:
        sub = group.add_parser(name, help=text, description=text)
        sub.set_defaults(node_command=handler)
        if lists:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    session = commands.add_parser(
        "session", help="live sessions of a running node (its management API)"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = command(session, "list", _session_list, "the node's sessions", lists=True)
    listing.add_argument("--iccid", metavar="ICCID", type=_iccid)
    listing.add_argument("--lac", metavar="NAME", help="the [[l2tp.lac]] name")
    show = command(session, "show", _session_show, "one session", lists=True)
    show.add_argument("id", metavar="ACCT_SESSION_ID")
    kill = command(
        session,
        "kill",
        _session_kill,
        "clear a session: CDN to the LAC, accounting Stop with Admin-Reset, lease released",
    )
    which = kill.add_mutually_exclusive_group(required=True)
    which.add_argument("--iccid", metavar="ICCID", type=_iccid, help="every session of a SIM")
    which.add_argument("id", metavar="ACCT_SESSION_ID", nargs="?")

    tunnel = commands.add_parser(
        "tunnel", help="tunnels of a running node (its management API)"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    command(tunnel, "list", _tunnel_list, "the node's tunnels", lists=True)
    tunnel_kill = command(tunnel, "kill", _tunnel_kill, "clear a tunnel with a StopCCN")
    tunnel_kill.add_argument("id", metavar="TUNNEL_ID", type=_tunnel_id)

    command(
        commands,
        "status",
        _status,
        "a running node: sessions, tunnels, set-ups, RADIUS, accounting spool, pools",
        lists=True,
    )


def run(args: argparse.Namespace, config_path: str, out: TextIO | None = None) -> int:
    """Run a node command; the exit status."""
    out = out if out is not None else sys.stdout
    try:
        config: Config = load_config(config_path)
        if config.management is None:
            raise NodeApiError(
                f"{config_path} has no [management] section: the node runs no management API"
            )
        api = NodeApi(config.management, config_path)
        handler: Command = args.node_command
        return handler(api, args, out)
    except (ConfigError, NodeApiError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
