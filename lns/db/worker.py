"""The node's SQL work in a process of its own: ``python -m lns.db.worker``.

One Python process runs on one core at a time (the GIL): a node whose reactor thread
and SQL threads share it spends a third of a setup storm's CPU on SQLAlchemy and the
database driver while the reactor waits for the lock. With ``[database] worker =
"process"`` the node's SQL executor hands every transaction to this process instead,
so the reactor's process and the database work run on two cores.

The protocol is the executor's call, pickled: the parent writes frames (a 4-byte
big-endian length, then a pickle), the first ``(url, threads)`` (the URL, which may
hold a password, never on a command line), then ``(number, kind, function, args)``, on the
child's standard input, `function` a module-level function named by reference;
`kind` "transaction" runs ``function(connection, *args)`` in one transaction,
"engine" runs ``function(engine, *args)``. Calls run side by side on `threads`
threads (a heartbeat never waits behind a batch of allocations; SQLite's one
connection still serialises its writers), and each is answered, as it finishes,
with a frame of ``(number, ok, result)``, `result` the return value or the
exception (database errors as one-line DatabaseUnavailable). The child stops when
its input ends, once the calls in progress are answered, and ignores SIGTERM, SIGINT and
SIGHUP: the node stopping on one still needs it.
"""

from __future__ import annotations

import pickle
import signal
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

__all__ = ["FRAME", "decode_frames", "frame", "main"]

FRAME = struct.Struct("!I")


def frame(payload: object) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


def decode_frames(buffer: bytearray) -> list[Any]:
    """The complete frames at the front of `buffer`, removed from it."""
    found = []
    while len(buffer) >= FRAME.size:
        (length,) = FRAME.unpack_from(buffer)
        if len(buffer) < FRAME.size + length:
            break
        found.append(pickle.loads(bytes(buffer[FRAME.size : FRAME.size + length])))
        del buffer[: FRAME.size + length]
    return found


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_frame(source: BinaryIO) -> Any:
    header = _read_exactly(source, FRAME.size)
    if header is None:
        return None
    (length,) = FRAME.unpack(header)
    body = _read_exactly(source, length)
    return None if body is None else pickle.loads(body)


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Answer the executor's frames on `source` until it ends."""
    from lns.db import database
    from lns.db.executor import run_in_transaction, run_with_engine

    first = _read_frame(source)
    if first is None:
        return
    url, threads = first
    engine = database.create_engine(url, pool_size=threads)
    kinds: dict[str, Callable[..., Any]] = {
        "transaction": run_in_transaction,
        "engine": run_with_engine,
    }
    writing = threading.Lock()

    def answer(number: int, kind: str, function: Callable[..., Any], args: Any) -> None:
        try:
            result = kinds[kind](engine, function, *args)
            reply = frame((number, True, result))
        except Exception as exc:  # sent back, raised by the caller
            try:
                reply = frame((number, False, exc))
            except Exception:
                reply = frame((number, False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        with writing:
            sink.write(reply)
            sink.flush()

    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lns-sql") as pool:
            while True:
                request = _read_frame(source)
                if request is None:
                    return
                pool.submit(answer, *request)
    finally:
        engine.dispose()


def main() -> None:
    ignore_stop_signals()
    serve(sys.stdin.buffer, sys.stdout.buffer)


def ignore_stop_signals() -> None:
    """The node, not a signal, ends this process (its input ends): systemd's default
    KillMode sends SIGTERM to every process of the unit at once, and a terminal's
    Ctrl-C SIGINT to the whole process group, while the stopping node still writes the
    Stops of its sessions through us. A SIGKILLed node ends our input all the same."""
    for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)


if __name__ == "__main__":
    main()
