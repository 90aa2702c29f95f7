"""Compaction: what a rewrite keeps, writes during a rewrite, and a crash at every step."""

from __future__ import annotations

import errno
import itertools
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.log.compaction import should_compact
from kvd.log.record import MAGIC, MAGIC_V1, Reader
from kvd.log.recovery import open_log, recover
from kvd.log.wal import LOG_NAME, REWRITE_NAME, WriteAheadLog
from kvd.state.hlc import HybridClock
from kvd.state.node import Node
from kvd.state.store import Entry, bucket_of
from tests.procs import wait_for

NOW_MS = 10_000_000_000


def make(tmp_path: Path, **settings: object) -> tuple[Node, WriteAheadLog]:
    ticks = itertools.count()
    node = Node("n1", "127.0.0.1:1", clock=HybridClock(lambda: NOW_MS))
    # A clock that moves one second per reading: every rewrite slice does one bucket.
    wal = open_log(tmp_path, node, "no", clock=lambda: float(next(ticks)),
                   wall=lambda: NOW_MS, **settings)
    return node, wal


def commit(node: Node, wal: WriteAheadLog) -> None:
    wal.append(node.take_changes())
    wal.commit()


def reloaded(tmp_path: Path) -> Node:
    node = Node("n1", "127.0.0.1:1", clock=HybridClock(lambda: NOW_MS))
    recover(tmp_path, node)
    return node


def run_rewrite(wal: WriteAheadLog) -> None:
    """Tick until a rewrite (started now if due) is swapped in: its slices, then the
    helper thread's fsync, which is polled with a deadline."""
    for _ in range(5000):  # the slices: one bucket per tick with the test clock
        wal.tick(0.0)
        if wal.rewrite is None or wal.rewrite.bulk is not None:
            break
    wait_for(lambda: wal.tick(0.0) or wal.rewrite is None, deadline_s=20, what="the swap")


def frames(data: bytes, start: int = len(MAGIC)) -> int:
    """How many records a log holds from `start` on, by their headers' lengths."""
    off, n = start, 0
    while off < len(data):
        off += 8 + int.from_bytes(data[off + 4:off + 8], "big")
        n += 1
    return n


def state(node: Node) -> dict:
    return dict(node.store.items())


@pytest.mark.parametrize(("size", "live", "expected"), [
    (100, 10, False),  # under the minimum size
    (1000, 600, False),  # not twice the live data
    (1000, 400, True),
    (1000, 500, False),
])
def test_should_compact(size: int, live: int, expected: bool) -> None:
    assert should_compact(size, live, 1000, 2.0) is expected


def bloat(node: Node, wal: WriteAheadLog, keys: int = 300, rounds: int = 4) -> None:
    for r in range(rounds):
        for i in range(keys):
            node.write(b"k%d" % i, b"v%d-%d" % (i, r))
        commit(node, wal)


def test_the_log_compacts_itself_past_the_threshold(tmp_path: Path) -> None:
    node, wal = make(tmp_path, compaction_min_size=1000)
    bloat(node, wal)
    before = wal.file.size
    run_rewrite(wal)
    assert wal.stats["log_compactions"] == 1
    assert wal.file.size < before / 3
    assert state(reloaded(tmp_path)) == state(node)
    assert not (tmp_path / REWRITE_NAME).exists()
    # One batch record per bucket, yet counted by entry (and the checkpoint), as replay
    # counts: the live-size estimate of a fresh rewrite is its own size.
    data = (tmp_path / LOG_NAME).read_bytes()
    assert wal.records == 301 == sum(1 for _ in Reader(data))
    buckets = {bucket_of(b"k%d" % i) for i in range(300)}
    assert frames(data) == len(buckets) + 1  # a record per bucket, not per key
    assert 0.99 * wal.file.size <= wal.live_bytes() <= wal.file.size


