"""The Raft message codec: round trips, pinned bytes, and decoding whatever a port receives."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvd.raft.config import ConfChange, Config, ConfOp
from kvd.raft.errors import RaftProtocolError
from kvd.raft.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    Snapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    decode,
    encode,
)
from shared.errors import KvError, ProtocolError

nodes = st.text(min_size=1, max_size=12)
uints = st.integers(0, (1 << 63) - 1)
small = st.integers(0, 1000)
blobs = st.binary(max_size=40)


@st.composite
def entry_batches(draw: st.DrawFn) -> tuple[int, int, int, list[Entry]]:
    """(term, prev_index, prev_term, entries) that a leader could send."""
    prev_index, prev_term = draw(small), draw(small)
    term = prev_term + draw(small)
    entries, t = [], prev_term
    for k in range(draw(st.integers(0, 5))):
        t = draw(st.integers(t, term))
        kind = draw(st.sampled_from(EntryKind))
        data = (ConfChange(draw(st.sampled_from(ConfOp)), draw(nodes), draw(blobs)).encode()
                if kind is EntryKind.CONFIG else draw(blobs))
        entries.append(Entry(t, prev_index + 1 + k, kind, data))
    return term, prev_index, prev_term, entries


@st.composite
def messages(draw: st.DrawFn) -> Message:
    src, dst, term = draw(nodes), draw(nodes), draw(uints)
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return VoteRequest(src, dst, term, draw(uints), draw(uints), draw(st.booleans()),
                           draw(st.booleans()))
    if kind == 1:
        return VoteResponse(src, dst, term, draw(st.booleans()), draw(st.booleans()))
    if kind == 2:
        t, prev, prev_term, entries = draw(entry_batches())
        return AppendEntries(src, dst, t, prev, prev_term, entries, draw(uints))
    if kind == 3:
        return AppendResponse(src, dst, term, draw(uints), draw(st.booleans()), draw(uints),
                              draw(uints))
    if kind == 4:
        return Heartbeat(src, dst, term, draw(uints), draw(blobs))
    if kind == 5:
        return HeartbeatResponse(src, dst, term, draw(blobs))
    if kind == 6:
        voters = draw(st.frozensets(nodes, max_size=5))
        learners = draw(st.frozensets(nodes, max_size=3)) - voters
        snap = Snapshot(draw(uints), draw(uints), Config(voters, learners), draw(blobs))
        return InstallSnapshot(src, dst, term, snap)
    return TimeoutNow(src, dst, term)


@given(messages())
@settings(max_examples=400)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


def test_the_bytes_are_pinned() -> None:
    """The wire format is a protocol: changing these bytes breaks mixed-version clusters."""
    msg = AppendEntries("n1", "n2", 3, 4, 2, [Entry(3, 5, EntryKind.NORMAL, b"x")], 4)
    # array(9): version 1, type 3 (APPEND), "n1", "n2", term 3, prev 4, prev term 2,
    # [[term 3, index 5, NORMAL, bin "x"]], commit 4
    assert encode(msg) == bytes.fromhex("99 01 03 a26e31 a26e32 03 04 02 91 94 03 05 00 c40178 04"
                                        .replace(" ", ""))
    assert encode(TimeoutNow("a", "b", 7)) == bytes.fromhex("950108a161a16207")


# -- hostile input ----------------------------------------------------------------------------


def _decodes_or_refuses(frame: bytes) -> None:
    try:
        msg = decode(frame)
    except RaftProtocolError as e:
        assert isinstance(e, ProtocolError) and isinstance(e, KvError)
        assert e.code == "PROTOCOL"
        return
    assert encode(msg) is not None  # whatever decodes is a message the core can take


@given(st.binary(max_size=300))
@settings(max_examples=500, suppress_health_check=list(HealthCheck))
def test_random_bytes_never_crash_decode(frame: bytes) -> None:
    _decodes_or_refuses(frame)


_json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=10,
)


@given(st.lists(_json_like, max_size=9))
@settings(max_examples=500, suppress_health_check=list(HealthCheck))
def test_any_msgpack_array_never_crashes_decode(body: list) -> None:
    _decodes_or_refuses(msgpack.packb([1, *body], use_bin_type=True))


@given(st.integers(1, 8), st.lists(_json_like, max_size=9))
@settings(max_examples=500, suppress_health_check=list(HealthCheck))
def test_right_type_wrong_fields_never_crash_decode(kind: int, fields: list) -> None:
    _decodes_or_refuses(msgpack.packb([1, kind, "a", "b", 1, *fields], use_bin_type=True))


@given(messages(), st.data())
@settings(max_examples=800, suppress_health_check=list(HealthCheck))
def test_damaged_frames_never_crash_decode(msg: Message, data: st.DataObject) -> None:
    frame = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    _decodes_or_refuses(bytes(frame[:cut]))


@pytest.mark.parametrize(("frame", "why"), [
    ([2, 8, "a", "b", 1], "version"),
    ([1, 99, "a", "b", 1], "unknown message type"),
    ([1, 8, "a", "b", 1, 5], "fields"),
    ([1, 8, "", "b", 1], "node id"),
    ([1, 8, "a", "b", -1], "unsigned"),
    ([1, 8, "a", "b", True], "unsigned"),
    ([1, 2, "a", "b", 1, 1, False], "boolean"),
    ([1, 3, "a", "b", 5, 1, 1, [[1, 3, 0, b""]], 0], "out of order"),  # index 3 after 1
    ([1, 3, "a", "b", 5, 1, 1, [[9, 2, 0, b""]], 0], "out of order"),  # term past the sender's
    ([1, 3, "a", "b", 5, 1, 3, [[2, 2, 0, b""]], 0], "out of order"),  # term goes down
    ([1, 3, "a", "b", 5, 1, 1, [[1, 2, 1, b"junk"]], 0], "config change"),
    ([1, 3, "a", "b", 5, 1, 1, [[1, 2, 7, b""]], 0], "entry kind"),
    ([1, 7, "a", "b", 5, [1, 1, ["x"], ["x"], b""]], "both voter and learner"),
])
def test_malformed_messages_say_what_is_wrong(frame: list, why: str) -> None:
    with pytest.raises(RaftProtocolError, match=why):
        decode(msgpack.packb(frame, use_bin_type=True))


def test_config_changes_decode_only_from_their_own_encoding() -> None:
    change = ConfChange(ConfOp.PROMOTE, "n4", b"10.0.0.4:7000")
    assert ConfChange.decode(change.encode()) == change
    for junk in (b"", b"\x90", msgpack.packb([9, "n", b""]), msgpack.packb([1, "", b""]),
                 msgpack.packb([1, "n", "text"])):
        with pytest.raises(ValueError):
            ConfChange.decode(junk)
