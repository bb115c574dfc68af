"""Our RADIUS dictionary: complete for what lns speaks, and numbered as FreeRADIUS numbers it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from aaa.radius.packet import dictionary

FREERADIUS_DICTIONARIES = Path("/usr/share/freeradius")


def our_definitions() -> tuple[dict[str, tuple[str | None, int, str]], dict[tuple[str, str], int]]:
    """(attributes: name -> (vendor, number, type), values: (attribute, name) -> number)."""
    return read_definitions(
        sorted(Path(str(resources.files("aaa.radius") / "dictionary")).glob("dictionary.*"))
    )


def read_definitions(paths):
    attributes: dict[str, tuple[str | None, int, str]] = {}
    values: dict[tuple[str, str], int] = {}
    for path in paths:
        vendor = None
        for line in path.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0] == "BEGIN-VENDOR":
                vendor = words[1]
            elif words[0] == "END-VENDOR":
                vendor = None
            elif words[0] == "ATTRIBUTE":
                if not words[2].isdigit():
                    continue  # "241.1": RFC 6929 extended attributes, none of ours
                number = int(words[2])
                # FreeRADIUS writes fixed-size octets as octets[N]: the same on the wire.
                attributes[words[1]] = (vendor, number, words[3].split("[")[0])
            elif words[0] == "VALUE" and words[3].isdigit():
                values[(words[1], words[2])] = int(words[3])
    return attributes, values


@pytest.mark.parametrize(
    ("name", "number", "kind"),
    [
        ("User-Name", 1, "string"),
        ("CHAP-Password", 3, "octets"),
        ("Framed-IP-Address", 8, "ipaddr"),
        ("Framed-Route", 22, "string"),
        ("Class", 25, "octets"),
        ("Acct-Status-Type", 40, "integer"),  # RFC 2866
        ("Acct-Input-Gigawords", 52, "integer"),  # RFC 2869
        ("Connect-Info", 77, "string"),
        ("Message-Authenticator", 80, "octets"),
        ("Acct-Interim-Interval", 85, "integer"),
        ("Framed-Pool", 88, "string"),
        ("Tunnel-Type", 64, "integer"),  # RFC 2868
        ("Tunnel-Client-Auth-Id", 90, "string"),
        ("NAS-IPv6-Address", 95, "ipv6addr"),  # RFC 3162
        ("Framed-IPv6-Prefix", 97, "ipv6prefix"),
        ("Error-Cause", 101, "integer"),  # RFC 5176
    ],
)
def test_attributes_lns_needs(name, number, kind):
    definition = dictionary().attributes[name]
    assert (definition.code, definition.type, definition.vendor) == (number, kind, "")


def test_microsoft_dns_vsas():
    rad_dict = dictionary()
    assert rad_dict.vendors.GetForward("Microsoft") == 311
    for name, number in (("MS-Primary-DNS-Server", 28), ("MS-Secondary-DNS-Server", 29)):
        definition = rad_dict.attributes[name]
        assert (definition.vendor, definition.code, definition.type) == (
            "Microsoft",
            number,
            "ipaddr",
        )


def test_tunnel_attributes_are_tagged_and_tunnel_password_salted():
    rad_dict = dictionary()
    for name in ("Tunnel-Type", "Tunnel-Medium-Type", "Tunnel-Client-Endpoint"):
        assert rad_dict.attributes[name].has_tag
    assert rad_dict.attributes["Tunnel-Password"].encrypt == 2
    assert rad_dict.attributes["User-Password"].encrypt == 1


def test_nothing_skipped_by_pyrad():
    assert dictionary().skipped_attributes == set()


def test_same_numbers_as_freeradius(freeradius_binary):
    # Names and numbers agree with the dictionaries FreeRADIUS reads our users file with.
    ours, our_values = our_definitions()
    files = [*sorted(FREERADIUS_DICTIONARIES.glob("dictionary.rfc*"))]
    theirs, their_values = read_definitions(
        [*files, FREERADIUS_DICTIONARIES / "dictionary.microsoft"]
    )
    assert {name: theirs.get(name) for name in ours} == ours
    differing = {
        key: (number, their_values.get(key))
        for key, number in our_values.items()
        if their_values.get(key) not in (None, number)
    }
    assert differing == {}
    # Every value of ours is known to FreeRADIUS under the same name, or reported here.
    unknown = sorted(key for key in our_values if key not in their_values)
    assert unknown == []