def test_compaction_turns_a_log_from_before_batches_into_one_with_them(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_bytes(MAGIC_V1)
    node, wal = make(tmp_path, compaction_min_size=1000)
    bloat(node, wal)
    assert not wal.batches and frames(wal_bytes(tmp_path)) == 1200  # a record per write
    run_rewrite(wal)
    assert wal.batches and wal_bytes(tmp_path).startswith(MAGIC)
    size = wal.file.size
    node.write(b"k1", b"new")
    node.write(b"k2", b"new")
    commit(node, wal)
    assert frames(wal_bytes(tmp_path), size) == 1  # now a turn is one record
    assert state(reloaded(tmp_path)) == state(node)


def wal_bytes(tmp_path: Path) -> bytes:
    return (tmp_path / LOG_NAME).read_bytes()


def test_writes_during_a_rewrite_are_kept(tmp_path: Path) -> None:
    node, wal = make(tmp_path)
    bloat(node, wal)
    wal.start_rewrite()
    deadline = time.monotonic() + 30
    for i in itertools.count():  # on through the slices and the helper's fsync, to the swap
        assert time.monotonic() < deadline
        node.write(b"k%d" % (i % 400), b"during-%d" % i)  # overwrites and new keys
        if i % 7 == 0:
            node.write(b"k%d" % ((i * 13) % 300), None)
        commit(node, wal)
        wal.tick(float(i))
        if wal.rewrite is None:
            break
    node.write(b"after", b"swap")
    commit(node, wal)
    assert wal.stats["log_compactions"] == 1
    wal.close()
    again = reloaded(tmp_path)
    assert state(again) == state(node)
    assert again.store.digest == node.store.digest


STEPS = ["mid-snapshot", "snapshot-done", "flushed", "synced", "renamed"]


@pytest.mark.parametrize("crash_after", STEPS)
def test_a_crash_at_any_step_of_a_rewrite_replays_to_the_same_state(
        tmp_path: Path, crash_after: str) -> None:
    node, wal = make(tmp_path)
    bloat(node, wal, keys=200, rounds=3)
    wal.start_rewrite()
    rewrite = wal.rewrite
    assert rewrite is not None
    for i in range(200):  # write while the snapshot is being taken
        rewrite.step()
        node.write(b"k%d" % i, b"new-%d" % i)
        commit(node, wal)
    if crash_after != "mid-snapshot":
        while not rewrite.step():
            pass
    steps = {"flushed": [rewrite.flush], "synced": [rewrite.flush, rewrite.sync],
             "renamed": [rewrite.flush, rewrite.sync,
                         lambda: rewrite.install(tmp_path / LOG_NAME)]}
    for action in steps.get(crash_after, []):
        action()
    # The process dies here: no close, nothing more flushed. Start again from the files.
    assert state(reloaded(tmp_path)) == state(node)


def test_what_a_rewrite_keeps(tmp_path: Path) -> None:
    node, wal = make(tmp_path, tombstone_max_age_s=3600)
    node.write(b"live", b"v")
    node.write(b"expired", b"v", expires_at=NOW_MS - 1)
    node.write(b"deleted", None)
    old = (NOW_MS - 7200_000) << 16
    node.apply(b"old-delete", Entry(None, old, "n2"), seq=9)
    commit(node, wal)
    wal.start_rewrite()
    run_rewrite(wal)
    wal.close()
    again = reloaded(tmp_path)
    assert again.store.get(b"live", NOW_MS).value == b"v"
    assert again.store.lookup(b"expired").value is None  # kept as a tombstone
    assert again.store.lookup(b"deleted").value is None
    assert again.store.lookup(b"old-delete") is None  # older than tombstone_max_age
    assert again.seq == 3  # sequences survive through the checkpoint record
    assert recover(tmp_path, Node("n1", "x")).seqs == {"n1": 3, "n2": 9}


def test_a_failed_rewrite_keeps_the_old_log_and_waits_before_trying_again(
        tmp_path: Path) -> None:
    node, wal = make(tmp_path, compaction_min_size=1000)
    bloat(node, wal)
    wal.start_rewrite()
    assert wal.rewrite is not None

    def disk_full(data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    wal.rewrite.file.write = disk_full  # type: ignore[method-assign]
    for now in range(2000):
        wal.tick(float(now))
        if wal.rewrite is None:
            break
    info = wal.info()
    assert "compaction failed" in info["log_last_error"]
    assert info["log_writable"] and info["log_error"] == ""  # the log itself is fine
    assert not (tmp_path / REWRITE_NAME).exists()
    wal.tick(10.0)
    assert wal.rewrite is None  # not straight back into the same failure
    node.write(b"after", b"1")
    commit(node, wal)
    assert state(reloaded(tmp_path)) == state(node)


actions = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 40), st.one_of(st.none(), st.binary(max_size=8))),
    st.tuples(st.just("step"), st.just(0), st.none()),
), max_size=60)


@settings(max_examples=60, deadline=None)
@given(actions, st.sampled_from(["mid-rewrite", *STEPS[1:], "finished"]))
def test_any_interleaving_of_writes_and_rewrite_slices_replays_the_same(
        script: list, crash_after: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        node, wal = make(data_dir)
        bloat(node, wal, keys=40, rounds=2)
        wal.start_rewrite()
        rewrite = wal.rewrite
        assert rewrite is not None
        for action, key, value in script:
            if action == "write":
                node.write(b"k%d" % key, value)
                commit(node, wal)
            elif wal.rewrite is not None and not rewrite.step():
                continue
        finish = {"flushed": 1, "synced": 2, "renamed": 3}.get(crash_after, 0)
        if crash_after != "mid-rewrite":
            while not rewrite.step():
                pass
        steps = [rewrite.flush, rewrite.sync, lambda: rewrite.install(data_dir / LOG_NAME)]
        for action in steps[:finish]:
            action()
        if crash_after == "finished":
            run_rewrite(wal)
        assert state(reloaded(data_dir)) == state(node)
