"""The lns configuration: one TOML file (DESIGN.md section 7), loaded with `tomllib`.

Every key is declared once, in the `_Spec` tables at the end of this module, with
the converter that checks it. Absent keys take the dataclass defaults; unknown
keys, wrong types and out-of-range values raise `ConfigError`, whose message names
the file, the key path and the problem. Secret values never appear in a message
or a repr: they are kept in `Secret`, and the converters that read them describe a
bad value by its type only.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import math
import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "AaaSection",
    "Config",
    "ConfigError",
    "DatabaseSection",
    "DataplaneSection",
    "DynauthClient",
    "DynauthSection",
    "L2tpSection",
    "LacConfig",
    "LnsSection",
    "LogSection",
    "ManagementSection",
    "PppSection",
    "RadiusServer",
    "Secret",
    "load_config",
    "parse_config",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

T = TypeVar("T")

# Immutable, so one instance may serve as a dataclass default.
_DEFAULT_LOCAL_ADDRESS = ipaddress.IPv4Address("100.64.0.1")


class ConfigError(ValueError):
    """The configuration is unusable: `str()` is "FILE: WHERE: PROBLEM".

    `where` is the key path, e.g. `[l2tp] hello_interval`, or "" for the file
    as a whole. None of the three parts ever holds a secret value.
    """

    def __init__(self, source: str, where: str, problem: str) -> None:
        super().__init__(source, where, problem)
        self.source = source
        self.where = where
        self.problem = problem

    def __str__(self) -> str:
        if self.where:
            return f"{self.source}: {self.where}: {self.problem}"
        return f"{self.source}: {self.problem}"


class Secret:
    """A shared secret or token: compared by value, never shown."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        encoded = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if not encoded:
            raise ValueError("a secret must not be empty")
        self._value = encoded

    @property
    def value(self) -> bytes:
        """The secret as bytes (UTF-8 of the TOML string)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash((Secret, self._value))


# --- The configuration, section by section (defaults from DESIGN.md section 7) ---


@dataclass(frozen=True, slots=True)
class LnsSection:
    node_name: str = "lns-1"
    # Several nodes on one database (DESIGN.md section 9): how often this node says it
    # is alive, and how long a node may be silent before the others adopt it.
    heartbeat_interval: float = 5.0
    dead_after: float = 30.0


@dataclass(frozen=True, slots=True)
class LacConfig:
    name: str
    peer: IPNetwork
    # None exactly when `authenticate = false` (a secret written there is ignored).
    secret: Secret | None
    hostname: str | None
    authenticate: bool
    max_tunnels: int = 256
    max_tunnels_setting_up: int = 64


@dataclass(frozen=True, slots=True)
class L2tpSection:
    # Loopback unless configured: a node reachable from elsewhere is a decision.
    listen_host: str = "127.0.0.1"
    listen_port: int = 1701
    hostname: str = "lns"
    hello_interval: float = 60.0
    receive_window: int = 16
    retransmit_initial: float = 1.0
    retransmit_cap: float = 8.0
    retransmit_max: int = 5
    hide_avps: bool = False
    max_tunnels: int = 1024
    max_tunnels_setting_up: int = 256
    max_connecting_calls: int = 1024
    max_setups_in_progress: int = 2000
    lacs: tuple[LacConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class PppSection:
    mru: int = 1450
    local_address: ipaddress.IPv4Address = _DEFAULT_LOCAL_ADDRESS
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    echo_interval: float = 30.0
    echo_failures: int = 5
    lcp_renegotiation: str = "on-mismatch"
    no_proxy_auth: str = "iccid"
    auth: tuple[str, ...] = ("chap", "pap")


@dataclass(frozen=True, slots=True)
class RadiusServer:
    address: IPAddress
    secret: Secret
    auth_port: int = 1812
    acct_port: int = 1813
    timeout: float = 3.0
    retries: int = 3
    # "udp", or "tls": RadSec (RFC 6614), one TLS connection to `port` for everything.
    transport: str = "udp"
    port: int = 2083
    ca: str | None = None  # PEM file of the CAs trusted to sign the server's certificate
    cert: str | None = None  # PEM file of our client certificate (RFC 6614 requires one)
    key: str | None = None  # PEM file of its private key, unencrypted
    server_name: str | None = None  # the DNS name or IP the certificate must carry; None: address
    keepalive_interval: float = 30.0  # seconds of silence before a Status-Server (RFC 5997)

    @property
    def tls_name(self) -> str:
        """The name the server's certificate is checked against."""
        return self.server_name if self.server_name is not None else str(self.address)


