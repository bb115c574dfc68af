"""A real ``twistd -n lns`` that cannot start says why in one line and is gone (issue 16).

Each case starts the server as an operator would, with one thing wrong: the
listen port taken, a listen address not on this machine, TUN mode without
CAP_NET_ADMIN, a database that is missing, read-only or unreachable, a bad
configuration. Each time the process must exit by itself (polled, with a
generous bound), with status 1, exactly one line on standard error that names
the key and the cause, no traceback anywhere, and nothing left running.
The last cases start a healthy node: its version, warnings and log file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lns
from lns.testing.config import ConfigBuilder
from lns.testing.ports import free_udp_port
from lns.testing.processes import twistd_command, working_tree_env

pytestmark = pytest.mark.integration

EXIT_BOUND = 20.0  # seconds: only "it exited by itself", never a measure of speed


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node(directory: Path, *, listen: str | None = None) -> ConfigBuilder:
    """A healthy node on loopback: one LAC, SQLite in `directory`, no TUN device."""
    return (
        ConfigBuilder()
        .l2tp(listen=listen or f"127.0.0.1:{free_udp_port()}")
        .lac(name="loopback", peer="127.0.0.0/8", secret="startup-test")
        .sqlite(directory / "lns.db")
    )


def write(builder: ConfigBuilder, directory: Path) -> Path:
    return builder.write(directory / "lns.toml")


class Run:
    def __init__(self, status: int, stdout: str, stderr: str) -> None:
        self.status = status
        self.stdout = stdout
        self.stderr = stderr


def start_failing(config: Path, *prefix: str, twistd_options: tuple[str, ...] = ()) -> Run:
    """Run twistd until it exits by itself; it must, within EXIT_BOUND."""
    process = subprocess.Popen(
        [*prefix, *twistd_command(config, *twistd_options)],
        cwd=config.parent,
        env=working_tree_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=EXIT_BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"twistd did not exit by itself:\n{stdout}\n{stderr}")
    assert not _processes_using(config), "something of this server is still running"
    return Run(process.returncode, stdout, stderr)


def _processes_using(config: Path) -> list[int]:
    """Processes whose command line names this test's config file."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(config).encode() in command:
            found.append(int(entry.name))
    return found


def assert_one_line(run: Run, expected: str) -> None:
    assert run.status == 1, (run.stdout, run.stderr)
    assert run.stderr == expected + "\n"
    assert "Traceback" not in run.stdout + run.stderr
    assert "Usage:" not in run.stdout + run.stderr


# --- What stops a start ---


