"""Properties over random histories: replay rebuilds the store; a log cut anywhere replays to
the state after some prefix of its records; a flipped byte is never silently accepted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.log.record import MAGIC, Reader, encode_entry
from kvd.log.recovery import replay
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


def log_of(history: list) -> tuple[bytes, list[int]]:
    """The log bytes and the offset where each record ends."""
    data, ends = bytearray(MAGIC), []
    for key, value, stamp, origin, expires_at, seq in history:
        data += encode_entry(key, Entry(value, stamp, origin, expires_at), seq)
        ends.append(len(data))
    return bytes(data), ends


def applied(history: list) -> Store:
    store = Store()
    for key, value, stamp, origin, expires_at, _ in history:
        store.merge(key, Entry(value, stamp, origin, expires_at))
    return store


@settings(max_examples=150, deadline=None)
@given(ops)
def test_replay_rebuilds_the_store(history: list) -> None:
    data, _ = log_of(history)
    store = Store()
    result = replay(data, store)
    assert result.damage is None and result.records == len(history)
    assert dict(store.items()) == dict(applied(history).items())
    assert store.digest == applied(history).digest


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(0, 10_000))
def test_a_log_cut_anywhere_replays_a_prefix(history: list, cut: int) -> None:
    data, ends = log_of(history)
    cut = len(MAGIC) + cut % (len(data) - len(MAGIC) + 1)
    store = Store()
    result = replay(data[:cut], store)
    complete = sum(1 for end in ends if end <= cut)
    assert result.records == complete
    assert dict(store.items()) == dict(applied(history[:complete]).items())
    assert (result.damage is None) == (cut in [len(MAGIC), *ends])
    assert result.damage is None or result.damage.torn


@settings(max_examples=150, deadline=None)
@given(ops.filter(lambda h: len(h) >= 1), st.integers(0, 10_000), st.integers(1, 255))
def test_a_flipped_byte_is_never_read_as_good(history: list, where: int, mask: int) -> None:
    data, ends = log_of(history)
    where = len(MAGIC) + where % (len(data) - len(MAGIC))
    bad = bytearray(data)
    bad[where] ^= mask
    reader = Reader(bytes(bad))
    good = list(reader)
    hit = next(i for i, end in enumerate(ends) if where < end)  # the record that was hit
    assert len(good) == hit
    assert reader.damage is not None
    assert reader.damage.torn == (hit == len(history) - 1)
