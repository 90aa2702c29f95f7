"""Start-up: replay the log into the node, cut off a torn tail, refuse or repair corruption.

Rules (CONTRACT.md): a log that ends inside a record lost its last write to a crash; that
record was never acknowledged under `always`, so it is cut off with a warning and the node
starts. Damage followed by valid records is corruption: the node refuses to start with one
line naming the file and offset, until the operator runs `kvd start --repair` (or
`kvd check-log --repair`), which says how many records it drops and truncates at the last
good one. A leftover `kv.wal.rewrite` is an unfinished compaction and is simply deleted.

Replay merges records straight into the store (not through `Node.apply`): nothing lands in
`node.changes`, so nothing is re-logged or re-gossiped. Expired entries are merged too and
then reclaimed by the store's expiry at once, so they are never visible again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import mmap
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kvd.log.logfile import LogFile, sync_dir
from kvd.log.record import MAGIC, MAGIC_V1, Damage, Reader
from kvd.log.wal import LOG_NAME, REWRITE_NAME, WriteAheadLog
from kvd.state.node import Node
from kvd.state.store import Entry, Store
from shared.errors import KvError

log = logging.getLogger("kvd.log.recovery")


class LogCorrupt(KvError):
    code = "LOG_CORRUPT"


class LogUnavailable(KvError):
    """The log cannot be read or created (permissions, read-only or full file system)."""

    code = "LOG_UNAVAILABLE"


@dataclass
class Replayed:
    """What a replay found: good records up to `end`, then maybe damage."""

    records: int = 0
    end: int = 0
    size: int = 0
    seconds: float = 0.0
    max_stamp: int = 0
    seqs: dict[str, int] = field(default_factory=dict)
    damage: Damage | None = None
    batches: bool = True  # the file may take batch records (not a KVWAL001 file)


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[memoryview]:
    """The file's bytes without copying them into the heap: a 150 MB log read into a bytes
    object costs as much in page faults as the replay itself on a small VM."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield memoryview(b"")
            return
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as m:
            m.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(m)
            try:
                yield view
            finally:
                view.release()


def replay(data: bytes | memoryview, store: Store, where: str = "the log") -> Replayed:
    """Merge every good record of `data` into `store`; stop at the first damage."""
    started = time.perf_counter()
    reader = Reader(data)
    # A million new objects in a row would set off the cyclic GC over and over, each pass
    # walking everything loaded so far (it doubled replay time); replay builds no cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    seqs: dict[str, int] = {}
    origins: dict[str, str] = {}  # one str object per origin, not one per record
    merge, max_stamp = store.merge, 0
    batches = reader.batches()
    try:
        for batch in batches:
            for rec in batch:
                if type(rec) is dict:
                    for origin, seq in rec.items():
                        seqs[origin] = max(seqs.get(origin, 0), seq)
                    continue
                key, value, stamp, origin, expires_at, seq = rec
                origin = origins.setdefault(origin, origin)
                merge(key, Entry(value, stamp, origin, expires_at))
                if stamp > max_stamp:
                    max_stamp = stamp
                if seq > seqs.get(origin, 0):
                    seqs[origin] = seq
    except (TypeError, ValueError) as exc:
        # Checksummed, so written whole, yet not what this version writes: a bug, not damage.
        # Cutting the log would not help, and the store already holds part of the batch.
        batches.close()
        reader.data.release()  # the traceback must not keep the mapped file exported
        raise LogCorrupt(
            f"{where}: a record after offset {reader.batch_start} is intact but malformed "
            f"({exc}) — written by another kvd version? Not repairable by --repair"
        ) from None
    finally:
        if was_enabled:
            gc.enable()
    return Replayed(reader.count, reader.end, len(data), time.perf_counter() - started,
                    max_stamp, seqs, reader.damage, reader.magic != MAGIC_V1)


def records_after(data: bytes | memoryview, damage: Damage) -> int:
    """How many good records follow `damage`: what a repair there drops besides it."""
    count, start = 0, damage.resume
    while not damage.torn and start < len(data):
        reader = Reader(data, start)
        count += sum(1 for _ in reader)
        if reader.damage is None or reader.damage.resume <= start:
            break
        damage, start = reader.damage, reader.damage.resume
    return count


