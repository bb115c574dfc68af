"""Address allocation speed: a /16 pool at 0%, 50% and 99% full, on SQLite and PostgreSQL.

    python -m benchmarks.pool_allocation [--postgres-url URL] [--allocations N] [--output FILE]

For each backend and fill level, a fresh database gets one /16 pool, leases are
written straight into it up to the fill level, and then N allocations run one
after another, each for a new ICCID (so every step of the allocator runs:
reservation, sticky, least recently used) and each followed by the release of
its lease, which keeps the pool at its fill level. Printed: allocations per
second (one thread; and with 4 threads, the adapter's default pool) and the
p50/p99 latency of one allocation transaction. The JSON result goes to
--output.

PostgreSQL is the server of --postgres-url or LNS_TEST_POSTGRES_URL, in a
schema of its own that is dropped afterwards; without either, only SQLite runs.
The SQLite database is a file in a temporary directory (WAL, synchronous=FULL).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy
from sqlalchemy import String, cast, func, literal, text, update
from sqlalchemy.engine import Engine, make_url

from lns.db import database
from lns.pool import admin
from lns.pool.allocator import allocate, release
from lns.pool.models import PoolAddress

CIDR = "100.64.0.0/16"
FILLS = (0, 50, 99)
THREADS = 4


@contextmanager
def sqlite_engine() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory(prefix="lns-bench-") as directory:
        engine = database.create_engine(f"sqlite:///{directory}/lns.db", pool_size=THREADS)
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def postgres_engine(base: str) -> Iterator[Engine]:
    schema = f"lns_bench_{uuid.uuid4().hex[:12]}"
    owner = database.create_engine(base, pool_size=1)
    with owner.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = database.create_engine(url, pool_size=THREADS)
    try:
        yield engine
    finally:
        engine.dispose()
        with owner.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        owner.dispose()


def prepare(engine: Engine, fill: int) -> int:
    """Migrate, add the /16 and lease `fill`% of it; the number of free addresses."""
    database.upgrade(engine)
    with engine.begin() as connection:
        admin.add_range(connection, "bench", CIDR)
        if fill:
            # Spread over the range: every address whose number mod 100 is below `fill`.
            connection.execute(
                update(PoolAddress)
                .where(PoolAddress.number % 100 < fill)
                .values(
                    lease_iccid=literal("89") + cast(PoolAddress.number, String),
                    lease_node="filler",
                    lease_tunnel_id=1,
                    lease_session_id=1,
                    lease_started_at=func.current_timestamp(),
                    lease_origin="lru",
                    last_iccid=literal("89") + cast(PoolAddress.number, String),
                )
            )
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    with engine.connect() as connection:
        (usage,) = admin.pool_usage(connection, "bench")
    return usage.free


def cycle(engine: Engine, number: int) -> float:
    """Allocate for a new ICCID and release; the seconds the allocation took."""
    iccid = f"8999{number:015d}"
    started = time.perf_counter()
    with engine.begin() as connection:
        lease = allocate(connection, "bench", iccid, "bench-node", 1, number % 65536)
    elapsed = time.perf_counter() - started
    with engine.begin() as connection:
        release(connection, lease)
    return elapsed


def measure(engine: Engine, allocations: int) -> dict[str, float]:
    for n in range(min(200, allocations)):  # warm the caches and the connection pool
        cycle(engine, 10_000_000 + n)
    latencies = [cycle(engine, n) for n in range(allocations)]
    latencies.sort()
    counter = iter(range(20_000_000, 30_000_000))
    lock = threading.Lock()

    def worker(_: int) -> float:
        with lock:
            number = next(counter)
        return cycle(engine, number)

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as executor:
        list(executor.map(worker, range(allocations)))
    threaded = time.perf_counter() - started
    return {
        "allocations_per_second": allocations / sum(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
        f"cycles_per_second_{THREADS}_threads": allocations / threaded,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", default=os.environ.get("LNS_TEST_POSTGRES_URL"))
    parser.add_argument("--allocations", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=Path("pool_allocation.json"))
    args = parser.parse_args(argv)

    backends = [("sqlite", sqlite_engine, ())]
    if args.postgres_url:
        backends.append(("postgresql", postgres_engine, (args.postgres_url,)))
    else:
        print("PostgreSQL skipped: no --postgres-url and no LNS_TEST_POSTGRES_URL")

    results: dict[str, dict[str, dict[str, float]]] = {}
    header = (
        f"{'backend':<11} {'fill':>4} {'free':>6} {'alloc/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {f'cycles/s x{THREADS}':>13}"
    )
    print(f"{CIDR}, {args.allocations} allocations per row, each for a new ICCID")
    print(header)
    for name, make_engine, engine_args in backends:
        results[name] = {}
        for fill in FILLS:
            with make_engine(*engine_args) as engine:  # type: ignore[operator]
                free = prepare(engine, fill)
                figures = measure(engine, args.allocations)
            figures["free_addresses"] = free
            results[name][f"{fill}%"] = figures
            print(
                f"{name:<11} {fill:>3}% {free:>6} {figures['allocations_per_second']:>8.0f} "
                f"{figures['p50_ms']:>7.2f} {figures['p99_ms']:>7.2f} {figures['max_ms']:>7.2f} "
                f"{figures[f'cycles_per_second_{THREADS}_threads']:>13.0f}"
            )
    document = {
        "benchmark": "pool_allocation",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "pool": CIDR,
        "allocations": args.allocations,
        "threads": THREADS,
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
