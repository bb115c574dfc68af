"""The shipped server authenticating through RADIUS: the node service as twistd builds it
(real L2TP socket, SQLite pool, RADIUS client) against the FreeRADIUS of the test session.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from lns.adapters.services import make_service
from lns.testing.config import ConfigBuilder
from lns.testing.freeradius import FreeRadius, records_of
from lns.testing.lac_client import LacClient
from lns.testing.lacsim.device import Device
from lns.testing.lacsim.lac import Lac, Phase, default_proxy_lcp, proxy_chap, proxy_pap
from lns.testing.pools import sqlite_pool
from lns.testing.ports import free_udp_port
from lns.testing.sims import BARRED, BY_ICCID, PLAIN, STATIC

pytestmark = pytest.mark.integration  # a node on loopback, the session's FreeRADIUS, radclient

L2TP_SECRET = "node-radius-l2tp-secret"
DAE_SECRET = "node-radius-dae-secret"
POOL = ipaddress.ip_network("100.64.30.0/28")


@pytest_twisted.inlineCallbacks
def test_sessions_authenticated_by_freeradius(tmp_path: Path, freeradius: FreeRadius):
    config = (
        ConfigBuilder()
        .lns(node_name="radius-node")
        .l2tp(listen=f"127.0.0.1:{free_udp_port()}")
        .lac(name="sim", peer="127.0.0.0/8", secret=L2TP_SECRET)
        .ppp(no_proxy_auth="iccid")
        # FreeRADIUS 3.2.1 signs no reply (notes/peers.md).
        .aaa(nas_identifier="radius-node", require_message_authenticator=False)
        .radius_server(freeradius, timeout=2.0, retries=1)
        .database(url=sqlite_pool(tmp_path / "lns.db", str(POOL)), migrate_on_start=False)
        .dataplane(mode="none")
        .config()
    )
    node = make_service(config, reactor=reactor)
    node.startService()
    assert node.pool is not None
    yield node.pool.ready
    assert node.l2tp.port is not None
    lac = Lac(hostname="lac1", secret=L2TP_SECRET.encode(), rng=random.Random(9))
    client = LacClient(lac, ("127.0.0.1", node.l2tp.port.port), reactor)
    client.start()
    try:
        tunnel = lac.open_tunnel(reactor.seconds())

        def place(iccid: str, auth: object) -> object:
            return lac.place_call(
                tunnel,
                iccid,
                proxy_lcp=default_proxy_lcp(lac.rng),
                proxy_auth=auth,  # type: ignore[arg-type]
                device=Device(rng=random.Random(iccid)),
            )

        chap = place(PLAIN.iccid, proxy_chap(PLAIN.password.encode(), lac.rng))
        pap = place(STATIC.iccid, proxy_pap(STATIC.password.encode()))
        by_iccid = place(BY_ICCID.iccid, None)
        wrong = place(PLAIN.iccid[:-2] + "99", proxy_chap(b"not-the-password", lac.rng))
        barred = place(BARRED.iccid, proxy_pap(b"anything"))
        client.flush()
        up = (chap, pap, by_iccid)
        yield client.until(
            lambda: (
                all(c.device.address for c in up)  # type: ignore[attr-defined]
                and wrong.phase is Phase.CLOSED  # type: ignore[attr-defined]
                and barred.phase is Phase.CLOSED
            ),  # type: ignore[attr-defined]
            timeout=30,
        )
        assert chap.device.address in POOL  # type: ignore[attr-defined]
        # Framed-IP-Address outside every pool: used as RADIUS gave it.
        assert pap.device.address == ipaddress.IPv4Address("100.64.20.9")  # type: ignore[attr-defined]
        assert pap.device.dns == [  # type: ignore[attr-defined]
            ipaddress.IPv4Address("192.0.2.53"),
            ipaddress.IPv4Address("192.0.2.54"),
        ]
        assert by_iccid.device.address == ipaddress.IPv4Address("100.64.20.60")  # type: ignore[attr-defined]
        assert "authentication failed" in wrong.result.message  # type: ignore[attr-defined]
        assert "SIM barred by the operator" in barred.result.message  # type: ignore[attr-defined]
    finally:
        yield node.stopService()
        yield client.stop()


@pytest_twisted.inlineCallbacks
def test_accounting_and_radclient_disconnect_on_a_live_session(
    tmp_path: Path,
    freeradius: FreeRadius,
    radclient: str,
):
    """Start in FreeRADIUS's detail file; a real Disconnect-Request from radclient clears
    the call with a CDN; the Stop arrives with Acct-Terminate-Cause = Admin-Reset."""
    dae_port = free_udp_port()
    config = (
        ConfigBuilder()
        .lns(node_name="dae-node")
        .l2tp(listen=f"127.0.0.1:{free_udp_port()}")
        .lac(name="sim", peer="127.0.0.0/8", secret=L2TP_SECRET)
        .aaa(nas_identifier="dae-node", require_message_authenticator=False)
        .radius_server(freeradius)
        .dynauth(listen=f"127.0.0.1:{dae_port}")
        .dynauth_client(address="127.0.0.1", secret=DAE_SECRET)
        .database(url=sqlite_pool(tmp_path / "lns.db", str(POOL)), migrate_on_start=False)
        .dataplane(mode="none")
        .config()
    )
    node = make_service(config, reactor=reactor)
    node.startService()
    assert node.pool is not None
    yield node.pool.ready
    assert node.l2tp.port is not None
    lac = Lac(hostname="lac1", secret=L2TP_SECRET.encode(), rng=random.Random(11))
    client = LacClient(lac, ("127.0.0.1", node.l2tp.port.port), reactor)
    client.start()
    assert node.sessions is not None
    supervisor = node.sessions.supervisor
    try:
        tunnel = lac.open_tunnel(reactor.seconds())
        call = lac.place_call(
            tunnel,
            PLAIN.iccid,
            proxy_lcp=default_proxy_lcp(lac.rng),
            proxy_auth=proxy_chap(PLAIN.password.encode(), lac.rng),
            device=Device(rng=random.Random(1)),
        )
        client.flush()
        yield client.until(lambda: call.device is not None and call.device.address is not None)
        (record,) = supervisor
        acct_id = record.acct_session_id
        accounting = node.accounting.accounting  # type: ignore[union-attr]
        yield accounting.flush()
        yield accounting.idle()
        start = records_of(freeradius, acct_id)
        assert [r["Acct-Status-Type"] for r in start] == ["Start"]
        assert start[0]["Calling-Station-Id"] == PLAIN.iccid
        assert start[0]["Framed-IP-Address"] == str(call.device.address)  # type: ignore[union-attr]

        # A CoA-Request changes the live session's Session-Timeout.
        coa = tmp_path / "coa.txt"
        # Event-Timestamp and Message-Authenticator: [aaa.dynauth] requires both by default.
        protection = f"Event-Timestamp = {int(reactor.seconds())}\nMessage-Authenticator = 0x00\n"
        coa.write_text(f'Calling-Station-Id = "{PLAIN.iccid}"\nSession-Timeout = 900\n{protection}')
        args = ["-x", "-t", "2", "-r", "2", "-f", str(coa), f"127.0.0.1:{dae_port}"]
        out, err, code = yield getProcessOutputAndValue(
            radclient, [*args, "coa", DAE_SECRET], reactor=reactor
        )
        assert code == 0, (out + err).decode(errors="replace")
        assert b"CoA-ACK" in out + err
        assert record.session_timeout == 900
        assert supervisor.get_timer() is not None

        request = tmp_path / "disconnect.txt"
        request.write_text(f'Calling-Station-Id = "{PLAIN.iccid}"\n{protection}')
        args = ["-x", "-t", "2", "-r", "2", "-f", str(request), f"127.0.0.1:{dae_port}"]
        out, err, code = yield getProcessOutputAndValue(
            radclient, [*args, "disconnect", DAE_SECRET], reactor=reactor
        )
        output = (out + err).decode(errors="replace")
        assert code == 0, output
        assert "Disconnect-ACK" in output
        yield client.until(lambda: call.result is not None)
        assert call.result is not None
        assert "Disconnect-Request" in call.result.message
        yield accounting.flush()  # the Stop was spooled before this pass started
        yield accounting.idle()
        assert [r["Acct-Status-Type"] for r in records_of(freeradius, acct_id)] == [
            "Start",
            "Stop",
        ]
        stop = records_of(freeradius, acct_id)[1]
        assert stop["Acct-Status-Type"] == "Stop"
        assert stop["Acct-Terminate-Cause"] == "Admin-Reset"
    finally:
        yield node.stopService()
        yield client.stop()
