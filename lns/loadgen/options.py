"""What one load run does: the options the command line turns into, checked once."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = tuple[IPAddress, int]

MAX_LNS = 5  # a carrier's portal takes one to five LNSs per APN


class OptionError(ValueError):
    """An option value that makes no sense; the message is one line for the user."""


class ProxyAuth(enum.Enum):
    """What the LAC passes on of the device's authentication (RFC 2661 AVPs 29-33)."""

    CHAP = "chap"
    PAP = "pap"
    NONE = "none"


class Teardown(enum.Enum):
    CDN = "cdn"  # a CDN per session, then a StopCCN per tunnel
    STOPCCN = "stopccn"  # a StopCCN per tunnel only: the LNS clears the calls


@dataclass(frozen=True, slots=True)
class LoadOptions:
    server: IPAddress  # the most preferred LNS
    port: int = 1701
    alternates: tuple[Endpoint, ...] = ()  # the next LNSs, in order of preference
    down_time: float = 300.0  # seconds an LNS that failed stays marked down
    local: IPAddress | None = None  # bind address; None: the wildcard of the server's family
    tunnels: int = 1
    sessions: int = 10
    rate: float = 50.0  # sessions per second offered; 0: as fast as the concurrency allows
    concurrency: int = 1000  # setups in flight at most
    secret: bytes | None = None  # tunnel secret; None: no tunnel authentication
    hostname: str = "lac1"
    hide_avps: bool = False
    iccid_start: str = "8944000000000000001"
    password: bytes | None = None  # None: each SIM's password is its ICCID
    auth: ProxyAuth = ProxyAuth.CHAP
    proxy_lcp: bool = True
    called_number: str = "iot.example"
    retransmit: float = 1.0
    retries: int = 5  # retransmissions of a control message before the LNS counts as lost
    receive_window: int = 16
    hello_interval: float = 0.1  # 0: no HELLOs
    hold: float = 0.0
    timeout: float = 60.0
    teardown: Teardown = Teardown.CDN
    ping: ipaddress.IPv4Address | None = None
    ping_interval: float = 1.0
    seed: int = 2661

    def __post_init__(self) -> None:
        check(1 <= self.port <= 65535, f"port {self.port} is not in 1..65535")
        lns = self.lns
        check(len(lns) <= MAX_LNS, f"--lns lists {len(lns)} LNSs; at most {MAX_LNS}")
        for index, (address, port) in enumerate(lns):
            check(1 <= port <= 65535, f"port {port} is not in 1..65535")
            check(
                address.version == self.server.version,
                f"LNS {endpoint_text((address, port))} and {self.server_text} are of "
                "different IP versions (one socket sends to all)",
            )
            check(
                (address, port) not in lns[:index],
                f"LNS {endpoint_text((address, port))} is listed twice",
            )
        check(self.down_time > 0, "--down-time must be greater than 0")
        check(self.retries >= 0, "--retries must not be negative")
        check(self.tunnels >= 1, "--tunnels must be at least 1")
        check(self.sessions >= 0, "--sessions must not be negative")
        check(
            self.sessions <= self.tunnels * 65535,
            f"{self.sessions} sessions need at least {-(-self.sessions // 65535)} tunnels "
            "(a tunnel carries at most 65535 sessions)",
        )
        check(self.rate >= 0, "--rate must not be negative")
        check(self.concurrency >= 1, "--concurrency must be at least 1")
        check(self.secret is None or len(self.secret) > 0, "--secret must not be empty")
        check(0 < len(self.hostname.encode()) <= 255, "--hostname must be 1..255 bytes")
        check(not self.hide_avps or self.secret is not None, "--hide-avps needs --secret")
        check(self.retransmit > 0, "--retransmit must be greater than 0")
        check(1 <= self.receive_window <= 65535, "--receive-window must be in 1..65535")
        check(self.hello_interval >= 0, "--hello-interval must not be negative")
        check(self.hold >= 0, "--hold must not be negative")
        check(self.timeout > 0, "--timeout must be greater than 0")
        check(self.ping_interval > 0, "--ping-interval must be greater than 0")
        check(self.ping is None or self.hold > 0, "--ping needs --hold greater than 0")
        if self.local is not None:
            check(
                self.local.version == self.server.version,
                f"--local {self.local} and server {self.server} are of different IP versions",
            )
        check(
            self.iccid_start.isascii() and self.iccid_start.isdigit(),
            f"--iccid-start {self.iccid_start!r} is not all digits",
        )
        check(
            len(self.iccid_start) in (19, 20),
            f"--iccid-start has {len(self.iccid_start)} digits; an ICCID has 19 or 20",
        )
        if self.sessions:
            last = self.iccid(self.sessions - 1)
            check(
                len(last) == len(self.iccid_start),
                f"--iccid-start {self.iccid_start} + {self.sessions} sessions overflows "
                f"{len(self.iccid_start)} digits",
            )

    def iccid(self, index: int) -> str:
        """The ICCID of the ``index``-th session (0-based): the start plus ``index``."""
        return str(int(self.iccid_start) + index).zfill(len(self.iccid_start))

    def password_of(self, iccid: str) -> bytes:
        return self.password if self.password is not None else iccid.encode()

    @property
    def lns(self) -> tuple[Endpoint, ...]:
        """Every LNS, the most preferred first."""
        return ((self.server, self.port), *self.alternates)

    @property
    def server_text(self) -> str:
        return endpoint_text((self.server, self.port))

    @property
    def lns_text(self) -> str:
        """The LNS list as ``--lns`` takes it."""
        return ",".join(endpoint_text(e) for e in self.lns)


def endpoint_text(endpoint: Endpoint) -> str:
    host, port = str(endpoint[0]), endpoint[1]
    return f"[{host}]:{port}" if endpoint[0].version == 6 else f"{host}:{port}"


def check(condition: bool, message: str) -> None:
    if not condition:
        raise OptionError(message)


def parse_server(text: str) -> tuple[IPAddress, int]:
    """``ADDRESS``, ``ADDRESS:PORT``, ``[IPv6]`` or ``[IPv6]:PORT`` (default port 1701).

    Only literal addresses: the generator sends to exactly the address it is given,
    and resolving a name would be traffic of its own.
    """
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise OptionError(f"server {text!r} is not [IPv6] or [IPv6]:PORT")
        port_text = rest[1:]
        if rest and not port_text:
            raise OptionError(f"server {text!r} has an empty port")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text:
            raise OptionError(f"server {text!r} has an empty port")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise OptionError(f"server {host!r} is not an IP address") from None
    port = 1701
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise OptionError(f"server port {port_text!r} is not in 1..65535")
        port = int(port_text)
    return address, port


def parse_lns_list(text: str) -> tuple[Endpoint, ...]:
    """``LNS[,LNS...]``: one to five `parse_server` forms, most preferred first."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise OptionError(f"--lns {text!r} has an empty entry")
    if len(items) > MAX_LNS:
        raise OptionError(f"--lns lists {len(items)} LNSs; at most {MAX_LNS}")
    return tuple(parse_server(item) for item in items)
