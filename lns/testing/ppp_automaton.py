"""A scripted option policy and packet helpers for tests of the RFC 1661 automaton
(`lns.ppp.automaton`): the peer's Configure-Request, Ack, Nak and Reject as packets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lns.ppp.automaton import Verdict
from lns.ppp.packet import Code, ControlPacket, Option, encode_options

MRU = 1  # RFC 1661 section 6.1


def mru(value: int) -> Option:
    return Option(MRU, value.to_bytes(2, "big"))


def ack_all(options: list[Option]) -> Verdict:
    return Verdict("ack", tuple(options))


class Policy:
    """A scripted OptionPolicy that records every callback.

    It asks for ``wanted``; on a Nak it adopts the suggested values, on a
    Reject it drops the rejected types. ``judging`` decides the peer's requests.
    """

    def __init__(
        self,
        wanted: Sequence[Option] = (mru(1500),),
        judging: Callable[[list[Option]], Verdict] = ack_all,
    ) -> None:
        self.wanted = list(wanted)
        self.judging = judging
        self.requests = 0
        self.judged: list[list[Option]] = []
        self.naks: list[list[Option]] = []
        self.rejects: list[list[Option]] = []
        self.acks: list[list[Option]] = []

    def request(self) -> list[Option]:
        self.requests += 1
        return list(self.wanted)

    def judge(self, options: list[Option]) -> Verdict:
        self.judged.append(options)
        return self.judging(options)

    def nak_received(self, options: list[Option]) -> None:
        self.naks.append(options)
        hints = {option.type: option for option in options}
        self.wanted = [hints.get(option.type, option) for option in self.wanted]

    def reject_received(self, options: list[Option]) -> None:
        self.rejects.append(options)
        rejected = {option.type for option in options}
        self.wanted = [option for option in self.wanted if option.type not in rejected]

    def acked(self, options: list[Option]) -> None:
        self.acks.append(options)


def configure_request(identifier: int, *options: Option) -> ControlPacket:
    return ControlPacket(Code.CONFIGURE_REQUEST, identifier, encode_options(options))


def reply(code: Code, request: ControlPacket, *options: Option) -> ControlPacket:
    """A peer's Configure-Ack/Nak/Reject of ``request`` (the Ack echoes its options)."""
    data = request.data if code == Code.CONFIGURE_ACK else encode_options(options)
    return ControlPacket(code, request.identifier, data)
