"""One load run against an LNS (or a list of them): tunnels, a paced storm of sessions,
hold, teardown; and, like a carrier's LAC, failover to the next LNS.

A :class:`~lns.testing.lacsim.lac.Lac` per LNS emulates the operator's LAC; all the
tunnels share one UDP socket, as a GGSN's do, and every datagram goes to one of the
LNS addresses the run was given (what comes back from any other address is counted
and dropped). The run is a sequence of phases:

* ``tunnels``: SCCRQ on every tunnel, until each is established or failed;
* ``setup``: sessions placed round-robin on the established tunnels, at
  ``rate`` per second with at most ``concurrency`` in flight; a session counts
  as established when its device's IPCP reaches Opened (its setup latency runs
  from the ICRQ being handed to the LAC), and as failed on a CDN, the loss of
  its tunnel, or ``timeout`` without IPCP;
* ``hold``: the sessions stay up ``hold`` seconds (and ping, when asked to);
* ``teardown``: a CDN per session then a StopCCN per tunnel (or StopCCNs only),
  each waited for until acknowledged or ``timeout``.

Meanwhile every tunnel sends a HELLO every ``hello_interval`` and times its
acknowledgement (ZLB or piggybacked Nr).

Failover (lns.testing.lacsim.lns_list): tunnels go to the most preferred LNS that is
up. A tunnel is lost when its LNS does not answer the SCCRQ (after the LAC's
retransmissions, or within ``timeout``), stops acknowledging (a HELLO or any control
message unacknowledged after the retransmissions) or sends StopCCN. Its LNS is then
marked down for ``down_time`` and, when another LNS is up, a tunnel is opened there
instead and the lost tunnel's SIMs are placed on it again, same ICCIDs, at the run's
rate and concurrency: before any SIM not yet attempted, in setup and in hold alike.
Each such event is a :class:`~lns.loadgen.stats.Failover` in the summary: when, why,
how long the SIMs that were up took to come back and how many kept their address.
When no LNS is up, a lost tunnel fails as with a single LNS: its sessions are dropped.

For tens of thousands of sessions nothing here scans all sessions per event:
setup timeouts sit in a deque in deadline order (they are placed in time
order), the LAC keeps no per-frame history, received datagrams are handled as
they come and what they cause is sent once per reactor turn.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import resource
import socket
from collections import deque
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from lns.l2tp.avp import ResultCode
from lns.l2tp.reliable import RetransmitPolicy
from lns.loadgen.options import LoadOptions, ProxyAuth, Teardown, endpoint_text
from lns.loadgen.progress import Progress, Snapshot
from lns.loadgen.stats import Failover, RunStats, Samples
from lns.ppp.frame import Protocol, encode_frame
from lns.runtime import DeadlineTimer
from lns.testing import packets
from lns.testing.lacsim.device import Device, DeviceBehaviour
from lns.testing.lacsim.lac import (
    LCP_AUTH_CHAP_MD5,
    LCP_AUTH_PAP,
    Lac,
    LacObserver,
    Phase,
    ProxyAuthSpec,
    SimulatedCall,
    SimulatedTunnel,
    default_proxy_lcp,
    proxy_chap,
    proxy_pap,
)
from lns.testing.lacsim.lns_list import LnsList

SOCKET_BUFFER = 8 * 1024 * 1024  # bytes: a storm's bursts must not overflow the socket
STOPCCN_WAIT = 5.0  # seconds to wait for the StopCCNs' acknowledgements
PING_TICK = 0.05  # seconds: the pings of one interval go out spread over it in ticks
NOT_BACK_AT_END = "not back when the run ended"

# Result Code of the CDN we send for a session that timed out or at teardown
# (RFC 2661 section 4.4.2, CDN result 3: administrative reasons).
_ADMINISTRATIVE = ResultCode(3)


def result_text(kind: str, result: ResultCode | None) -> str:
    """A CDN's or StopCCN's Result Code as a failure reason: ``CDN 2/0: message``."""
    if result is None:
        return f"{kind} without a Result Code"
    code = f"{result.result}" if result.error is None else f"{result.result}/{result.error}"
    return f"{kind} {code}: {result.message}" if result.message else f"{kind} {code}"


class _Socket(DatagramProtocol):
    def __init__(self, run: LoadRun) -> None:
        self.run = run

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.run.datagram_received(datagram, addr)


class LoadRun(LacObserver):
    """Runs once: :meth:`start` returns a Deferred that fires with the :class:`RunStats`."""

    log = Logger()

    def __init__(self, options: LoadOptions, reactor: Any, progress: Progress) -> None:
        self.options = options
        self.reactor = reactor
        self.progress = progress
        self.stats = RunStats(
            server=options.lns_text,
            tunnels_requested=options.tunnels,
            sessions_requested=options.sessions,
            ping_target=None if options.ping is None else str(options.ping),
        )
        self.rng = random.Random(options.seed)
        retransmit = RetransmitPolicy(
            initial=options.retransmit,
            cap=max(8.0, options.retransmit),
            max_retransmissions=options.retries,
        )
        # One LAC per LNS (a Lac speaks to one address), one random generator for all.
        self.lacs = [
            Lac(
                hostname=options.hostname,
                secret=options.secret,
                rng=self.rng,
                retransmit=retransmit,
                receive_window=options.receive_window,
                hide_avps=options.hide_avps,
                record=False,
                observer=self,
            )
            for _ in options.lns
        ]
        self.lns_list = LnsList(len(options.lns), options.down_time)
        self._lns_names = [endpoint_text(e) for e in options.lns]
        self._destinations = [(str(address), port) for address, port in options.lns]
        self._sources: dict[Any, int] = {}  # a datagram's source -> its LNS
        self.phase = "tunnels"
        self._socket = _Socket(self)
        self._port: IListeningPort | None = None
        self._done: defer.Deferred[RunStats] = defer.Deferred()
        self._timer = DeadlineTimer(reactor, self._on_timer)
        self._flush_scheduled = False
        self._phase_deadline: float | None = None
        # Tunnels: every one opened (for its counters), its LNS, those waiting for their
        # SCCRP (with the time we give up on it), those established and not lost.
        self._tunnels: list[SimulatedTunnel] = []
        self._lns_of: dict[SimulatedTunnel, int] = {}
        self._waiting: dict[SimulatedTunnel, float] = {}
        self._tunnels_up: list[SimulatedTunnel] = []
        # Sessions, by SIM index (its ICCID is the start plus the index): the next never
        # attempted, those to place again after a failover (placed first), when each of
        # those was first attempted; the calls in flight (with their ICRQ time) and their
        # setup deadlines in placement order; the calls up.
        self._next_index = 0
        self._again: deque[int] = deque()
        self._first_attempt: dict[int, float] = {}
        self._in_flight: dict[SimulatedCall, float] = {}
        self._timeouts: deque[tuple[float, SimulatedCall]] = deque()
        self._up: set[SimulatedCall] = set()
        self._round_robin = 0
        # Pacing: the n-th placement since the origin is due at origin + n / rate.
        self._slot_origin = 0.0
        self._slots_used = 0
        # Failover: the event each LNS's current down time belongs to, and the SIMs lost
        # in one and not back yet.
        self._failover_of: dict[int, Failover] = {}
        self._lost: dict[int, Failover] = {}
        # Pinging: the sessions in the order they came up, a cursor into them, and
        # those that had an answer.
        self._ping_order: list[SimulatedCall] = []
        self._ping_cursor = 0
        self._ping_sequence = 0
        self._ping_credit = 0.0
        self._answered: set[SimulatedCall] = set()
        self._loops: list[LoopingCall] = []
        self._hello_loop: LoopingCall | None = None
        self._ping_loop: LoopingCall | None = None
        # The progress display's window.
        self._recent_hello = Samples()
        self._recent_established = 0
        self._last_progress = 0.0
        self._cpu_at_start = 0.0
        self._teardown_step = ""

    # --- the run ------------------------------------------------------------------------

    def start(self) -> defer.Deferred[RunStats]:
        options = self.options
        if options.local is not None:
            interface = str(options.local)
        else:
            interface = "::" if options.server.version == 6 else "0.0.0.0"
        self._port = self.reactor.listenUDP(0, self._socket, interface, 65535)
        self._grow_socket_buffers()
        now = self.reactor.seconds()
        self.stats.started_at = self._last_progress = now
        self._cpu_at_start = _cpu_seconds()
        for _ in range(options.tunnels):
            self._open_tunnel(0, now)
        self._loop(self._show_progress, self.progress.interval)
        if options.hello_interval > 0:
            self._hello_loop = self._loop(self._send_hellos, options.hello_interval)
        self._phase_changed(now)
        self._flush()
        return self._done

    def interrupt(self) -> None:
        """The operator asked to stop (SIGINT): tear down now; a second time, stop at once."""
        if self.phase == "done":
            return
        now = self.reactor.seconds()
        if self.phase == "teardown":
            self.progress.note("interrupted again: stopping without waiting for acknowledgements")
            self.stats.teardown_complete = False
            self._finish(now)
            return
        self.stats.interrupted = True
        self.progress.note("interrupted: tearing down (interrupt again to stop at once)")
        self._begin_teardown(now)
        self._flush()

    def _loop(self, function: Any, interval: float) -> LoopingCall:
        loop = LoopingCall(function)
        loop.clock = self.reactor
        loop.start(interval, now=False)
        self._loops.append(loop)
        return loop

    def _stop_loop(self, loop: LoopingCall | None) -> None:
        if loop is not None and loop.running:
            loop.stop()

    def _grow_socket_buffers(self) -> None:
        sock = getattr(self._port, "socket", None)
        if not isinstance(sock, socket.socket):
            return
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # the kernel's limit stands
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)

    # --- I/O ----------------------------------------------------------------------------

    def datagram_received(self, datagram: bytes, addr: Any) -> None:
        lns = self._sources.get(addr)
        if lns is None:
            lns = self._lns_at(addr)
            if lns is None:
                self.stats.datagrams_unexpected += 1
                return
            self._sources[addr] = lns  # known LNSs only: a flood cannot grow it
        self.stats.datagrams_received += 1
        self.lacs[lns].datagram_received(datagram, self.reactor.seconds())
        if not self._flush_scheduled:
            # What this datagram caused goes out with what the rest of this reactor
            # turn's datagrams cause: one pass over the LAC, acks piggybacked.
            self._flush_scheduled = True
            self.reactor.callLater(0, self._flush)

    def _lns_at(self, addr: Any) -> int | None:
        """The LNS a datagram came from (addresses compared as addresses), or None."""
        try:
            source = (ipaddress.ip_address(addr[0]), int(addr[1]))
        except (TypeError, ValueError, IndexError):
            return None
        for index, endpoint in enumerate(self.options.lns):
            if endpoint == source:
                return index
        return None

    def _on_timer(self) -> None:
        now = self.reactor.seconds()
        for lac in self.lacs:
            lac.handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        """Advance the phases, send what the LACs have queued, re-arm the timer."""
        self._flush_scheduled = False
        if self.phase == "done":
            return
        now = self.reactor.seconds()
        self._advance(now)
        if self.phase == "done":
            return
        for lac, destination in zip(self.lacs, self._destinations, strict=True):
            self._send(lac.datagrams_to_send(now), destination)
        self._timer.set(self._next_deadline(now))

    def _send(self, datagrams: list[bytes], destination: tuple[str, int]) -> None:
        transport = self._socket.transport
        if transport is None or self._port is None:
            return
        for data in datagrams:
            try:
                transport.write(data, destination)
            except OSError:
                self.stats.send_errors += 1  # a full socket buffer: retransmission recovers
            else:
                self.stats.datagrams_sent += 1

    def _next_deadline(self, now: float) -> float | None:
        deadlines = [t for lac in self.lacs if (t := lac.get_timer()) is not None]
        deadlines += self._waiting.values()
        if self._phase_deadline is not None:
            deadlines.append(self._phase_deadline)
        if self._timeouts:
            deadlines.append(self._timeouts[0][0])
        if (
            self.phase in ("setup", "hold")
            and self._more_to_place()
            and self.options.rate > 0
            and len(self._in_flight) < self.options.concurrency
        ):
            deadlines.append(self._next_slot())
        if self._again:
            # A marked-down LNS may come up again while SIMs wait for a tunnel.
            deadlines += [
                until
                for index in range(self.lns_list.count)
                if (until := self.lns_list.down_until(index)) is not None and until > now
            ]
        return min(deadlines) if deadlines else None

    # --- phases -------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._expire_waiting(now)
        if self.phase == "tunnels" and not self._waiting:
            self.phase = "setup"
            self._slot_origin, self._slots_used = now, 0
            self._phase_changed(now)
        if self.phase in ("setup", "hold"):
            self._expire_setups(now)
            self._reopen(now)
            self._place_sessions(now)
        if self.phase == "setup" and not self._in_flight and not self._can_place(now):
            self.stats.setup_finished_at = now
            if self.options.hold > 0 and self._tunnels_up:
                self.phase = "hold"
                self._phase_deadline = now + self.options.hold
                if self.options.ping is not None:
                    self._ping_loop = self._loop(self._send_pings, PING_TICK)
                self._phase_changed(now)
            else:
                self._begin_teardown(now)
        if self.phase == "hold" and (
            not (self._tunnels_up or self._waiting)
            or (self._phase_deadline is not None and now >= self._phase_deadline)
        ):
            self._begin_teardown(now)
        if self.phase == "teardown":
            self._advance_teardown(now)

    def _reopen(self, now: float) -> None:
        """SIMs wait to come back and no tunnel can take them: try the first LNS up (one
        whose down time is over) again, as a LAC does when it has calls to place."""
        if self._again and not self._waiting and not self._usable_tunnels(now):
            target = self.lns_list.first_up(now)
            if target is not None:
                self._open_tunnel(target, now)

    def _more_to_place(self) -> bool:
        return bool(self._again) or self._next_index < self.options.sessions

    def _can_place(self, now: float) -> bool:
        """Sessions are left to place and a tunnel is (or may soon be) there for them."""
        return self._more_to_place() and bool(self._waiting or self._usable_tunnels(now))

    def _usable_tunnels(self, now: float) -> list[SimulatedTunnel]:
        """Established tunnels to an LNS that is up: new sessions go there only."""
        return [t for t in self._tunnels_up if self.lns_list.is_up(self._lns_of[t], now)]

    def _next_slot(self) -> float:
        return self._slot_origin + self._slots_used / self.options.rate

    def _open_tunnel(self, lns: int, now: float) -> SimulatedTunnel:
        tunnel = self.lacs[lns].open_tunnel(now)
        self._tunnels.append(tunnel)
        self._lns_of[tunnel] = lns
        self._waiting[tunnel] = now + self.options.timeout
        return tunnel

    def _expire_waiting(self, now: float) -> None:
        expired = [t for t, deadline in self._waiting.items() if deadline <= now]
        for tunnel in expired:
            # Never answered: forget it, so its SCCRQ stops being retransmitted.
            tunnel.phase = Phase.CLOSED
            self.lacs[self._lns_of[tunnel]].tunnels.pop(tunnel.tunnel_id, None)
            self._tunnel_lost(tunnel, f"no SCCRP within {self.options.timeout:g} s", now)

    def _place_sessions(self, now: float) -> None:
        options = self.options
        usable: list[SimulatedTunnel] | None = None
        while (
            self._more_to_place()
            and len(self._in_flight) < options.concurrency
            and (options.rate == 0 or self._next_slot() <= now)
        ):
            if usable is None:
                usable = self._usable_tunnels(now)
            if not usable:
                return
            if self._again:
                index = self._again.popleft()
            else:
                index = self._next_index
                self._next_index += 1
            tunnel = usable[self._round_robin % len(usable)]
            self._round_robin += 1
            self._slots_used += 1
            self._place(tunnel, options.iccid(index), now)

    def _place(self, tunnel: SimulatedTunnel, iccid: str, now: float) -> None:
        options = self.options
        password = options.password_of(iccid)
        name = iccid.encode()
        auth: ProxyAuthSpec | None = None
        lcp_auth = b""
        if options.auth is ProxyAuth.CHAP:
            auth, lcp_auth = proxy_chap(password, self.rng, name), LCP_AUTH_CHAP_MD5
        elif options.auth is ProxyAuth.PAP:
            auth, lcp_auth = proxy_pap(password, name), LCP_AUTH_PAP
        call = self.lacs[self._lns_of[tunnel]].place_call(
            tunnel,
            iccid,
            called_number=options.called_number,
            proxy_lcp=default_proxy_lcp(self.rng, lcp_auth) if options.proxy_lcp else None,
            proxy_auth=auth,
            # One random generator for every device: a Random each is 2.5 kB a session.
            device=Device(DeviceBehaviour(password=password, name=name), rng=self.rng),
        )
        index = self._index(call)
        started = self._first_attempt.pop(index, None)
        if started is None:
            started = now
            if index not in self._lost:
                if self.stats.first_setup_at is None:
                    self.stats.first_setup_at = now
                self.stats.sessions_attempted += 1
        self._in_flight[call] = started
        self._timeouts.append((now + options.timeout, call))

    def _index(self, call: SimulatedCall) -> int:
        """The SIM of a call: its place in the run's ICCID sequence."""
        return int(call.iccid) - int(self.options.iccid_start)

    def _expire_setups(self, now: float) -> None:
        while self._timeouts and self._timeouts[0][0] <= now:
            _deadline, call = self._timeouts.popleft()
            if call not in self._in_flight:
                continue  # settled in time
            if call.peer_session_id == 0:
                stage = "no ICRP"
            elif call.device is not None and call.device.state.auth_result == "failure":
                stage = f"PPP authentication failed: {call.device.state.auth_message}"
            else:
                stage = "IPCP not opened"
            self._fail(call, f"timeout after {self.options.timeout:g} s: {stage}")
            if call.phase is not Phase.CLOSED:
                self.lacs[self._lns_of[call.tunnel]].hang_up(call, _ADMINISTRATIVE)

    def _begin_teardown(self, now: float) -> None:
        self.phase = "teardown"
        self._stop_loop(self._hello_loop)
        self._stop_loop(self._ping_loop)
        if self.options.ping is not None:
            self.stats.sessions_unanswered = sum(1 for c in self._up if c not in self._answered)
        for call in list(self._in_flight):
            if self._index(call) in self._lost:
                self._fail(call, NOT_BACK_AT_END)
            else:
                self._fail(call, "interrupted before it was established")
        while self._again:
            index = self._again.popleft()
            if index not in self._lost:
                self._first_attempt.pop(index, None)
                self.stats.failures.add("tunnel lost; not placed again before the run ended")
        for index, failover in self._lost.items():
            failover.given_up(index, NOT_BACK_AT_END)
        self._lost.clear()
        self._timeouts.clear()
        self._phase_deadline = now + self.options.timeout
        if self.options.teardown is Teardown.CDN:
            self._teardown_step = "cdn"
            for tunnel in self._tunnels_up:
                lac = self.lacs[self._lns_of[tunnel]]
                for call in list(tunnel.calls.values()):
                    if call.phase is not Phase.CLOSED:
                        lac.hang_up(call, _ADMINISTRATIVE)
                        self.stats.sessions_hung_up += 1
        else:
            self._close_tunnels(now)
        self._phase_changed(now)

    def _close_tunnels(self, now: float) -> None:
        self._teardown_step = "stopccn"
        self._phase_deadline = now + STOPCCN_WAIT
        for tunnel in self._tunnels_up:
            self.lacs[self._lns_of[tunnel]].close_tunnel(tunnel, ResultCode(1))
        self._up.clear()

    def _advance_teardown(self, now: float) -> None:
        settled = all(t.channel.idle or t.channel.failed for t in self._tunnels_up)
        expired = self._phase_deadline is not None and now >= self._phase_deadline
        if expired and not settled:
            self.stats.teardown_complete = False
        if not (settled or expired):
            return
        if self._teardown_step == "cdn":
            self._close_tunnels(now)
        else:
            self._finish(now)

    def _finish(self, now: float) -> None:
        self.phase = "done"
        for loop in self._loops:
            self._stop_loop(loop)
        self._timer.cancel()
        stats = self.stats
        stats.finished_at = now
        stats.retransmissions = sum(t.channel.retransmissions for t in self._tunnels)
        stats.malformed_received = sum(lac.malformed_received for lac in self.lacs)
        stats.cpu_seconds = _cpu_seconds() - self._cpu_at_start
        stats.max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.progress.phase_changed(self._snapshot(now))
        self.progress.finish()
        port, self._port = self._port, None
        stopped = port.stopListening() if port is not None else None
        if isinstance(stopped, defer.Deferred):
            stopped.addBoth(lambda _: self._done.callback(stats))
        else:
            self._done.callback(stats)

    # --- failover -----------------------------------------------------------------------

    def _tunnel_lost(self, tunnel: SimulatedTunnel, reason: str, now: float) -> None:
        """A tunnel failed: its LNS is marked down, and its SIMs move to the next LNS up."""
        lns = self._lns_of[tunnel]
        established = tunnel in self._tunnels_up
        self._waiting.pop(tunnel, None)
        if established:
            self._tunnels_up.remove(tunnel)
        newly_down = self.lns_list.mark_down(lns, now)
        target = self.lns_list.first_up(now)
        name = self._lns_names[lns]
        if target is None:
            # Nowhere to go: the tunnel has failed, as with a single LNS.
            self.stats.tunnel_failures.add(
                f"closed after setup: {reason}" if established else reason
            )
            self.progress.note(f"tunnel {tunnel.tunnel_id} to {name}: {reason}")
            for call in list(tunnel.calls.values()):
                if call in self._in_flight:
                    self._fail(call, f"tunnel closed: {reason}")
                elif call in self._up:
                    self._up.discard(call)
                    self.stats.drops.add(f"tunnel closed: {reason}")
            return
        failover = self._failover_of.get(lns)
        if newly_down or failover is None:
            failover = Failover(name, reason, now, self._lns_names[target])
            self._failover_of[lns] = failover
            self.stats.failovers.append(failover)
        failover.tunnels_lost += 1
        moved = 0
        for call in list(tunnel.calls.values()):
            index = self._index(call)
            if call in self._in_flight:
                started = self._in_flight.pop(call)
                if index not in self._lost:
                    self._first_attempt[index] = started  # its setup time runs on
            elif call in self._up:
                self._up.discard(call)
                device = call.device
                failover.lost(index, device.address if device is not None else None, now)
                self._lost[index] = failover
            else:
                continue
            self._again.append(index)
            moved += 1
        if moved and self.options.rate > 0 and self._next_slot() < now:
            self._slot_origin, self._slots_used = now, 0  # paced from now, not in a burst
        self.progress.note(
            f"tunnel {tunnel.tunnel_id} to {name}: {reason}; "
            f"{name} marked down for {self.options.down_time:g} s; "
            f"a tunnel to {self._lns_names[target]} takes its {moved} sessions"
        )
        self._open_tunnel(target, now)

    # --- what the LAC tells -------------------------------------------------------------

    def tunnel_established(self, tunnel: SimulatedTunnel, now: float) -> None:
        if self._waiting.pop(tunnel, None) is None:
            return
        self.stats.tunnels_established += 1
        self._tunnels_up.append(tunnel)

    def tunnel_closed(self, tunnel: SimulatedTunnel, now: float) -> None:
        if self.phase == "done" or (self.phase == "teardown" and self._teardown_step == "stopccn"):
            return  # our own StopCCN, or one crossing it
        if tunnel not in self._waiting and tunnel not in self._tunnels_up:
            return  # lost already
        if tunnel.result is not None:
            reason = result_text("StopCCN", tunnel.result)
        elif tunnel.failure == "the LNS stopped acknowledging" and tunnel in self._waiting:
            reason = f"no SCCRP after {self.options.retries} retransmissions of the SCCRQ"
        else:
            reason = tunnel.failure or "closed"
        if self.phase == "teardown":
            # The LNS closed it while we cleared its calls: a failure, with nothing to move.
            self._tunnels_up.remove(tunnel)
            self.stats.tunnel_failures.add(f"closed during teardown: {reason}")
            self.progress.note(f"tunnel {tunnel.tunnel_id}: {reason}")
            return
        self._tunnel_lost(tunnel, reason, now)

    def call_opened(self, call: SimulatedCall, now: float) -> None:
        started = self._in_flight.pop(call, None)
        if started is None:
            return  # gave up on it already
        failover = self._lost.pop(self._index(call), None)
        device = call.device
        if failover is not None:
            failover.back(self._index(call), device.address if device else None, now)
        else:
            self.stats.sessions_established += 1
            self.stats.last_setup_at = now
            self.stats.setup_latency.add(now - started)
            self._recent_established += 1
        self._up.add(call)
        # The proxy AVPs went out in the ICCN; an idle session need not keep them.
        call.proxy_lcp = call.proxy_auth = None
        if self.options.ping is not None:
            self._ping_order.append(call)

    def call_closed(self, call: SimulatedCall, now: float) -> None:
        if call in self._in_flight:
            self._fail(call, result_text("CDN", call.result))
        elif call in self._up:
            self._up.discard(call)
            self.stats.drops.add(result_text("CDN", call.result))

    def hello_acknowledged(self, tunnel: SimulatedTunnel, rtt: float, now: float) -> None:
        if self.phase in ("tunnels", "setup"):
            self.stats.hello_setup.add(rtt)
        elif self.phase == "hold":
            self.stats.hello_hold.add(rtt)
        else:
            return
        self._recent_hello.add(rtt)

    def ip_received(self, call: SimulatedCall, packet: bytes, now: float) -> None:
        reply = packets.parse_echo_reply(packet)
        if reply is None or self.options.ping is None:
            return
        device = call.device
        if (
            reply.identifier == call.session_id
            and reply.source == int(self.options.ping)
            and device is not None
            and device.address is not None
            and reply.destination == int(device.address)
        ):
            self.stats.pings_answered += 1
            self._answered.add(call)
        else:
            self.stats.pings_misrouted += 1

    def _fail(self, call: SimulatedCall, reason: str) -> None:
        """A setup in flight failed: a SIM's first, or its return after a failover."""
        self._in_flight.pop(call, None)
        failover = self._lost.pop(self._index(call), None)
        if failover is not None:
            failover.given_up(self._index(call), reason)
        else:
            self.stats.failures.add(reason)

    # --- periodic work -------------------------------------------------------------------

    def _send_hellos(self) -> None:
        for tunnel in self._tunnels_up:
            if Lac.hello_outstanding(tunnel):
                self.stats.hellos_skipped += 1
            else:
                self.lacs[self._lns_of[tunnel]].send_hello(tunnel)
        self._flush()

    def _send_pings(self) -> None:
        """This tick's share of the sessions each send one Echo Request."""
        target = self.options.ping
        order = self._ping_order
        if target is None or not order:
            return
        # Each session once per interval: this tick's share, the fractions carried over.
        self._ping_credit += len(order) * PING_TICK / self.options.ping_interval
        share = min(int(self._ping_credit), len(order))
        self._ping_credit -= share
        for _ in range(share):
            if self._ping_cursor >= len(order):
                # A round is over: forget the sessions that went down since.
                order[:] = [c for c in order if c in self._up]
                self._ping_cursor = 0
                if not order:
                    break
            call = order[self._ping_cursor]
            self._ping_cursor += 1
            address = call.device.address if call.device is not None else None
            if call not in self._up or address is None:
                continue
            self._ping_sequence = (self._ping_sequence + 1) % 0x10000
            packet = packets.icmp_echo(
                int(address), int(target), call.session_id, self._ping_sequence
            )
            self.lacs[self._lns_of[call.tunnel]].send_ppp(call, encode_frame(Protocol.IP, packet))
            self.stats.pings_sent += 1
        self._flush()

    def _show_progress(self) -> None:
        self.progress.update(self._snapshot(self.reactor.seconds()))

    def _phase_changed(self, now: float) -> None:
        self.progress.phase_changed(self._snapshot(now))

    def _snapshot(self, now: float) -> Snapshot:
        span = now - self._last_progress
        rate = self._recent_established / span if span > 0 else 0.0
        hello = self._recent_hello.percentile(99) if len(self._recent_hello) else None
        if span >= 0.5 or self.phase == "done":
            self._last_progress = now
            self._recent_established = 0
            self._recent_hello.clear()
        return Snapshot(
            elapsed=now - self.stats.started_at,
            phase=self.phase,
            tunnels_up=len(self._tunnels_up),
            tunnels_requested=self.options.tunnels,
            sessions_up=len(self._up),
            sessions_failed=self.stats.sessions_failed,
            in_flight=len(self._in_flight),
            sessions_requested=self.options.sessions,
            setups_per_second=rate,
            hello_p99=hello,
        )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
