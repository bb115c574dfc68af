"""aaa.radius.packet: requests built right, replies verified by our own code.

Golden vectors from RFC 2865 section 7.1, annotated field by field; the rest is
checked against pyrad acting as the server (an implementation other than ours).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest
from pyrad import packet as pyrad_packet

from aaa.radius.packet import (
    BadMessageAuthenticator,
    BadResponseAuthenticator,
    Code,
    EncodedRequest,
    RadiusPacketError,
    Request,
    access_request,
    accounting_request,
    decode_reply,
    dictionary,
    encode_request,
    message_authenticator,
    status_server,
)
from lns.testing.radius_fakes import (
    forge,
    parse_request,
    reply_bytes,
    strip_message_authenticator,
    with_response_authenticator,
)

SECRET = b"s3cret-for-tests"

# RFC 2865 section 7.1: "nemo" logs in with password "arctangent", secret "xyzzy5461".
RFC_SECRET = b"xyzzy5461"
RFC_AUTHENTICATOR = bytes.fromhex("0f403f9473978057bd83d5cb98f4227a")
RFC_REQUEST = bytes.fromhex(
    "01"  # Code: Access-Request
    "00"  # Identifier: 0
    "0038"  # Length: 56
    "0f403f9473978057bd83d5cb98f4227a"  # Request Authenticator
    "0106" "6e656d6f"  # User-Name: "nemo"
    "0212" "0dbe708d93d413ce3196e43f782a0aee"  # User-Password: "arctangent", hidden
    "0406" "c0a80110"  # NAS-IP-Address: 192.168.1.16
    "0506" "00000003"  # NAS-Port: 3
)  # fmt: skip
RFC_ACCEPT = bytes.fromhex(
    "02"  # Code: Access-Accept
    "00"  # Identifier: 0
    "0026"  # Length: 38
    "86fe220e7624ba2a1005f6bf9b55e0b2"  # Response Authenticator
    "0606" "00000001"  # Service-Type: Login-User
    "0f06" "00000000"  # Login-Service: Telnet
    "0e06" "c0a80103"  # Login-IP-Host: 192.168.1.3
)  # fmt: skip


def without_message_authenticator(data: bytes) -> bytes:
    """The packet minus a leading Message-Authenticator attribute, Length fixed."""
    assert data[20:22] == b"\x50\x12", "Message-Authenticator is not the first attribute"
    rest = data[:20] + data[38:]
    return rest[:2] + len(rest).to_bytes(2, "big") + rest[4:]


def rfc_request() -> Request:
    return access_request(
        [
            ("User-Name", "nemo"),
            ("NAS-IP-Address", ipaddress.IPv4Address("192.168.1.16")),
            ("NAS-Port", 3),
        ],
        password=b"arctangent",
    )


# --- requests -------------------------------------------------------------------------------


def test_rfc2865_access_request_vector():
    encoded = encode_request(rfc_request(), 0, RFC_SECRET, authenticator=RFC_AUTHENTICATOR)
    assert encoded.authenticator == RFC_AUTHENTICATOR
    # Ours has a Message-Authenticator first; without it, the RFC's octets exactly.
    assert without_message_authenticator(encoded.data) == RFC_REQUEST


def test_access_request_message_authenticator_is_first_and_valid():
    encoded = encode_request(rfc_request(), 7, SECRET)
    data = encoded.data
    assert data[20] == 80
    assert data[21] == 18
    # RFC 3579 section 3.2, by hand: HMAC-MD5 over the packet with the value zeroed.
    zeroed = data[:22] + bytes(16) + data[38:]
    assert data[22:38] == hmac.new(SECRET, zeroed, hashlib.md5).digest()
    # And as a server (pyrad) sees it.
    server = parse_request(data, SECRET)
    assert server.verify_message_authenticator()
    assert server.PwDecrypt(server[2][0]) == "arctangent"
    assert server["User-Name"] == ["nemo"]


def test_request_authenticators_are_random_and_identifier_kept():
    first = encode_request(rfc_request(), 200, SECRET)
    second = encode_request(rfc_request(), 200, SECRET)
    assert first.identifier == second.identifier == first.data[1] == 200
    assert first.authenticator != second.authenticator
    assert first.data[4:20] == first.authenticator


def test_chap_password_is_identifier_then_response_with_challenge():
    challenge = bytes(range(16, 32))
    response = hashlib.md5(bytes([42]) + b"chap-secret" + challenge).digest()
    request = access_request([("User-Name", "sim")], chap=(42, challenge, response))
    server = parse_request(encode_request(request, 1, SECRET).data, SECRET)
    assert server["CHAP-Password"] == [bytes([42]) + response]
    assert server["CHAP-Challenge"] == [challenge]
    assert "User-Password" not in server
    assert server.VerifyChapPasswd(b"chap-secret")
    assert not server.VerifyChapPasswd(b"wrong")


def test_long_pap_password_hidden_in_several_blocks():
    password = b"p" * 40  # three 16-octet blocks, chained (RFC 2865 section 5.2)
    request = access_request([("User-Name", "sim")], password=password)
    server = parse_request(encode_request(request, 1, SECRET).data, SECRET)
    assert len(server[2][0]) == 48
    assert server.PwDecrypt(server[2][0]) == password.decode()


def test_tagged_tunnel_attributes_and_enumerations_reach_the_server():
    request = access_request(
        [
            ("User-Name", "sim"),
            ("Tunnel-Type:1", "L2TP"),
            ("Tunnel-Medium-Type:1", "IPv4"),
            ("Tunnel-Client-Endpoint:1", "198.51.100.7"),
            ("NAS-Port-Type", "Virtual"),
            ("Service-Type", "Framed-User"),
        ],
        password=b"x",
    )
    data = encode_request(request, 1, SECRET).data
    # Tunnel-Type: type 64, length 6, tag 1, value 3 (L2TP) in the remaining 3 octets.
    assert bytes.fromhex("4006" "01000003") in data  # fmt: skip
    server = parse_request(data, SECRET)
    assert server["Tunnel-Type:1"] == ["L2TP"]
    assert server["Tunnel-Client-Endpoint:1"] == ["198.51.100.7"]
    assert server["NAS-Port-Type"] == ["Virtual"]


def test_accounting_request_authenticator_is_computed():
    request = accounting_request([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "abc")])
    encoded = encode_request(request, 9, SECRET)
    data = encoded.data
    assert data[4:20] == hashlib.md5(data[:4] + bytes(16) + data[20:] + SECRET).digest()
    server = pyrad_packet.AcctPacket(packet=data, secret=SECRET, dict=dictionary())
    assert server.VerifyAcctRequest()


def test_status_server_is_signed():
    encoded = encode_request(status_server([("NAS-Identifier", "lns")]), 3, SECRET)
    assert encoded.data[0] == Code.STATUS_SERVER
    assert parse_request(encoded.data, SECRET).verify_message_authenticator()


@pytest.mark.parametrize(
    ("build", "problem"),
    [
        (lambda: access_request([("No-Such-Attribute", "x")]), "not in the dictionary"),
        (lambda: access_request([("User-Name", "x" * 300)]), "253"),
        (lambda: access_request([("NAS-Port", "not a number")]), "cannot encode"),
    ],
)
def test_unencodable_requests_raise_radius_packet_error(build, problem):
    with pytest.raises(RadiusPacketError, match=problem) as caught:
        encode_request(build(), 1, SECRET)
    assert SECRET.decode() not in str(caught.value)


def test_access_request_argument_checks():
    with pytest.raises(RadiusPacketError):
        access_request([], password=b"x", chap=(1, b"c", bytes(16)))
    with pytest.raises(RadiusPacketError):
        access_request([], chap=(1, b"c", bytes(15)))
    with pytest.raises(RadiusPacketError, match="128"):
        access_request([], password=bytes(129))


def test_secrets_never_in_reprs():
    request = access_request([("User-Name", "sim")], password=b"hunter2-password")
    chap = access_request([("User-Name", "sim")], chap=(1, b"challenge", b"R" * 16))
    encoded = encode_request(request, 1, SECRET)
    for text in (repr(request), repr(chap), repr(encoded), str(request)):
        assert "hunter2" not in text
        assert "RRRR" not in text
        assert SECRET.decode() not in text
    assert "User-Password=***" in repr(request)
    assert "CHAP-Password=***" in repr(chap)


# --- replies --------------------------------------------------------------------------------


def rfc_encoded_request() -> EncodedRequest:
    return EncodedRequest(Code.ACCESS_REQUEST, 0, RFC_AUTHENTICATOR, RFC_REQUEST)


def test_rfc2865_access_accept_vector():
    reply = decode_reply(RFC_ACCEPT, rfc_encoded_request(), RFC_SECRET)
    assert reply.code is Code.ACCESS_ACCEPT
    assert reply.attributes == (
        ("Service-Type", 1),
        ("Login-Service", 0),
        ("Login-IP-Host", ipaddress.IPv4Address("192.168.1.3")),
    )
    assert not reply.message_authenticator


def test_rfc2865_access_accept_with_wrong_secret_or_altered():
    with pytest.raises(BadResponseAuthenticator):
        decode_reply(RFC_ACCEPT, rfc_encoded_request(), b"xyzzy5462")
    altered = RFC_ACCEPT[:-1] + b"\x04"  # Login-IP-Host 192.168.1.4
    with pytest.raises(BadResponseAuthenticator):
        decode_reply(altered, rfc_encoded_request(), RFC_SECRET)


def signed_exchange(**attributes):
    encoded = encode_request(rfc_request(), 17, SECRET)
    return encoded, reply_bytes(encoded.data, SECRET, attributes=attributes)


def test_signed_reply_verified_and_values_typed():
    encoded, data = signed_exchange(
        Framed_IP_Address="100.64.1.2",
        Framed_Pool="gold",
        Session_Timeout=3600,
        Class=b"\x00\xffclass",
        Framed_Route=["10.1.0.0/24 0.0.0.0 1", "10.2.0.0/16"],
        MS_Primary_DNS_Server="192.0.2.53",
    )
    reply = decode_reply(data, encoded, SECRET)
    assert reply.message_authenticator
    assert reply.ipv4("Framed-IP-Address") == ipaddress.IPv4Address("100.64.1.2")
    assert reply.string("Framed-Pool") == "gold"
    assert reply.integer("Session-Timeout") == 3600
    assert reply.octets("Class") == b"\x00\xffclass"
    assert reply.strings("Framed-Route") == ("10.1.0.0/24 0.0.0.0 1", "10.2.0.0/16")
    assert reply.ipv4("MS-Primary-DNS-Server") == ipaddress.IPv4Address("192.0.2.53")
    assert reply.first("Message-Authenticator") is None  # checked, not handed on


def test_our_message_authenticator_agrees_with_pyrad_server():
    encoded, data = signed_exchange(Reply_Message="hello")
    position = data.index(b"\x50\x12") + 2
    assert (
        message_authenticator(data, SECRET, encoded.authenticator) == data[position : position + 16]
    )


def test_forged_message_authenticator_rejected():
    encoded, data = signed_exchange()
    forged = forge(data, encoded.authenticator, SECRET)
    # The Response Authenticator alone would let it through: only the HMAC catches it.
    with pytest.raises(BadMessageAuthenticator):
        decode_reply(forged, encoded, SECRET)


def test_message_authenticator_of_another_request_rejected():
    # A signed reply replayed against another request with the same Identifier:
    # its HMAC was made with the other Request Authenticator.
    _encoded, data = signed_exchange()
    other = encode_request(rfc_request(), 17, SECRET)
    replayed = with_response_authenticator(data, other.authenticator, SECRET)
    with pytest.raises(BadMessageAuthenticator):
        decode_reply(replayed, other, SECRET)


def test_missing_message_authenticator_reported_not_rejected():
    encoded, data = signed_exchange(Reply_Message="unsigned")
    unsigned = strip_message_authenticator(data, encoded.authenticator, SECRET)
    reply = decode_reply(unsigned, encoded, SECRET)
    assert not reply.message_authenticator
    assert reply.string("Reply-Message") == "unsigned"


def test_two_message_authenticators_rejected():
    encoded, data = signed_exchange()
    position = data.index(b"\x50\x12")
    doubled = data + data[position : position + 18]
    doubled = with_response_authenticator(doubled, encoded.authenticator, SECRET)
    with pytest.raises(BadMessageAuthenticator, match="more than one"):
        decode_reply(doubled, encoded, SECRET)


def test_short_message_authenticator_rejected():
    encoded = encode_request(rfc_request(), 17, SECRET)
    data = bytes([2, 17, 0, 0]) + bytes(16) + bytes([80, 10]) + bytes(8)
    data = with_response_authenticator(data, encoded.authenticator, SECRET)
    with pytest.raises(BadMessageAuthenticator, match="8 octets"):
        decode_reply(data, encoded, SECRET)


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda d: d[:19], "shorter than a RADIUS header"),
        (lambda d: d[:2] + b"\x00\x13" + d[4:], "bad Length"),
        (lambda d: d[:2] + (len(d) + 1).to_bytes(2, "big") + d[4:], "bad Length"),
        (lambda d: d[:1] + b"\x63" + d[2:], "identifier 99"),
        (lambda d: b"\x05" + d[1:], "ACCOUNTING_RESPONSE is no reply to ACCESS_REQUEST"),
        (lambda d: b"\x09" + d[1:], "unknown code 9"),
    ],
)
def test_malformed_replies_rejected(mangle, problem):
    encoded, data = signed_exchange()
    with pytest.raises(RadiusPacketError, match=problem):
        decode_reply(mangle(data), encoded, SECRET)


def test_bad_attribute_length_rejected_after_authentication():
    encoded = encode_request(rfc_request(), 17, SECRET)
    data = bytes([2, 17, 0, 0]) + bytes(16) + bytes([18, 9]) + b"abc"
    data = with_response_authenticator(data, encoded.authenticator, SECRET)
    with pytest.raises(RadiusPacketError, match="bad length"):
        decode_reply(data, encoded, SECRET)


def test_padding_after_length_ignored():
    encoded, data = signed_exchange(Reply_Message="padded")
    reply = decode_reply(data + b"\x00" * 7, encoded, SECRET)
    assert reply.string("Reply-Message") == "padded"


def test_undecodable_and_unknown_attributes_kept_apart():
    encoded = encode_request(rfc_request(), 17, SECRET)
    body = (
        bytes([8, 5]) + b"\x01\x02\x03"  # Framed-IP-Address of 3 octets: undecodable
        + bytes([200, 4]) + b"hi"  # type 200: not in our dictionary
        + bytes([26, 12]) + (9).to_bytes(4, "big") + bytes([1, 6]) + b"cisc"  # vendor 9
        + bytes([18, 4]) + b"ok"  # Reply-Message
    )  # fmt: skip
    data = with_response_authenticator(
        bytes([2, 17, 0, 0]) + bytes(16) + body, encoded.authenticator, SECRET
    )
    reply = decode_reply(data, encoded, SECRET)
    assert reply.undecodable == ("Framed-IP-Address",)
    assert (200, b"hi") in reply.unknown
    assert ((9, 1), b"cisc") in reply.unknown
    assert reply.attributes == (("Reply-Message", "ok"),)


def test_exceptions_never_carry_the_secret():
    encoded, data = signed_exchange()
    # The last octet altered (XOR, so it changes whatever its random value was).
    tampered = data[:-1] + bytes([data[-1] ^ 0x01])
    for bad in (data[:10], forge(data, encoded.authenticator, SECRET), tampered):
        with pytest.raises(RadiusPacketError) as caught:
            decode_reply(bad, encoded, SECRET)
        assert SECRET.decode() not in str(caught.value)
        assert SECRET.decode() not in repr(caught.value)
