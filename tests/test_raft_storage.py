"""Raft's durable state: the record format, recovery from torn tails and damage, atomic
snapshots, and crashes anywhere between a write and its fsync (through a fake file layer that
forgets what was not synced)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from kvd.raft import records
from kvd.raft.config import Config
from kvd.raft.errors import StorageCorrupt
from kvd.raft.filestore import LOG_NAME, SNAP_NAME, FileStorage
from kvd.raft.messages import Entry, EntryKind, Snapshot
from kvd.raft.storage import HardState, MemoryStorage, Restored
from tests.fakefiles import Crash, FakeFiles

ABC = Config.of(["n1", "n2", "n3"])


def _e(index: int, term: int) -> Entry:
    return Entry(term, index, EntryKind.NORMAL, b"%d:%d" % (index, term))


def _founded(path: Path) -> FileStorage:
    st = FileStorage(path)
    st.bootstrap(ABC)
    return st


# -- the format -------------------------------------------------------------------------------


def test_record_bytes_are_pinned() -> None:
    # | crc32 | length | msgpack payload |
    assert records.entries([Entry(2, 3, EntryKind.NORMAL, b"x")]) == bytes.fromhex(
        "4d8ee977 00000008 95 03 02 03 00 c40178".replace(" ", ""))
    assert records.hard_state(HardState(2, "n1", 3)) == bytes.fromhex(
        "b7b2791d 00000007 94 02 02 a26e31 03".replace(" ", ""))
    assert records.truncate(7) == bytes.fromhex("8b464ca9 00000003 92 04 07".replace(" ", ""))


def test_scan_tells_a_torn_tail_from_damage_in_the_middle() -> None:
    good = records.entries([_e(2, 1), _e(3, 1), _e(4, 1)])
    torn = records.scan(good + records.entries([_e(5, 1)])[:-3], 0)
    assert len(torn.records) == 3 and torn.damage is not None and torn.damage.torn
    flipped = bytearray(good)
    flipped[10] ^= 0xFF  # inside the first record's payload
    middle = records.scan(bytes(flipped), 0)
    assert middle.records == [] and middle.damage is not None and not middle.damage.torn
    assert middle.damage.offset == 0 and middle.damage.reason == "checksum mismatch"


# -- FileStorage on a real directory ----------------------------------------------------------


def test_a_round_trip_through_the_files(tmp_path: Path) -> None:
    st = _founded(tmp_path)
    st.save(HardState(2, "n1", 1), [_e(2, 2), _e(3, 2)])
    st.save(HardState(2, "n1", 3), [_e(4, 2)])
    got = FileStorage(tmp_path).load()
    assert got.hard_state == HardState(2, "n1", 3)
    assert got.snapshot == Snapshot(1, 1, ABC)
    assert got.entries == [_e(2, 2), _e(3, 2), _e(4, 2)]


def test_a_conflicting_suffix_is_truncated_by_a_record(tmp_path: Path) -> None:
    st = _founded(tmp_path)
    st.save(HardState(2, None, 1), [_e(2, 2), _e(3, 2), _e(4, 2), _e(5, 2)])
    size = (tmp_path / LOG_NAME).stat().st_size
    st.save(HardState(3, None, 1), [_e(4, 3)])
    tail = (tmp_path / LOG_NAME).read_bytes()[size:]
    assert tail.startswith(records.truncate(4))
    assert FileStorage(tmp_path).load().entries == [_e(2, 2), _e(3, 2), _e(4, 3)]


def test_a_torn_tail_is_dropped_and_cut_off(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    st = _founded(tmp_path)
    st.save(HardState(2, "n1", 1), [_e(2, 2)])
    log_path = tmp_path / LOG_NAME
    entry = records.entries([_e(3, 2)])
    with log_path.open("ab") as f:  # a crash in the middle of the next save's hard state
        f.write((entry + records.hard_state(HardState(2, "n1", 3)))[:-4])
    with caplog.at_level(logging.WARNING, logger="kvd.raft.filestore"):
        st = FileStorage(tmp_path)
    assert "torn tail" in caplog.text
    # the whole entry record survived, the hard state did not: commit stays where it was
    assert st.load().entries == [_e(2, 2), _e(3, 2)]
    assert st.load().hard_state == HardState(2, "n1", 1)
    size = log_path.stat().st_size
    assert log_path.read_bytes().endswith(entry)
    st.save(HardState(2, "n1", 3), [_e(4, 2)])  # appends after the cut, not after the junk
    assert log_path.stat().st_size > size
    got = FileStorage(tmp_path).load()
    assert got.entries == [_e(2, 2), _e(3, 2), _e(4, 2)] and got.hard_state.commit == 3


def test_damage_in_the_middle_is_refused_with_file_and_offset(tmp_path: Path) -> None:
    st = _founded(tmp_path)
    st.save(HardState(2, "n1", 1), [_e(2, 2)])
    log_path = tmp_path / LOG_NAME
    at = log_path.stat().st_size + 10
    st.save(HardState(2, "n1", 1), [_e(3, 2)])
    st.save(HardState(2, "n1", 3), [_e(4, 2)])
    data = bytearray(log_path.read_bytes())
    data[at] ^= 0x55
    log_path.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt) as e:
        FileStorage(tmp_path)
    assert e.value.path == str(log_path) and e.value.offset == at - 10
    assert "refusing to start" in str(e.value)


def test_a_damaged_snapshot_file_is_refused(tmp_path: Path) -> None:
    _founded(tmp_path)
    snap = tmp_path / SNAP_NAME
    snap.write_bytes(snap.read_bytes()[:-1])
    with pytest.raises(StorageCorrupt, match=SNAP_NAME):
        FileStorage(tmp_path)


def test_snapshots_replace_files_atomically_and_compact_the_log(tmp_path: Path) -> None:
    st = _founded(tmp_path)
    st.save(HardState(2, "n1", 4), [_e(i, 2) for i in range(2, 10)])
    big = (tmp_path / LOG_NAME).stat().st_size
    st.compact(Snapshot(6, 2, ABC, b"state at 6"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOG_NAME, SNAP_NAME]  # no .tmp left
    assert (tmp_path / LOG_NAME).stat().st_size < big
    got = FileStorage(tmp_path).load()
    assert got.snapshot == Snapshot(6, 2, ABC, b"state at 6")
    assert got.entries == [_e(i, 2) for i in range(7, 10)]
    assert got.hard_state == HardState(2, "n1", 6)  # commit never below the snapshot


def test_a_leaders_snapshot_replaces_the_whole_log(tmp_path: Path) -> None:
    st = _founded(tmp_path)
    st.save(HardState(2, "n1", 1), [_e(2, 2), _e(3, 2)])
    st.save(HardState(3, "n2", 20), [_e(21, 3)], Snapshot(20, 3, ABC, b"s20"))
    got = FileStorage(tmp_path).load()
    assert (got.snapshot.index, got.entries, got.hard_state) == (20, [_e(21, 3)],
                                                                HardState(3, "n2", 20))


def test_a_leftover_tmp_file_is_removed(tmp_path: Path) -> None:
    _founded(tmp_path)
    (tmp_path / f"{SNAP_NAME}.tmp").write_bytes(b"half a snapshot")
    FileStorage(tmp_path)
    assert not (tmp_path / f"{SNAP_NAME}.tmp").exists()


def test_bootstrap_needs_empty_storage(tmp_path: Path) -> None:
    st = _founded(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        st.bootstrap(ABC)


# -- crashes between a write and its fsync ----------------------------------------------------


def _op(rng: random.Random, model: MemoryStorage) -> tuple:
    """A random storage call that a Raft node could make given what `model` holds."""
    last = model.snapshot.index + len(model.entries)
    hs = model.hard_state
    roll = rng.random()
    upto = min(last, hs.commit)
    if roll < 0.1 and upto > model.snapshot.index:
        index = rng.randint(model.snapshot.index + 1, upto)
        term = model.entries[index - model.snapshot.index - 1].term
        return ("compact", Snapshot(index, term, ABC, b"s%d" % index))
    if roll < 0.15:
        index = last + rng.randint(1, 5)
        term = hs.term + 1
        return ("save", HardState(term, None, index), [_e(index + 1, term)],
                Snapshot(index, term, ABC, b"s%d" % index))
    term = hs.term + (1 if rng.random() < 0.2 else 0)
    first = rng.randint(max(model.snapshot.index + 1, hs.commit + 1), last + 1)
    new = [_e(i, term) for i in range(first, first + rng.randint(0, 4))]
    top = new[-1].index if new else min(last, first - 1)
    commit = max(hs.commit, rng.randint(hs.commit, max(hs.commit, top)))
    state = HardState(term, rng.choice([None, "n1", "n2"]), commit) if rng.random() < 0.8 else None
    return ("save", state, new, None)


def _apply(model: MemoryStorage, op: tuple) -> None:
    if op[0] == "compact":
        model.compact(op[1])
    else:
        model.save(*op[1:])


def _copy(model: MemoryStorage) -> MemoryStorage:
    clone = MemoryStorage()
    clone.hard_state, clone.snapshot, clone.entries = \
        model.hard_state, model.snapshot, list(model.entries)
    return clone


def _allowed(before: MemoryStorage, op: tuple) -> list[tuple]:
    """What recovery may show after a crash during `op`: the state before it, after it, or
    (a save) before it plus a prefix of its records; (a leader's snapshot) the snapshot over
    the old log, kept only if the old log holds the snapshot's entry."""
    after = _copy(before)
    _apply(after, op)
    out = [_view(before), _view(after)]
    if op[0] == "save" and op[3] is None:
        new = op[2]
        if new:
            kept = before.entries[:new[0].index - before.snapshot.index - 1]
            out += [(before.hard_state, before.snapshot, kept + new[:j])
                    for j in range(len(new) + 1)]
    elif op[0] == "save":
        snap = op[3]
        held = [e for e in before.entries if e.index == snap.index and e.term == snap.term]
        rest = [e for e in before.entries if e.index > snap.index] if held else []
        hs = before.hard_state
        out.append((HardState(hs.term, hs.vote, max(hs.commit, snap.index)), snap, rest))
    return out


def _view(st: MemoryStorage | Restored) -> tuple:
    if isinstance(st, MemoryStorage):
        st = st.load()
    hs, snap = st.hard_state, st.snapshot
    return (HardState(hs.term, hs.vote, max(hs.commit, snap.index)), snap, list(st.entries))


def _durable(view: tuple) -> tuple:
    """A view without its commit index: a save that only moves the commit is not fsynced, so
    a crash may take the commit back (never past a snapshot; see `_same`)."""
    hs, snap, entries = view
    return (HardState(hs.term, hs.vote, 0), snap, entries)


def _same(got: tuple, views: list[tuple]) -> bool:
    """`got` is one of `views`, except that its commit may lag (not lead) that view's."""
    return any(_durable(got) == _durable(v) and got[0].commit <= v[0].commit for v in views)


@pytest.mark.parametrize("seed", range(60))
def test_a_crash_anywhere_loses_only_the_unfinished_save(seed: int) -> None:
    rng = random.Random(seed)
    files = FakeFiles(rng)
    st = FileStorage("fake", files)
    st.bootstrap(ABC)
    model = MemoryStorage()
    model.bootstrap(ABC)
    for _ in range(40):
        op = _op(rng, model)
        files.crash_in = rng.randint(0, 4) if rng.random() < 0.3 else None
        try:
            _apply(st, op)
        except Crash:
            files.crash()
            st = FileStorage("fake", files)
            got = _view(st.load())
            assert _same(got, _allowed(model, op)), f"seed {seed}: {op} recovered as {got}"
            model = _copy(st)  # go on from what survived, as a restarted node does
            continue
        files.crash_in = None
        _apply(model, op)
        assert _view(st.load()) == _view(model)
    files.crash()  # synced saves survive any crash
    assert _same(_view(FileStorage("fake", files).load()), [_view(model)])


def test_a_save_that_only_moves_the_commit_index_is_not_fsynced() -> None:
    """etcd's MustSync: entries, a term or a vote are promises and are fsynced before any
    message leaves; a commit index is not (the leader tells it again)."""
    files = FakeFiles(random.Random(1))
    st = FileStorage("fake", files)
    st.bootstrap(ABC)
    st.save(HardState(2, "n1", 1), [_e(2, 2), _e(3, 2)])
    synced = files.durable.get("raft.log", b"")
    st.save(HardState(2, "n1", 3), [])
    assert files.durable.get("raft.log", b"") == synced  # appended, not synced
    st.save(HardState(3, None, 3), [])  # a new term is synced
    assert files.durable.get("raft.log", b"") != synced
    files.crash()
    assert FileStorage("fake", files).load().hard_state == HardState(3, None, 3)