@dataclass(frozen=True, slots=True)
class DynauthClient:
    address: IPAddress
    secret: Secret


@dataclass(frozen=True, slots=True)
class DynauthSection:
    listen_host: str = "127.0.0.1"
    listen_port: int = 3799
    clients: tuple[DynauthClient, ...] = ()
    require_message_authenticator: bool = True
    require_event_timestamp: bool = True
    event_timestamp_window: float = 300.0  # seconds either side of our clock (RFC 5176 6.3)


@dataclass(frozen=True, slots=True)
class AaaSection:
    username: str = "{iccid}"
    iccid_password: str = "{iccid}"
    nas_identifier: str = "lns-1"
    require_message_authenticator: bool = True
    interim_interval: int = 600
    radius: tuple[RadiusServer, ...] = ()
    dynauth: DynauthSection | None = None


@dataclass(frozen=True, slots=True)
class DatabaseSection:
    url: str = "sqlite:///lns.db"
    default_pool: str = "default"
    migrate_on_start: bool = True
    # Where the node's SQL runs: "process" (a child process of its own, another core
    # than the reactor's) or "threads" (a thread pool inside the node's process).
    worker: str = "process"

    def __repr__(self) -> str:
        # A database URL may carry a password: show it masked.
        return (
            f"DatabaseSection(url={_mask_url_password(self.url)!r}, "
            f"default_pool={self.default_pool!r}, migrate_on_start={self.migrate_on_start!r})"
        )


@dataclass(frozen=True, slots=True)
class DataplaneSection:
    # No TUN device unless configured: it needs CAP_NET_ADMIN and changes the host's routes.
    mode: str = "none"
    tun_name: str = "lns0"
    mss_clamp: bool = True


@dataclass(frozen=True, slots=True)
class ManagementSection:
    """``[management]``: the HTTP management API and /metrics run when the section is given."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    token: Secret | None = None  # None: loopback only, no authentication
    metrics_public: bool = False  # /metrics without the token


@dataclass(frozen=True, slots=True)
class LogSection:
    # None: standard output (systemd's journal); else a file rotated at `max_bytes`.
    file: str | None = None
    max_bytes: int = 10 * 1024 * 1024
    keep: int = 5  # rotated files kept beside the current one
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    lns: LnsSection = field(default_factory=LnsSection)
    l2tp: L2tpSection = field(default_factory=L2tpSection)
    ppp: PppSection = field(default_factory=PppSection)
    aaa: AaaSection = field(default_factory=AaaSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    dataplane: DataplaneSection = field(default_factory=DataplaneSection)
    management: ManagementSection | None = None  # no API without a [management] section
    log: LogSection = field(default_factory=LogSection)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate the TOML file at `path`."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        # Not chained: the exception holds the whole file, secrets included.
        raise ConfigError(source, "", f"not valid UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give a position, never the text found there.
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    return parse_config(data, source)


def parse_config(data: dict[str, object], source: str = "<config>") -> Config:
    """Validate an already-parsed TOML document; `source` names it in errors."""
    return _build(_CONFIG, data, _Here(source, ""))


# --- The validator: one row per key, one place that words the errors ---


class _Invalid(Exception):
    """A converter's complaint about one value; `_build` adds the file and the key."""


