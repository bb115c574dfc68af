"""A FreeRADIUS of the test suite's own, on loopback ports chosen free.

The Debian package's configuration (/etc/freeradius/3.0) is copied into a directory
of its own and changed only where a test server must differ (notes/peers.md):
- every `listen` section of the stock sites is removed and the default site listens
  on 127.0.0.1 only, on the two ports given (auth and acct), so two runs can coexist
  and nothing listens beyond loopback (not even inner-tunnel's fixed 18120);
- the stock `localhost` client keeps 127.0.0.1 but gets our secret (it is the more
  specific match for 127.0.0.1, so a second client would have no effect);
- the users file (`mods-config/files/authorize`) is ours, keyed by ICCID;
- logs, accounting detail files and the run directory live inside the directory;
- `reject_delay` is 0, so an Access-Reject comes back at once rather than after 1 s;
- with `radsec`, RadSec listeners (RFC 6614: TLS over TCP, auth+acct), each on its
  own port with its own certificate, in a site file of ours (the stock
  `sites-available/tls` also defines a proxy home server we do not want), requiring
  a client certificate of the given CA, for the clients of 127.0.0.0/8 with the
  secret "radsec"; certificates, keys and CAs are copied into the directory so that
  `freerad` can read them.

The directory and its parents are readable by the `freerad` user that the server
switches to (a `mkdtemp` directory is mode 0700, hence the chmod).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FreeRadius",
    "FreeRadiusError",
    "RadiusUser",
    "RadsecListener",
    "detail_records",
    "ensure_freeradius",
    "records_of",
    "users_file",
]

STOCK_CONFIG = Path("/etc/freeradius/3.0")
READY = "Ready to process requests"


class FreeRadiusError(RuntimeError):
    """FreeRADIUS could not be installed, configured or started; the message says why."""


def ensure_freeradius() -> str:
    """The path of the `freeradius` binary, installing the Debian packages when it is missing."""
    found = shutil.which("freeradius")
    if found is not None and STOCK_CONFIG.is_dir():
        return found
    if os.geteuid() != 0:
        raise FreeRadiusError("freeradius is not installed and we are not root to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "freeradius", "freeradius-utils"],
    ):
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=600, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FreeRadiusError(f"{' '.join(command)} failed: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise FreeRadiusError(
                f"{' '.join(command)} exited {done.returncode}: {' | '.join(tail)}"
            )
    found = shutil.which("freeradius")
    if found is None or not STOCK_CONFIG.is_dir():
        raise FreeRadiusError("apt-get installed freeradius but the binary or config is missing")
    return found


def strip_listen_sections(text: str) -> str:
    """The configuration text without its `listen { ... }` sections (comments ignored)."""
    out: list[str] = []
    depth = 0  # > 0 while inside a listen section
    for line in text.splitlines(keepends=True):
        code = line.split("#", 1)[0]
        if depth == 0 and re.match(r"\s*listen\s*\{", code):
            depth = code.count("{") - code.count("}")
            continue
        if depth > 0:
            depth += code.count("{") - code.count("}")
            continue
        out.append(line)
    return "".join(out)


def listen_sections(host: str, auth_port: int, acct_port: int) -> str:
    return (
        f"listen {{\n\ttype = auth\n\tipaddr = {host}\n\tport = {auth_port}\n}}\n"
        f"listen {{\n\ttype = acct\n\tipaddr = {host}\n\tport = {acct_port}\n}}\n"
    )


@dataclass(frozen=True)
class RadsecListener:
    """A RadSec listener: its TCP port and the server's TLS files (PEM)."""

    port: int
    cert: Path  # the server's certificate
    key: Path  # its private key
    ca: Path  # the CA that client certificates must chain to
    secret: str = "radsec"  # RFC 6614 section 2.3
    idle_timeout: int = 0  # seconds before FreeRADIUS closes an idle connection; 0: never


def radsec_site(listeners: Sequence[tuple[RadsecListener, Path]]) -> str:
    """A site file with the RadSec listeners (each with the directory of its files) and
    their clients, in one `clients radsec` section (one secret for all)."""
    text = "".join(_radsec_listen(listener, directory) for listener, directory in listeners)
    return text + (
        "clients radsec {\n"
        "\tclient lns {\n"
        "\t\tipaddr = 127.0.0.0/8\n"
        "\t\tproto = tls\n"
        f"\t\tsecret = {listeners[0][0].secret}\n"
        "\t}\n"
        "}\n"
    )


