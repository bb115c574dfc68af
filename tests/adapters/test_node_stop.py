"""A node that stops (SIGTERM) with live sessions whose LACs have vanished (issue 14):
every session ends at once with its Stop saying Admin-Reboot and its address released,
each tunnel gets one StopCCN and no call a CDN, and the wait for the StopCCNs'
acknowledgements is bounded. Over a whole node in memory on a fake clock
(lns.testing.memory_node)."""

from __future__ import annotations

import gc

import pytest

from lns.adapters import sessions as runner
from lns.l2tp.avp import MessageType
from lns.l2tp.header import ControlPacket, DataPacket, decode_packet
from lns.ppp.termination import TerminateCause
from lns.sessions.accounting import RecordKind
from lns.sessions.record import SessionState
from lns.testing.l2tp_network import message_type
from lns.testing.lacsim.lac import Phase
from lns.testing.memory_node import MemoryNode

LACS = (("192.0.2.10", 1701), ("192.0.2.20", 1701))


def iccid(n: int) -> str:
    return f"8944600{n:012d}"  # 19 digits


def node_with_sessions(per_lac: int) -> MemoryNode:
    node = MemoryNode()
    n = 0
    for address in LACS:
        lac = node.lac(address, hostname=f"lac-{address[0]}")
        tunnel = lac.open_tunnel(node.now)
        node.advance(0.5)
        for _ in range(per_lac):
            n += 1
            node.session(lac, tunnel, iccid(n))
    node.advance(5.0)
    return node


def test_stop_ends_every_session_with_admin_reboot_and_one_stopccn_per_tunnel() -> None:
    node = node_with_sessions(per_lac=3)
    records = list(node.supervisor)
    assert len(records) == 6
    assert all(r.state is SessionState.UP for r in records)
    assert len(node.pool.live) == 6
    stopped = node.node.stopService()
    # The LACs are gone: nothing they would send reaches the node any more.
    sent = [data for data, _peer in node.port.sent]
    node.port.sent = []
    assert len(node.supervisor) == 0
    for record in records:
        assert node.accounting.of(record.acct_session_id)[-1] == (
            RecordKind.STOP,
            TerminateCause.ADMIN_REBOOT,
        )
    assert node.pool.live == {}
    packets = [decode_packet(data) for data in sent]
    assert not any(isinstance(p, DataPacket) for p in packets)  # no LCP Terminate-Request
    kinds = [message_type(data) for data, p in zip(sent, packets, strict=True)]
    assert kinds == [MessageType.StopCCN, MessageType.StopCCN]  # no CDN
    assert all(isinstance(p, ControlPacket) for p in packets)
    assert not stopped.called
    node.clock.advance(node.l2tp.stop_grace.seconds)  # the StopCCN retransmissions go unanswered
    assert stopped.called


def test_stop_with_lacs_present_returns_once_they_acknowledge() -> None:
    node = node_with_sessions(per_lac=2)
    stopped = node.node.stopService()
    node.pump()  # the LACs acknowledge the StopCCNs at once
    assert stopped.called
    for lac in node.lacs.values():
        assert all(tunnel.phase is Phase.CLOSED for tunnel in lac.tunnels.values())


def test_sessions_end_a_slice_a_turn_after_the_stopccns_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten thousand sessions end over several reactor turns, so the database stores the
    Stops and releases of the first while the rest end; the StopCCNs leave before any."""
    monkeypatch.setattr(runner, "SHUTDOWN_SLICE", 2)
    node = node_with_sessions(per_lac=3)
    stopped = node.node.stopService()
    assert [message_type(data) for data, _peer in node.port.sent] == [MessageType.StopCCN] * 2
    assert len(node.supervisor) == 4  # the first slice
    assert not gc.isenabled()  # no full collection over the sessions while they end
    node.port.sent = []  # the LACs are gone
    node.clock.advance(0)  # the next turns (the fake clock runs what becomes due meanwhile)
    assert len(node.supervisor) == 0
    assert len(node.accounting.records) == 6 * 2  # a Start and a Stop each
    assert not stopped.called
    node.clock.advance(node.l2tp.stop_grace.seconds)
    assert stopped.called
    assert gc.isenabled()  # collecting again once stopped (a process that goes on)
