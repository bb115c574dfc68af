"""`[[aaa.radius]] transport = "tls"`: its keys, defaults and errors (lns/config.py), and
the credentials as the client loads them (aaa/radius/tls.py)."""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess

import pytest
from twisted.internet.testing import MemoryReactorClock

from aaa.radius.client import RadiusClient
from aaa.radius.radsec import RadsecServerPort
from aaa.radius.tls import RadsecTls, TlsSetupError
from lns.config import ConfigError, Secret, parse_config
from lns.testing.pki import CertificateAuthority
from lns.testing.radius_fakes import FakeUdpReactor


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("radsec-config")
    ca = CertificateAuthority(base / "ca")
    client = ca.issue("lns.test", client=True)
    other = ca.issue("other.test", client=True)
    encrypted = base / "encrypted.key"
    command = ["openssl", "pkey", "-aes256", "-passout", "pass:x"]
    subprocess.run(
        [*command, "-in", str(client.key), "-out", str(encrypted)],
        check=True,
        capture_output=True,
    )
    garbage = base / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    return {
        "ca": str(ca.cert),
        "cert": str(client.cert),
        "key": str(client.key),
        "other_key": str(other.key),
        "encrypted": str(encrypted),
        "garbage": str(garbage),
        "missing": str(base / "missing.pem"),
    }


def tls(files, **extra):
    server = {
        "address": "192.0.2.10",
        "transport": "tls",
        "ca": files["ca"],
        "cert": files["cert"],
        "key": files["key"],
    }
    server.update(extra)
    return {"aaa": {"radius": [server]}}


def error_of(data) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "lns.toml")
    return str(caught.value)


def test_defaults_of_a_radsec_server(files):
    (server,) = parse_config(tls(files)).aaa.radius
    assert server.transport == "tls"
    assert server.port == 2083
    assert server.secret == Secret("radsec")  # RFC 6614 section 2.3
    assert server.server_name is None
    assert server.tls_name == "192.0.2.10"
    assert server.keepalive_interval == 30.0
    assert server.timeout == 3.0


def test_every_radsec_key(files):
    data = tls(
        files,
        port=2084,
        secret="s3cret",
        server_name="Radius.Example.NET.",
        keepalive_interval=10,
        timeout=5,
    )
    (server,) = parse_config(data).aaa.radius
    assert (server.port, server.secret, server.keepalive_interval) == (2084, Secret("s3cret"), 10)
    assert server.tls_name == "radius.example.net"
    (by_ip,) = parse_config(tls(files, server_name="2001:db8::1")).aaa.radius
    assert by_ip.tls_name == "2001:db8::1"


UDP_ONLY = {"aaa": {"radius": [{"address": "192.0.2.1", "secret": "x"}]}}


def test_udp_is_the_default_and_still_needs_its_secret():
    (server,) = parse_config(
        {"aaa": {"radius": [{"address": "192.0.2.1", "secret": "x"}]}}
    ).aaa.radius
    assert server.transport == "udp"
    message = error_of({"aaa": {"radius": [{"address": "192.0.2.1"}]}})
    assert message == "lns.toml: [[aaa.radius]] #1 secret: required key is missing"


@pytest.mark.parametrize("key", ["ca", "cert", "key"])
def test_radsec_files_are_required(files, key):
    data = tls(files)
    del data["aaa"]["radius"][0][key]
    assert error_of(data) == (
        f'lns.toml: [[aaa.radius]] #1 {key}: required key is missing (transport = "tls")'
    )


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("ca", "missing", "cannot read '{}': No such file or directory"),
        ("cert", "garbage", "no PEM certificate in '{}'"),
        ("ca", "key", "no PEM certificate in '{}'"),
        ("key", "garbage", "no usable PEM private key in '{}'"),
        ("key", "cert", "no usable PEM private key in '{}'"),
        ("key", "encrypted", "the private key in '{}' is encrypted; lns needs it unencrypted"),
        ("key", "other_key", "'{}' is not the private key of cert"),
    ],
)
def test_bad_files_are_named_by_key_and_path(files, key, value, problem):
    message = error_of(tls(files, **{key: files[value]}))
    assert message.startswith(f"lns.toml: [[aaa.radius]] #1 {key}: " + problem.format(files[value]))
    # Nothing of a key file's content in the message.
    with open(files["key"]) as f:
        secret_line = f.read().splitlines()[1]
    assert secret_line not in message


@pytest.mark.parametrize("key", ["auth_port", "acct_port", "retries"])
def test_udp_keys_refused_for_radsec(files, key):
    message = error_of(tls(files, **{key: 1}))
    assert message == f'lns.toml: [[aaa.radius]] #1 {key}: only with transport = "udp"'


@pytest.mark.parametrize(
    ("key", "value"),
    [("port", 2083), ("ca", "ca"), ("server_name", "x.example"), ("keepalive_interval", 5)],
)
def test_radsec_keys_refused_for_udp(files, key, value):
    server = {"address": "192.0.2.1", "secret": "x", key: files.get(value, value)}
    message = error_of({"aaa": {"radius": [server]}})
    assert message == f'lns.toml: [[aaa.radius]] #1 {key}: only with transport = "tls"'


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("transport", "dtls", 'expected one of "udp", "tls", got \'dtls\''),
        ("server_name", "bad_name.example", "not a DNS name or IP address"),
        ("server_name", "-x.example", "not a DNS name or IP address"),
        ("keepalive_interval", 0, "must be > 0"),
        ("port", 0, "must be between 1 and 65535"),
    ],
)
def test_bad_values(files, key, value, problem):
    assert problem in error_of(tls(files, **{key: value}))


def test_client_loads_the_credentials(files):
    (server,) = parse_config(tls(files)).aaa.radius
    client = RadiusClient([server], MemoryReactorClock(), True)  # type: ignore[arg-type]
    [port] = client.ports
    assert isinstance(port, RadsecServerPort)
    assert port.label == "192.0.2.10:2083"
    assert client.auth_endpoints == client.acct_endpoints == [port]
    assert port.tls.name == "192.0.2.10"


def test_credentials_gone_after_loading_the_config_name_the_key(files, tmp_path):
    (server,) = parse_config(tls(files)).aaa.radius
    moved = dataclasses.replace(server, cert=str(tmp_path / "gone.pem"))
    with pytest.raises(TlsSetupError, match=r"\[\[aaa\.radius\]\] 192\.0\.2\.10 cert: cannot read"):
        RadsecTls(moved)


def test_udp_only_client_needs_no_tcp_reactor():
    client = RadiusClient(parse_config(UDP_ONLY).aaa.radius, FakeUdpReactor(), True)
    assert [p.label for p in client.ports] == ["192.0.2.1:1812", "192.0.2.1:1813"]
    assert ipaddress.ip_address("192.0.2.1") == client.servers[0].address
