"""The message codec: round trips, and every malformed frame is one ProtocolError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import codec
from shared.codec import Batch, MsgType, Reply, ReplyKind, Request
from shared.errors import ArityError, ProtocolError, VersionError

argv = st.lists(st.binary(max_size=40), min_size=1, max_size=6)
rid = st.integers(min_value=0, max_value=2**63 - 1)


@given(rid, argv)
def test_request_round_trip(request_id: int, args: list[bytes]) -> None:
    assert codec.decode(codec.encode_request(request_id, args)) == Request(request_id, args)


@given(st.lists(st.tuples(rid, argv), min_size=1, max_size=20))
def test_batch_round_trip(items: list[tuple[int, list[bytes]]]) -> None:
    decoded = codec.decode(codec.encode_batch(items))
    assert decoded == Batch([[r, a] for r, a in items])


values = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=30) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12,
)


@given(rid, values)
def test_reply_round_trip_keeps_kind_and_value(request_id: int, value: object) -> None:
    reply = codec.decode(codec.encode_reply(request_id, value))
    assert isinstance(reply, Reply)
    assert reply.request_id == request_id
    assert reply.value == value
    assert reply.kind is codec.kind_of(value)


def test_error_reply_carries_code_and_message() -> None:
    reply = codec.decode(codec.encode_reply(7, ArityError("wrong number of arguments")))
    assert reply == Reply(7, ReplyKind.ERROR, ["WRONG_ARITY", "wrong number of arguments"])
    assert reply.is_error


def test_golden_request_bytes() -> None:
    """The wire format is a contract: these bytes must never change meaning."""
    assert codec.encode_request(3, [b"GET", b"k"]) == bytes.fromhex("94010103 92c403474554 c4016b"
                                                                     .replace(" ", ""))


def test_wrong_version_is_a_version_error() -> None:
    frame = msgpack.packb([2, MsgType.REQUEST, 1, [b"PING"]])
    with pytest.raises(VersionError, match="protocol version 2"):
        codec.decode(frame)


@pytest.mark.parametrize(
    "obj",
    [
        [], [1], [1, 1], {"a": 1}, [1, 99, 1, [b"PING"]], [1, 1, -1, [b"PING"]],
        [1, 1, 1, []], [1, 1, 1, [1, 2]], [1, 1, 1, [b"PING"], b"extra"],
        [1, 3, []], [1, 3, [[1]]], [1, 2, 1, 99, None], [1, 2, 1, 6, "not a pair"],
        [1, "type", 1, [b"PING"]], [1, 1, 1.5, [b"PING"]],
    ],
)
def test_malformed_messages_are_protocol_errors(obj: object) -> None:
    with pytest.raises(ProtocolError):
        codec.decode(msgpack.packb(obj))


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_protocol_errors(frame: bytes) -> None:
    with contextlib.suppress(ProtocolError, VersionError):
        codec.decode(frame)
