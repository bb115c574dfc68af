"""Packet capture on loopback with tshark, and the shared ``pcap-check`` dissector check.

Integration tests record what actually went over the wire, so that Wireshark's
independent L2TP dissector can judge it (``pcap_check``), and so a failing run leaves
a capture to look at.

Making the capture complete. Stopping tshark with SIGINT right after the last packet
loses packets: dumpcap only writes what it has read from the kernel by the time the
signal arrives. Measured on this machine (tshark 4.0): of 200 datagrams sent just before
the SIGINT, none reached the file, in 8 runs of 8; of 2000, about half. And a SIGINT sent
right after tshark prints "Capturing on" can be ignored altogether (tshark never exits).
So :class:`Capture` synchronises with a marker datagram instead of trusting timing:

* tshark runs with ``-P -l -T fields -e udp.srcport -e udp.dstport``, so it prints one
  line per packet, and it only prints a packet after dumpcap has written it to the file
  (tshark reads the packets back from that file);
* ``sync()`` sends one datagram from a fresh socket (unique source port) to a marker
  port that this object holds open and that the capture filter also matches, then
  waits until tshark prints that packet. The capture socket receives packets in the
  order the kernel delivers them, and dumpcap writes them in order, so once the marker
  is printed, every packet delivered before it is in the file. A packet's tap delivery
  happens before its delivery to the receiving socket, so this covers everything a test
  has seen arrive, and on loopback, where a send is delivered before ``sendto()``
  returns, everything it has sent. ``__enter__`` syncs too, so the capture is known to
  be live before the test sends anything.
* ``__exit__`` syncs, then sends SIGINT (to tshark's own process group, like Ctrl-C),
  waits for the exit, and finally rewrites the file without the marker datagrams, so
  the file holds exactly the traffic on the ports asked for.

Waiting is always on an event (a line from tshark, with a deadline), never a sleep; the
marker is resent every half second while it has not shown up, in case one was sent
before the capture filter was attached.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from lns.testing.processes import SOURCE_ROOT

__all__ = [
    "Capture",
    "CaptureError",
    "pcap_check",
    "pcap_check_tool",
    "tshark_available",
]

LOOPBACK = "127.0.0.1"
_MARKER_PAYLOAD = b"lns-capture-sync"
_RESEND_INTERVAL = 0.5


class CaptureError(RuntimeError):
    """tshark did not start, did not see the marker in time, or failed to write the file."""


@functools.cache
def tshark_available() -> bool:
    """True when tshark is installed and can capture on the loopback interface ``lo``."""
    tshark = shutil.which("tshark")
    if tshark is None:
        return False
    try:
        listed = subprocess.run(
            [tshark, "-D"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and any(
        line.split(" ", 1)[-1].split(" ", 1)[0] == "lo" for line in listed.stdout.splitlines()
    )


class Capture:
    """Capture the UDP traffic on some loopback ports into a pcapng file, completely.

    Use as a context manager::

        with Capture(tmp_path / "run.pcapng", ports=[lns_port, relay_port]) as cap:
            ...  # run the traffic
        # here the file holds every packet sent on those ports inside the block

    ``sync()`` may also be called inside the block to make the file complete up to now.
    ``stderr`` holds what tshark said, for failure messages.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        ports: Sequence[int],
        *,
        tcp_ports: Sequence[int] = (),
        interface: str = "lo",
        timeout: float = 10.0,
    ) -> None:
        if not ports and not tcp_ports:
            raise ValueError("Capture needs at least one port")
        self.path = Path(path)
        self.ports = [int(p) for p in ports]
        # TCP ports captured too (RadSec); the sync marker is a UDP datagram all the same,
        # and loopback delivers in order whatever the protocol.
        self.tcp_ports = [int(p) for p in tcp_ports]
        self.interface = interface
        self.timeout = timeout
        self.stderr_lines: list[str] = []
        self._raw_path = self.path.with_name(self.path.name + ".raw.pcapng")
        self._proc: subprocess.Popen[str] | None = None
        self._marker_sock: socket.socket | None = None
        self._marker_port = 0
        self._started = threading.Event()
        self._seen: queue.Queue[int | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        # Probe sockets stay open until the end, so no two syncs share a source port and a
        # late marker from an earlier sync cannot be taken for the current one.
        self._probes: list[socket.socket] = []

    @property
    def marker_port(self) -> int:
        """The UDP port the sync markers are sent to (they are removed from the final file)."""
        return self._marker_port

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> Self:
        tshark = shutil.which("tshark")
        if tshark is None:
            raise CaptureError("tshark is not installed (apt-get install tshark)")
        marker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        marker.bind((LOOPBACK, 0))
        self._marker_sock = marker
        self._marker_port = marker.getsockname()[1]
        wanted = [f"udp port {p}" for p in self.ports] + [f"tcp port {p}" for p in self.tcp_ports]
        capture_filter = f"{' or '.join(wanted)} or udp dst port {self._marker_port}"
        self._raw_path.unlink(missing_ok=True)
        cmd = [
            tshark, "-n", "-i", self.interface, "-f", capture_filter,
            "-w", str(self._raw_path),
            "-P", "-l", "-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport",
        ]  # fmt: skip
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # own process group: SIGINT reaches dumpcap too
            )
            assert self._proc.stdout is not None
            assert self._proc.stderr is not None
            self._reader(self._read_stderr, self._proc.stderr)
            self._reader(self._read_stdout, self._proc.stdout)
            if not self._started.wait(self.timeout) or self._proc.poll() is not None:
                raise CaptureError(f"tshark did not start capturing:\n{self._stderr_so_far()}")
            self.sync()
        except BaseException:
            self._stop()
            self._cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sync_error: CaptureError | None = None
        try:
            self.sync()
        except CaptureError as e:
            sync_error = e
        finally:
            self._stop()
        try:
            self._strip_markers()
        finally:
            self._cleanup()
        if sync_error is not None and exc_type is None:
            raise sync_error

    # -- synchronisation -------------------------------------------------------------

    def sync(self) -> None:
        """Block until every packet sent so far on the captured ports is in the file."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise CaptureError(f"tshark is not running:\n{self._stderr_so_far()}")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._probes.append(probe)
        probe.bind((LOOPBACK, 0))
        probe_port = probe.getsockname()[1]
        deadline = time.monotonic() + self.timeout
        while True:
            probe.sendto(_MARKER_PAYLOAD, (LOOPBACK, self._marker_port))
            resend_at = min(deadline, time.monotonic() + _RESEND_INTERVAL)
            while (left := resend_at - time.monotonic()) > 0:
                try:
                    seen = self._seen.get(timeout=left)
                except queue.Empty:
                    break
                if seen is None:
                    raise CaptureError(f"tshark exited early:\n{self._stderr_so_far()}")
                if seen == probe_port:
                    self._drain_marker_socket()
                    return
            if time.monotonic() >= deadline:
                raise CaptureError(
                    f"tshark did not record the sync marker within {self.timeout} s:\n"
                    f"{self._stderr_so_far()}"
                )

    # -- internals -------------------------------------------------------------------

    def _reader(self, target: Callable[[IO[str]], None], stream: IO[str]) -> None:
        thread = threading.Thread(target=target, args=(stream,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr_lines.append(line)
            if "Capturing on" in line:
                self._started.set()
        self._started.set()  # EOF: wake __enter__, which then sees tshark has exited

    def _read_stdout(self, stream: IO[str]) -> None:
        marker = str(self._marker_port)
        for line in stream:
            src, _, dst = line.rstrip("\n").partition("\t")
            if dst == marker and src.isdigit():
                self._seen.put(int(src))
        self._seen.put(None)

    def _drain_marker_socket(self) -> None:
        sock = self._marker_sock
        if sock is None:
            return
        try:
            while True:
                sock.recv(2048, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass

    def _stderr_so_far(self) -> str:
        return "".join(self.stderr_lines).strip() or "(no output)"

    def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for thread in self._threads:
            thread.join(timeout=self.timeout)

    def _cleanup(self) -> None:
        for probe in self._probes:
            probe.close()
        self._probes.clear()
        if self._marker_sock is not None:
            self._marker_sock.close()
            self._marker_sock = None
        self._raw_path.unlink(missing_ok=True)

    def _strip_markers(self) -> None:
        """Write the final file: the raw capture without the marker datagrams."""
        if not self._raw_path.exists():
            raise CaptureError(f"tshark wrote no capture file:\n{self._stderr_so_far()}")
        tshark = shutil.which("tshark") or "tshark"
        out_format = "pcap" if self.path.suffix == ".pcap" else "pcapng"
        cmd = [
            tshark, "-n", "-r", str(self._raw_path),
            "-Y", f"not udp.dstport == {self._marker_port}",
            "-F", out_format, "-w", str(self.path),
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0 or not self.path.exists():
            raise CaptureError(
                f"could not write {self.path} from the raw capture:\n{result.stderr.strip()}"
            )


# -- pcap-check ------------------------------------------------------------------------


def pcap_check_tool() -> Path:
    """Where the shared ``pcap-check`` tool is: ``$LNS_PCAP_CHECK``, else ``../shared/tools``."""
    override = os.environ.get("LNS_PCAP_CHECK")
    if override:
        return Path(override)
    return SOURCE_ROOT.parent / "shared" / "tools" / "pcap-check"


def pcap_check(
    path: str | os.PathLike[str],
    ports: Iterable[int],
    secret: str | None = None,
    from_addr: str | None = None,
    from_port: int | None = None,
    *,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``pcap-check`` on a capture and return its result without raising on failure.

    Exit status 0: every checked packet dissects cleanly; 1: malformed packets or expert
    errors (listed in stdout); 2: tshark missing or the capture unreadable.
    ``ports`` are the UDP ports to dissect as L2TP besides 1701.
    """
    tool = pcap_check_tool()
    if not tool.is_file():
        raise FileNotFoundError(f"pcap-check not found at {tool} (set LNS_PCAP_CHECK)")
    cmd = [sys.executable, str(tool), str(path)]
    for port in ports:
        cmd += ["--port", str(int(port))]
    if secret is not None:
        cmd += ["--secret", secret]
    if from_addr is not None:
        cmd += ["--from", from_addr]
    if from_port is not None:
        cmd += ["--from-port", str(int(from_port))]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