_REQUIRED: Any = object()
_DATACLASS_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True)
class _Key:
    """A leaf key: `convert` checks the TOML value and returns the field value(s)."""

    convert: Callable[[object], Any]
    # Dataclass field(s) to set; "" means the key's own name. A tuple takes a tuple.
    attr: str | tuple[str, ...] = ""
    default: Any = _DATACLASS_DEFAULT


@dataclass(frozen=True, slots=True)
class _Spec(Generic[T]):
    """One table: its class, its label in messages and its keys."""

    cls: Callable[..., T]
    header: str  # "[l2tp]", "[[l2tp.lac]]"; "" for the top level
    keys: Mapping[str, _Key | _Sub]
    label_key: str = ""  # array elements are labelled #N ("<this key's value>")
    finish: Callable[[T, _Here], T] | None = None  # rules across keys


@dataclass(frozen=True, slots=True)
class _Sub:
    """A key holding a nested table ([aaa.dynauth]) or array of tables ([[l2tp.lac]])."""

    spec: _Spec[Any]
    attr: str = ""
    array: bool = False
    unique: str = ""  # for arrays: a field no two elements may share


@dataclass(frozen=True, slots=True)
class _Here:
    """Where we are: the file and the table's label."""

    source: str
    label: str
    given: frozenset[str] = frozenset()  # the keys written in this table

    def error(self, key: str, problem: str) -> ConfigError:
        where = f"{self.label} {key}" if self.label else f"[{key}]"
        return ConfigError(self.source, where, problem)


def _build(spec: _Spec[T], data: Mapping[str, object], here: _Here) -> T:
    for key in data:
        if key not in spec.keys:
            raise here.error(key, "unknown key" if here.label else "unknown section")
    kwargs: dict[str, Any] = {}
    for key, row in spec.keys.items():
        attr = row.attr or key
        if key in data:
            value = data[key]
            if isinstance(row, _Sub):
                converted = _build_sub(row, value, here, key)
            else:
                try:
                    converted = row.convert(value)
                except _Invalid as exc:
                    raise here.error(key, str(exc)) from None
        elif isinstance(row, _Key) and row.default is _REQUIRED:
            raise here.error(key, "required key is missing")
        elif isinstance(row, _Key) and row.default is not _DATACLASS_DEFAULT:
            converted = row.default
        else:
            continue
        if isinstance(attr, tuple):
            kwargs.update(zip(attr, converted, strict=True))
        else:
            kwargs[attr] = converted
    built = spec.cls(**kwargs)
    if spec.finish is None:
        return built
    return spec.finish(built, dataclasses.replace(here, given=frozenset(data)))


def _build_sub(row: _Sub, value: object, here: _Here, key: str) -> Any:
    spec = row.spec
    if not row.array:
        if not isinstance(value, dict):
            raise here.error(key, f"expected a table, got {_show(value)}")
        return _build(spec, value, _Here(here.source, spec.header))
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise here.error(key, f"expected an array of tables ({spec.header}), got {_show(value)}")
    built: list[Any] = []
    first_use: dict[object, int] = {}
    for number, item in enumerate(value, start=1):
        label = f"{spec.header} #{number}"
        name = item.get(spec.label_key) if spec.label_key else None
        if isinstance(name, str):
            label += f' ("{name}")'
        element_here = _Here(here.source, label)
        element = _build(spec, item, element_here)
        if row.unique:
            seen = getattr(element, row.unique)
            if seen in first_use:
                raise element_here.error(
                    row.unique, f"duplicate: {spec.header} #{first_use[seen]} has the same"
                )
            first_use[seen] = number
        built.append(element)
    return tuple(built)


# --- Converters: each takes a TOML value and returns a field value or raises _Invalid ---


