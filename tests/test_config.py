"""Tests for lns.config: the example file, defaults, every kind of error, secrets."""

from __future__ import annotations

import ipaddress
import pickle
import re
import tomllib
from pathlib import Path

import pytest

from lns import config as config_module
from lns.config import (
    AaaSection,
    Config,
    ConfigError,
    DatabaseSection,
    DataplaneSection,
    DynauthSection,
    L2tpSection,
    LacConfig,
    LnsSection,
    LogSection,
    ManagementSection,
    PppSection,
    Secret,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lns.toml"
SECRET = "s3cr3t-XYZ"


def lac(**overrides):
    table = {"name": "op-a", "peer": "198.51.100.0/24", "secret": SECRET}
    table.update(overrides)
    return table


def with_lacs(*tables):
    return {"l2tp": {"lac": list(tables)}}


# --- The example ---


def test_example_loads_with_expected_values():
    config = load_config(EXAMPLE)

    assert config.lns == LnsSection(node_name="lns-1")
    l2tp = config.l2tp
    assert (l2tp.listen_host, l2tp.listen_port) == ("127.0.0.1", 1701)
    assert l2tp.hello_interval == 60.0
    assert isinstance(l2tp.hello_interval, float)
    assert l2tp.lacs == (
        LacConfig(
            name="op-a",
            peer=ipaddress.ip_network("127.0.0.0/8"),
            secret=Secret("change-me"),
            hostname=None,
            authenticate=True,
        ),
    )
    assert config.ppp.dns == (ipaddress.IPv4Address("192.0.2.53"),)
    assert config.ppp.auth == ("chap", "pap")
    aaa = config.aaa
    assert aaa.require_message_authenticator is False  # the demo FreeRADIUS does not sign
    (server,) = aaa.radius
    assert server.address == ipaddress.ip_address("127.0.0.1")
    assert server.secret.value == b"try-it-radius-secret"
    assert (server.auth_port, server.acct_port, server.timeout, server.retries) == (
        1812,
        1813,
        3.0,
        3,
    )
    assert aaa.dynauth is not None
    assert (aaa.dynauth.listen_host, aaa.dynauth.listen_port) == ("127.0.0.1", 3799)
    assert [client.address for client in aaa.dynauth.clients] == [ipaddress.ip_address("127.0.0.1")]
    assert config.database == DatabaseSection(url="sqlite:////tmp/lns-example.db")
    assert config.dataplane.mode == "none"
    assert config.management.token is not None


def _leaf_keys(spec):
    for key, row in spec.keys.items():
        if isinstance(row, config_module._Sub):
            yield from _leaf_keys(row.spec)
        else:
            yield key


@pytest.mark.parametrize("key", sorted(set(_leaf_keys(config_module._CONFIG))))
def test_example_documents_every_key(key):
    # Every key appears (perhaps commented out), each time right under its comment.
    lines = EXAMPLE.read_text().splitlines()
    found = [number for number, line in enumerate(lines) if re.match(rf"(# )?{key} = ", line)]
    assert found, f"{key} is not in {EXAMPLE.name}"
    assert all(lines[number - 1].startswith("# ") for number in found)


# --- Defaults ---


def test_empty_document_gives_the_defaults():
    config = parse_config({})

    assert config == Config()
    assert config.lns.node_name == "lns-1"
    assert config.l2tp == L2tpSection()
    # Safe defaults (issue 16): loopback only, no TUN device.
    assert (config.l2tp.listen_host, config.l2tp.listen_port) == ("127.0.0.1", 1701)
    assert config.l2tp.lacs == ()
    assert config.ppp == PppSection()
    assert config.ppp.local_address == ipaddress.IPv4Address("100.64.0.1")
    assert config.ppp.lcp_renegotiation == "on-mismatch"
    assert config.aaa == AaaSection()
    assert config.aaa.dynauth is None
    assert config.database.url == "sqlite:///lns.db"
    assert config.dataplane == DataplaneSection(mode="none", tun_name="lns0", mss_clamp=True)
    assert config.management is None  # no management API unless the section is given
    assert config.log == LogSection(file=None, max_bytes=10 * 1024 * 1024, keep=5, level="info")


def test_empty_sections_give_the_defaults():
    data = {name: {} for name in ("lns", "l2tp", "ppp", "aaa", "database", "dataplane")}
    assert parse_config(data) == Config()
    assert parse_config({"management": {}}).management == ManagementSection()


def test_empty_dynauth_table_gives_dynauth_defaults():
    assert parse_config({"aaa": {"dynauth": {}}}).aaa.dynauth == DynauthSection()


def test_integer_is_accepted_for_a_float():
    config = parse_config({"l2tp": {"retransmit_initial": 2, "retransmit_cap": 16}})
    assert config.l2tp.retransmit_initial == 2.0
    assert isinstance(config.l2tp.retransmit_cap, float)


def test_lac_without_authentication_needs_no_secret_and_ignores_one():
    config = parse_config(
        with_lacs(
            {"name": "open", "peer": "192.0.2.1", "authenticate": False},
            lac(name="ignored", authenticate=False),
        )
    )
    first, second = config.l2tp.lacs
    assert first.secret is None
    assert first.peer == ipaddress.ip_network("192.0.2.1/32")
    assert second.secret is None


def test_lac_hostname():
    (entry,) = parse_config(with_lacs(lac(hostname="lac1"))).l2tp.lacs
    assert entry.hostname == "lac1"


def test_templates_accept_iccid_and_name():
    aaa = parse_config({"aaa": {"username": "{name}@{iccid}.sim", "iccid_password": "x"}}).aaa
    assert aaa.username == "{name}@{iccid}.sim"


# --- IPv6 ---


def test_ipv6_listen_and_peer():
    config = parse_config(
        {
            "l2tp": {"listen": "[::1]:1701", "lac": [lac(peer="2001:db8::/32")]},
            "management": {"listen": "[::]:8081", "token": SECRET},
            "aaa": {"radius": [{"address": "2001:db8::53", "secret": SECRET}]},
        }
    )
    assert (config.l2tp.listen_host, config.l2tp.listen_port) == ("::1", 1701)
    assert config.l2tp.lacs[0].peer == ipaddress.IPv6Network("2001:db8::/32")
    assert (config.management.listen_host, config.management.listen_port) == ("::", 8081)
    assert config.aaa.radius[0].address == ipaddress.IPv6Address("2001:db8::53")


def test_bare_ipv6_address_is_a_slash_128():
    (entry,) = parse_config(with_lacs(lac(peer="2001:db8::1"))).l2tp.lacs
    assert entry.peer == ipaddress.IPv6Network("2001:db8::1/128")


# --- Errors ---

ERRORS = [
    # (document, text expected in the message: names the key path and the problem)
    ({"lns": {"node_name": ""}}, "[lns] node_name: must not be empty"),
    ({"l2tp": {"hello_interval": "abc"}}, "[l2tp] hello_interval: expected a number, got 'abc'"),
    ({"l2tp": {"hellointerval": 5}}, "[l2tp] hellointerval: unknown key"),
    ({"foo": {}}, "[foo]: unknown section"),
    ({"l2tp": 5}, "[l2tp]: expected a table, got 5"),
    ({"l2tp": {"hello_interval": 0}}, "[l2tp] hello_interval: must be > 0"),
    ({"l2tp": {"hello_interval": True}}, "[l2tp] hello_interval: expected a number, got true"),
    ({"l2tp": {"hello_interval": float("inf")}}, "[l2tp] hello_interval: must be a finite"),
    ({"l2tp": {"receive_window": 1.5}}, "[l2tp] receive_window: expected an integer"),
    ({"l2tp": {"receive_window": True}}, "[l2tp] receive_window: expected an integer, got true"),
    ({"l2tp": {"receive_window": 0}}, "[l2tp] receive_window: must be between 1 and 65535"),
    ({"l2tp": {"receive_window": 65536}}, "[l2tp] receive_window: must be between 1 and 65535"),
    ({"l2tp": {"retransmit_initial": 0}}, "[l2tp] retransmit_initial: must be > 0"),
    (
        {"l2tp": {"retransmit_initial": 4, "retransmit_cap": 2}},
        "[l2tp] retransmit_cap: must be >= retransmit_initial (4), got 2",
    ),
    ({"l2tp": {"retransmit_max": 0}}, "[l2tp] retransmit_max: must be >= 1, got 0"),
    ({"l2tp": {"hide_avps": "yes"}}, "[l2tp] hide_avps: expected true or false, got 'yes'"),
    ({"l2tp": {"hostname": 7}}, "[l2tp] hostname: expected a string, got 7"),
    ({"l2tp": {"listen": "1701"}}, '[l2tp] listen: expected "HOST:PORT"'),
    ({"l2tp": {"listen": "::1:1701"}}, '[l2tp] listen: expected "HOST:PORT"'),
    ({"l2tp": {"listen": "[127.0.0.1]:1701"}}, '[l2tp] listen: expected "HOST:PORT"'),
    ({"l2tp": {"listen": "lns.example:1701"}}, '[l2tp] listen: expected "HOST:PORT"'),
    ({"l2tp": {"listen": "0.0.0.0:0"}}, "[l2tp] listen: port must be between 1 and 65535"),
    ({"l2tp": {"listen": "0.0.0.0:65536"}}, "[l2tp] listen: port must be between 1 and 65535"),
    ({"management": {"listen": 8080}}, '[management] listen: expected "HOST:PORT"'),
    ({"aaa": {"dynauth": {"listen": "[::1]"}}}, '[aaa.dynauth] listen: expected "HOST:PORT"'),
    ({"l2tp": {"lac": {"name": "x"}}}, "[l2tp] lac: expected an array of tables ([[l2tp.lac]])"),
    (with_lacs({"peer": "10.0.0.0/8", "secret": "x"}), "[[l2tp.lac]] #1 name: required key"),
    (with_lacs({"name": "op-a", "secret": "x"}), '[[l2tp.lac]] #1 ("op-a") peer: required key'),
    (
        with_lacs(lac(), lac(name="op-b", peer="10.0.0.300/24")),
        "[[l2tp.lac]] #2 (\"op-b\") peer: not an IP network: '10.0.0.300/24'",
    ),
    (
        with_lacs(lac(peer="10.0.0.1/24")),
        "[[l2tp.lac]] #1 (\"op-a\") peer: host bits set in '10.0.0.1/24'; did you mean "
        "'10.0.0.0/24'?",
    ),
    (with_lacs(lac(peer=["10.0.0.0/8"])), '("op-a") peer: expected an address or CIDR string'),
    (
        with_lacs({"name": "op-a", "peer": "10.0.0.0/8"}),
        '[[l2tp.lac]] #1 ("op-a") secret: required key is missing '
        "(leave it out only with `authenticate = false`)",
    ),
    (
        with_lacs({"name": "op-a", "peer": "10.0.0.0/8", "authenticate": True}),
        '[[l2tp.lac]] #1 ("op-a") secret: required key is missing',
    ),
    (with_lacs(lac(secret="")), '[[l2tp.lac]] #1 ("op-a") secret: must not be empty'),
    (
        with_lacs(lac(), lac(peer="10.0.0.0/8")),
        '[[l2tp.lac]] #2 ("op-a") name: duplicate: [[l2tp.lac]] #1 has the same',
    ),
    (with_lacs(lac(authenticate="no")), '("op-a") authenticate: expected true or false'),
    (with_lacs(lac(hostname="")), '("op-a") hostname: must not be empty'),
    (with_lacs(lac(secrte="x")), '[[l2tp.lac]] #1 ("op-a") secrte: unknown key'),
    ({"ppp": {"mru": 127}}, "[ppp] mru: must be between 128 and 65535, got 127"),
    ({"ppp": {"mru": 70000}}, "[ppp] mru: must be between 128 and 65535, got 70000"),
    ({"ppp": {"local_address": "2001:db8::1"}}, "[ppp] local_address: expected an IPv4 address"),
    ({"ppp": {"local_address": "100.64.0.256"}}, "[ppp] local_address: not an IP address"),
    ({"ppp": {"dns": "192.0.2.53"}}, "[ppp] dns: expected an array, got '192.0.2.53'"),
    ({"ppp": {"dns": ["192.0.2.53", "x"]}}, "[ppp] dns: item #2: not an IP address: 'x'"),
    ({"ppp": {"dns": ["192.0.2.1", "192.0.2.2", "192.0.2.3"]}}, "[ppp] dns: takes at most 2"),
    ({"ppp": {"echo_interval": -1}}, "[ppp] echo_interval: must be > 0, got -1"),
    ({"ppp": {"echo_failures": 0}}, "[ppp] echo_failures: must be >= 1, got 0"),
    (
        {"ppp": {"lcp_renegotiation": "sometimes"}},
        '[ppp] lcp_renegotiation: expected one of "never", "on-mismatch", "always", '
        "got 'sometimes'",
    ),
    ({"ppp": {"no_proxy_auth": "allow"}}, "[ppp] no_proxy_auth: expected one of"),
    ({"ppp": {"auth": []}}, "[ppp] auth: needs at least 1 item(s)"),
    ({"ppp": {"auth": ["eap"]}}, '[ppp] auth: item #1: expected one of "chap", "pap"'),
    ({"ppp": {"auth": ["pap", "pap"]}}, "[ppp] auth: item #2: 'pap' is listed twice"),
    ({"aaa": {"username": "{imsi}"}}, "[aaa] username: template '{imsi}' may use only"),
    ({"aaa": {"username": "{}"}}, "[aaa] username: template '{}' may use only"),
    ({"aaa": {"username": "{iccid.x}"}}, "[aaa] username: template '{iccid.x}' may use only"),
    ({"aaa": {"username": "{iccid!r}"}}, "[aaa] username: template '{iccid!r}' may use only"),
    ({"aaa": {"iccid_password": "{iccid"}}, "[aaa] iccid_password: bad template '{iccid'"),
    ({"aaa": {"nas_identifier": ""}}, "[aaa] nas_identifier: must not be empty"),
    ({"aaa": {"require_message_authenticator": 1}}, "[aaa] require_message_authenticator:"),
    ({"aaa": {"interim_interval": -1}}, "[aaa] interim_interval: must be >= 0, got -1"),
    ({"aaa": {"radius": [{"secret": SECRET}]}}, "[[aaa.radius]] #1 address: required key"),
    ({"aaa": {"radius": [{"address": "127.0.0.1"}]}}, "[[aaa.radius]] #1 secret: required key"),
    (
        {"aaa": {"radius": [{"address": "127.0.0.1", "secret": SECRET, "auth_port": 0}]}},
        "[[aaa.radius]] #1 auth_port: must be between 1 and 65535, got 0",
    ),
    (
        {"aaa": {"radius": [{"address": "127.0.0.1", "secret": SECRET, "timeout": 0}]}},
        "[[aaa.radius]] #1 timeout: must be > 0, got 0",
    ),
    (
        {"aaa": {"radius": [{"address": "127.0.0.1", "secret": SECRET, "retries": -1}]}},
        "[[aaa.radius]] #1 retries: must be >= 0, got -1",
    ),
    ({"aaa": {"radius": {"address": "x"}}}, "[aaa] radius: expected an array of tables"),
    ({"aaa": {"dynauth": []}}, "[aaa] dynauth: expected a table, got an array"),
    (
        {"aaa": {"dynauth": {"client": [{"address": "localhost", "secret": SECRET}]}}},
        "[[aaa.dynauth.client]] #1 address: not an IP address: 'localhost'",
    ),
    (
        {
            "aaa": {
                "dynauth": {
                    "client": [
                        {"address": "127.0.0.1", "secret": SECRET},
                        {"address": "127.0.0.1", "secret": "other"},
                    ]
                }
            }
        },
        "[[aaa.dynauth.client]] #2 address: duplicate",
    ),
    ({"database": {"url": "lns.db"}}, "[database] url: expected a database URL"),
    ({"database": {"default_pool": ""}}, "[database] default_pool: must not be empty"),
    ({"database": {"migrate_on_start": "true"}}, "[database] migrate_on_start: expected true"),
    ({"dataplane": {"mode": "tap"}}, '[dataplane] mode: expected one of "tun", "none"'),
    ({"dataplane": {"tun_name": "a-very-long-name0"}}, "[dataplane] tun_name: not a valid"),
    ({"dataplane": {"tun_name": "lns/0"}}, "[dataplane] tun_name: not a valid"),
    ({"dataplane": {"mss_clamp": 0}}, "[dataplane] mss_clamp: expected true or false"),
    ({"management": {"token": ""}}, "[management] token: must not be empty"),
    ({"log": {"file": ""}}, "[log] file: must not be empty"),
    ({"log": {"file": "/var/log/"}}, "[log] file: expected a file path"),
    ({"log": {"max_bytes": 1000}}, "[log] max_bytes: must be >= 65536, got 1000"),
    ({"log": {"keep": 0}}, "[log] keep: must be between 1 and 1000, got 0"),
    (
        {"log": {"level": "verbose"}},
        '[log] level: expected one of "debug", "info", "warn", "error"',
    ),
    ({"management": {"port": 8080}}, "[management] port: unknown key"),
    (
        {"management": {"listen": "0.0.0.0:8080"}},
        "[management] token: required when listen is not a loopback address (0.0.0.0)",
    ),
    ({"management": {"metrics_public": "yes"}}, "[management] metrics_public: expected true"),
]


def test_management_without_a_token_on_loopback():
    for listen in ("127.0.0.1:8080", "127.0.0.2:9000", "[::1]:8080"):
        section = parse_config({"management": {"listen": listen}}).management
        assert section is not None
        assert section.token is None
        assert section.metrics_public is False


@pytest.mark.parametrize(("data", "expected"), ERRORS, ids=[expected for _, expected in ERRORS])
def test_error_names_the_key_and_the_problem(data, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "lns.toml")
    message = str(info.value)
    assert message.startswith("lns.toml: ")
    assert expected in message
    assert SECRET not in message
    assert SECRET not in repr(info.value)


def test_config_error_is_a_value_error_with_parts():
    with pytest.raises(ValueError, match="unknown key") as info:
        parse_config({"l2tp": {"hellointerval": 5}}, "lns.toml")
    error = info.value
    assert isinstance(error, ConfigError)
    assert (error.source, error.where, error.problem) == (
        "lns.toml",
        "[l2tp] hellointerval",
        "unknown key",
    )
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


# --- Files ---


def test_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read: No such file"):
        load_config(path)


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_invalid_toml_names_the_file_and_the_position(tmp_path):
    path = tmp_path / "lns.toml"
    path.write_text(f'[l2tp]\nlac = "{SECRET}" oops\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "(at line 2, column" in message
    assert SECRET not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_invalid_utf8(tmp_path):
    path = tmp_path / "lns.toml"
    path.write_bytes(b'[lns]\nnode_name = "\xff"\n')
    with pytest.raises(ConfigError, match=r"lns\.toml: not valid UTF-8"):
        load_config(str(path))


def test_errors_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "lns.toml"
    path.write_text("[l2tp]\nhello_interval = 'abc'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: [l2tp] hello_interval: expected a number, got 'abc'"


def test_default_source_name():
    with pytest.raises(ConfigError, match=r"^<config>: \[bogus\]: unknown section$"):
        parse_config({"bogus": 1})


# --- Secrets ---


def full_document_with_secret():
    data = tomllib.loads(EXAMPLE.read_text())
    data["l2tp"]["lac"][0]["secret"] = SECRET
    data["aaa"]["radius"][0]["secret"] = SECRET
    data["aaa"]["dynauth"]["client"][0]["secret"] = SECRET
    data["management"]["token"] = SECRET
    data["database"]["url"] = f"postgresql://lns:{SECRET}@db.example/lns"
    return data


def test_secrets_never_appear_in_repr_or_str():
    config = parse_config(full_document_with_secret())

    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert config.l2tp.lacs[0].secret == Secret(SECRET)
    assert config.aaa.radius[0].secret.value == SECRET.encode()
    assert config.management.token == Secret(SECRET)
    assert config.database.url == f"postgresql://lns:{SECRET}@db.example/lns"
    assert "postgresql://lns:***@db.example/lns" in repr(config.database)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"peer": "10.0.0.1/8"}, "peer: host bits set"),
        ({"peer": "not-a-network"}, "peer: not an IP network"),
        ({"name": ""}, "name: must not be empty"),
        ({"hostname": 5}, "hostname: expected a string"),
        ({"extra": 1}, "extra: unknown key"),
        ({"authenticate": "yes"}, "authenticate: expected true or false"),
        ({"secrte": SECRET}, "secrte: unknown key"),
    ],
)
def test_errors_for_a_lac_with_a_secret_do_not_show_it(bad, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        parse_config(with_lacs(lac(**bad)), "lns.toml")
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


@pytest.mark.parametrize("value", [12345, 1.5, True, [SECRET], {"value": SECRET}])
def test_a_secret_of_the_wrong_type_is_described_by_type_only(value):
    with pytest.raises(ConfigError, match=r"secret: expected a string, got an? ") as info:
        parse_config(with_lacs(lac(secret=value)), "lns.toml")
    assert SECRET not in str(info.value)
    assert "12345" not in str(info.value)
    assert "1.5" not in str(info.value)


def test_secret_type():
    secret = Secret(SECRET)
    assert secret.value == SECRET.encode("utf-8")
    assert repr(secret) == str(secret) == "Secret('***')"
    assert f"{secret}" == "Secret('***')"
    assert secret == Secret(SECRET.encode())
    assert secret != Secret("other")
    assert secret != SECRET
    assert hash(secret) == hash(Secret(SECRET))
    assert Secret("ü").value == b"\xc3\xbc"
    with pytest.raises(ValueError, match="must not be empty"):
        Secret("")
