"""The pool database on the PostgreSQL server of this machine (LNS_TEST_POSTGRES_URL).

Migrations up and down from empty; the schema the migrations make is the one
the models describe (on SQLite too); the least-recently-used step reads the
partial index however full the pool; and two processes of eight threads each
allocate and release from one /24 without ever holding one address twice.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import String, cast, event, func, inspect, literal, select, text, update
from sqlalchemy.engine import Engine

from lns.db import database
from lns.db.models import Base
from lns.pool import admin
from lns.pool.allocator import (
    IccidHasLease,
    Lease,
    LeaseOrigin,
    PoolExhausted,
    allocate,
    release,
)
from lns.pool.models import PoolAddress

TABLES = {
    "accounting_spool",
    "node",
    "node_session",
    "pool",
    "pool_address",
    "pool_range",
    "range_exclusion",
}


# --- Migrations ---


def test_migrations_up_and_down_from_empty(postgres_schema_url):
    engine = database.create_engine(postgres_schema_url)
    try:
        assert database.current(engine) is None
        assert inspect(engine).get_table_names() == []
        database.upgrade(engine)
        assert database.current(engine) == database.head()
        assert set(inspect(engine).get_table_names()) == {*TABLES, "alembic_version"}
        assert inspect(engine).get_view_names() == ["live_session"]
        database.downgrade(engine, "base")
        assert database.current(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert inspect(engine).get_view_names() == []
        database.upgrade(engine)  # and up again over what down left
        assert database.current(engine) == database.head()
    finally:
        engine.dispose()


def test_nodes_starting_together_migrate_once(postgres_schema_url):
    engines = [database.create_engine(postgres_schema_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))

    def migrate(engine: Engine) -> None:
        barrier.wait()
        database.upgrade(engine)

    try:
        with ThreadPoolExecutor(len(engines)) as executor:
            list(executor.map(migrate, engines))  # re-raises any failure
        assert database.current(engines[0]) == database.head()
    finally:
        for engine in engines:
            engine.dispose()


def _differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [
            difference
            for difference in compare_metadata(context, Base.metadata)
            # As migrations/env.py says: PostgreSQL reflects NULLS FIRST as an
            # expression; the index is checked below instead.
            if not (
                engine.dialect.name == "postgresql"
                and difference[0] in ("add_index", "remove_index")
                and difference[1].name == "ix_pool_address_free_lru"
            )
        ]


def test_the_migrations_make_the_schema_the_models_describe(engine):
    assert _differences(engine) == []
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            definition = connection.scalar(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_pool_address_free_lru'")
            )
        assert definition is not None
        assert "(pool_id, last_released_at NULLS FIRST, number)" in definition
        assert "WHERE ((lease_iccid IS NULL) AND (reserved_iccid IS NULL))" in definition


# --- The least-recently-used step stays an index lookup ---


def test_the_lru_step_reads_the_free_address_index_in_a_full_slash_16(engine):
    with engine.begin() as connection:
        admin.add_range(connection, "big", "100.64.0.0/16")
        # 99% full: every address but one in a hundred leased.
        connection.execute(
            update(PoolAddress)
            .where(PoolAddress.number % 100 != 0)
            .values(
                lease_iccid=literal("89") + cast(PoolAddress.number, String),
                lease_node="filler",
                lease_tunnel_id=1,
                lease_session_id=1,
                lease_started_at=func.current_timestamp(),
                lease_origin="lru",
            )
        )
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()

    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "ORDER BY pool_address.last_released_at ASC NULLS FIRST" in statement:
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.begin() as connection:
            lease = allocate(connection, "big", "8944200000000000017", "lns-1", 1, 1)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert int(lease.address) % 100 == 0
    (statement, parameters) = statements[0]
    with engine.begin() as connection:
        prefix = "EXPLAIN " if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
        plan = "\n".join(
            str(row[-1]) for row in connection.exec_driver_sql(prefix + statement, parameters)
        )
    # The statement's second subquery is the least-recently-used step; the first,
    # sticky, sorts the few addresses one ICCID held.
    lru = re.split(r"InitPlan 2|SCALAR SUBQUERY 2", plan)[1]
    assert "ix_pool_address_free_lru" in lru, plan
    assert "TEMP B-TREE" not in lru, plan
    assert "Sort" not in lru, plan


def test_the_lru_subquery_runs_only_when_sticky_finds_nothing(postgres_url):
    # Were it run anyway, it would lock the pool's least recently used address
    # for nothing until the transaction ends.
    engine = database.create_engine(postgres_url)
    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "coalesce" in statement:
            statements.append((statement, parameters))

    try:
        with engine.begin() as connection:
            admin.add_range(connection, "p", "10.0.0.0/24")
            release(connection, allocate(connection, "p", "8944200000000000017", "lns-1", 1, 1))
        event.listen(engine, "before_cursor_execute", capture)
        with engine.begin() as connection:
            lease = allocate(connection, "p", "8944200000000000017", "lns-1", 1, 2)
            connection.rollback()
        assert lease.origin is LeaseOrigin.STICKY
        (statement, parameters) = statements[0]
        with engine.connect() as connection:
            plan = [
                row[0]
                for row in connection.exec_driver_sql("EXPLAIN ANALYZE " + statement, parameters)
            ]
            connection.rollback()
        second = "\n".join(plan[next(i for i, line in enumerate(plan) if "InitPlan 2" in line) :])
        assert "LockRows" in second, plan
        assert "(never executed)" in second.split("LockRows")[1].splitlines()[0], plan
    finally:
        engine.dispose()


# --- Many allocators against one PostgreSQL ---

PROCESSES = 2
THREADS = 8
ITERATIONS = 300  # per thread: 4800 allocations and releases in all
MAX_HELD = 20  # per thread: up to 320 wanted from 128 addresses, so the pool runs full
ICCIDS_PER_THREAD = 40
NETWORK = ipaddress.IPv4Network("10.77.0.0/24")
EXCLUDED = "10.77.0.128/25"  # the upper half: 128 addresses to share


def _allocator_process(
    url: str, process: int, holders: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    """One node: THREADS threads allocating and releasing at random."""
    engine = database.create_engine(url, pool_size=THREADS)
    base = int(NETWORK.network_address)

    def thread(number: int) -> dict[str, Any]:
        owner = process * 100 + number + 1
        rng = random.Random(owner)
        held: list[Lease] = []
        problems: list[str] = []
        counts = {"allocated": 0, "released": 0, "exhausted": 0}

        def give_back(lease: Lease) -> None:
            slot = int(lease.address) - base
            with holders.get_lock():
                if holders[slot] != owner:
                    problems.append(f"{lease.address} marked {holders[slot]}, not {owner}")
                holders[slot] = 0
            with engine.begin() as connection:
                if not release(connection, lease):
                    problems.append(f"lease of {lease.address} by {owner} was taken from it")
            counts["released"] += 1

        for iteration in range(ITERATIONS):
            if held and (len(held) >= MAX_HELD or rng.random() < 0.45):
                give_back(held.pop(rng.randrange(len(held))))
                continue
            busy = {lease.iccid for lease in held}
            iccid = rng.choice(
                [
                    f"89{owner:04d}{n:013d}"
                    for n in range(ICCIDS_PER_THREAD)
                    if f"89{owner:04d}{n:013d}" not in busy
                ]
            )
            try:
                with engine.begin() as connection:
                    lease = allocate(connection, "p", iccid, f"node-{process}", number, iteration)
            except PoolExhausted:
                counts["exhausted"] += 1
                continue
            except IccidHasLease as exc:
                problems.append(f"refused: {exc}")
                continue
            slot = int(lease.address) - base
            with holders.get_lock():
                if holders[slot] != 0:
                    problems.append(
                        f"{lease.address} given to {owner} while {holders[slot]} holds it"
                    )
                holders[slot] = owner
            held.append(lease)
            counts["allocated"] += 1
        for lease in held:
            give_back(lease)
        return {"problems": problems, **counts}

    try:
        with ThreadPoolExecutor(THREADS) as executor:
            outcomes = list(executor.map(thread, range(THREADS)))
        results.put(outcomes)
    except BaseException as exc:
        results.put(repr(exc))
    finally:
        engine.dispose()


def test_two_nodes_of_eight_threads_never_hold_one_address_twice(postgres_url):
    engine = database.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            admin.add_range(connection, "p", str(NETWORK), [EXCLUDED])
        context = multiprocessing.get_context("spawn")
        holders = context.Array("i", NETWORK.num_addresses)  # slot -> owner, 0 when free
        results = context.Queue()
        processes = [
            context.Process(target=_allocator_process, args=(postgres_url, n, holders, results))
            for n in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
        for outcome in outcomes:
            assert isinstance(outcome, list), outcome  # a repr of the exception otherwise
        threads = [thread for outcome in outcomes for thread in outcome]
        assert [problem for t in threads for problem in t["problems"]] == []
        allocated = sum(t["allocated"] for t in threads)
        assert allocated == sum(t["released"] for t in threads)
        exhausted = sum(t["exhausted"] for t in threads)
        print(f"{allocated} allocations, {exhausted} refused as exhausted")
        assert allocated > 1500
        assert exhausted > 0  # the pool did run full
        assert list(holders) == [0] * NETWORK.num_addresses
        with engine.connect() as connection:
            assert connection.scalar(select(func.count(PoolAddress.lease_iccid))) == 0
            # Every allocation bumped exactly one address's generation, once.
            assert connection.scalar(select(func.sum(PoolAddress.generation))) == allocated
    finally:
        engine.dispose()