def _show(value: object) -> str:
    """A non-secret value as it appears after "got" in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return _kind(value)


def _kind(value: object) -> str:
    """A value's TOML type, for messages that must not show the value itself."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_show(value)}")
    if not value:
        raise _Invalid("must not be empty")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _integer(low: int, high: int | None = None) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_show(value)}")
        if high is None and value < low:
            raise _Invalid(f"must be >= {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise _Invalid(f"must be between {low} and {high}, got {value}")
        return value

    return convert


def _number(*, above: float) -> Callable[[object], float]:
    """A number (TOML integer or float) strictly greater than `above`."""

    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number, got {_show(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise _Invalid(f"must be a finite number, got {_show(value)}")
        if number <= above:
            raise _Invalid(f"must be > {above:g}, got {_show(value)}")
        return number

    return convert


def _one_of(*choices: str) -> Callable[[object], str]:
    expected = ", ".join(f'"{choice}"' for choice in choices)

    def convert(value: object) -> str:
        if value not in choices:
            raise _Invalid(f"expected one of {expected}, got {_show(value)}")
        assert isinstance(value, str)
        return value

    return convert


def _array_of(
    item: Callable[[object], T], *, min_items: int = 0, max_items: int | None = None
) -> Callable[[object], tuple[T, ...]]:
    def convert(value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected an array, got {_show(value)}")
        if len(value) < min_items:
            raise _Invalid(f"needs at least {min_items} item(s)")
        if max_items is not None and len(value) > max_items:
            raise _Invalid(f"takes at most {max_items} item(s), got {len(value)}")
        items: list[T] = []
        for number, element in enumerate(value, start=1):
            try:
                converted = item(element)
            except _Invalid as exc:
                raise _Invalid(f"item #{number}: {exc}") from None
            if converted in items:
                raise _Invalid(f"item #{number}: {_show(element)} is listed twice")
            items.append(converted)
        return tuple(items)

    return convert


def _secret(value: object) -> Secret:
    # Describe a bad secret by its type only: the value may be the secret itself.
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    if not value:
        raise _Invalid("must not be empty")
    return Secret(value)


def _ip_address(value: object) -> IPAddress:
    if not isinstance(value, str):
        raise _Invalid(f"expected an IP address string, got {_show(value)}")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise _Invalid(f"not an IP address: {_show(value)}") from None


def _ipv4_address(value: object) -> ipaddress.IPv4Address:
    address = _ip_address(value)
    if not isinstance(address, ipaddress.IPv4Address):
        raise _Invalid(f"expected an IPv4 address, got {_show(value)}")
    return address


def _network(value: object) -> IPNetwork:
    """An address or CIDR; a bare address is a /32 or /128. Host bits must be clear."""
    if not isinstance(value, str):
        raise _Invalid(f"expected an address or CIDR string, got {_show(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _Invalid(f"not an IP network: {_show(value)}") from None
    raise _Invalid(f"host bits set in {_show(value)}; did you mean '{loose}'?")


def _listen(value: object) -> tuple[str, int]:
    """Parse "HOST:PORT" with an IP literal as HOST; IPv6 in brackets, "[::1]:1701"."""
    form = 'expected "HOST:PORT" (IPv6 as "[::1]:1701")'
    if not isinstance(value, str):
        raise _Invalid(f"{form}, got {_show(value)}")
    match = re.fullmatch(r"\[([^\]]+)\]:([0-9]+)|([^:\[\]]+):([0-9]+)", value)
    if match is None:
        raise _Invalid(f"{form}, got {_show(value)}")
    host = match.group(1) or match.group(3)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise _Invalid(f"{form} where HOST is an IP address, got {_show(value)}") from None
    if (match.group(1) is not None) != (address.version == 6):
        raise _Invalid(f"{form}, got {_show(value)}")
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise _Invalid(f"port must be between 1 and 65535, got {port}")
    return str(address), port


def _pem_file(kind: str) -> Callable[[object], str]:
    """A readable PEM file holding `kind`: "certificate" (one or more) or "private key".

    Only the path and what is wrong appear in a message, never the file's content
    (a key file is a secret).
    """

    def convert(value: object) -> str:
        path = _string(value)
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except OSError as exc:
            raise _Invalid(f"cannot read {path!r}: {exc.strerror or exc}") from None
        # Imported here: only a RadSec configuration needs it.
        from cryptography import x509
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization

        if kind == "certificate":
            try:
                certificates = x509.load_pem_x509_certificates(data)
            except ValueError:
                certificates = []
            if not certificates:
                raise _Invalid(f"no PEM certificate in {path!r}")
            return path
        try:
            serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise _Invalid(
                f"the private key in {path!r} is encrypted; lns needs it unencrypted"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise _Invalid(f"no usable PEM private key in {path!r}") from None
        return path

    return convert


def _server_name(value: object) -> str:
    """A DNS name (RFC 1123 labels) or an IP address, as a certificate carries it."""
    name = _string(value)
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
    if len(name) > 253 or not re.fullmatch(rf"{label}(\.{label})*\.?", name):
        raise _Invalid(f"not a DNS name or IP address: {_show(value)}")
    return name.rstrip(".").lower()


def _template(value: object) -> str:
    """A RADIUS attribute template: text with only {iccid} and {name} fields."""
    text = _string(value)
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise _Invalid(f"bad template {_show(value)}: {exc}") from None
    for _literal, name, spec, conversion in parts:
        if name is not None and (name not in ("iccid", "name") or spec or conversion):
            raise _Invalid(
                f"template {_show(value)} may use only the fields {{iccid}} and {{name}}"
            )
    return text


def _interface_name(value: object) -> str:
    # Linux dev_valid_name(): 1..15 bytes, not "." or "..", no "/", ":" or whitespace.
    name = _string(value)
    if len(name.encode()) > 15 or name in (".", "..") or re.search(r"[/:\s]", name):
        raise _Invalid(f"not a valid interface name: {_show(value)}")
    return name


def _log_file(value: object) -> str:
    path = _string(value)
    if path.endswith("/") or os.path.basename(path) in (".", ".."):
        raise _Invalid(f"expected a file path, got {_show(value)}")
    return path


def _database_url(value: object) -> str:
    # The URL may hold a password, so it is never quoted back.
    if not isinstance(value, str) or not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value):
        raise _Invalid(
            "expected a database URL such as 'sqlite:///lns.db' or "
            "'postgresql+psycopg://user@host/lns'"
        )
    return value


def _mask_url_password(url: str) -> str:
    return re.sub(r"^([^:/]+://[^:@/?#]*:)[^@]*@", r"\1***@", url)


# --- Rules that span keys ---


def _finish_lns(section: LnsSection, here: _Here) -> LnsSection:
    if section.dead_after < 3 * section.heartbeat_interval:
        raise here.error(
            "dead_after",
            f"must be at least three heartbeat intervals "
            f"({3 * section.heartbeat_interval:g} s), got {section.dead_after:g}",
        )
    return section


def _finish_l2tp(section: L2tpSection, here: _Here) -> L2tpSection:
    if section.retransmit_cap < section.retransmit_initial:
        raise here.error(
            "retransmit_cap",
            f"must be >= retransmit_initial ({section.retransmit_initial:g}), "
            f"got {section.retransmit_cap:g}",
        )
    return section


def _finish_lac(lac: LacConfig, here: _Here) -> LacConfig:
    if not lac.authenticate:
        # RFC 2661 section 5.1.1: without tunnel authentication the secret is unused.
        return dataclasses.replace(lac, secret=None)
    if lac.secret is None:
        raise here.error(
            "secret", "required key is missing (leave it out only with `authenticate = false`)"
        )
    return lac


_UDP_ONLY = ("auth_port", "acct_port", "retries")
_TLS_ONLY = ("port", "ca", "cert", "key", "server_name", "keepalive_interval")
# RFC 6614 section 2.3: the shared secret of RADIUS over TLS is "radsec" unless set.
_RADSEC_SECRET = "radsec"


def _finish_radius(server: RadiusServer, here: _Here) -> RadiusServer:
    tls = server.transport == "tls"
    for key in _TLS_ONLY if not tls else _UDP_ONLY:
        if key in here.given:
            needs = 'transport = "tls"' if not tls else 'transport = "udp"'
            raise here.error(key, f"only with {needs}")
    if not tls:
        if server.secret is None:
            raise here.error("secret", "required key is missing")
        return server
    for key in ("ca", "cert", "key"):
        if getattr(server, key) is None:
            raise here.error(key, 'required key is missing (transport = "tls")')
    assert server.cert is not None
    assert server.key is not None
    if not _key_matches_certificate(server.cert, server.key):
        raise here.error("key", f"{server.key!r} is not the private key of cert {server.cert!r}")
    if server.secret is None:
        return dataclasses.replace(server, secret=Secret(_RADSEC_SECRET))
    return server


def _finish_management(section: ManagementSection, here: _Here) -> ManagementSection:
    # Without a token anyone who reaches the port could list and kill sessions: only
    # this host may reach it then.
    if section.token is None and not ipaddress.ip_address(section.listen_host).is_loopback:
        raise here.error(
            "token",
            f"required when listen is not a loopback address ({section.listen_host})",
        )
    return section


def _key_matches_certificate(cert_path: str, key_path: str) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with open(cert_path, "rb") as f:
        certificate = x509.load_pem_x509_certificates(f.read())[0]
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    encoding, form = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        certificate.public_key().public_bytes(encoding, form)
        == key.public_key().public_bytes(encoding, form)
    )


# --- The tables: every key of DESIGN.md section 7 ---

_PORT = _integer(1, 65535)
_POSITIVE = _number(above=0)

_LAC = _Spec(
    LacConfig,
    "[[l2tp.lac]]",
    {
        "name": _Key(_string, default=_REQUIRED),
        "peer": _Key(_network, default=_REQUIRED),
        "secret": _Key(_secret, default=None),
        "hostname": _Key(_string, default=None),
        "authenticate": _Key(_boolean, default=True),
        "max_tunnels": _Key(_integer(1, 65535)),
        "max_tunnels_setting_up": _Key(_integer(1, 65535)),
    },
    label_key="name",
    finish=_finish_lac,
)

_L2TP = _Spec(
    L2tpSection,
    "[l2tp]",
    {
        "listen": _Key(_listen, attr=("listen_host", "listen_port")),
        "hostname": _Key(_string),
        "hello_interval": _Key(_POSITIVE),
        "receive_window": _Key(_integer(1, 65535)),
        "retransmit_initial": _Key(_POSITIVE),
        "retransmit_cap": _Key(_POSITIVE),
        "retransmit_max": _Key(_integer(1)),
        "hide_avps": _Key(_boolean),
        "max_tunnels": _Key(_integer(1, 65535)),
        "max_tunnels_setting_up": _Key(_integer(1, 65535)),
        "max_connecting_calls": _Key(_integer(1, 65535)),
        "max_setups_in_progress": _Key(_integer(1, 1_000_000)),
        "lac": _Sub(_LAC, attr="lacs", array=True, unique="name"),
    },
    finish=_finish_l2tp,
)

_PPP = _Spec(
    PppSection,
    "[ppp]",
    {
        "mru": _Key(_integer(128, 65535)),
        "local_address": _Key(_ipv4_address),
        # IPCP offers a primary and a secondary DNS server (RFC 1877).
        "dns": _Key(_array_of(_ipv4_address, max_items=2)),
        "echo_interval": _Key(_POSITIVE),
        "echo_failures": _Key(_integer(1)),
        "lcp_renegotiation": _Key(_one_of("never", "on-mismatch", "always")),
        "no_proxy_auth": _Key(_one_of("iccid", "challenge", "reject")),
        "auth": _Key(_array_of(_one_of("chap", "pap"), min_items=1)),
    },
)

_RADIUS = _Spec(
    RadiusServer,
    "[[aaa.radius]]",
    {
        "address": _Key(_ip_address, default=_REQUIRED),
        "transport": _Key(_one_of("udp", "tls")),
        "auth_port": _Key(_PORT),
        "acct_port": _Key(_PORT),
        "port": _Key(_PORT),
        # Required for UDP; RadSec's default is "radsec" (`_finish_radius`).
        "secret": _Key(_secret, default=None),
        "timeout": _Key(_POSITIVE),
        "retries": _Key(_integer(0)),
        "ca": _Key(_pem_file("certificate")),
        "cert": _Key(_pem_file("certificate")),
        "key": _Key(_pem_file("private key")),
        "server_name": _Key(_server_name),
        "keepalive_interval": _Key(_POSITIVE),
    },
    finish=_finish_radius,
)

_DYNAUTH_CLIENT = _Spec(
    DynauthClient,
    "[[aaa.dynauth.client]]",
    {
        "address": _Key(_ip_address, default=_REQUIRED),
        "secret": _Key(_secret, default=_REQUIRED),
    },
)

_DYNAUTH = _Spec(
    DynauthSection,
    "[aaa.dynauth]",
    {
        "listen": _Key(_listen, attr=("listen_host", "listen_port")),
        "require_message_authenticator": _Key(_boolean),
        "require_event_timestamp": _Key(_boolean),
        "event_timestamp_window": _Key(_POSITIVE),
        # Requests are matched to a client by source address, so addresses are unique.
        "client": _Sub(_DYNAUTH_CLIENT, attr="clients", array=True, unique="address"),
    },
)

_AAA = _Spec(
    AaaSection,
    "[aaa]",
    {
        "username": _Key(_template),
        "iccid_password": _Key(_template),
        "nas_identifier": _Key(_string),
        "require_message_authenticator": _Key(_boolean),
        "interim_interval": _Key(_integer(0)),
        "radius": _Sub(_RADIUS, array=True),
        "dynauth": _Sub(_DYNAUTH),
    },
)

_CONFIG = _Spec(
    Config,
    "",
    {
        "lns": _Sub(
            _Spec(
                LnsSection,
                "[lns]",
                {
                    "node_name": _Key(_string),
                    "heartbeat_interval": _Key(_POSITIVE),
                    "dead_after": _Key(_POSITIVE),
                },
                finish=_finish_lns,
            )
        ),
        "l2tp": _Sub(_L2TP),
        "ppp": _Sub(_PPP),
        "aaa": _Sub(_AAA),
        "database": _Sub(
            _Spec(
                DatabaseSection,
                "[database]",
                {
                    "url": _Key(_database_url),
                    "default_pool": _Key(_string),
                    "migrate_on_start": _Key(_boolean),
                    "worker": _Key(_one_of("process", "threads")),
                },
            )
        ),
        "dataplane": _Sub(
            _Spec(
                DataplaneSection,
                "[dataplane]",
                {
                    "mode": _Key(_one_of("tun", "none")),
                    "tun_name": _Key(_interface_name),
                    "mss_clamp": _Key(_boolean),
                },
            )
        ),
        "management": _Sub(
            _Spec(
                ManagementSection,
                "[management]",
                {
                    "listen": _Key(_listen, attr=("listen_host", "listen_port")),
                    "token": _Key(_secret),
                    "metrics_public": _Key(_boolean),
                },
                finish=_finish_management,
            )
        ),
        "log": _Sub(
            _Spec(
                LogSection,
                "[log]",
                {
                    "file": _Key(_log_file),
                    # Below 64 KiB a burst of lines would rotate the files away at once.
                    "max_bytes": _Key(_integer(64 * 1024)),
                    "keep": _Key(_integer(1, 1000)),
                    "level": _Key(_one_of("debug", "info", "warn", "error")),
                },
            )
        ),
    },
)
