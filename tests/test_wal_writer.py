"""The writer's policies and its failure modes, with a fake file that can fail on demand."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from kvd.log.record import MAGIC, Reader
from kvd.log.wal import WriteAheadLog
from kvd.state.hlc import HybridClock
from kvd.state.node import Node
from shared.errors import StorageError


class FakeFile:
    """A log file in memory: `fail_write`/`fail_sync`/`fail_truncate` raise the next call."""

    def __init__(self) -> None:
        self.path = Path("/fake/kv.wal")
        self.data = bytearray(MAGIC)
        self.syncs = 0
        self.fail_write: int | None = None  # errno; a partial write happens first
        self.fail_sync: int | None = None
        self.fail_truncate = False

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, data: bytes) -> None:
        if self.fail_write is not None:
            self.data += data[: len(data) // 2]  # half of it made it to the file
            raise OSError(self.fail_write, "fake")
        self.data += data

    def sync(self) -> None:
        if self.fail_sync is not None:
            raise OSError(self.fail_sync, "fake")
        self.syncs += 1

    def truncate(self, size: int) -> None:
        if self.fail_truncate:
            raise OSError(errno.EIO, "fake")
        del self.data[size:]

    def close(self) -> None:
        pass


class FakeSyncer:
    def __init__(self) -> None:
        self.requests = 0
        self.error: OSError | None = None

    def request(self, file: FakeFile) -> None:
        self.requests += 1
        file.sync()

    def retarget(self, file: FakeFile) -> None:
        pass

    def close(self) -> None:
        pass


WALL_MS = 1_800_000_000_000  # the fake wall clock at now = 0


def setup(policy: str) -> tuple[Node, WriteAheadLog, FakeFile, list[float]]:
    now = [0.0]
    node = Node("n1", "127.0.0.1:1", clock=HybridClock(lambda: 1_000))
    file = FakeFile()
    wal = WriteAheadLog(Path("/fake"), file, node.store, policy,  # type: ignore[arg-type]
                        syncer=FakeSyncer() if policy == "everysec" else None,  # type: ignore
                        clock=lambda: now[0], wall=lambda: WALL_MS + int(now[0] * 1000),
                        compaction_min_size=1 << 40)
    return node, wal, file, now


def turn(node: Node, wal: WriteAheadLog, *writes: tuple[bytes, bytes | None]) -> None:
    """What the server does each turn: apply, log, commit; undo if the log refuses."""
    for key, value in writes:
        node.write(key, value)
    changes = node.take_changes()
    try:
        wal.append(changes)
        wal.commit()
    except StorageError:
        node.undo(changes)
        raise


def keys_on_disk(file: FakeFile) -> list[bytes]:
    return [rec[0] for rec in Reader(bytes(file.data))]


def test_always_fsyncs_once_per_turn() -> None:
    node, wal, file, _ = setup("always")
    turn(node, wal, (b"a", b"1"), (b"b", b"2"), (b"c", b"3"))
    turn(node, wal, (b"d", b"4"))
    assert file.syncs == 2  # group commit: one fsync covers the whole turn
    assert keys_on_disk(file) == [b"a", b"b", b"c", b"d"]


def test_everysec_syncs_from_the_tick_at_most_once_a_second() -> None:
    node, wal, file, now = setup("everysec")
    turn(node, wal, (b"a", b"1"))
    assert file.syncs == 0
    wal.tick(0.5)
    assert file.syncs == 0
    wal.tick(1.0)
    assert file.syncs == 1
    wal.tick(5.0)  # nothing new was written
    assert file.syncs == 1


def test_no_policy_never_syncs_until_close() -> None:
    node, wal, file, _ = setup("no")
    turn(node, wal, (b"a", b"1"))
    wal.tick(100.0)
    assert file.syncs == 0
    wal.close()
    assert file.syncs == 1


def test_disk_full_refuses_the_turn_and_keeps_going() -> None:
    node, wal, file, _ = setup("always")
    turn(node, wal, (b"a", b"1"))
    digest = node.store.digest
    file.fail_write = errno.ENOSPC
    with pytest.raises(StorageError, match="no space left"):
        turn(node, wal, (b"a", b"changed"), (b"b", b"2"))
    assert node.store.digest == digest and node.store.get(b"b", 2_000) is None
    assert node.seq == 1
    assert keys_on_disk(file) == [b"a"]  # the half-written record was cut off
    info = wal.info()
    assert info["log_errors"] == 1 and "no space left" in info["log_error"]
    assert info["log_writable"] is False  # the last write failed and none has succeeded since
    file.fail_write = None  # space was freed: writes work again
    turn(node, wal, (b"b", b"2"))
    assert keys_on_disk(file) == [b"a", b"b"]


def test_info_clears_the_error_once_the_disk_recovers_and_keeps_it_as_history() -> None:
    node, wal, file, now = setup("everysec")
    now[0] = 30.0
    file.fail_write = errno.ENOSPC
    with pytest.raises(StorageError):
        turn(node, wal, (b"a", b"1"))
    failing = wal.info()
    assert not failing["log_writable"] and "no space left" in failing["log_error"]
    assert failing["log_last_error"] == failing["log_error"]
    assert failing["log_last_error_at"] == WALL_MS // 1000 + 30
    now[0] = 90.0
    file.fail_write = None  # space was freed
    turn(node, wal, (b"a", b"1"))
    info = wal.info()
    assert info["log_writable"] is True and info["log_error"] == ""  # the state now
    assert info["log_last_error"] == failing["log_error"]  # the history stays
    assert info["log_last_error_at"] == WALL_MS // 1000 + 30 and info["log_errors"] == 1


def test_info_of_a_log_that_never_failed() -> None:
    node, wal, _, _ = setup("always")
    turn(node, wal, (b"a", b"1"))
    info = wal.info()
    assert info["log_writable"] is True and info["log_error"] == ""
    assert (info["log_last_error"], info["log_last_error_at"], info["log_errors"]) == ("", 0, 0)


def test_failed_fsync_stops_all_writes() -> None:
    node, wal, file, _ = setup("always")
    file.fail_sync = errno.EIO
    with pytest.raises(StorageError):
        turn(node, wal, (b"a", b"1"))
    file.fail_sync = None
    with pytest.raises(StorageError, match="restart kvd"):
        turn(node, wal, (b"b", b"2"))
    assert node.store.live_count == 0 and wal.info()["log_writable"] is False
    assert "fsync" in wal.info()["log_error"]


def test_failed_truncate_after_a_failed_write_stops_all_writes() -> None:
    node, wal, file, _ = setup("everysec")
    file.fail_write, file.fail_truncate = errno.EIO, True
    with pytest.raises(StorageError):
        turn(node, wal, (b"a", b"1"))
    file.fail_write = None
    with pytest.raises(StorageError, match="not writable"):
        turn(node, wal, (b"b", b"2"))


def test_everysec_fsync_failure_from_the_thread_stops_writes() -> None:
    node, wal, _, _ = setup("everysec")
    turn(node, wal, (b"a", b"1"))
    wal.syncer.error = OSError(errno.EIO, "fake")  # type: ignore[union-attr]
    with pytest.raises(StorageError, match="fsync"):
        turn(node, wal, (b"b", b"2"))


def test_info_fields() -> None:
    node, wal, _, _ = setup("always")
    turn(node, wal, (b"a", b"1"))
    info = wal.info()
    for field in ("fsync", "log_size", "log_live_bytes", "last_compaction_at",
                  "last_compaction_s", "replayed_records", "replay_s", "log_error",
                  "log_writable", "log_last_error", "log_last_error_at"):
        assert field in info
    assert info["fsync"] == "always" and info["log_size"] > len(MAGIC)


def test_the_everysec_thread_syncs_the_real_file(tmp_path: Path) -> None:
    from kvd.log.logfile import LogFile, Syncer
    from tests.procs import wait_for

    class Counting(LogFile):
        syncs = 0

        def sync(self) -> None:
            super().sync()
            Counting.syncs += 1

    node = Node("n1", "127.0.0.1:1")
    file = Counting(tmp_path / "kv.wal")
    wal = WriteAheadLog(tmp_path, file, node.store, "everysec", syncer=Syncer(),
                        clock=lambda: 0.0)
    turn(node, wal, (b"a", b"1"))
    wal.tick(1.0)
    wait_for(lambda: Counting.syncs >= 1, deadline_s=10, what="the fsync thread")
    wal.close()
    assert Counting.syncs >= 2  # and once more on close
