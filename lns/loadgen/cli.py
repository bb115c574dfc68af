"""``lns-loadgen``: emulate a mobile operator's LAC against an LNS and measure it.

Exit status: 0 when every session came up (and answered pings, with --ping),
1 otherwise, 2 for a usage error (a one-line message on stderr).
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
from pathlib import Path
from typing import IO, Any, NoReturn

from lns.loadgen.options import (
    MAX_LNS,
    LoadOptions,
    OptionError,
    ProxyAuth,
    Teardown,
    parse_lns_list,
    parse_server,
)
from lns.loadgen.progress import Progress
from lns.loadgen.report import format_table, summarize, to_json
from lns.loadgen.stats import RunStats

PROG = "lns-loadgen"

DESCRIPTION = """\
Emulate a mobile operator's LAC (GGSN/PGW) against an L2TP Network Server
(RFC 2661): open tunnels (with tunnel authentication when --secret is given),
place sessions whose ICRQ carries a SIM's ICCID and whose ICCN carries proxy
LCP and proxy CHAP or PAP, and answer PPP as the device would (LCP
renegotiation, CHAP/PAP challenges with the ICCID as name, IPCP, echoes).
It measures session setup rate and latency (ICRQ to the device's IPCP
Opened), failures by reason, and the HELLO round trip while the storm runs,
then tears every session down.

Given several LNSs (--lns A,B,...), it fails over between them as a carrier's
LAC does: an LNS that does not answer SCCRQ, stops acknowledging (a HELLO or
any control message unacknowledged after the retransmissions) or sends StopCCN
is marked down for --down-time seconds, and its tunnels and sessions are
established again on the next LNS that is up, the SIMs keeping their ICCIDs.
The summary shows each failover: which LNS went down and when, how long the
SIMs that were up on it took to come back, how many did and how many kept
their address.

Every datagram goes to the LNS addresses given only; nothing else is contacted."""

EPILOG = """\
examples:
  lns-loadgen 192.0.2.10 --secret S --sessions 100 --rate 20
  lns-loadgen 127.0.0.1:1701 --secret S --tunnels 4 --sessions 10000 --rate 1000 \\
      --password-from-iccid --json result.json
  lns-loadgen 127.0.0.1 --secret S --sessions 50000 --rate 0 --hold 600 --hello-interval 1
  lns-loadgen --lns 192.0.2.10,192.0.2.11 --secret S --sessions 1000 --hold 600 \\
      --retransmit 0.5 --retries 4