def _radsec_listen(listener: RadsecListener, directory: Path) -> str:
    return (
        "listen {\n"
        "\tipaddr = 127.0.0.1\n"
        f"\tport = {listener.port}\n"
        "\ttype = auth+acct\n"
        "\tproto = tcp\n"
        "\tvirtual_server = default\n"
        "\tclients = radsec\n"
        f"\tlimit {{\n\t\tidle_timeout = {listener.idle_timeout}\n\t}}\n"
        "\ttls {\n"
        f"\t\tprivate_key_file = {directory}/server.key\n"
        f"\t\tcertificate_file = {directory}/server.pem\n"
        f"\t\tca_file = {directory}/ca.pem\n"
        "\t\trequire_client_cert = yes\n"
        '\t\ttls_min_version = "1.2"\n'
        "\t}\n"
        "}\n"
    )


class FreeRadius:
    """One FreeRADIUS process: `start()` returns once it said it is ready, `stop()` ends it.

    `restart()` stops the process and starts it again on the same directory and ports
    (a server restart as an operator does it); `stop()` also removes the directory.
    """

    def __init__(
        self,
        secret: str,
        users: str,
        auth_port: int,
        acct_port: int,
        host: str = "127.0.0.1",
        ready_timeout: float = 60.0,
        radsec: Sequence[RadsecListener] = (),
        namespace: str | None = None,
    ) -> None:
        self.radsec = tuple(radsec)
        # A network namespace to run in (its loopback is then the server's 127.0.0.1).
        self.namespace = namespace
        self.secret = secret
        self.users = users
        self.host = host
        self.auth_port = auth_port
        self.acct_port = acct_port
        self.ready_timeout = ready_timeout
        self.directory: Path | None = None
        self.output: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self.ready = False
        self._ready_or_exited = threading.Event()
        self._reader: threading.Thread | None = None

    # --- configuration -----------------------------------------------------------------

    def prepare(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="lns-freeradius-"))
        directory.chmod(0o755)
        # Symlinks (sites-enabled, users) are copied as the files they point to.
        shutil.copytree(STOCK_CONFIG, directory, dirs_exist_ok=True)
        self.directory = directory
        self._edit(
            "radiusd.conf",
            [
                (r"(?m)^raddbdir = .*$", f"raddbdir = {directory}"),
                (r"(?m)^logdir = .*$", f"logdir = {directory}/log"),
                (r"(?m)^run_dir = .*$", f"run_dir = {directory}/run"),
                (r"(?m)^(\s*)reject_delay = .*$", r"\g<1>reject_delay = 0"),
            ],
        )
        if os.geteuid() != 0:
            # Only root can switch to the freerad user; anyone else runs it as themselves.
            self._edit("radiusd.conf", [(r"(?m)^\s*(user|group) = freerad\s*$", "")])
        for site in (directory / "sites-enabled").iterdir():
            text = strip_listen_sections(site.read_text())
            if site.name == "default":
                text, count = re.subn(
                    r"(?m)^server default \{\n",
                    "server default {\n"
                    + listen_sections(self.host, self.auth_port, self.acct_port),
                    text,
                    count=1,
                )
                if count != 1:
                    raise FreeRadiusError("sites-enabled/default has no 'server default {' line")
            site.write_text(text)
        # The stock localhost client (127.0.0.1) gets our secret.
        self._edit(
            "clients.conf",
            [(r"(?s)(client localhost \{.*?\n\s*secret = )testing123", r"\g<1>" + self.secret)],
            expect=1,
        )
        (directory / "mods-config" / "files" / "authorize").write_text(self.users)
        for sub in ("log", "run", "log/radacct"):
            (directory / sub).mkdir(exist_ok=True)
        if self.radsec:
            placed: list[tuple[RadsecListener, Path]] = []
            for number, listener in enumerate(self.radsec):
                tls = directory / "radsec" / str(number)
                tls.mkdir(parents=True)
                for source, name in (
                    (listener.cert, "server.pem"),
                    (listener.key, "server.key"),
                    (listener.ca, "ca.pem"),
                ):
                    shutil.copyfile(source, tls / name)
                placed.append((listener, tls))
            (directory / "sites-enabled" / "radsec").write_text(radsec_site(placed))
        if os.geteuid() == 0:
            self._chown_to_freerad(directory)
        return directory

    def _edit(
        self, name: str, substitutions: Sequence[tuple[str, str]], expect: int | None = None
    ) -> None:
        assert self.directory is not None
        path = self.directory / name
        text = path.read_text()
        for pattern, replacement in substitutions:
            text, count = re.subn(pattern, replacement, text)
            if expect is not None and count != expect:
                raise FreeRadiusError(f"{name}: expected {expect} match(es) of {pattern!r}")
        path.write_text(text)

    @staticmethod
    def _chown_to_freerad(directory: Path) -> None:
        try:
            user = pwd.getpwnam("freerad")
        except KeyError:
            return
        for root, dirs, files in os.walk(directory):
            os.chown(root, user.pw_uid, user.pw_gid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)

    # --- process -----------------------------------------------------------------------

    def start(self, binary: str) -> None:
        self.prepare()
        self.start_process(binary)

    def restart(self, binary: str) -> None:
        """Stop the process and start it again, same configuration; returns once ready."""
        self.stop_process()
        self.start_process(binary)

    def start_process(self, binary: str) -> None:
        """Start FreeRADIUS on the prepared directory; returns once it is ready."""
        directory = self.directory
        assert directory is not None
        self.ready = False
        self._ready_or_exited = threading.Event()
        # -f: foreground; -l stdout: its log on our pipe, where we wait for READY.
        command = [binary, "-f", "-l", "stdout", "-d", str(directory)]
        if self.namespace is not None:
            command = ["ip", "netns", "exec", self.namespace, *command]  # it execs the server
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="freeradius-log", daemon=True)
        self._reader.start()
        # Whichever comes first: READY, or the end of its output (it exited).
        if not self._ready_or_exited.wait(self.ready_timeout):
            self.stop()
            raise FreeRadiusError(
                f"FreeRADIUS not ready after {self.ready_timeout} s:\n{self.log_tail()}"
            )
        if not self.ready:
            self.stop()
            raise FreeRadiusError(f"FreeRADIUS exited at start:\n{self.log_tail()}")

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line.rstrip("\n"))
            if READY in line:
                self.ready = True
                self._ready_or_exited.set()
        self._ready_or_exited.set()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.output[-lines:])

    def stop(self) -> None:
        self.stop_process()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def stop_process(self) -> None:
        """End the process (SIGTERM), keeping the directory for `start_process`."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None


@dataclass(frozen=True)
class RadiusUser:
    """One entry of the users file (mods-config/files/authorize): the name (an ICCID),
    its Cleartext-Password (none: the check items decide alone), more check items and the
    reply items, each written as FreeRADIUS reads it (``'Framed-Pool = "gold"'``)."""

    name: str
    password: str | None
    check: Sequence[str] = ()
    reply: Sequence[str] = ()


def users_file(users: Iterable[RadiusUser], comment: str = "") -> str:
    """The users file for ``users``, in their order (the first entry that matches wins)."""
    entries = [f"# {line}".rstrip() for line in comment.splitlines()]
    for user in users:
        check = [f'Cleartext-Password := "{user.password}"'] if user.password is not None else []
        check += user.check
        entry = f"{user.name}\t{', '.join(check)}"
        if user.reply:
            entry += "\n" + ",\n".join(f"\t{item}" for item in user.reply)
        entries.append(entry)
    return "\n\n".join(entries) + "\n"


def detail_records(server: FreeRadius) -> list[dict[str, str]]:
    """Every record of the server's accounting detail files, in the order written,
    values unquoted."""
    assert server.directory is not None, "the server is not running"
    records = []
    for path in sorted((server.directory / "log" / "radacct").glob("*/detail-*")):
        for block in path.read_text().split("\n\n"):
            lines = [line for line in block.splitlines() if line.strip()]
            if not lines:
                continue
            record = {}
            for line in lines[1:]:
                name, _, value = line.strip().partition(" = ")
                record[name] = value.strip('"')
            records.append(record)
    return records


def records_of(server: FreeRadius, acct_session_id: str) -> list[dict[str, str]]:
    """The detail records of one accounting session, in the order written."""
    return [r for r in detail_records(server) if r.get("Acct-Session-Id") == acct_session_id]
