"""The node's log observer: one write per reactor turn, levels, Twisted's noise, rotation."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, eventAsText
from twisted.python import log as legacy_log

from lns.adapters.logwriter import LogWriter, RotatingFile, is_twisted_noise, plain_event_text


class Output:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    @property
    def lines(self) -> list[str]:
        return b"".join(self.writes).decode().splitlines()


class Reactor(Clock):
    """A fake clock that also records what other threads asked it to run."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[object] = []

    def callFromThread(self, f, *args) -> None:
        self.from_threads.append(f)


def writer(
    level: LogLevel = LogLevel.info, max_pending: int = 1 << 20, io_thread: bool = True
) -> tuple[LogWriter, Output, Reactor]:
    output, reactor = Output(), Reactor()
    observer = LogWriter(
        output, reactor, level, max_pending=max_pending, in_io_thread=lambda: io_thread
    )
    return observer, output, reactor


def test_lines_logged_in_one_turn_are_written_once_at_the_next_turn():
    observer, output, reactor = writer()
    log = Logger(namespace="lns.test", observer=observer)
    for number in range(100):
        log.info("session up: {number}", number=number)
    assert output.writes == []  # nothing written while the reactor handles this turn
    reactor.advance(0)
    assert len(output.writes) == 1
    assert len(output.lines) == 100
    assert output.lines[7].endswith(" [lns.test#info] session up: 7")
    # The next turn writes only what was logged since.
    log.warn("tunnel refused")
    reactor.advance(0)
    assert len(output.writes) == 2
    assert output.lines[-1].endswith(" [lns.test#warn] tunnel refused")


def test_a_full_buffer_is_written_at_once():
    observer, output, reactor = writer(max_pending=1000)
    log = Logger(namespace="lns.test", observer=observer)
    for _ in range(30):
        log.info("x" * 60)
    assert len(output.writes) >= 1  # without waiting for the turn
    reactor.advance(0)
    assert len(output.lines) == 30


def test_lines_from_other_threads_wake_the_reactor_once():
    observer, output, reactor = writer(io_thread=False)
    log = Logger(namespace="lns.test", observer=observer)
    log.info("lease of 100.64.0.1 had already ended")
    log.info("another")
    assert reactor.from_threads == [observer.flush]
    observer.flush()
    assert len(output.lines) == 2


def test_events_below_the_level_are_dropped():
    observer, output, reactor = writer(LogLevel.warn)
    log = Logger(namespace="lns.test", observer=observer)
    log.debug("d")
    log.info("i")
    log.warn("w")
    log.error("e")
    reactor.advance(0)
    assert [line.rsplit(" ", 1)[1] for line in output.lines] == ["w", "e"]


def test_twisted_port_and_protocol_lines_are_dropped():
    observer, output, reactor = writer()
    seen = []
    legacy_log.addObserver(seen.append)
    try:
        legacy_log.msg("Starting protocol <aaa.radius.client._Socket object at 0x7f283e698350>")
        legacy_log.msg("_Socket starting on 60974")
        legacy_log.msg("(UDP Port 60974 Closed)")
        legacy_log.msg("Stopping factory <twisted.web.server.Site object at 0x7f0>")
        legacy_log.msg("a line from an old-style caller")
    finally:
        legacy_log.removeObserver(seen.append)
    from twisted.logger._legacy import publishToNewObserver

    for event in seen:
        publishToNewObserver(observer, event, legacy_log.textFromEventDict)
    reactor.advance(0)
    assert [line.split("] ", 1)[1] for line in output.lines] == ["a line from an old-style caller"]


def test_only_legacy_lines_count_as_noise():
    event = {"log_namespace": "lns.adapters.l2tp", "log_text": "Starting protocol <x>"}
    assert not is_twisted_noise(event)


def test_a_traceback_stays_with_its_line():
    observer, output, reactor = writer()
    log = Logger(namespace="lns.test", observer=observer)
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("pump failed")
    reactor.advance(0)
    assert output.lines[0].endswith("pump failed")
    assert all(line.startswith("\t") for line in output.lines[1:])
    assert "ValueError: boom" in output.lines[-1]


def test_close_writes_what_is_left_and_closes_the_output():
    observer, output, _ = writer()
    Logger(namespace="lns.test", observer=observer).info("last words")
    observer.close()
    assert output.lines[0].endswith("last words")
    assert output.closed
    Logger(namespace="lns.test", observer=observer).info("too late")
    observer.flush()
    assert len(output.lines) == 1


def test_after_the_reactor_stopped_each_line_is_written_at_once():
    observer, output, _ = writer()
    log = Logger(namespace="lns.test", observer=observer)
    log.info("L2TP stopped")
    observer.reactor_stopped()
    assert len(output.lines) == 1
    log.info("Server Shut Down.")
    assert len(output.lines) == 2


