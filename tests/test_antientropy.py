"""Anti-entropy and replication bookkeeping as pure functions of the store and messages."""

from __future__ import annotations

from kvd.cluster.antientropy import collect, differing, entry_to_wire, to_push
from kvd.cluster.replication import Replication
from kvd.state.store import NBUCKETS, Entry, Store, bucket_of


def store_with(items: dict[bytes, Entry]) -> Store:
    s = Store()
    for k, e in items.items():
        s.merge(k, e)
    return s


def test_equal_stores_have_nothing_to_exchange() -> None:
    a = store_with({b"k%d" % i: Entry(b"v", 10, "a") for i in range(100)})
    b = store_with({b"k%d" % i: Entry(b"v", 10, "a") for i in range(100)})
    assert differing(a.bucket_digests, b.bucket_digests, 0) == []
    assert collect(a, b.bucket_digests, 0) == ([], [], -1)


def test_only_the_differing_bucket_travels_and_newer_entries_are_pushed_back() -> None:
    common = {b"k%d" % i: Entry(b"v", 10, "a") for i in range(100)}
    a = store_with({**common, b"k5": Entry(b"newer", 20, "a")})
    b = store_with({**common, b"only-b": Entry(b"x", 30, "b")})
    buckets, entries, nxt = collect(b, a.bucket_digests, 0)
    assert sorted(buckets) == sorted({bucket_of(b"k5"), bucket_of(b"only-b")}) and nxt == -1
    sent = {w[0] for w in entries}
    assert b"only-b" in sent and len(sent) < 20  # whole buckets, not the whole store
    push, cut = to_push(a, buckets, entries)
    assert cut is None
    assert [w[0] for w in push] == [b"k5"] and push[0][1] == b"newer"


def test_a_walk_is_split_into_bounded_steps() -> None:
    a = store_with({b"k%d" % i: Entry(b"v", 10, "a") for i in range(5000)})
    empty = Store()
    cursor, seen, steps = 0, 0, 0
    while cursor != -1:
        buckets, entries, cursor = collect(a, empty.bucket_digests, cursor, budget=500)
        assert len(entries) <= 500 or len(buckets) == 1
        seen += len(entries)
        steps += 1
        assert steps <= NBUCKETS
    assert seen == 5000 and steps >= 10


def test_wire_entries_round_trip_tombstones_and_expiry() -> None:
    assert entry_to_wire(b"k", Entry(None, 5, "x", 0)) == [b"k", None, 5, "x", 0]
    assert entry_to_wire(b"k", Entry(b"v", 5, "x", 99)) == [b"k", b"v", 5, "x", 99]


def items(first: int, last: int) -> list:
    return [(s, b"k%d" % s, Entry(b"v", s, "o")) for s in range(first, last + 1)]


def test_duplicates_and_reordering_apply_each_write_once() -> None:
    r = Replication("me", epoch=1, base=1)
    assert [s for s, _, _ in r.receive("o", 7, 1, items(3, 4))] == [3, 4]
    assert r.streams["o"].contiguous == 0  # a hole below
    assert [s for s, _, _ in r.receive("o", 7, 1, items(1, 4))] == [1, 2]
    assert r.streams["o"].contiguous == 4
    assert r.receive("o", 7, 1, items(2, 3)) == []  # stale duplicates never reach the store


def test_backlog_serves_ranges_and_says_gone_when_it_lost_them() -> None:
    r = Replication("me", epoch=1, base=1)
    r.receive("o", 7, 1, items(1, 10))
    assert [s for s, _, _ in r.serve("o", 7, 3, 10, limit=4)] == [3, 4, 5, 6]
    assert r.serve("o", 6, 1, 10, limit=4) is None  # another epoch
    r.streams["o"].backlog.popleft()
    assert r.serve("o", 7, 1, 10, limit=4) is None


def test_a_restarted_origin_starts_a_new_epoch_and_old_retransmissions_are_ignored() -> None:
    r = Replication("me", epoch=1, base=1)
    r.receive("o", 7, 1, items(1, 5))
    fresh = r.receive("o", 9, 1, items(1, 2))  # restarted without its log: numbers reused
    assert [s for s, _, _ in fresh] == [1, 2] and r.streams["o"].epoch == 9
    assert r.receive("o", 7, 1, items(6, 6)) == []  # the old epoch's tail: anti-entropy's job
    assert r.streams["o"].frozen  # the old epoch may have lost writes: no collection yet


def test_stable_stamp_advances_only_when_marks_are_covered_and_not_frozen() -> None:
    r = Replication("me", epoch=1, base=1)
    r.receive("o", 7, 1, items(1, 3))
    r.mark("o", 7, 1, 3, stamp=100)
    assert r.streams["o"].stable == 0  # frozen until a full anti-entropy pass
    r.adopt({"o": [7, 1, 3, 50, False]})
    assert r.streams["o"].stable == 50
    r.mark("o", 7, 1, 5, stamp=200)
    assert r.streams["o"].stable == 50  # 4 and 5 are not here yet
    r.receive("o", 7, 1, items(4, 5))
    assert r.streams["o"].stable == 200
    assert r.low_water(["o"]) == 200 and r.low_water(["o", "never-heard"]) == 0

