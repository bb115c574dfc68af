"""TunDevice and TunNetwork: in-process on a socket pair, and for real inside a namespace.

The test process stays in the root namespace. Everything that creates a TUN
device, an address or a route runs in ``tun_echo.py`` inside a namespace created
by the test, where the kernel routes our pings into the device and the script
answers them. Addresses are 100.64/10 and 10/8, existing only in those namespaces.
"""

from __future__ import annotations

import errno
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure

from lns.adapters import tun
from lns.adapters.tun import RTPROT_LNS, TunDevice, TunError
from lns.testing import netns
from lns.testing.netns import NetNs
from lns.testing.processes import SOURCE_ROOT as REPO
from lns.testing.processes import ChildOutput

SCRIPT = "lns.testing.tun_echo"  # run with -m from REPO, so `lns` is this checkout's
LINE_TIMEOUT = 20.0
ECHO_ARGS = ("--name", "tun0", "--local", "100.64.0.1", "--mtu", "1400")
ROUTED = "100.64.7.0/24"
PINGED = "100.64.7.9"


class EchoProcess:
    """``tun_echo.py serve`` in a namespace: commands on stdin, JSON answers on stdout."""

    def __init__(self, namespace: NetNs, *args: str) -> None:
        self.process = namespace.popen(
            sys.executable,
            "-m",
            SCRIPT,
            "serve",
            *args,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines = ChildOutput(self.process)
        first = self.lines.next_line(LINE_TIMEOUT)
        if first != "ready":
            self.process.wait(timeout=LINE_TIMEOUT)
            assert self.process.stderr is not None
            pytest.fail(f"tun_echo did not start: {first!r} {self.process.stderr.read()!r}")

    def command(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.lines.next_line(LINE_TIMEOUT)
        assert answer is not None, f"tun_echo ended after {line!r}"
        result: dict[str, Any] = json.loads(answer)
        return result

    def stop(self) -> dict[str, Any]:
        """SIGTERM; returns the counters the script prints as it ends."""
        self.process.terminate()
        last = None
        while (line := self.lines.next_line(LINE_TIMEOUT)) is not None:
            last = line
        assert self.process.wait(timeout=LINE_TIMEOUT) == 0
        assert last is not None
        counters: dict[str, Any] = json.loads(last)
        return counters


def ping(namespace: NetNs, target: str, count: int = 3, timeout: float = 1.0) -> dict[str, Any]:
    """``tun_echo.py ping`` in the namespace; the wait is bounded by ``timeout``."""
    result = namespace.run(
        sys.executable,
        "-m",
        SCRIPT,
        "ping",
        "--count",
        str(count),
        "--timeout",
        str(timeout),
        target,
        check=False,
        cwd=REPO,
    )
    lines = result.stdout.splitlines()
    assert lines[:1] == ["sent"], result.stderr
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def route_table(namespace: NetNs) -> str:
    return namespace.ip("route", "show").stdout


@pytest.fixture
def namespace(netns_factory) -> NetNs:
    created: NetNs = netns_factory()
    return created


@pytest.fixture
def echo(namespace: NetNs) -> EchoProcess:
    # The namespace's teardown kills it if the test leaves it running.
    return EchoProcess(namespace, *ECHO_ARGS, "--route", ROUTED)


# --- In the namespace, through the kernel ---------------------------------------------


def test_ping_into_a_routed_address_is_answered_through_the_device(namespace, echo):
    summary = ping(namespace, PINGED, count=3, timeout=1.0)

    assert summary == {"sent": 3, "received": 3, "send_errors": {}}
    assert f"{ROUTED} dev tun0 proto {RTPROT_LNS} scope link" in route_table(namespace)
    device = namespace.ip("address", "show", "dev", "tun0").stdout
    assert "mtu 1400" in device
    assert ",UP" in device
    assert "inet 100.64.0.1/32" in device
    counters = echo.stop()
    assert counters["echoed"] == 3
    assert counters["write_errors"] == {}


def test_our_routes_are_listed_by_protocol(namespace, echo):
    ours = namespace.ip("route", "show", "proto", str(RTPROT_LNS)).stdout

    assert ours.split() == [ROUTED, "dev", "tun0", "scope", "link"]


def test_add_route_replaces_a_route_to_the_same_prefix_and_repeats_safely(namespace, echo):
    namespace.ip("route", "add", "100.64.8.0/24", "dev", "tun0", "proto", "static")

    assert echo.command("add 100.64.8.0/24") == {"ok": True}
    assert echo.command("add 100.64.8.0/24") == {"ok": True}

    routes = route_table(namespace)
    assert f"100.64.8.0/24 dev tun0 proto {RTPROT_LNS} scope link" in routes
    assert "proto static" not in routes


def test_removed_route_is_gone_and_removing_it_again_is_not_an_error(namespace, echo):
    assert echo.command(f"remove {ROUTED}") == {"ok": True}
    assert echo.command(f"remove {ROUTED}") == {"ok": True}

    assert ROUTED not in route_table(namespace)
    unroutable = ping(namespace, PINGED, count=1, timeout=1.0)
    assert unroutable["received"] == 0
    assert unroutable["send_errors"] == {"ENETUNREACH": 1}


def test_flush_removes_only_our_routes_on_the_device(namespace, echo):
    namespace.ip("route", "add", "100.64.9.0/24", "dev", "tun0")  # an operator's route
    assert echo.command("add 100.64.10.0/24") == {"ok": True}

    assert echo.command("flush") == {"ok": True, "flushed": 2}

    routes = route_table(namespace)
    assert f"proto {RTPROT_LNS}" not in routes
    assert "100.64.9.0/24 dev tun0" in routes
    assert echo.command("flush") == {"ok": True, "flushed": 0}


def test_route_error_names_the_route_and_the_device(namespace, echo):
    namespace.ip("link", "set", "tun0", "down")

    answer = echo.command("add 100.64.11.0/24")

    assert answer == {"error": "cannot add route 100.64.11.0/24 via tun0: Network is down"}


def test_a_flood_is_read_in_batches_and_every_request_answered(namespace):
    echo = EchoProcess(namespace, *ECHO_ARGS, "--route", ROUTED, "--batch", "64")
    # Hold the reader so the 200 requests queue in the device, then let it drain them.
    assert echo.command("pause") == {"ok": True}
    pinger = namespace.popen(
        sys.executable,
        "-m",
        SCRIPT,
        "ping",
        "--count",
        "200",
        "--timeout",
        "10",
        PINGED,
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    replies = ChildOutput(pinger)
    assert replies.next_line(LINE_TIMEOUT) == "sent"

    assert echo.command("resume") == {"ok": True}

    last = replies.next_line(LINE_TIMEOUT)
    assert last is not None
    assert json.loads(last) == {"sent": 200, "received": 200, "send_errors": {}}
    counters = echo.stop()
    assert counters["echoed"] == 200
    assert counters["largest_batch"] == 64
    assert counters["read_batches"] < counters["packets_read"]


def test_write_errors_are_counted_not_raised(namespace, echo):
    refused = echo.command("write " + "00" * 20)  # not an IP packet: the kernel says EINVAL

    assert refused["ok"] is False
    assert refused["write_errors"] == {"EINVAL": 1}

    namespace.ip("link", "set", "tun0", "down")
    request = bytes.fromhex("450000140000000040010000" + "64400709" + "64400001")
    while_down = echo.command("write " + request.hex())
    assert while_down["ok"] is False
    assert while_down["write_errors"] == {"EINVAL": 1, "EIO": 1}
    assert echo.stop()["packets_written"] == 0


def test_a_name_the_kernel_refuses_is_one_line_on_stderr(namespace):
    result = namespace.run(
        sys.executable, "-m", SCRIPT, "serve", "--name", "bad/name", check=False, cwd=REPO
    )

    assert result.returncode == 1
    assert result.stderr == "cannot open TUN device bad/name: Invalid argument\n"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_cap_net_admin_the_error_says_so(namespace):
    result = namespace.run(
        "setpriv",
        "--inh-caps=-net_admin",
        "--bounding-set=-net_admin",
        sys.executable,
        "-m",
        SCRIPT,
        "serve",
        "--name",
        "tun0",
        check=False,
        cwd=REPO,
    )

    assert result.returncode == 1
    assert result.stderr == (
        "cannot open TUN device tun0: Operation not permitted (needs CAP_NET_ADMIN)\n"
    )


def test_veth_pair_connects_two_namespaces(netns_factory):
    left, right = netns_factory(), netns_factory()
    netns.veth(left, "veth-l", "10.200.0.1/30", right, "veth-r", "10.200.0.2/30")

    summary = ping(left, "10.200.0.2", count=2, timeout=2.0)

    assert summary["received"] == 2


def test_namespace_is_deleted_when_its_block_ends(require_namespaces):
    with NetNs.create() as namespace:
        assert (
            namespace.name
            in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True, check=True
            ).stdout
        )

    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert namespace.name not in listing.stdout.split()


# --- In process: no device, a SOCK_SEQPACKET pair keeps packet boundaries as TUN does --


@pytest.fixture
def packet_pipe(monkeypatch) -> Iterator[socket.socket]:
    """Makes `TunDevice.open` take one end of a socket pair; yields the other end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    monkeypatch.setattr(tun, "open_tun", lambda name: (ours.detach(), name))
    yield theirs
    theirs.close()


def test_each_wake_up_reads_at_most_one_batch(packet_pipe):
    batches: list[list[bytes]] = []
    reactor = MemoryReactor()
    device = TunDevice("lns0", reactor, batches.append, batch=64)
    device.open()
    device.start_reading()
    sent = [bytes([n]) * 20 for n in range(150)]
    for packet in sent:
        packet_pipe.send(packet)

    for _ in range(4):
        device.doRead()

    assert device in reactor.getReaders()
    assert [len(batch) for batch in batches] == [64, 64, 22]
    assert [packet for batch in batches for packet in batch] == sent
    assert (device.packets_read, device.read_batches) == (150, 3)
    device.close()
    assert reactor.getReaders() == []


def test_a_failing_packet_handler_costs_its_batch_not_the_device(packet_pipe):
    delivered: list[list[bytes]] = []

    def handle(packets: list[bytes]) -> None:
        delivered.append(packets)
        if len(delivered) == 1:
            raise ValueError("a bug in the packet handler")

    device = TunDevice("lns0", MemoryReactor(), handle)
    device.open()
    packet_pipe.send(b"first")
    assert device.doRead() is None
    packet_pipe.send(b"second")
    device.doRead()

    assert delivered == [[b"first"], [b"second"]]
    assert device.fileno() != -1
    device.close()


def test_failed_writes_are_counted_by_errno_name(packet_pipe):
    device = TunDevice("lns0", MemoryReactor(), lambda packets: None)
    device.open()
    while device.write(b"x" * 1000):
        pass  # until the peer's receive queue is full
    assert device.write_errors == {"EAGAIN": 1}

    packet_pipe.close()  # with our packets unread: Linux reports ECONNRESET to the writer
    assert device.write(b"x") is False
    device.close()
    assert device.write(b"x") is False

    assert device.write_errors == {"EAGAIN": 1, "ECONNRESET": 1, "EBADF": 1}
    assert device.fileno() == -1


def test_lost_device_is_closed(packet_pipe):
    reactor = MemoryReactor()
    device = TunDevice("lns0", reactor, lambda packets: None)
    device.open()
    device.start_reading()

    reactor.removeReader(device)  # as the reactor does on POLLERR, before connectionLost
    device.connectionLost(Failure(OSError(errno.EBADFD, "File descriptor in bad state")))

    assert device.fileno() == -1


def test_name_longer_than_15_bytes_is_refused_before_the_kernel():
    device = TunDevice("lns-sixteen-char", MemoryReactor(), lambda packets: None)

    with pytest.raises(TunError) as raised:
        device.open()

    assert str(raised.value) == (
        "cannot open TUN device lns-sixteen-char: the name must be 1 to 15 bytes long"
    )
    assert raised.value.errno == errno.EINVAL
    assert device.fileno() == -1


def test_missing_privilege_message_names_device_and_capability():
    error = TunError.opening("lns0", errno.EPERM)

    assert str(error) == (
        "cannot open TUN device lns0: Operation not permitted (needs CAP_NET_ADMIN)"
    )
    assert isinstance(error, OSError)
    assert error.errno == errno.EPERM


def test_route_changes_without_waiting_add_and_remove_our_routes(namespace, echo):
    """RouteChanges, the server's per-session path: the route is in place when the
    request has been sent; the kernel's acknowledgement is read afterwards."""
    assert echo.command("radd 100.64.12.7/32") == {"ok": True, "failures": {}, "waiting": 0}
    assert f"100.64.12.7 dev tun0 proto {RTPROT_LNS} scope link" in route_table(namespace)
    assert echo.command("rremove 100.64.12.7/32") == {"ok": True, "failures": {}, "waiting": 0}
    assert "100.64.12.7" not in route_table(namespace)
    # Gone already: not an error.
    assert echo.command("rremove 100.64.12.7/32") == {"ok": True, "failures": {}, "waiting": 0}


def test_route_change_refused_by_the_kernel_is_counted(echo):
    answer = echo.command("rbad 100.64.13.0/24")
    assert answer["failures"] == {"ENODEV": 1}
    assert answer["waiting"] == 0