def test_listen_port_in_use(tmp_path: Path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        run = start_failing(write(node(tmp_path, listen=f"127.0.0.1:{port}"), tmp_path))
    assert_one_line(
        run,
        f"lns: cannot start: [l2tp] listen 127.0.0.1:{port}: Address already in use "
        "(another process is using this address and port)",
    )
    assert not (tmp_path / "lns.db").exists()  # stopped before the database


def test_listen_address_not_on_this_machine(tmp_path: Path):
    run = start_failing(write(node(tmp_path, listen="192.0.2.1:1701"), tmp_path))
    assert_one_line(
        run,
        "lns: cannot start: [l2tp] listen 192.0.2.1:1701: Cannot assign requested address "
        "(no interface of this machine has this address)",
    )


def test_dynauth_port_in_use(tmp_path: Path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = node(tmp_path).dynauth(listen=f"127.0.0.1:{port}")
        run = start_failing(write(config, tmp_path))
    assert_one_line(
        run,
        f"lns: cannot start: [aaa.dynauth] listen 127.0.0.1:{port}: Address already in use "
        "(another process is using this address and port)",
    )


def test_management_port_in_use(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = start_failing(write(node(tmp_path).management(listen=f"127.0.0.1:{port}"), tmp_path))
    assert_one_line(
        run,
        f"lns: cannot start: [management] listen 127.0.0.1:{port}: Address already in use "
        "(another process is using this address and port)",
    )


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_tun_without_cap_net_admin(tmp_path: Path):
    name = f"lnsst{os.getpid() % 10000}"
    config = write(node(tmp_path).dataplane(mode="tun", tun_name=name), tmp_path)
    # Root, but without CAP_NET_ADMIN in any capability set.
    drop = ("setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--")
    run = start_failing(config, *drop)
    assert_one_line(
        run,
        f"lns: cannot start: [dataplane] tun_name {name}: cannot open TUN device {name}: "
        "Operation not permitted (needs CAP_NET_ADMIN)",
    )
    assert not Path(f"/sys/class/net/{name}").exists()


def test_database_directory_missing(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'gone' / 'lns.db'}"
    run = start_failing(write(node(tmp_path).database(url=url), tmp_path))
    assert_one_line(
        run,
        f"lns: cannot start: [database] url {url}: directory {tmp_path / 'gone'} does not exist",
    )


def test_database_file_missing_without_migrate_on_start(tmp_path: Path):
    run = start_failing(write(node(tmp_path).database(migrate_on_start=False), tmp_path))
    path = tmp_path / "lns.db"
    assert_one_line(
        run,
        f"lns: cannot start: [database] url sqlite:///{path}: no database file {path} "
        "(`lns-admin db upgrade` creates it) or set [database] migrate_on_start = true",
    )
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_database_read_only(tmp_path: Path):
    config = write(node(tmp_path), tmp_path)
    path = tmp_path / "lns.db"
    # A database made current, then made read-only. Root would write it anyway, so the
    # server runs as root without the capabilities that bypass file permissions.
    subprocess.run(
        [sys.executable, "-m", "lns.cli", "--config", str(config), "db", "upgrade"],
        env=working_tree_env(),
        check=True,
        capture_output=True,
    )
    path.chmod(0o444)
    drop = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner")
    run = start_failing(config, *drop, "--inh-caps", "-all", "--")
    assert_one_line(
        run,
        f"lns: cannot start: [database] url sqlite:///{path}: attempt to write a readonly "
        f"database ({path} is not writable by this user)",
    )


def test_postgresql_unreachable(tmp_path: Path):
    port = free_tcp_port()
    url = f"postgresql+psycopg://lns:pw-not-shown@127.0.0.1:{port}/lns"
    run = start_failing(write(node(tmp_path).database(url=url), tmp_path))
    assert_one_line(
        run,
        f"lns: cannot start: [database] url postgresql+psycopg://lns:***@127.0.0.1:{port}/lns: "
        f'connection failed: connection to server at "127.0.0.1", port {port} failed: '
        "Connection refused",
    )
    assert "pw-not-shown" not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[l2tp]\nhello_interval = -1", "[l2tp] hello_interval: must be > 0, got -1"),
        ("[l2tp]\nlisten = 1701", '[l2tp] listen: expected "HOST:PORT"'),
        ('[l2tp]\nlisten = "127.0.0.1:1701"\nlisten = "x"', "invalid TOML: "),
        ('[dataplane]\nmode = "tap"', '[dataplane] mode: expected one of "tun", "none"'),
        ('[[aaa.radius]]\naddress = "127.0.0.1"', "[[aaa.radius]] #1 secret: required key"),
        ('[databse]\nurl = "sqlite:///x.db"', "[databse]: unknown section"),
        ('[log]\nfile = "/nonexistent/dir/lns.log"', None),
    ],
)
def test_bad_configuration(tmp_path: Path, toml: str, message: str | None):
    config = tmp_path / "bad.toml"
    config.write_text(toml + "\n")
    run = start_failing(config)
    if message is None:  # the config is valid; its log file cannot be opened
        assert_one_line(run, "lns: [log] file /nonexistent/dir/lns.log: No such file or directory")
        return
    assert run.status == 1
    assert run.stderr.startswith(f"lns: {config}: {message}")
    assert run.stderr.count("\n") == 1
    assert run.stdout == ""  # no usage text
    assert "Traceback" not in run.stderr


def test_missing_configuration_file(tmp_path: Path):
    run = start_failing(tmp_path / "absent.toml")
    assert_one_line(run, f"lns: {tmp_path / 'absent.toml'}: cannot read: No such file or directory")


# --- A healthy start ---


def test_version():
    done = subprocess.run(
        [*twistd_command(Path("unused"))[:-2], "--version"],
        env=working_tree_env(),
        capture_output=True,
        text=True,
        timeout=EXIT_BOUND,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith(f"lns {lns.__version__} (Twisted ")


def test_a_healthy_node_logs_its_version_and_warnings_to_its_log_file(tmp_path: Path):
    log = tmp_path / "log" / "lns.log"
    log.parent.mkdir()
    config = (
        ConfigBuilder()
        .l2tp(listen=f"127.0.0.1:{free_udp_port()}")
        .sqlite(tmp_path / "lns.db")
        .log(file=str(log), max_bytes=65536, keep=2)
        .write(tmp_path / "lns.toml")
    )
    process = subprocess.Popen(
        twistd_command(config),
        cwd=tmp_path,
        env=working_tree_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + EXIT_BOUND
        while "up: node" not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the node did not come up"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=EXIT_BOUND)
    assert (stdout, stderr) == ("", "")  # everything went to the file
    text = log.read_text()
    assert f"lns {lns.__version__} starting: node lns-1" in text
    assert "[lns.adapters.startup.Startup#warn] no [[l2tp.lac]] is configured" in text
    assert "no [[aaa.radius]] server is configured: every session will be refused" in text
    assert "Server Shut Down." in text  # flushed at exit
    assert stat.S_IMODE(log.stat().st_mode) & 0o037 == 0  # 0640 or tighter
    assert " object at 0x" not in text


def test_radsec_certificate_file_missing(tmp_path: Path):
    builder = node(tmp_path).radius(
        address="127.0.0.1",
        transport="tls",
        ca=str(tmp_path / "ca.pem"),
        cert=str(tmp_path / "lns.pem"),
        key=str(tmp_path / "lns.key"),
    )
    config = write(builder, tmp_path)
    run = start_failing(config)
    assert_one_line(
        run,
        f"lns: {config}: [[aaa.radius]] #1 ca: cannot read '{tmp_path / 'ca.pem'}': "
        "No such file or directory",
    )


def test_a_node_name_already_running(tmp_path: Path):
    first = write(node(tmp_path), tmp_path)
    process = subprocess.Popen(
        twistd_command(first),
        cwd=tmp_path,
        env=working_tree_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # until it says it is up
            if "up: node lns-1" in line:
                break
        else:
            pytest.fail("the first node did not come up")
        # The same name and database, another port: refused while the first one lives.
        second = node(tmp_path).write(tmp_path / "second.toml")
        run = start_failing(second)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=EXIT_BOUND)
    assert run.status == 1, run.stderr
    assert run.stderr.startswith(
        "lns: cannot start: [lns] node_name: node 'lns-1' is already running: pid "
    )
    assert run.stderr.count("\n") == 1
    assert "Traceback" not in run.stdout + run.stderr
