"""twistd plugin: ``twistd -n lns --config lns.toml``."""

from twisted.application.service import ServiceMaker

lns = ServiceMaker(
    "lns", "lns.tap", "L2TP Network Server (RFC 2661) with RADIUS and SQL pools", "lns"
)
