"""Try lns on one machine, on loopback, in one command:

    python scripts/try_it.py [--sessions 100] [--keep]

1. starts a FreeRADIUS of its own (the test suite's, lns.testing.freeradius; installed
   from Debian when missing) with demo SIMs: ICCIDs from 8944000000000000001, each with
   its ICCID as password;
2. prepares an SQLite pool with ``lns-admin`` and starts ``twistd -n lns`` with a config
   written next to it (loopback only, no TUN device: ``[dataplane] mode = "none"``);
3. runs ``lns-loadgen`` with ``--sessions`` sessions over 2 tunnels (proxy CHAP) and
   holds them up while it shows them with ``lns-admin lease list`` and ``pool list``;
4. lets the sessions go and stops everything. With ``--keep`` the working directory
   (config, database, logs) stays for a look; its path is printed.

``--radius-only`` starts only the FreeRADIUS, on 127.0.0.1:1812 and 1813 with the
secret of ``examples/lns.toml`` (whose RADIUS server it is), until interrupted.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import (
    FreeRadius,
    FreeRadiusError,
    RadiusUser,
    ensure_freeradius,
    users_file,
)
from lns.testing.ports import free_udp_port as free_port

RADIUS_SECRET = "try-it-radius-secret"
L2TP_SECRET = "try-it-l2tp-secret"
ICCID_START = 8944000000000000001
POOL = "100.64.0.0/22"
HOLD = 20.0
EXAMPLE_AUTH_PORT, EXAMPLE_ACCT_PORT = 1812, 1813  # [[aaa.radius]] of examples/lns.toml


def users(count: int) -> str:
    return users_file(RadiusUser(str(ICCID_START + n), str(ICCID_START + n)) for n in range(count))


def config(directory: Path, l2tp: int, radius: FreeRadius) -> Path:
    builder = (
        ConfigBuilder()
        .lns(node_name="try-it")
        .l2tp(listen=f"127.0.0.1:{l2tp}", hostname="lns-try-it")
        .lac(name="demo-operator", peer="127.0.0.0/8", secret=L2TP_SECRET)
        .ppp(local_address="100.64.255.1", dns=["192.0.2.53"])
        # FreeRADIUS 3.2 does not sign its replies.
        .aaa(nas_identifier="try-it", require_message_authenticator=False)
        .radius_server(radius)
        .sqlite(directory / "lns.db")
        .dataplane(mode="none")
    )
    path = directory / "lns.toml"
    path.write_text("# Written by scripts/try_it.py: everything on loopback.\n" + builder.toml())
    return path


def run(title: str, *command: str) -> None:
    print(f"\n$ {' '.join(command)}    # {title}", flush=True)
    subprocess.run(command, check=True)


def radius_only(sessions: int) -> int:
    try:
        binary = ensure_freeradius()
    except FreeRadiusError as exc:
        print(f"FreeRADIUS is needed and could not be installed: {exc}", file=sys.stderr)
        return 2
    radius = FreeRadius(RADIUS_SECRET, users(sessions), EXAMPLE_AUTH_PORT, EXAMPLE_ACCT_PORT)
    try:
        radius.start(binary)
    except FreeRadiusError as exc:
        print(f"FreeRADIUS did not start: {exc}", file=sys.stderr)
        return 1
    last = ICCID_START + sessions - 1
    print(
        f"FreeRADIUS on 127.0.0.1:{EXAMPLE_AUTH_PORT} (auth) and {EXAMPLE_ACCT_PORT} (acct), "
        f"secret {RADIUS_SECRET!r}, SIMs {ICCID_START} to {last} (password = ICCID); "
        "Ctrl-C stops it",
        flush=True,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT is ignored in a background job
        signal.signal(signum, signal.default_int_handler)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        radius.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument(
        "--hold", type=float, default=HOLD, help=f"seconds the sessions stay up (default {HOLD:g})"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--radius-only",
        action="store_true",
        help="only the demo FreeRADIUS, on 127.0.0.1:1812/1813: the RADIUS server of "
        "examples/lns.toml; Ctrl-C stops it",
    )
    args = parser.parse_args()
    if args.radius_only:
        return radius_only(args.sessions)
    for tool in ("lns-admin", "lns-loadgen", "twistd"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: run `pip install .` first", file=sys.stderr)
            return 2
    try:
        binary = ensure_freeradius()
    except FreeRadiusError as exc:
        print(f"FreeRADIUS is needed and could not be installed: {exc}", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="lns-try-it-"))
    radius = FreeRadius(RADIUS_SECRET, users(args.sessions), free_port(), free_port())
    server: subprocess.Popen[bytes] | None = None
    loadgen: subprocess.Popen[bytes] | None = None
    try:
        print(f"starting FreeRADIUS with {args.sessions} demo SIMs ...", flush=True)
        radius.start(binary)
        port = free_port()
        path = config(directory, port, radius)
        url = f"sqlite:///{directory / 'lns.db'}"
        run("the schema", "lns-admin", "--database-url", url, "db", "upgrade")
        run("a pool", "lns-admin", "--database-url", url, "pool", "add", "default", POOL)
        log = directory / "lns.log"
        print(f"\nstarting twistd -n lns --config {path} (log: {log})", flush=True)
        with log.open("wb") as output:
            server = subprocess.Popen(
                ["twistd", "-n", "--pidfile=", "lns", "--config", str(path)],
                cwd=directory,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while "L2TP listening" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                print(log.read_text(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        secret = directory / "l2tp-secret"
        secret.write_text(L2TP_SECRET + "\n")
        command = [
            "lns-loadgen",
            f"127.0.0.1:{port}",
            "--tunnels",
            "2",
            "--sessions",
            str(args.sessions),
            "--rate",
            "200",
            "--secret-file",
            str(secret),
            "--iccid-start",
            str(ICCID_START),
            "--hold",
            f"{args.hold:g}",
        ]
        print(f"\n$ {' '.join(command)}", flush=True)
        loadgen = subprocess.Popen(command)
        # Once every session is up (the server logged each), show them while they are held.
        deadline = time.monotonic() + 60
        while log.read_text().count("session up:") < args.sessions:
            if loadgen.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        run(
            "the live sessions and their addresses",
            "lns-admin",
            "--config",
            str(path),
            "lease",
            "list",
        )
        run("pool usage", "lns-admin", "--config", str(path), "pool", "list")
        status = loadgen.wait()
        run("after the sessions ended", "lns-admin", "--config", str(path), "pool", "list")
        return status
    finally:
        if loadgen is not None and loadgen.poll() is None:
            loadgen.send_signal(signal.SIGINT)
            loadgen.wait(30)
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        radius.stop()
        if args.keep:
            print(f"\nkept: {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
