"""One way to write an lns configuration for a test, a benchmark or a demo.

`ConfigBuilder` has a method per table of the configuration (DESIGN.md section 7;
every key is documented in examples/lns.toml)::

    ConfigBuilder()
        .lns(node_name="n1")
        .l2tp(listen="127.0.0.1:1701")
        .lac(name="op", peer="127.0.0.0/8", secret="s")          # [[l2tp.lac]], one per call
        .radius_server(freeradius, timeout=2.0)                 # [[aaa.radius]] from a runner
        .sqlite(directory / "lns.db", migrate_on_start=False)   # [database]
        .dataplane(mode="none")
        .write(directory / "lns.toml")                          # or .config() for a Config

Each method adds its keys to its table (calling it again adds or replaces keys); the
array-of-tables methods add an element. The builder writes what it is told, wrong keys
and values included, so a test can also write a configuration the server must refuse:
`lns.config` is the one judge, through `config()` here or when the server reads the file.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, Self

from lns.config import Config, parse_config

__all__ = ["ConfigBuilder", "RadiusEndpoint", "toml_text"]


class RadiusEndpoint(Protocol):
    """A RADIUS server a test started (`lns.testing.freeradius.FreeRadius`)."""

    host: str
    auth_port: int
    acct_port: int
    secret: str


class ConfigBuilder:
    """An lns configuration document, table by table; see the module's docstring."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {}

    def _table(self, *path: str) -> dict[str, Any]:
        table = self.document
        for key in path:
            table = table.setdefault(key, {})
        return table

    def _element(self, *path: str) -> dict[str, Any]:
        parent = self._table(*path[:-1])
        element: dict[str, Any] = {}
        parent.setdefault(path[-1], []).append(element)
        return element

    # --- one method per table ---------------------------------------------------------

    def lns(self, **keys: Any) -> Self:
        """``[lns]``: node_name, heartbeat_interval, dead_after."""
        self._table("lns").update(keys)
        return self

    def l2tp(self, **keys: Any) -> Self:
        """``[l2tp]``: listen, hostname, hello_interval, receive_window, retransmission,
        hide_avps, the admission limits."""
        self._table("l2tp").update(keys)
        return self

    def lac(self, **keys: Any) -> Self:
        """One more ``[[l2tp.lac]]``: name, peer, secret, hostname, authenticate, limits."""
        self._element("l2tp", "lac").update(keys)
        return self

    def ppp(self, **keys: Any) -> Self:
        """``[ppp]``: mru, local_address, dns, keepalive, LCP and authentication policies."""
        self._table("ppp").update(keys)
        return self

    def aaa(self, **keys: Any) -> Self:
        """``[aaa]``: username, iccid_password, nas_identifier,
        require_message_authenticator, interim_interval."""
        self._table("aaa").update(keys)
        return self

    def radius(self, **keys: Any) -> Self:
        """One more ``[[aaa.radius]]``: address, ports, secret, timeout, retries, transport
        and its TLS keys."""
        self._element("aaa", "radius").update(keys)
        return self

    def dynauth(self, **keys: Any) -> Self:
        """``[aaa.dynauth]``: listen and the request checks."""
        self._table("aaa", "dynauth").update(keys)
        return self

    def dynauth_client(self, **keys: Any) -> Self:
        """One more ``[[aaa.dynauth.client]]``: address, secret."""
        self._element("aaa", "dynauth", "client").update(keys)
        return self

    def database(self, **keys: Any) -> Self:
        """``[database]``: url, default_pool, migrate_on_start."""
        self._table("database").update(keys)
        return self

    def dataplane(self, **keys: Any) -> Self:
        """``[dataplane]``: mode, tun_name, mss_clamp."""
        self._table("dataplane").update(keys)
        return self

    def management(self, **keys: Any) -> Self:
        """``[management]``: listen, token, metrics_public."""
        self._table("management").update(keys)
        return self

    def log(self, **keys: Any) -> Self:
        """``[log]``: file, max_bytes, keep, level."""
        self._table("log").update(keys)
        return self

    # --- shorthands -------------------------------------------------------------------

    def radius_server(self, server: RadiusEndpoint, **keys: Any) -> Self:
        """One more ``[[aaa.radius]]`` for a RADIUS server the test started (over UDP);
        ``keys`` add to or replace what the server gives."""
        given = {
            "address": server.host,
            "auth_port": server.auth_port,
            "acct_port": server.acct_port,
            "secret": server.secret,
        }
        return self.radius(**{**given, **keys})

    def sqlite(self, path: str | os.PathLike[str], **keys: Any) -> Self:
        """``[database]`` with the URL of the SQLite file at ``path``."""
        return self.database(url=f"sqlite:///{os.fspath(path)}", **keys)

    # --- results ----------------------------------------------------------------------

    def config(self, source: str = "<test config>") -> Config:
        """The configuration as the server would load it (ConfigError if it would not)."""
        return parse_config(self.document, source)

    def toml(self) -> str:
        return toml_text(self.document)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Writes the TOML file (as it is: the server judges it) and returns its path."""
        written = Path(path)
        written.write_text(self.toml(), encoding="utf-8")
        return written


# --- TOML ------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_text(document: Mapping[str, Any]) -> str:
    """``document`` (str, int, float, bool, arrays, tables, arrays of tables) as TOML 1.0
    that `tomllib` reads back to an equal document."""
    lines: list[str] = []
    _write_table(document, (), lines, header=None)
    return "\n".join(lines) + "\n"


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _write_table(
    table: Mapping[str, Any], path: tuple[str, ...], lines: list[str], header: str | None
) -> None:
    if header is not None:
        if lines:
            lines.append("")
        lines.append(header)
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, dict) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value, (*path, key))}")
    for key, value in nested:
        name = ".".join(_key(part) for part in (*path, key))
        if isinstance(value, dict):
            _write_table(value, (*path, key), lines, f"[{name}]")
        else:
            for element in value:
                _write_table(element, (*path, key), lines, f"[[{name}]]")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    # JSON's escapes (\" \\ \b \f \n \r \t \u00XX) are TOML's; DEL must be escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: object, where: tuple[str, ...]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, os.PathLike):
        return _string(os.fspath(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item, where) for item in value) + "]"
    raise TypeError(f"{'.'.join(where)}: no TOML form for {type(value).__name__}")