A session is established when its device's IPCP reaches Opened; its setup
latency runs from its ICRQ being handed to the LAC (it may wait there for the
LNS's receive window). A HELLO's round trip runs from its first transmission
to the Nr that acknowledges it (ZLB or piggybacked); while one is unanswered
the tunnel's next HELLO is skipped and counted.

Progress goes to stderr: one line rewritten in place on a terminal, else a
line every 5 s and at each phase. The summary table goes to stdout (to stderr
when --json writes to stdout).

Failover is detected by the LAC's own retransmissions: with --retransmit T and
--retries N, an LNS that died is noticed about T * (2^(N+1) - 1) s (each wait
capped at 8 s) after the first HELLO or message it left unacknowledged, so
keep --hello-interval on and --hold long enough for the SIMs to come back.
When no LNS is up any more, a lost tunnel's sessions are dropped.

exit status: 0 every session came up and stayed up (and got echo replies
with --ping), and every SIM lost with an LNS came back; 1 otherwise or when
interrupted; 2 usage error."""


class UsageError(Exception):
    """A command line that cannot run; one line for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "server",
        nargs="?",
        metavar="SERVER[:PORT]",
        help="the LNS: an IPv4 address, or [IPv6]; port 1701 unless given",
    )
    parser.add_argument(
        "--lns",
        metavar="LNS[,LNS...]",
        help=f"instead of SERVER: up to {MAX_LNS} LNSs in order of preference "
        "(each as SERVER[:PORT]), failed over like a carrier's LAC",
    )
    parser.add_argument(
        "--down-time",
        type=_number,
        default=300.0,
        metavar="SECONDS",
        help="how long an LNS that failed stays marked down (default 300, as carriers do)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--tunnels",
        type=_positive_int,
        default=1,
        metavar="N",
        help="tunnels to open (default 1); sessions are spread round-robin",
    )
    load.add_argument(
        "--sessions",
        type=_positive_int,
        default=10,
        metavar="N",
        help="sessions to set up in total (default 10)",
    )
    load.add_argument(
        "--rate",
        type=_number,
        default=50.0,
        metavar="PER_S",
        help="sessions offered per second (default 50); 0: as fast as --concurrency allows",
    )
    load.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="session setups in flight at most (default 1000)",
    )
    load.add_argument(
        "--hold",
        type=_number,
        default=0.0,
        metavar="SECONDS",
        help="keep the sessions up this long once all are set up (default 0: tear down at once)",
    )
    load.add_argument(
        "--timeout",
        type=_number,
        default=60.0,
        metavar="SECONDS",
        help="longest wait for a tunnel, a session's setup, and each step of the "
        "teardown (default 60)",
    )
    load.add_argument(
        "--teardown",
        choices=[t.value for t in Teardown],
        default="cdn",
        help="cdn: a CDN per session then a StopCCN per tunnel (default); stopccn: StopCCNs only",
    )

    lac = parser.add_argument_group("LAC and tunnels")
    lac.add_argument("--hostname", default="lac1", help="Host Name AVP in SCCRQ (default lac1)")
    secret = lac.add_mutually_exclusive_group()
    secret.add_argument("--secret", help="tunnel secret (default: no tunnel authentication)")
    secret.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="read the tunnel secret from FILE (first line), keeping it out of the process list",
    )
    lac.add_argument(
        "--hide-avps",
        action="store_true",
        help="hide the ICCID and proxy authentication AVPs (RFC 2661 4.3)",
    )
    lac.add_argument(
        "--retransmit",
        type=_number,
        default=1.0,
        metavar="SECONDS",
        help="the LAC's initial control retransmission timeout (default 1.0; "
        "doubling, capped at 8)",
    )
    lac.add_argument(
        "--retries",
        type=_positive_int,
        default=5,
        metavar="N",
        help="retransmissions of a control message before its LNS counts as lost (default 5)",
    )
    lac.add_argument(
        "--receive-window",
        type=_positive_int,
        default=16,
        metavar="N",
        help="Receive Window Size the LAC advertises (default 16)",
    )
    lac.add_argument(
        "--hello-interval",
        type=_number,
        default=0.1,
        metavar="SECONDS",
        help="send a HELLO on every tunnel this often and time its "
        "acknowledgement (default 0.1; 0: none)",
    )
    lac.add_argument("--local", metavar="ADDRESS", help="local address to bind (default: any)")

    sims = parser.add_argument_group("SIMs and PPP")
    sims.add_argument(
        "--iccid-start",
        default="8944000000000000001",
        metavar="DIGITS",
        help="ICCID of the first session, 19 or 20 digits, incremented per "
        "session (default 8944000000000000001)",
    )
    password = sims.add_mutually_exclusive_group()
    password.add_argument("--password", help="every SIM's password (default: its ICCID)")
    password.add_argument(
        "--password-from-iccid",
        action="store_true",
        help="each SIM's password is its ICCID (the default)",
    )
    sims.add_argument(
        "--auth",
        choices=[a.value for a in ProxyAuth],
        default="chap",
        help="proxy authentication the LAC passes on (default chap); the device "
        "also answers CHAP/PAP itself if the LNS challenges it",
    )
    sims.add_argument(
        "--no-proxy-lcp",
        action="store_true",
        help="send no proxy LCP AVPs (the LNS then negotiates LCP itself)",
    )
    sims.add_argument(
        "--apn",
        default="iot.example",
        metavar="NAME",
        help="Called Number AVP in ICRQ (default iot.example)",
    )
    sims.add_argument(
        "--ping",
        metavar="ADDRESS",
        help="during --hold each session sends an ICMP echo to this IPv4 "
        "address every --ping-interval, through its session, and counts the "
        "replies that come back to it",
    )
    sims.add_argument(
        "--ping-interval",
        type=_number,
        default=1.0,
        metavar="SECONDS",
        help="seconds between one session's pings (default 1)",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the summary as JSON to FILE, or to stdout with - "
        "(the default when FILE is left out)",
    )
    output.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress and no table: only errors and the --json output",
    )
    output.add_argument(
        "--seed",
        type=_positive_int,
        default=2661,
        help="seed of the random choices (IDs, challenges; default 2661)",
    )
    return parser


