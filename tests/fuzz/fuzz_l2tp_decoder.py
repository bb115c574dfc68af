# Invariant: for any bytes, decode_packet and decode_message (with and without a tunnel
# secret) either return or raise MalformedPacket, nothing else; a packet that decodes
# re-frames to the same packet, and a control message that decodes re-encodes without
# error and decodes back to the same message.
"""Atheris harness for the L2TP v2 decoders (RFC 2661 sections 3.1 and 4).

Each input is tried three ways: as a packet (header, then its body as AVPs), as a bare
message body, and as a body whose H-bit AVPs the harness hides itself with the tunnel
secret first. The third way lets the fuzzer mutate the plaintext of hidden AVPs; random
ciphertext almost never unhides to anything the value decoders accept.

    python -m tests.fuzz.fuzz_l2tp_decoder -max_total_time=60    # libFuzzer flags pass through
    python -m tests.fuzz.fuzz_l2tp_decoder --write-corpus         # regenerate corpus_l2tp/

(from the repository's root, so ``lns`` is this checkout's).

Unless ``-seed_inputs=`` is given, the fuzzer starts from the real messages in
``corpus_l2tp/`` (written by ``--write-corpus`` from :func:`seed_inputs`); they are
passed as seed inputs, so a run never writes into the committed corpus.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from lns.l2tp.avp import AttributeType, MessageType, ResultCode, make
    from lns.l2tp.header import ControlPacket, decode_packet, encode_control, encode_data
    from lns.l2tp.hidden import hide
    from lns.l2tp.message import ControlMessage, decode_message, encode_message
    from lns.l2tp.wire import MalformedPacket

CORPUS = Path(__file__).resolve().parent / "corpus_l2tp"
SECRET = b"fuzz-secret"  # the seed corpus hides AVPs with this secret


def _fixed_vector(count: int) -> bytes:
    return b"\x5a" * count


def check_message(payload: bytes, secret: bytes | None) -> None:
    try:
        message = decode_message(payload, secret)
    except MalformedPacket:
        return
    body = encode_message(message, secret, _fixed_vector)
    assert decode_message(body, secret) == message, (message, body)


def hide_marked_avps(body: bytes) -> bytes:
    """Hide, with SECRET and the last plain Random Vector, every AVP whose H bit is set."""
    out = []
    pos = 0
    vector = b""
    while pos + 6 <= len(body):
        bits, vendor, attribute = struct.unpack_from("!HHH", body, pos)
        length = bits & 0x03FF
        if length < 6 or pos + length > len(body):
            break
        value = body[pos + 6 : pos + length]
        if bits & 0x4000:
            if vector:
                value = hide(attribute, value, SECRET, vector)
        elif vendor == 0 and attribute == AttributeType.RANDOM_VECTOR:
            vector = value
        if 6 + len(value) > 0x03FF:
            break
        out.append(struct.pack("!HHH", (bits & 0xFC00) | (6 + len(value)), vendor, attribute))
        out.append(value)
        pos += length
    return b"".join(out) + body[pos:]


def TestOneInput(data: bytes) -> None:
    try:
        packet = decode_packet(data)
    except MalformedPacket:
        packet = None
    if isinstance(packet, ControlPacket):
        framed = encode_control(
            packet.tunnel_id, packet.session_id, packet.ns, packet.nr, packet.payload
        )
        assert decode_packet(framed) == packet
        for secret in (None, SECRET):
            check_message(packet.payload, secret)
    elif packet is not None:
        nr = packet.nr if packet.nr is not None else 0
        framed = encode_data(
            packet.tunnel_id,
            packet.session_id,
            packet.payload,
            packet.ns,
            nr,
            priority=packet.priority,
        )
        assert decode_packet(framed) == packet
    # The same bytes as a bare message body reach the AVP parser without a header.
    for secret in (None, SECRET):
        check_message(data, secret)
    check_message(hide_marked_avps(data), SECRET)


def seed_inputs() -> dict[str, bytes]:
    """Real packets, framed as a LAC would send them, named for the corpus directory."""
    a = AttributeType
    sccrq = ControlMessage(
        MessageType.SCCRQ,
        (
            make(a.PROTOCOL_VERSION, 0x0100),
            make(a.HOST_NAME, "lac-01"),
            make(a.FRAMING_CAPABILITIES, 3),
            make(a.BEARER_CAPABILITIES, 0),
            make(a.FIRMWARE_REVISION, 0x0101),
            make(a.VENDOR_NAME, "lacsim"),
            make(a.ASSIGNED_TUNNEL_ID, 42),
            make(a.RECEIVE_WINDOW_SIZE, 8),
            make(a.CHALLENGE, bytes(range(16))),
            make(a.TIE_BREAKER, bytes(range(8))),
        ),
    )
    icrq = ControlMessage(
        MessageType.ICRQ,
        (
            make(a.ASSIGNED_SESSION_ID, 7),
            make(a.CALL_SERIAL_NUMBER, 1),
            make(a.BEARER_TYPE, 2),
            make(a.CALLING_NUMBER, "8944501234567890123"),
            make(a.CALLED_NUMBER, "iot.apn"),
            make(a.SUB_ADDRESS, "1"),
        ),
    )
    iccn = ControlMessage(
        MessageType.ICCN,
        (
            make(a.TX_CONNECT_SPEED, 64000),
            make(a.FRAMING_TYPE, 1),
            make(a.INITIAL_RECEIVED_LCP_CONFREQ, b"\x01\x04\x05\xaa\x05\x06\x1a\x2b\x3c\x4d"),
            make(a.LAST_SENT_LCP_CONFREQ, b"\x03\x05\xc2\x23\x05\x05\x06\x55\x66\x77\x88"),
            make(a.LAST_RECEIVED_LCP_CONFREQ, b"\x01\x04\x05\xaa\x05\x06\x1a\x2b\x3c\x4d"),
            make(a.PROXY_AUTHEN_TYPE, 2),
            make(a.PROXY_AUTHEN_NAME, b"8944501234567890123", hidden=True),
            make(a.PROXY_AUTHEN_CHALLENGE, bytes(range(16))),
            make(a.PROXY_AUTHEN_ID, 5),
            make(a.PROXY_AUTHEN_RESPONSE, bytes(range(160, 176)), hidden=True),
            make(a.RX_CONNECT_SPEED, 64000),
            make(a.SEQUENCING_REQUIRED, None),
        ),
    )
    cdn = ControlMessage(
        MessageType.CDN,
        (
            make(a.RESULT_CODE, ResultCode(3, 0, "idle timeout")),
            make(a.ASSIGNED_SESSION_ID, 7),
        ),
    )
    stopccn = ControlMessage(
        MessageType.StopCCN,
        (make(a.ASSIGNED_TUNNEL_ID, 42), make(a.RESULT_CODE, ResultCode(1))),
    )
    ppp = b"\xff\x03\xc0\x21\x01\x01\x00\x0e\x01\x04\x05\xaa\x05\x06\x1a\x2b\x3c\x4d"

    def control(message: ControlMessage, ns: int) -> bytes:
        body = encode_message(message, SECRET, _fixed_vector)
        return encode_control(42, 7 if message.message_type in (10, 12, 14) else 0, ns, 1, body)

    def marked(message: ControlMessage) -> bytes:
        # The body in plaintext with the H bit set where the message hides: input for
        # hide_marked_avps. The Random Vector goes right after the Message Type.
        plain = ControlMessage(
            message.message_type,
            tuple(make(AttributeType(avp.attribute), avp.value) for avp in message.avps),
        )
        body = encode_message(plain)
        out = [
            body[:8],
            encode_message(ControlMessage(0, (make(a.RANDOM_VECTOR, b"\x5a" * 16),)))[8:],
        ]
        pos = 8
        for avp in message.avps:
            bits, vendor, attribute = struct.unpack_from("!HHH", body, pos)
            length = bits & 0x03FF
            hidden_bit = 0x4000 if avp.hidden else 0
            out.append(struct.pack("!HHH", bits | hidden_bit, vendor, attribute))
            out.append(body[pos + 6 : pos + length])
            pos += length
        return b"".join(out)

    return {
        "body-iccn-marked": marked(iccn),
        "body-icrq-marked": marked(
            ControlMessage(
                MessageType.ICRQ,
                tuple(
                    make(AttributeType(avp.attribute), avp.value, hidden=True) for avp in icrq.avps
                ),
            )
        ),
        "sccrq": control(sccrq, 0),
        "icrq": control(icrq, 1),
        "iccn-hidden": control(iccn, 2),
        "cdn": control(cdn, 3),
        "stopccn": control(stopccn, 4),
        "hello": control(ControlMessage(MessageType.HELLO), 5),
        "zlb": encode_control(42, 0, 6, 5, b""),
        "data-plain": encode_data(42, 7, ppp),
        "data-all-fields": encode_data(
            42, 7, ppp, 3, 0, with_length=True, offset_pad=2, priority=True
        ),
    }


def write_corpus() -> None:
    CORPUS.mkdir(exist_ok=True)
    for name, data in seed_inputs().items():
        (CORPUS / name).write_bytes(data)


def main() -> None:
    argv = list(sys.argv)
    if "--write-corpus" in argv:
        write_corpus()
        return
    if not any(arg.startswith("-seed_inputs=") for arg in argv) and CORPUS.is_dir():
        seeds = ",".join(str(path) for path in sorted(CORPUS.iterdir()) if path.is_file())
        argv.append(f"-seed_inputs={seeds}")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
