"""The store: last-writer-wins merge, TTL on a fake clock, SCAN under writes, glob, digest."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.state.store import NBUCKETS, Entry, Store, bucket_of, entry_hash

keys = st.binary(min_size=1, max_size=6)
entries = st.builds(
    Entry,
    st.none() | st.binary(max_size=8),
    st.integers(0, 50),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([0, 0, 100, 200]),
)


def digest_from_scratch(store: Store, now: int) -> int:
    d = 0
    for key, e in store.items():
        if e.value is not None:
            d ^= entry_hash(key, e)
    return d


@given(st.lists(st.tuples(keys, entries), max_size=40), st.randoms())
def test_merge_order_does_not_matter(writes: list[tuple[bytes, Entry]], rnd: random.Random) -> None:
    a, b = Store(), Store()
    for key, entry in writes:
        a.merge(key, entry)
    shuffled = writes + writes[: len(writes) // 2]  # duplicates too
    rnd.shuffle(shuffled)
    for key, entry in shuffled:
        b.merge(key, entry)
    assert a.digest == b.digest
    assert dict(a.items()) == dict(b.items())
    assert (a.live_count, a.tombstones) == (b.live_count, b.tombstones)


@given(st.lists(st.tuples(keys, entries), max_size=40))
def test_digest_is_maintained_incrementally(writes: list[tuple[bytes, Entry]]) -> None:
    store = Store()
    for key, entry in writes:
        store.merge(key, entry)
        assert store.digest == digest_from_scratch(store, 0)
    assert store.digest == 0 or store.live_count > 0


@given(st.lists(st.tuples(keys, entries), max_size=60))
def test_the_write_paths_bookkeeping_matches_a_recount(writes: list[tuple[bytes, Entry]]) -> None:
    """replace() inlines the accounting and reuses the key's CRC: it must agree with a store
    counted from scratch, bucket by bucket."""
    store = Store()
    for key, entry in writes:
        store.merge(key, entry)
        buckets = [0] * NBUCKETS
        live = tombs = 0
        for k, e in store.items():
            if e.value is None:
                tombs += 1
            else:
                live += 1
                buckets[bucket_of(k)] ^= entry_hash(k, e)
        assert (store.live_count, store.tombstones) == (live, tombs)
        assert store.bucket_digests == buckets


def test_newer_wins_ties_break_by_origin_and_tombstones_block_older_writes() -> None:
    s = Store()
    assert s.merge(b"k", Entry(b"old", 1, "a"))
    assert s.merge(b"k", Entry(b"new", 2, "a"))
    assert not s.merge(b"k", Entry(b"older", 1, "z"))
    assert s.merge(b"k", Entry(b"tie-b", 2, "b"))  # same stamp: the greater origin wins
    assert s.merge(b"k", Entry(None, 3, "a"))
    assert not s.merge(b"k", Entry(b"late", 2, "c"))
    assert s.get(b"k", 0) is None
    assert (s.live_count, s.tombstones) == (0, 1)


def test_expired_keys_vanish_at_once_and_are_reclaimed_from_the_heap() -> None:
    s = Store()
    s.merge(b"t", Entry(b"v", 1, "a", expires_at=1000))
    s.merge(b"p", Entry(b"v", 1, "a"))
    assert s.get(b"t", 999) is not None
    assert s.get(b"t", 1000) is None  # invisible at once, before any reclaim
    assert s.keys(None, 1000) == [b"p"]
    assert s.live_count == 2
    assert s.expire_due(1000) == 1
    assert (s.live_count, s.tombstones) == (1, 1)
    assert s.digest == digest_from_scratch(s, 1000)
    tomb = s.lookup(b"t")
    assert tomb is not None and tomb.value is None and tomb.stamp == 1  # same stamp: LWW holds


def test_a_rewritten_ttl_leaves_a_stale_heap_item_that_is_ignored() -> None:
    s = Store()
    s.merge(b"k", Entry(b"v", 1, "a", expires_at=100))
    s.merge(b"k", Entry(b"v", 2, "a", expires_at=500))
    assert s.expire_due(200) == 0
    assert s.get(b"k", 200) is not None
    assert s.expire_due(500) == 1
    assert s.next_expiry() is None


def test_glob_patterns() -> None:
    s = Store()
    for k in [b"user:1", b"user:22", b"order:1", b"u"]:
        s.merge(k, Entry(b"x", 1, "a"))
    assert sorted(s.keys(b"user:*", 0)) == [b"user:1", b"user:22"]
    assert sorted(s.keys(b"user:?", 0)) == [b"user:1"]
    assert sorted(s.keys(b"*:1", 0)) == [b"order:1", b"user:1"]
    assert sorted(s.keys(b"[uo]*", 0)) == [b"order:1", b"u", b"user:1", b"user:22"]
    assert len(s.keys(None, 0)) == 4


@settings(max_examples=60)
@given(
    st.sets(st.binary(min_size=1, max_size=4), min_size=1, max_size=300),
    st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=4)), max_size=200),
    st.integers(1, 50),
)
def test_scan_returns_every_key_that_lived_through_the_whole_scan(
    initial: set[bytes], churn: list[tuple[bool, bytes]], count: int
) -> None:
    s = Store()
    stamp = 1
    for k in initial:
        s.merge(k, Entry(b"v", stamp, "a"))
    stable = set(initial)
    seen: set[bytes] = set()
    cursor, steps = 0, 0
    churn_iter = iter(churn)
    while True:
        cursor, found = s.scan(cursor, None, count, 0)
        seen.update(found)
        steps += 1
        for add, key in [next(churn_iter, (True, b"")) for _ in range(5)]:
            if not key:
                continue
            stamp += 1
            s.merge(key, Entry(b"v" if add else None, stamp, "a"))
            if not add:
                stable.discard(key)
        if cursor == 0:
            break
        assert steps <= NBUCKETS
    assert stable <= seen


def test_scan_with_match_and_cursor_bounds() -> None:
    s = Store()
    for i in range(5000):
        s.merge(b"k%d" % i, Entry(b"v", 1, "a"))
    cursor, found, all_keys = 0, [], []
    while True:
        cursor, found = s.scan(cursor, b"k1*", 100, 0)
        all_keys += found
        if cursor == 0:
            break
    assert sorted(all_keys) == sorted(k for k in s.keys(None, 0) if k.startswith(b"k1"))
    assert len(all_keys) == len(set(all_keys))  # whole buckets: nothing twice


def test_the_digest_tells_versions_apart_and_merging_makes_them_equal() -> None:
    # The same bytes written by two nodes are two writes: replicas agree once they hold the
    # same winner, which is what anti-entropy then brings about.
    a, b = Store(), Store()
    a.merge(b"k", Entry(b"v", 5, "a"))
    b.merge(b"k", Entry(b"v", 9, "b"))
    assert a.digest != b.digest
    a.merge(b"k", Entry(b"v", 9, "b"))
    assert a.digest == b.digest
    b.merge(b"k", Entry(b"w", 10, "b"))
    assert a.digest != b.digest