def _address(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not an IP address") from None


def options_from(args: argparse.Namespace) -> LoadOptions:
    """The checked options of a parsed command line; UsageError says what is wrong."""
    secret: str | None = args.secret
    if args.secret_file is not None:
        try:
            lines = args.secret_file.read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"--secret-file: {exc.strerror}: {args.secret_file}") from None
        secret = lines[0] if lines else ""
    if (args.server is None) == (args.lns is None):
        raise UsageError("give the LNS as SERVER[:PORT] or as --lns LNS[,LNS...] (not both)")
    if args.lns is not None:
        (server, port), *alternates = parse_lns_list(args.lns)
    else:
        (server, port), alternates = parse_server(args.server), []
    ping = None
    if args.ping is not None:
        address = _address(args.ping, "--ping")
        if not isinstance(address, ipaddress.IPv4Address):
            raise UsageError("--ping takes an IPv4 address")
        ping = address
    return LoadOptions(
        server=server,
        port=port,
        alternates=tuple(alternates),
        down_time=args.down_time,
        local=None if args.local is None else _address(args.local, "--local"),
        tunnels=args.tunnels,
        sessions=args.sessions,
        rate=args.rate,
        concurrency=args.concurrency,
        secret=None if secret is None else secret.encode(),
        hostname=args.hostname,
        hide_avps=args.hide_avps,
        iccid_start=args.iccid_start,
        password=None if args.password is None else args.password.encode(),
        auth=ProxyAuth(args.auth),
        proxy_lcp=not args.no_proxy_lcp,
        called_number=args.apn,
        retransmit=args.retransmit,
        retries=args.retries,
        receive_window=args.receive_window,
        hello_interval=args.hello_interval,
        hold=args.hold,
        timeout=args.timeout,
        teardown=Teardown(args.teardown),
        ping=ping,
        ping_interval=args.ping_interval,
        seed=args.seed,
    )


def main(argv: list[str] | None = None, reactor: Any = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        options = options_from(args)
    except (UsageError, OptionError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    json_to: IO[str] | None = None
    if args.json == "-":
        json_to = sys.stdout
    elif args.json is not None:
        try:
            json_to = open(args.json, "w")  # noqa: SIM115 (kept open for the end of the run)
        except OSError as exc:
            print(f"{PROG}: error: --json: {exc.strerror}: {args.json}", file=sys.stderr)
            return 2
    table_to = sys.stderr if json_to is sys.stdout else sys.stdout
    progress = Progress(sys.stderr, tty=sys.stderr.isatty(), quiet=args.quiet)
    try:
        stats = _run(options, progress, reactor)
    except _BindError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    summary = summarize(stats)
    if not args.quiet:
        table_to.write(format_table(summary))
        table_to.flush()
    if json_to is not None:
        json_to.write(to_json(summary))
        json_to.flush()
        if json_to is not sys.stdout:
            json_to.close()
    return 0 if stats.ok else 1


class _BindError(Exception):
    pass


def _run(options: LoadOptions, progress: Progress, reactor: Any) -> RunStats:
    """Runs the reactor until the run is over."""
    from twisted.internet.error import CannotListenError
    from twisted.python.failure import Failure

    from lns.loadgen.run import LoadRun

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    run = LoadRun(options, reactor, progress)
    outcome: list[RunStats | BaseException] = []

    def begin() -> None:
        try:
            done = run.start()
        except CannotListenError as exc:
            outcome.append(_BindError(f"cannot bind {options.local or 'a local port'}: {exc}"))
            reactor.stop()
            return

        def finished(result: RunStats | Failure) -> None:
            if isinstance(result, Failure):
                outcome.append(result.value or RuntimeError("the run failed"))
            else:
                outcome.append(result)
            reactor.stop()

        done.addBoth(finished)

    def on_signal(signum: int, frame: object) -> None:
        reactor.callFromThread(run.interrupt)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        reactor.callWhenRunning(begin)
        reactor.run(installSignalHandlers=False)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    result = outcome[0] if outcome else RuntimeError("the reactor stopped before the run ended")
    if isinstance(result, BaseException):
        raise result
    return result
