"""Properties over random histories: replay rebuilds the store; a log cut anywhere replays to
the state after some prefix of its records; a flipped byte is never silently accepted. Each
holds for logs of single entries (as older versions wrote) and of batches (one per turn)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.log.record import MAGIC, Reader, encode_batch, encode_entry
from kvd.log.recovery import replay
from kvd.state.node import Change
from kvd.state.store import Entry, Store

ops = st.lists(
    st.tuples(
        st.sampled_from([b"a", b"b", b"c", b"\x00\xff"]),
        st.one_of(st.none(), st.binary(max_size=40)),
        st.integers(1, 1 << 40),  # peers' stamps arrive in any order
        st.sampled_from(["n1", "n2", "n3"]),
        st.sampled_from([0, 1, 1 << 45]),
        st.integers(0, 1000),
    ),
    max_size=30,
)


def log_of(history: list, turn: int = 0) -> tuple[bytes, list[int]]:
    """The log bytes and the offset where each entry's record ends: single entries, or
    with `turn`, batches of up to `turn` entries (the entries of one batch end together)."""
    data, ends = bytearray(MAGIC), []
    if not turn:
        for key, value, stamp, origin, expires_at, seq in history:
            data += encode_entry(key, Entry(value, stamp, origin, expires_at), seq)
            ends.append(len(data))
        return bytes(data), ends
    for i in range(0, len(history), turn):
        data += encode_batch([Change(key, Entry(value, stamp, origin, expires_at), None, seq)
                              for key, value, stamp, origin, expires_at, seq
                              in history[i:i + turn]])
        ends += [len(data)] * len(history[i:i + turn])
    return bytes(data), ends


forms = pytest.mark.parametrize("turn", [0, 1, 4], ids=["single", "batch1", "batch4"])


def applied(history: list) -> Store:
    store = Store()
    for key, value, stamp, origin, expires_at, _ in history:
        store.merge(key, Entry(value, stamp, origin, expires_at))
    return store


@forms
@settings(max_examples=150, deadline=None)
@given(ops)
def test_replay_rebuilds_the_store(turn: int, history: list) -> None:
    data, _ = log_of(history, turn)
    store = Store()
    result = replay(data, store)
    assert result.damage is None and result.records == len(history)
    assert dict(store.items()) == dict(applied(history).items())
    assert store.digest == applied(history).digest


@forms
@settings(max_examples=150, deadline=None)
@given(ops, st.integers(0, 10_000))
def test_a_log_cut_anywhere_replays_a_prefix(turn: int, history: list, cut: int) -> None:
    data, ends = log_of(history, turn)
    cut = len(MAGIC) + cut % (len(data) - len(MAGIC) + 1)
    store = Store()
    result = replay(data[:cut], store)
    complete = sum(1 for end in ends if end <= cut)
    assert result.records == complete
    assert dict(store.items()) == dict(applied(history[:complete]).items())
    assert (result.damage is None) == (cut in [len(MAGIC), *ends])
    assert result.damage is None or result.damage.torn


@forms
@settings(max_examples=150, deadline=None)
@given(ops.filter(lambda h: len(h) >= 1), st.integers(0, 10_000), st.integers(1, 255))
def test_a_flipped_byte_is_never_read_as_good(turn: int, history: list, where: int,
                                              mask: int) -> None:
    data, ends = log_of(history, turn)
    where = len(MAGIC) + where % (len(data) - len(MAGIC))
    bad = bytearray(data)
    bad[where] ^= mask
    reader = Reader(bytes(bad))
    good = list(reader)
    hit = next(i for i, end in enumerate(ends) if where < end)  # the first entry it hit
    assert len(good) == hit
    assert reader.damage is not None
    assert reader.damage.torn == (ends[hit] == len(data))  # the last record was hit
