"""The command line: what it accepts, and one-line usage errors with exit status 2."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from lns.loadgen.cli import build_parser, main, options_from
from lns.loadgen.options import LoadOptions, OptionError, ProxyAuth, Teardown, parse_server


@pytest.mark.parametrize(
    ("text", "address", "port"),
    [
        ("192.0.2.1", "192.0.2.1", 1701),
        ("192.0.2.1:1702", "192.0.2.1", 1702),
        ("2001:db8::1", "2001:db8::1", 1701),
        ("[2001:db8::1]", "2001:db8::1", 1701),
        ("[2001:db8::1]:17010", "2001:db8::1", 17010),
    ],
)
def test_server_forms(text, address, port):
    assert parse_server(text) == (ipaddress.ip_address(address), port)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lns.example", "is not an IP address"),
        ("192.0.2.1:", "empty port"),
        ("192.0.2.1:0", "not in 1..65535"),
        ("192.0.2.1:70000", "not in 1..65535"),
        ("192.0.2.1:x", "not in 1..65535"),
        ("[2001:db8::1", "is not [IPv6]"),
        ("[2001:db8::1]x", "is not [IPv6]"),
        ("[2001:db8::1]:", "empty port"),
    ],
)
def test_bad_servers(text, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        parse_server(text)


def parse(*argv: str) -> LoadOptions:
    return options_from(build_parser().parse_args(list(argv)))


def test_defaults():
    options = parse("192.0.2.1")
    assert options.server == ipaddress.ip_address("192.0.2.1")
    assert options.port == 1701
    assert (options.tunnels, options.sessions, options.rate) == (1, 10, 50.0)
    assert options.secret is None
    assert options.auth is ProxyAuth.CHAP
    assert options.proxy_lcp
    assert options.teardown is Teardown.CDN
    assert options.hello_interval == 0.1
    assert options.password is None
    assert options.password_of("8944000000000000001") == b"8944000000000000001"
    assert options.iccid(0) == "8944000000000000001"
    assert options.iccid(9) == "8944000000000000010"


def test_every_option(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\nignored\n")
    options = parse(
        "[::1]:1702",
        "--tunnels", "4",
        "--sessions", "10000",
        "--rate", "0",
        "--concurrency", "200",
        "--hold", "30",
        "--timeout", "20",
        "--teardown", "stopccn",
        "--hostname", "ggsn-7",
        "--secret-file", str(secret),
        "--hide-avps",
        "--retransmit", "0.2",
        "--receive-window", "32",
        "--hello-interval", "0",
        "--local", "::1",
        "--iccid-start", "89440000000000000001",
        "--password", "pw",
        "--auth", "pap",
        "--no-proxy-lcp",
        "--apn", "m2m.example",
        "--seed", "5",
    )  # fmt: skip
    assert options.server_text == "[::1]:1702"
    assert (options.tunnels, options.sessions, options.rate, options.concurrency) == (
        4, 10000, 0.0, 200,
    )  # fmt: skip
    assert (options.hold, options.timeout, options.teardown) == (30.0, 20.0, Teardown.STOPCCN)
    assert options.hostname == "ggsn-7"
    assert options.secret == b"from-a-file"
    assert options.hide_avps
    assert options.retransmit == 0.2
    assert options.receive_window == 32
    assert options.hello_interval == 0
    assert options.local == ipaddress.ip_address("::1")
    assert options.iccid(10) == "89440000000000000011"
    assert options.password_of("89440000000000000001") == b"pw"
    assert options.auth is ProxyAuth.PAP
    assert not options.proxy_lcp
    assert options.called_number == "m2m.example"
    assert options.seed == 5


def test_an_lns_list_in_order_of_preference():
    options = parse("--lns", "192.0.2.1,192.0.2.2:1702, 192.0.2.3", "--down-time", "30")
    assert options.lns == (
        (ipaddress.ip_address("192.0.2.1"), 1701),
        (ipaddress.ip_address("192.0.2.2"), 1702),
        (ipaddress.ip_address("192.0.2.3"), 1701),
    )
    assert (options.server, options.port) == options.lns[0]
    assert options.lns_text == "192.0.2.1:1701,192.0.2.2:1702,192.0.2.3:1701"
    assert options.down_time == 30.0


def test_one_server_is_an_lns_list_of_one():
    options = parse("192.0.2.1:1702", "--retries", "3")
    assert options.lns == ((ipaddress.ip_address("192.0.2.1"), 1702),)
    assert options.alternates == ()
    assert options.down_time == 300.0
    assert options.retries == 3
    assert parse("--lns", "[2001:db8::1]:1702").server_text == "[2001:db8::1]:1702"


def test_ping_options():
    options = parse("192.0.2.1", "--ping", "198.51.100.1", "--hold", "10", "--ping-interval", "2")
    assert options.ping == ipaddress.IPv4Address("198.51.100.1")
    assert options.ping_interval == 2.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give the LNS as SERVER[:PORT] or as --lns"),
        (["192.0.2.1", "--lns", "192.0.2.2"], "(not both)"),
        (["--lns", "192.0.2.1,,192.0.2.2"], "has an empty entry"),
        (["--lns", ",".join(f"192.0.2.{n}" for n in range(1, 7))], "at most 5"),
        (["--lns", "192.0.2.1,192.0.2.1:1701"], "LNS 192.0.2.1:1701 is listed twice"),
        (["--lns", "192.0.2.1,[2001:db8::1]"], "different IP versions"),
        (["--lns", "192.0.2.1,lns-b.example"], "is not an IP address"),
        (["192.0.2.1", "--down-time", "0"], "--down-time must be greater than 0"),
        (["192.0.2.1", "--retries", "-1"], "--retries must not be negative"),
        (["lns.example"], "is not an IP address"),
        (["192.0.2.1", "--tunnels", "x"], "'x' is not an integer"),
        (["192.0.2.1", "--tunnels", "0"], "--tunnels must be at least 1"),
        (["192.0.2.1", "--sessions", "70000"], "need at least 2 tunnels"),
        (["192.0.2.1", "--rate", "-1"], "--rate must not be negative"),
        (["192.0.2.1", "--rate", "nan"], "not a finite number"),
        (["192.0.2.1", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["192.0.2.1", "--timeout", "0"], "--timeout must be greater than 0"),
        (["192.0.2.1", "--retransmit", "0"], "--retransmit must be greater than 0"),
        (["192.0.2.1", "--hello-interval", "-1"], "--hello-interval must not be negative"),
        (["192.0.2.1", "--iccid-start", "123"], "an ICCID has 19 or 20"),
        (["192.0.2.1", "--iccid-start", "89440000000000000x1"], "is not all digits"),
        (
            ["192.0.2.1", "--iccid-start", "9999999999999999999", "--sessions", "2"],
            "overflows 19 digits",
        ),
        (["192.0.2.1", "--ping", "198.51.100.1"], "--ping needs --hold"),
        (["192.0.2.1", "--ping", "::1", "--hold", "1"], "--ping takes an IPv4 address"),
        (["192.0.2.1", "--ping", "host", "--hold", "1"], "--ping 'host' is not an IP address"),
        (["192.0.2.1", "--local", "::1"], "different IP versions"),
        (["192.0.2.1", "--hide-avps"], "--hide-avps needs --secret"),
        (["192.0.2.1", "--secret", ""], "--secret must not be empty"),
        (["192.0.2.1", "--password", "a", "--password-from-iccid"], "not allowed with"),
        (["192.0.2.1", "--auth", "mschap"], "invalid choice"),
        (["192.0.2.1", "--secret-file", "/nonexistent/secret"], "No such file"),
        (["192.0.2.1", "--json", "/nonexistent/dir/out.json"], "--json: No such file"),
        (["192.0.2.1", "--frobnicate"], "unrecognized arguments"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("lns-loadgen: error: ")
    assert message in captured.err


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--tunnels", "--sessions", "--rate", "--concurrency", "--hold", "--timeout",
        "--teardown", "--hostname", "--secret", "--secret-file", "--hide-avps", "--retransmit",
        "--receive-window", "--hello-interval", "--local", "--iccid-start", "--password",
        "--password-from-iccid", "--auth", "--no-proxy-lcp", "--apn", "--ping",
        "--ping-interval", "--json", "--quiet", "--seed", "exit status", "--lns",
        "--down-time", "--retries",
    ):  # fmt: skip
        assert option in text
