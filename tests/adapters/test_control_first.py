"""Control traffic first (DESIGN.md section 6, issue 14) and admission control, over a
whole node in memory on a fake clock (lns.testing.memory_node): the real L2TP service,
session runner and supervisor, simulated LACs and devices.

The clock never moves while a batch is handled, so an acknowledgement that has left
before the layer above starts its work was sent as its datagram was read, not by a
hold-off timer that the work could have delayed.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer

from lns.l2tp.avp import MessageType, ResultCode
from lns.l2tp.effects import CallCleared, CallEstablished
from lns.l2tp.header import ControlPacket, decode_packet
from lns.l2tp.result import CdnResult, GeneralError, StopCcnResult
from lns.ppp.auth import AuthRequest, Decision
from lns.runtime import Backlog
from lns.testing.l2tp_network import message_type
from lns.testing.lacsim.device import Device
from lns.testing.lacsim.lac import (
    Lac,
    Phase,
    SimulatedCall,
    SimulatedTunnel,
    default_proxy_lcp,
    proxy_chap,
)
from lns.testing.memory_node import LNS_ADDRESS, MemoryNode, memory_config
from lns.testing.work_clock import WorkClock

LAC = ("192.0.2.10", 1701)


def iccid(n: int) -> str:
    return f"8944500{n:012d}"  # 19 digits


class Witness:
    """The layer above, noting what the node had sent when each call reached it."""

    def __init__(self, node: MemoryNode) -> None:
        self.node = node
        self.inner = node.runner
        self.sent_at_first_call: list[bytes] | None = None
        self.calls = 0

    def call_established(self, event: CallEstablished) -> None:
        if self.sent_at_first_call is None:
            self.sent_at_first_call = [data for data, _peer in self.node.port.sent]
        self.calls += 1
        self.inner.call_established(event)

    def ppp_frame_received(self, tunnel_id: int, session_id: int, frame: bytes) -> None:
        self.inner.ppp_frame_received(tunnel_id, session_id, frame)

    def call_cleared(self, event: CallCleared) -> None:
        self.inner.call_cleared(event)

    def shutdown(self, reason: str) -> defer.Deferred[None]:
        return self.inner.shutdown(reason)


def place(lac: Lac, tunnel: SimulatedTunnel, n: int, device: bool = False) -> SimulatedCall:
    return lac.place_call(
        tunnel,
        iccid(n),
        proxy_lcp=default_proxy_lcp(lac.rng),
        proxy_auth=proxy_chap(b"pw", lac.rng),
        device=Device() if device else None,
    )


def acknowledges(data: bytes, tunnel: SimulatedTunnel) -> bool:
    """``data`` is a control datagram of ours on ``tunnel`` acknowledging all it sent."""
    packet = decode_packet(data)
    return (
        isinstance(packet, ControlPacket)
        and packet.tunnel_id == tunnel.tunnel_id
        and packet.nr == tunnel.channel.next_ns
    )


def to_lac(node: MemoryNode, lac: Lac) -> None:
    """Hand the LAC what the node sent, at the same instant."""
    sent, node.port.sent = node.port.sent, []
    for data, _peer in sent:
        lac.datagram_received(data, node.now)


def read_batch(node: MemoryNode, datagrams: list[bytes]) -> None:
    """The datagrams as one read of the socket would hand them to the L2TP service."""
    node.l2tp.datagrams_received([(data, LAC, LNS_ADDRESS[0]) for data in datagrams])


def test_an_iccn_is_acknowledged_before_its_session_setup_starts() -> None:
    node = MemoryNode()
    witness = Witness(node)
    node.l2tp.calls = witness
    lac = node.lac(LAC)
    tunnel = lac.open_tunnel(node.now)
    node.advance(0.5)
    read_batch(node, [])
    place(lac, tunnel, 1)
    read_batch(node, lac.datagrams_to_send(node.now))  # the ICRQ
    to_lac(node, lac)  # our ICRP; the LAC answers with its ICCN
    [iccn] = lac.datagrams_to_send(node.now)
    assert message_type(iccn) == MessageType.ICCN
    read_batch(node, [iccn])
    # Nothing of ours answers an ICCN: the acknowledgement is a ZLB, and it had left
    # before the session's PPP, RADIUS and pool work began (the clock did not move).
    assert witness.calls == 1
    assert witness.sent_at_first_call is not None
    [zlb] = witness.sent_at_first_call
    assert message_type(zlb) == "ZLB"
    assert acknowledges(zlb, tunnel)


def test_a_hello_read_behind_63_iccns_is_acknowledged_before_any_of_their_setups() -> None:
    node = MemoryNode(pool_size=128)
    witness = Witness(node)
    node.l2tp.calls = witness
    lac = node.lac(LAC)
    tunnels = [lac.open_tunnel(node.now) for _ in range(8)]
    node.advance(0.5)
    # 63 calls over 8 tunnels (8 each, 7 on the last: within every window), then a HELLO
    # on the last tunnel, read from the socket together as one batch of 64.
    for n in range(63):
        place(lac, tunnels[n // 8], n)
    read_batch(node, lac.datagrams_to_send(node.now))  # the ICRQs
    to_lac(node, lac)  # the ICRPs: the LAC queues its ICCNs
    hello_tunnel = tunnels[-1]
    lac.send_hello(hello_tunnel)
    batch = lac.datagrams_to_send(node.now)
    assert [message_type(d) for d in batch] == [MessageType.ICCN] * 63 + [MessageType.HELLO]
    read_batch(node, batch)

    assert witness.calls == 63
    sent = witness.sent_at_first_call
    assert sent is not None
    # Before the first session's setup began, every tunnel's messages were acknowledged,
    # the HELLO's among them: one ZLB per tunnel for the whole batch.
    assert [message_type(d) for d in sent] == ["ZLB"] * 8
    assert all(any(acknowledges(d, t) for d in sent) for t in tunnels)
    to_lac(node, lac)
    assert not lac.hello_outstanding(hello_tunnel)


class PendingAaa:
    """A RADIUS server that answers only when told."""

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred[Decision]] = []

    def authenticate(self, request: AuthRequest) -> defer.Deferred[Decision]:
        answer: defer.Deferred[Decision] = defer.Deferred()
        self.waiting.append(answer)
        return answer

    def answer_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for answer in waiting:
            answer.callback(Decision(True))


def metrics(node: MemoryNode) -> dict[str, Any]:
    scraped: list[bytes] = []
    node.metrics.scrape().addCallback(scraped.append)
    [text] = scraped
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if not sample.labels
    }


def test_beyond_max_setups_in_progress_an_icrq_gets_a_cdn_and_the_hello_an_ack() -> None:
    config = memory_config().l2tp(max_setups_in_progress=2).config()
    node = MemoryNode(config)
    aaa = PendingAaa()
    node.runner.authenticator = aaa
    lac = node.lac(LAC)
    tunnel = lac.open_tunnel(node.now)
    node.advance(0.5)
    first = [place(lac, tunnel, n, device=True) for n in (1, 2)]
    node.pump()
    assert len(aaa.waiting) == 2  # two sessions wait for RADIUS: two setups in progress
    assert node.supervisor.setups_in_progress == 2

    # The third ICRQ and a HELLO on the same tunnel, at the same instant.
    third = place(lac, tunnel, 3, device=True)
    lac.send_hello(tunnel)
    node.pump()
    assert third.phase is Phase.CLOSED
    assert third.result == ResultCode(
        CdnResult.TEMPORARY_LACK_OF_FACILITIES,
        GeneralError.INSUFFICIENT_RESOURCES,
        "temporarily out of resources: 2 session setups in progress, try again later",
    )
    assert not lac.hello_outstanding(tunnel)
    assert len(aaa.waiting) == 2  # the refused call started nothing
    figures = metrics(node)
    assert figures["lns_session_setups_refused_total"] == 1
    assert figures["lns_session_setups_in_progress"] == 2

    # RADIUS answers, the two sessions come up, and the next call is taken.
    aaa.answer_all()
    node.advance(1.0)
    assert all(call.opened for call in first)
    assert node.supervisor.setups_in_progress == 0
    fourth = place(lac, tunnel, 4, device=True)
    node.pump()
    aaa.answer_all()
    node.advance(1.0)
    assert fourth.opened
    figures = metrics(node)
    assert figures["lns_session_setups_refused_total"] == 1
    assert figures["lns_session_setups_in_progress"] == 0


def test_on_a_busy_node_setups_wait_for_later_turns_and_a_hello_read_meanwhile_is_answered():
    node = MemoryNode(pool_size=128)
    witness = Witness(node)
    node.l2tp.calls = witness
    # Five readings of the work clock a slice: five calls a turn.
    node.l2tp.backlog = Backlog(node.clock, 0.005, WorkClock())
    lac = node.lac(LAC)
    tunnels = [lac.open_tunnel(node.now) for _ in range(8)]
    node.advance(0.5)
    calls = [place(lac, tunnels[n // 8], n, device=True) for n in range(63)]
    read_batch(node, lac.datagrams_to_send(node.now))  # the ICRQs
    to_lac(node, lac)
    read_batch(node, lac.datagrams_to_send(node.now))  # the 63 ICCNs, one read
    assert witness.calls == 5
    assert len(node.l2tp.backlog) == 58

    # The next read, before the reactor's next turn: a HELLO, answered at once, while
    # the setups it was read behind still wait.
    to_lac(node, lac)
    lac.send_hello(tunnels[0])
    read_batch(node, lac.datagrams_to_send(node.now))
    to_lac(node, lac)
    assert not lac.hello_outstanding(tunnels[0])
    assert witness.calls == 5

    figures = metrics(node)  # the 58 calls, and the frames of the 5 sessions begun
    assert figures["lns_backlog_items"] == len(node.l2tp.backlog) > 58
    assert figures["lns_backlog_waited_total"] == figures["lns_backlog_items"]
    # The next turns take the rest (a fake clock runs every turn due at once), in
    # arrival order, and every session comes up.
    assert any(call.getTime() == node.now for call in node.clock.getDelayedCalls())
    node.clock.advance(0)
    assert witness.calls == 63
    node.advance(2.0)
    assert witness.calls == 63
    assert len(node.l2tp.backlog) == 0
    assert all(call.opened for call in calls)
    assert metrics(node)["lns_backlog_items"] == 0


def test_calls_cleared_by_a_stopccn_are_told_after_their_queued_setups_not_before():
    node = MemoryNode(pool_size=128)
    node.l2tp.backlog = Backlog(node.clock, 0.0, WorkClock())  # nothing in this turn
    lac = node.lac(LAC)
    tunnel = lac.open_tunnel(node.now)
    node.advance(0.5)
    for n in range(3):
        place(lac, tunnel, n)
    read_batch(node, lac.datagrams_to_send(node.now))
    to_lac(node, lac)
    read_batch(node, lac.datagrams_to_send(node.now))  # 3 ICCNs, their calls queued
    assert len(node.l2tp.backlog) == 3
    # The operator clears the tunnel before the queued calls reach the layer above:
    # their clearing is queued behind them, so no session outlives its call.
    result = ResultCode(StopCcnResult.GENERAL_REQUEST, 0, "cleared by an operator")
    assert node.l2tp.close_tunnel(tunnel.peer_tunnel_id, result, "operator")
    assert len(node.l2tp.backlog) == 6  # the 3 calls, then the 3 clearings behind them
    node.advance(5.0)
    assert len(node.l2tp.backlog) == 0
    assert len(node.supervisor) == 0
    assert node.pool.live == {}


def test_in_a_long_read_the_acks_leave_every_64_datagrams_not_only_at_its_end() -> None:
    node = MemoryNode(pool_size=256)
    lac = node.lac(LAC)
    tunnels = [lac.open_tunnel(node.now) for _ in range(16)]
    node.advance(0.5)
    lac.send_hello(tunnels[0])  # first in the read, then 127 ICRQs
    for n in range(127):
        place(lac, tunnels[1 + n // 9], n)
    batch = lac.datagrams_to_send(node.now)
    assert len(batch) == 128
    sent_before: list[list[bytes]] = []
    core = node.l2tp.endpoint.datagram_received

    def noting(*args: Any) -> Any:
        sent_before.append([data for data, _peer in node.port.sent])
        return core(*args)

    node.l2tp.endpoint.datagram_received = noting  # type: ignore[method-assign]
    read_batch(node, batch)
    assert not any(acknowledges(d, tunnels[0]) for d in sent_before[63])
    # Before the core took the 65th datagram, the HELLO's ack had left.
    assert any(acknowledges(d, tunnels[0]) for d in sent_before[64])
