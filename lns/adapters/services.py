"""The service tree of one LNS node, built from its configuration."""

from __future__ import annotations

from twisted.application import service
from twisted.internet.interfaces import IReactorTime

from lns.adapters.l2tp import CallHandler, L2tpService
from lns.config import Config
from lns.l2tp.endpoint import LacMatch, LnsEndpoint
from lns.l2tp.reliable import RetransmitPolicy
from lns.l2tp.tunnel import LacPeer, TunnelSettings


def tunnel_settings(config: Config) -> TunnelSettings:
    l2tp = config.l2tp
    return TunnelSettings(
        hostname=l2tp.hostname,
        hello_interval=l2tp.hello_interval,
        receive_window=l2tp.receive_window,
        retransmit=RetransmitPolicy(
            l2tp.retransmit_initial, l2tp.retransmit_cap, l2tp.retransmit_max
        ),
        hide_avps=l2tp.hide_avps,
    )


def lac_matches(config: Config) -> list[LacMatch]:
    return [
        LacMatch(
            lac.peer,
            LacPeer(
                name=lac.name,
                secret=lac.secret.value if lac.secret is not None else None,
                authenticate=lac.authenticate,
                hostname=lac.hostname,
            ),
        )
        for lac in config.l2tp.lacs
    ]


def make_service(
    config: Config, reactor: IReactorTime | None = None, calls: CallHandler | None = None
) -> service.MultiService:
    """Every service of the node, named so tests and tools can find them."""
    top = service.MultiService()
    endpoint = LnsEndpoint(tunnel_settings(config), lac_matches(config))
    l2tp = L2tpService(
        endpoint, (config.l2tp.listen_host, config.l2tp.listen_port), reactor=reactor, calls=calls
    )
    l2tp.setName("l2tp")  # type: ignore[no-untyped-call]
    l2tp.setServiceParent(top)  # type: ignore[no-untyped-call]
    return top
