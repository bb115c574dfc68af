"""Tunnels and sessions over real UDP on loopback through a relay that loses a fifth
of the packets in each direction: everything still comes up once, and tshark finds
no malformed packet in the capture of the exchange.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from lns.adapters.l2tp import L2tpService
from lns.l2tp.endpoint import LacMatch, LnsEndpoint
from lns.l2tp.reliable import RetransmitPolicy
from lns.l2tp.tunnel import LacPeer, TunnelSettings
from lns.testing.call_recorder import CallRecorder
from lns.testing.capture import Capture, pcap_check, tshark_available
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.lac import Lac, Phase, default_proxy_lcp, proxy_chap, proxy_pap
from lns.testing.relay import LossyRelay

SECRET = b"lossy-link-secret"
TUNNELS = 4
CALLS_PER_TUNNEL = 25
# Short timers keep the test quick; enough retransmissions that a fifth of loss each
# way (a message and its ack both must pass: 36% per attempt) never exhausts them.
FAST = RetransmitPolicy(initial=0.1, cap=0.8, max_retransmissions=20)


def iccid(n: int) -> str:
    return f"894430{n:013d}"


@pytest_twisted.inlineCallbacks
def test_every_tunnel_and_session_comes_up_once_over_a_lossy_link(tmp_path: Path):
    if not tshark_available():
        pytest.skip("tshark is not installed: the capture cannot be checked")
    endpoint = LnsEndpoint(
        TunnelSettings(retransmit=FAST, hello_interval=5.0, hide_avps=True),
        [LacMatch(ipaddress.ip_network("127.0.0.0/8"), LacPeer("lossy-lac", SECRET, True))],
    )
    recorder = CallRecorder()
    server = L2tpService(endpoint, ("127.0.0.1", 0), reactor=reactor, calls=recorder)
    server.startService()
    assert server.port is not None
    relay = LossyRelay(("127.0.0.1", server.port.port), drop_fraction=0.2, seed=1701)
    relay_port = relay.start()
    lac = Lac(hostname="lac-lossy", secret=SECRET, rng=random.Random(7), retransmit=FAST,
              hide_avps=True)  # fmt: skip
    client = LacClient(lac, ("127.0.0.1", relay_port), reactor)
    lac_port = client.start()
    capture_path = tmp_path / "lossy.pcapng"
    ports = [server.port.port, relay_port, relay.server_facing_port, lac_port]
    try:
        with Capture(capture_path, ports=ports):
            now = reactor.seconds()
            tunnels = [lac.open_tunnel(now) for _ in range(TUNNELS)]
            client.flush()
            yield client.until(lambda: all(t.phase is Phase.ESTABLISHED for t in tunnels))
            calls = []
            for t_index, tunnel in enumerate(tunnels):
                for c_index in range(CALLS_PER_TUNNEL):
                    n = t_index * CALLS_PER_TUNNEL + c_index
                    auth = proxy_chap(b"password", lac.rng) if n % 2 else proxy_pap(b"password")
                    calls.append(
                        lac.place_call(
                            tunnel,
                            iccid(n),
                            proxy_lcp=default_proxy_lcp(lac.rng),
                            proxy_auth=auth,
                        )
                    )
            client.flush()
            total = TUNNELS * CALLS_PER_TUNNEL
            yield client.until(
                lambda: len(recorder.calls) == total and all(t.channel.idle for t in tunnels),
                timeout=60,
            )

            # Exactly one LNS tunnel per LAC tunnel and one LNS call per LAC call.
            assert endpoint.counters["tunnels_created"] == TUNNELS
            assert len(endpoint.tunnels) == TUNNELS
            assert sum(len(c.calls) for c in endpoint.tunnels.values()) == total
            by_iccid = {e.call.iccid: e for e in recorder.calls.values()}
            assert sorted(by_iccid) == sorted(iccid(n) for n in range(total))
            for call in calls:
                established = by_iccid[call.iccid]
                assert established.call.session_id == call.peer_session_id
                assert established.call.peer_session_id == call.session_id
                assert established.call.proxy_auth is not None
            assert relay.dropped_to_server > 0
            assert relay.dropped_to_client > 0
            assert endpoint.counters["malformed"] == 0

            # PPP frames both ways (data messages are unreliable: most, not all, arrive).
            lcp_echo = bytes.fromhex("ff03c021090100080000002a")
            for call in calls:
                lac.send_ppp(call, lcp_echo, with_length=True)
            client.flush()
            yield client.until(lambda: recorder.frames >= total // 2, timeout=30)
            for established in list(recorder.calls.values()):
                sent = server.send_ppp(established.tunnel_id, established.call.session_id, lcp_echo)
                assert sent
            yield client.until(lambda: sum(len(c.frames) for c in calls) >= total // 2, timeout=30)
            assert all(frame == lcp_echo for c in calls for frame in c.frames)

            # Tear half the calls down from the LAC, then every tunnel.
            for call in calls[::2]:
                lac.hang_up(call)
            client.flush()
            yield client.until(lambda: len(recorder.calls) == total // 2, timeout=60)
            for tunnel in tunnels:
                lac.close_tunnel(tunnel)
            client.flush()
            yield client.until(
                lambda: not recorder.calls and all(t.channel.idle for t in tunnels), timeout=60
            )
    finally:
        yield client.stop()
        yield relay.stop()
        server.stopService()

    result = pcap_check(capture_path, ports, secret=SECRET.decode())
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ICCN" in result.stdout
    assert "malformed frames: none" in result.stdout
