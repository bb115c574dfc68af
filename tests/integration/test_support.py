"""Tests for the integration-test support: the lossy UDP relay and the tshark capture."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

from lns.testing.capture import Capture, pcap_check, pcap_check_tool, tshark_available
from lns.testing.relay import LossyRelay, RelayEvent

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
TIMEOUT = 10.0


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _port_number(port: IListeningPort) -> int:
    host = port.getHost()
    assert isinstance(host, IPv4Address)
    return host.port


class Echo(DatagramProtocol):
    """The stand-in server: sends every datagram back where it came from."""

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.write(datagram, addr)


class Client(DatagramProtocol):
    """The stand-in client: records what comes back and tells whoever waits for it."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.on_receive: Callable[[bytes], None] = lambda _: None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.received.append(datagram)
        self.on_receive(datagram)

    def send(self, datagram: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.write(datagram, (LOOPBACK, port))


@pytest.fixture
def udp_ports() -> Generator[list[IListeningPort], None, None]:
    """Ports to close after the test (the teardown waits for them)."""
    ports: list[IListeningPort] = []
    yield ports
    for port in ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def _listen(proto: DatagramProtocol, ports: list[IListeningPort]) -> int:
    port = cast(IReactorUDP, _reactor()).listenUDP(0, proto, interface=LOOPBACK)
    ports.append(port)
    return _port_number(port)


def _with_timeout(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    return d.addTimeout(TIMEOUT, cast(IReactorTime, _reactor()))


# -- LossyRelay ----------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_relay_without_loss_forwards_both_ways(udp_ports: list[IListeningPort]) -> Any:
    count = 50
    echo_port = _listen(Echo(), udp_ports)
    relay = LossyRelay((LOOPBACK, echo_port), drop_fraction=0.0, seed=1)
    relay_port = relay.start()
    try:
        assert relay.server_facing_port not in (0, relay_port)
        client = Client()
        _listen(client, udp_ports)
        all_back: defer.Deferred[None] = defer.Deferred()
        expected = {b"ping %d" % i for i in range(count)}

        def on_receive(_: bytes) -> None:
            if len(client.received) == count and not all_back.called:
                all_back.callback(None)

        client.on_receive = on_receive
        for payload in sorted(expected):
            client.send(payload, relay_port)
        yield _with_timeout(all_back)

        assert set(client.received) == expected
        assert (relay.forwarded_to_server, relay.dropped_to_server) == (count, 0)
        assert (relay.forwarded_to_client, relay.dropped_to_client) == (count, 0)
        assert relay.unroutable_to_client == 0
    finally:
        yield relay.stop()


@defer.inlineCallbacks
def _lossy_run(
    seed: int, count: int, ports: list[IListeningPort]
) -> Generator[defer.Deferred[Any], Any, dict[str, Any]]:
    """Send ``count`` datagrams one at a time through a relay dropping 20 %.

    Each datagram is "settled" when the relay dropped it on the way in, dropped its echo
    on the way out, or the echo reached the client; the next one is sent only then, so
    the relay sees the same sequence every run and no waiting is done on timing.
    """
    echo_port = _listen(Echo(), ports)
    relay = LossyRelay((LOOPBACK, echo_port), drop_fraction=0.2, seed=seed)
    relay_port = relay.start()
    client = Client()
    _listen(client, ports)
    pending: dict[bytes, defer.Deferred[None]] = {}

    def settle(payload: bytes) -> None:
        d = pending.pop(payload, None)
        if d is not None:
            d.callback(None)

    def on_event(event: RelayEvent) -> None:
        if event.dropped:
            settle(event.data)

    relay.add_observer(on_event)
    client.on_receive = settle
    try:
        for i in range(count):
            payload = b"datagram %d" % i
            pending[payload] = defer.Deferred()
            settled = pending[payload]
            client.send(payload, relay_port)
            yield _with_timeout(settled)
    finally:
        yield relay.stop()
    return {
        "forwarded_to_server": relay.forwarded_to_server,
        "dropped_to_server": relay.dropped_to_server,
        "forwarded_to_client": relay.forwarded_to_client,
        "dropped_to_client": relay.dropped_to_client,
        "unroutable_to_client": relay.unroutable_to_client,
        "received": list(client.received),
    }


@pytest_twisted.inlineCallbacks
def test_relay_drops_about_a_fifth_deterministically(udp_ports: list[IListeningPort]) -> Any:
    count = 200
    first = yield _lossy_run(seed=1701, count=count, ports=udp_ports)
    second = yield _lossy_run(seed=1701, count=count, ports=udp_ports)
    other_seed = yield _lossy_run(seed=2661, count=count, ports=udp_ports)

    # The counters add up: every datagram went in once, every forwarded one was echoed once.
    assert first["forwarded_to_server"] + first["dropped_to_server"] == count
    assert (
        first["forwarded_to_client"] + first["dropped_to_client"] == (first["forwarded_to_server"])
    )
    assert len(first["received"]) == first["forwarded_to_client"]
    assert first["unroutable_to_client"] == 0
    # About a fifth is dropped in each direction.
    assert 0.1 * count < first["dropped_to_server"] < 0.3 * count
    assert 0.1 < first["dropped_to_client"] / first["forwarded_to_server"] < 0.3
    # The same seed gives the very same drops; another seed gives other ones.
    assert second == first
    assert other_seed["received"] != first["received"]


def test_relay_refuses_a_non_loopback_upstream() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LossyRelay(("192.0.2.1", 1701), drop_fraction=0.0, seed=0)
    with pytest.raises(ValueError, match="drop_fraction"):
        LossyRelay((LOOPBACK, 1701), drop_fraction=1.5, seed=0)


def test_relay_is_not_started_until_start() -> None:
    relay = LossyRelay((LOOPBACK, 1701), drop_fraction=0.0, seed=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = relay.server_facing_port


# -- Capture ---------------------------------------------------------------------------

needs_tshark = pytest.mark.skipif(
    not tshark_available(), reason="tshark is not installed or cannot capture on lo"
)

# An L2TP ZLB acknowledgement: T, L and S bits, version 2, length 12, tunnel 1, session 0,
# Ns 0, Nr 1. Valid on its own, so the dissector has nothing to complain about.
ZLB = bytes.fromhex("c802000c0001000000000001")


def _frames(path: Path, field: str = "udp.dstport") -> list[str]:
    result = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", field],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


@pytest.fixture
def receiver() -> Generator[socket.socket, None, None]:
    """A bound UDP socket, so the datagrams sent to it are delivered (no ICMP errors)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((LOOPBACK, 0))
    yield sock
    sock.close()


@needs_tshark
@pytest.mark.parametrize("run", range(5))
def test_capture_holds_every_packet_sent_before_exit(
    tmp_path: Path, receiver: socket.socket, run: int
) -> None:
    count = 300
    port = receiver.getsockname()[1]
    path = tmp_path / f"run{run}.pcapng"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        with Capture(path, ports=[port]) as cap:
            for i in range(count):
                sender.sendto(b"datagram %d" % i, (LOOPBACK, port))
        marker_port = cap.marker_port

    frames = _frames(path)
    assert len(frames) == count, cap.stderr
    assert set(frames) == {str(port)}  # and the sync markers were taken out
    assert str(marker_port) not in frames
    assert not path.with_name(path.name + ".raw.pcapng").exists()


@needs_tshark
def test_capture_sync_inside_the_block(tmp_path: Path, receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    path = tmp_path / "sync.pcap"
    with Capture(path, ports=[port, 1]) as cap:
        for i in range(10):
            receiver.sendto(b"%d" % i, (LOOPBACK, port))
        cap.sync()
        assert len(_frames(path.with_name(path.name + ".raw.pcapng"))) >= 10
        receiver.sendto(b"last", (LOOPBACK, port))
    assert len(_frames(path)) == 11
    assert path.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")  # pcap, as named


@needs_tshark
def test_pcap_check_judges_a_capture(tmp_path: Path, receiver: socket.socket) -> None:
    if not pcap_check_tool().is_file():
        pytest.skip(f"pcap-check is not at {pcap_check_tool()}")
    port = receiver.getsockname()[1]
    path = tmp_path / "l2tp.pcapng"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as good,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bad,
    ):
        good.bind((LOOPBACK, 0))
        bad.bind((LOOPBACK, 0))
        with Capture(path, ports=[port]):
            for _ in range(3):
                good.sendto(ZLB, (LOOPBACK, port))
            bad.sendto(ZLB[:6] + b"\xff", (LOOPBACK, port))  # length field says 12, is 7
        good_port = good.getsockname()[1]

    clean = pcap_check(path, [port], from_port=good_port)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "3 packets checked" in clean.stdout
    assert "ZLB" in clean.stdout

    whole = pcap_check(path, [port], from_addr=LOOPBACK)
    assert whole.returncode == 1, whole.stdout + whole.stderr
    assert "4 packets checked" in whole.stdout