def test_a_line_logged_while_a_batch_is_written_neither_deadlocks_nor_is_lost():
    # Twisted's SIGTERM handler logs in the main thread, between any two bytecodes: also
    # in the middle of our own write. Here the output itself logs, as that handler would.
    observer, output, reactor = writer()
    log = Logger(namespace="lns.test", observer=observer)
    original = output.write

    def write_interrupted(data: bytes) -> None:
        output.write = original  # type: ignore[method-assign]
        log.info("Received SIGTERM, shutting down.")
        original(data)

    output.write = write_interrupted  # type: ignore[method-assign]
    log.info("tunnel up")
    reactor.advance(0)
    assert [line.split("] ")[1] for line in output.lines] == ["tunnel up"]
    # The nested line waits for a flush scheduled the way a signal handler may.
    assert reactor.from_threads == [observer.flush]
    observer.flush()
    assert [line.split("] ")[1] for line in output.lines] == [
        "tunnel up",
        "Received SIGTERM, shutting down.",
    ]


def test_concurrent_writers_lose_no_line():
    observer, output, _ = writer(max_pending=4096, io_thread=False)
    log = Logger(namespace="lns.test", observer=observer)

    def work(name: str) -> None:
        for number in range(500):
            log.info("{name} {number}", name=name, number=number)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    observer.flush()
    assert len({line.split("] ")[1] for line in output.lines}) == 2000


# --- RotatingFile ---


def test_the_file_is_created_0640_and_appended_to(tmp_path: Path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "lns.log"
        path.write_bytes(b"from before\n")
        path.chmod(0o600)
        out = RotatingFile(str(path), max_bytes=1 << 20, keep=2)
        out.write(b"new\n")
        out.close()
        assert path.read_bytes() == b"from before\nnew\n"
        fresh = tmp_path / "fresh.log"
        RotatingFile(str(fresh), max_bytes=1 << 20, keep=2).close()
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_rotation_keeps_at_most_keep_files(tmp_path: Path):
    path = tmp_path / "lns.log"
    out = RotatingFile(str(path), max_bytes=100, keep=2)
    for number in range(10):
        out.write(f"{number:02d}".encode() * 20 + b"\n")  # 41 bytes: two per file
    out.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["lns.log", "lns.log.1", "lns.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    # Newest in lns.log, then .1, then .2; the oldest lines are gone.
    assert path.read_text().startswith("08")
    assert (tmp_path / "lns.log.1").read_text().startswith("06")
    assert (tmp_path / "lns.log.2").read_text().startswith("04")
    assert out.rotations == 4


def test_a_write_larger_than_the_limit_still_goes_out_whole(tmp_path: Path):
    path = tmp_path / "lns.log"
    out = RotatingFile(str(path), max_bytes=100, keep=1)
    out.write(b"a" * 10)
    out.write(b"b" * 500)
    out.close()
    assert path.read_bytes() == b"b" * 500
    assert (tmp_path / "lns.log.1").read_bytes() == b"a" * 10


def test_an_unopenable_file_raises(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        RotatingFile(str(tmp_path / "missing" / "lns.log"), max_bytes=100, keep=1)


@pytest.mark.parametrize(
    ("fmt", "fields"),
    [
        ("session up: {iccid}, tunnel {key[0]} session {key[1]}", {"iccid": "8944", "key": (1, 2)}),
        ("host name {host!r}, {seconds:.1f} s", {"host": "lac\n1", "seconds": 1.25}),
        ("{count} more not logged [{rate}]", {"count": 3, "rate": 2}),
        ("with braces {{literal}} and {value}", {"value": None}),
    ],
)
def test_plain_events_read_as_twisted_formats_them(fmt: str, fields: dict) -> None:
    events: list[dict] = []
    log = Logger(namespace="lns.test", observer=events.append)
    log.warn(fmt, **fields)
    [event] = events
    assert plain_event_text(event) == eventAsText(event, includeTimestamp=False)


def test_events_it_cannot_format_are_left_to_twisted() -> None:
    events: list[dict] = []
    log = Logger(namespace="lns.test", observer=events.append)
    log.info("missing {field}")
    log.info("called {value()}", value=lambda: "x")
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("failed")
    assert [plain_event_text(event) for event in events] == [None, None, None]
    observer, output, reactor = writer()
    for event in events:
        observer(event)
    reactor.advance(0)
    assert "Unable to format event" in output.lines[0]
    assert output.lines[1].endswith("called x")
    assert any("ValueError: boom" in line for line in output.lines)
