"""Replay over real files in a temp dir: round trips, torn tails, corruption, repair, expiry."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kvd.log.record import MAGIC, MAGIC_V1, Reader, encode_entry
from kvd.log.recovery import LogCorrupt, check, open_log, recover
from kvd.log.wal import LOG_NAME, REWRITE_NAME
from kvd.state.hlc import HybridClock
from kvd.state.node import Node
from kvd.state.store import Entry


def fresh(name: str = "n1", wall: int = 1_000_000) -> Node:
    return Node(name, "127.0.0.1:1", clock=HybridClock(lambda: wall))


def write_some(data_dir: Path, node: Node, policy: str = "no", turns: int = 5) -> None:
    """Five writes in `turns` turns: a turn is one record, so 5 turns make 5 records."""
    wal = open_log(data_dir, node, policy)
    writes = [lambda: node.write(b"a", b"1"), lambda: node.write(b"b", b"2"),
              lambda: node.apply(b"peer", Entry(b"x", 5 << 16, "n2"), seq=41),  # replicated
              lambda: node.write(b"a", b"3"), lambda: node.write(b"b", None)]  # a deletion
    for i, write in enumerate(writes, 1):
        write()
        if i * turns % len(writes) == 0 or i == len(writes):
            wal.append(node.take_changes())
            wal.commit()
    wal.close()


def snapshot(node: Node) -> dict:
    return dict(node.store.items())


def test_replay_rebuilds_the_same_store(tmp_path: Path) -> None:
    before = fresh()
    write_some(tmp_path, before)
    after = fresh(wall=0)  # a wall clock behind the log's stamps
    result = recover(tmp_path, after)
    assert result.records == 5 and result.damage is None
    assert snapshot(after) == snapshot(before)
    assert after.store.digest == before.store.digest
    assert after.changes == []  # replay is not a new write: nothing to log or gossip
    assert after.seq == before.seq == 4
    assert result.seqs == {"n1": 4, "n2": 41}
    assert after.write(b"c", b"new").stamp > before.clock.last  # the clock moved past the log


def test_a_turn_is_one_record_replayed_whole(tmp_path: Path) -> None:
    before = fresh()
    write_some(tmp_path, before, turns=1)
    data = (tmp_path / LOG_NAME).read_bytes()
    assert len(data) == len(MAGIC) + 8 + int.from_bytes(data[len(MAGIC) + 4:len(MAGIC) + 8],
                                                        "big")
    after = fresh(wall=0)
    result = recover(tmp_path, after)
    assert result.records == 5 and result.damage is None  # records count entries
    assert snapshot(after) == snapshot(before) and result.seqs == {"n1": 4, "n2": 41}
    (tmp_path / LOG_NAME).write_bytes(data[:-1])  # a crash in the middle of the turn's write
    torn = fresh()
    result = recover(tmp_path, torn)
    assert result.records == 0 and result.damage is not None and result.damage.torn
    assert snapshot(torn) == {}  # all of the turn or none of it


def test_a_log_from_before_batches_takes_single_entries_only(tmp_path: Path) -> None:
    """A kvd from before batches must still read it (kvd.log.record, "Why a new magic")."""
    path = tmp_path / LOG_NAME
    path.write_bytes(MAGIC_V1 + encode_entry(b"old", Entry(b"v", 1 << 16, "n1"), 1))
    write_some(tmp_path, fresh(), turns=1)
    data = path.read_bytes()
    reader = Reader(data)
    assert [r[0] for r in reader] == [b"old", b"a", b"b", b"peer", b"a", b"b"]
    assert reader.magic == MAGIC_V1 and b"\x92\x01" not in data  # no batch record
    assert recover(tmp_path, fresh()).records == 6


def test_empty_and_missing_logs(tmp_path: Path) -> None:
    assert recover(tmp_path, fresh()).records == 0
    (tmp_path / LOG_NAME).write_bytes(b"")
    assert recover(tmp_path, fresh()).records == 0
    wal = open_log(tmp_path, fresh(), "always")
    wal.close()
    assert (tmp_path / LOG_NAME).read_bytes() == MAGIC


def test_torn_tail_is_cut_off_with_a_warning(tmp_path: Path, caplog) -> None:
    write_some(tmp_path, fresh())
    path = tmp_path / LOG_NAME
    good = path.read_bytes()
    path.write_bytes(good + encode_entry(b"late", Entry(b"v", 9 << 16, "n1"), 5)[:-3])
    node = fresh()
    with caplog.at_level(logging.WARNING):
        assert recover(tmp_path, node).records == 5
    assert "cut short by a crash" in caplog.text
    assert path.read_bytes() == good and node.store.lookup(b"late") is None


def corrupt_middle(tmp_path: Path) -> tuple[Path, int]:
    write_some(tmp_path, fresh())
    path = tmp_path / LOG_NAME
    data = bytearray(path.read_bytes())
    second = len(MAGIC) + int.from_bytes(data[len(MAGIC) + 4:len(MAGIC) + 8], "big") + 8
    data[second + 10] ^= 0x40
    path.write_bytes(bytes(data))
    return path, second


def test_corruption_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    path, offset = corrupt_middle(tmp_path)
    size = path.stat().st_size
    with pytest.raises(LogCorrupt) as err:
        recover(tmp_path, fresh())
    message = str(err.value)
    assert "\n" not in message
    assert f"{path}: damaged record at offset {offset}" in message
    assert "3 good record(s) follow" in message and "--repair" in message
    assert path.stat().st_size == size  # untouched until the operator says so


def test_repair_truncates_at_the_last_good_record(tmp_path: Path, caplog) -> None:
    path, offset = corrupt_middle(tmp_path)
    node = fresh()
    with caplog.at_level(logging.WARNING):
        assert recover(tmp_path, node, repair=True).records == 1
    assert "drops it and the 3 good record(s) after it" in caplog.text
    assert path.stat().st_size == offset
    assert node.store.get(b"a", 2_000_000).value == b"1"
    assert recover(tmp_path, fresh()).damage is None


def test_check_log_reports_and_repairs(tmp_path: Path) -> None:
    write_some(tmp_path, fresh())
    assert check(tmp_path) == (0, [f"{tmp_path / LOG_NAME}: 5 good records in "
                                   f"{(tmp_path / LOG_NAME).stat().st_size} bytes; "
                                   "2 values, 1 tombstones", "ok"])
    path, offset = corrupt_middle(tmp_path / "other")
    code, lines = check(tmp_path / "other")
    assert code == 1 and f"truncates at offset {offset}" in lines[1]
    code, lines = check(tmp_path / "other", repair=True)
    assert code == 0 and path.stat().st_size == offset
    assert check(tmp_path / "other")[0] == 0


def test_expired_entries_are_not_resurrected(tmp_path: Path) -> None:
    node = fresh()
    wal = open_log(tmp_path, node, "no")
    node.write(b"gone", b"v", expires_at=1_000)  # long past
    node.write(b"kept", b"v", expires_at=2**50)
    wal.append(node.take_changes())
    wal.commit()
    wal.close()
    after = fresh()
    recover(tmp_path, after)
    assert after.store.lookup(b"gone").value is None  # reclaimed into a tombstone at once
    assert after.store.live_count == 1


def test_a_leftover_rewrite_is_discarded(tmp_path: Path) -> None:
    write_some(tmp_path, fresh())
    (tmp_path / REWRITE_NAME).write_bytes(MAGIC + b"half a snapshot")
    node = fresh()
    assert recover(tmp_path, node).records == 5
    assert not (tmp_path / REWRITE_NAME).exists()


def test_an_unreadable_log_is_one_clear_error(tmp_path: Path) -> None:
    from kvd.log.recovery import LogUnavailable

    (tmp_path / LOG_NAME).mkdir()  # a directory where the log should be: any OSError will do
    with pytest.raises(LogUnavailable, match="cannot use the log in"):
        open_log(tmp_path, fresh(), "always")


def test_an_intact_but_malformed_record_is_refused_even_with_repair(tmp_path: Path) -> None:
    import msgpack

    from kvd.log.record import frame

    bad = frame(msgpack.packb([b"k", b"v", "not a stamp", "n1", 0, 1], use_bin_type=True))
    (tmp_path / LOG_NAME).write_bytes(MAGIC + bad)
    with pytest.raises(LogCorrupt, match="intact but malformed"):
        recover(tmp_path, fresh(), repair=True)