def describe(path: Path, damage: Damage) -> str:
    return f"{path}: damaged record at offset {damage.offset} ({damage.reason})"


def recover(data_dir: Path, node: Node, repair: bool = False) -> Replayed:
    """Replay `data_dir`'s log into `node`, leaving a file that ends with a good record."""
    leftover = data_dir / REWRITE_NAME
    if leftover.exists():
        log.warning("discarding %s: a compaction that did not finish", leftover)
        leftover.unlink()
    path = data_dir / LOG_NAME
    if not path.exists():
        return Replayed()
    with mapped(path) as data:
        result = replay(data, node.store, str(path))
        if result.damage is not None:
            _handle_damage(path, data, result, repair)
    node.clock.observe(result.max_stamp)
    node.seq = max(node.seq, result.seqs.get(node.name, 0))
    node.store.expire_due(node.clock.time_ms())  # the time expiry is judged by (kvd.state.hlc)
    # The loaded store lives as long as the process: keep later full collections off it.
    gc.freeze()
    log.info("replayed %d records in %.2f s from %s", result.records, result.seconds, path)
    return result


def _handle_damage(path: Path, data: bytes | memoryview, result: Replayed, repair: bool) -> None:
    damage = result.damage
    assert damage is not None
    lost = len(data) - result.end
    if damage.torn:
        log.warning("%s — a write cut short by a crash; dropping its %d bytes", describe(
            path, damage), lost)
    elif not repair:
        dropped = records_after(data, damage)
        raise LogCorrupt(
            f"{describe(path, damage)}; {dropped} good record(s) follow it — "
            "check with `kvd check-log`, then `kvd start --repair` drops them"
        )
    else:
        log.warning("%s — repair drops it and the %d good record(s) after it, %d bytes "
                    "from offset %d on",
                    describe(path, damage), records_after(data, damage), lost, result.end)
    os.truncate(path, result.end)


def open_log(data_dir: Path, node: Node, policy: str, repair: bool = False,
             **settings: object) -> WriteAheadLog:
    """Recover the node from its log, then open the log for appending."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        result = recover(data_dir, node, repair)
        file = LogFile(data_dir / LOG_NAME)
        if file.size == 0:
            result.batches = True
            file.write(MAGIC)
            file.sync()
            sync_dir(data_dir)
    except OSError as exc:
        raise LogUnavailable(f"cannot use the log in {data_dir}: {exc.strerror or exc} — "
                             "check the data dir's permissions and free space") from None
    wal = WriteAheadLog(data_dir, file, node.store, policy, records=result.records,
                        seqs=result.seqs, batches=result.batches,
                        **settings)  # type: ignore[arg-type]
    wal.stats.update(replayed_records=result.records, replay_s=round(result.seconds, 3))
    return wal


def check(data_dir: Path, repair: bool = False) -> tuple[int, list[str]]:
    """`kvd check-log`: (exit code, lines to print). 0 clean or torn tail; 1 corrupt."""
    path = data_dir / LOG_NAME
    if not path.exists():
        return 0, [f"{path}: no log yet"]
    data = path.read_bytes()  # a copy: a repair truncates the file under it
    store = Store()
    result = replay(data, store, str(path))
    lines = [f"{path}: {result.records} good records in {len(data)} bytes; "
             f"{store.live_count} values, {store.tombstones} tombstones"]
    damage = result.damage
    if damage is None:
        return 0, [*lines, "ok"]
    lost = len(data) - result.end
    if damage.torn:
        lines.append(f"{describe(path, damage)}: a write cut short by a crash; start-up "
                     f"drops its {lost} bytes on its own")
        return 0, lines
    lines.append(f"{describe(path, damage)}; a repair truncates at offset {result.end}, "
                 f"dropping {records_after(data, damage)} good record(s) after it ({lost} bytes)")
    if not repair:
        return 1, [*lines, "run `kvd check-log --repair` or `kvd start --repair` to do so"]
    os.truncate(path, result.end)
    return 0, [*lines, f"repaired: {path} now ends at offset {result.end}"]
