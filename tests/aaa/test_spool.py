"""aaa.radius.spool on the migrated SQLite schema: typed round trip, order, ack, postpone."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from aaa.radius import spool

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NODE = "lns-1"

ATTRIBUTES = [
    ("Acct-Status-Type", 2),
    ("Acct-Session-Id", "lns-1-19ab-1"),
    ("User-Name", "89440000000000000011"),
    ("Framed-IP-Address", ipaddress.IPv4Address("100.64.1.2")),
    ("NAS-IPv6-Address", ipaddress.IPv6Address("2001:db8::1")),
    ("Framed-IPv6-Prefix", ipaddress.IPv6Network("2001:db8:1::/64")),
    ("Class", b"\x00class\xff"),
    ("Acct-Input-Gigawords", 4294967295),
    ("Tunnel-Type:1", "L2TP"),
    ("Reply-Message", '["not", "json"] é'),
]


def test_attributes_round_trip_with_their_types():
    text = spool.encode_attributes(ATTRIBUTES)
    back = spool.decode_attributes(text)
    assert list(back) == ATTRIBUTES
    assert [type(v) for _, v in back] == [type(v) for _, v in ATTRIBUTES]


@pytest.mark.parametrize("value", [True, 1.5, None, ["x"]])
def test_unspoolable_values_refused(value):
    with pytest.raises(spool.SpoolError):
        spool.encode_attributes([("X", value)])


def test_unreadable_stored_attributes_are_an_error():
    with pytest.raises(spool.SpoolError):
        spool.decode_attributes('[["X", "float", "1.5"]]')
    with pytest.raises(spool.SpoolError):
        spool.decode_attributes("not json")


def test_enqueue_then_due_returns_typed_records_in_order(engine):
    with engine.begin() as conn:
        first = spool.enqueue(conn, NODE, "s-1", 1, ATTRIBUTES, T0)
        second = spool.enqueue(conn, NODE, "s-2", 1, [("User-Name", "b")], T0)
        third = spool.enqueue(conn, NODE, "s-1", 2, [("User-Name", "a")], T0 + timedelta(1))
    assert first < second < third
    with engine.begin() as conn:
        records = spool.due(conn, NODE, T0 + timedelta(days=2), 10)
    assert [r.id for r in records] == [first, second, third]
    assert [(r.acct_session_id, r.seq, r.status) for r in records] == [
        ("s-1", 1, 1),
        ("s-2", 1, 1),
        ("s-1", 2, 2),
    ]
    assert records[0].attributes == tuple(ATTRIBUTES)
    assert records[0].created_at == T0
    assert records[0].next_attempt_at == T0
    assert records[0].attempts == 0


def test_due_honours_now_limit_and_node(engine):
    with engine.begin() as conn:
        ids = [
            spool.enqueue(conn, NODE, f"s-{i}", 1, [], T0 + timedelta(seconds=i)) for i in range(5)
        ]
        spool.enqueue(conn, "lns-2", "other", 1, [], T0)
    with engine.begin() as conn:
        assert [r.id for r in spool.due(conn, NODE, T0 + timedelta(seconds=2), 10)] == ids[:3]
        assert [r.id for r in spool.due(conn, NODE, T0 + timedelta(days=1), 2)] == ids[:2]
        assert spool.due(conn, NODE, T0 - timedelta(seconds=1), 10) == []
        assert spool.pending(conn, NODE) == 5
        assert spool.pending(conn, "lns-2") == 1


def test_acknowledged_removes_and_postpone_counts(engine):
    with engine.begin() as conn:
        a = spool.enqueue(conn, NODE, "s", 1, [], T0)
        b = spool.enqueue(conn, NODE, "s", 2, [], T0)
    later = T0 + timedelta(seconds=30)
    with engine.begin() as conn:
        assert spool.postpone(conn, a, later)
        assert spool.postpone(conn, a, later + timedelta(seconds=30))
        assert spool.acknowledged(conn, b)
        assert not spool.acknowledged(conn, b)
        assert not spool.postpone(conn, b, later)
    with engine.begin() as conn:
        assert spool.due(conn, NODE, later, 10) == []
        [record] = spool.due(conn, NODE, later + timedelta(seconds=30), 10)
    assert (record.id, record.attempts) == (a, 2)
    assert record.next_attempt_at == later + timedelta(seconds=30)


def test_seq_continues_after_the_session_records_still_spooled(engine):
    with engine.begin() as conn:
        start = spool.enqueue(conn, NODE, "s", 1, [], T0)
        spool.enqueue(conn, NODE, "s", 3, [], T0)
        spool.acknowledged(conn, start)
        spool.enqueue(conn, NODE, "s", 2, [], T0)
        spool.enqueue(conn, "lns-2", "s", 1, [], T0)  # another node: its own numbering
    with engine.begin() as conn:
        records = spool.due(conn, NODE, T0, 10)
    assert [(r.seq, r.status) for r in records] == [(2, 3), (3, 2)]
