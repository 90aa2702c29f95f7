"""Log compaction: rewrite the log as one record per store bucket, without stopping the loop.

Why not fork() like Redis's BGREWRITEAOF: a forked CPython child writes to every object's
reference count as it walks the store, so copy-on-write ends up copying most of the heap, and
forking a process that runs ZeroMQ's I/O threads and the fsync thread invites deadlocks.
Instead the rewrite walks the store's buckets in short slices from the loop's housekeeping
tick, and every record committed to the live log meanwhile is copied into it as well.

Why that is a faithful copy: replay merges records by last-writer-wins, which keeps the
greatest version per key whatever the order. For each key, the newest entry at the end of the
rewrite either was committed after it started (so it is in the copied tail) or was already in
the store when its bucket was walked (so it is in the snapshot); anything else in the file is
older and loses. Entries are only ever applied between slices, never during one.

The swap is crash-safe at every step: the rewrite goes to `kv.wal.rewrite`, is fsynced (the
bulk by a helper thread, then the tail that arrived meanwhile by the loop), then renamed over
`kv.wal` (atomic), then the directory is fsynced. Before the rename a crash leaves
the old log complete (start-up deletes the leftover); after it, the new one is complete.

What the rewrite keeps: every live value; expired values become tombstones (as the store's
expiry does); tombstones are kept for replication until they are older than the configured
maximum age (`tombstone_max_age`), then left out. A checkpoint record at the top carries
the highest seq per origin, which snapshot records (seq 0) do not.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kvd.log.record import MAGIC, encode_checkpoint, encode_rows
from kvd.state.hlc import stamp_ms
from kvd.state.store import NBUCKETS, Entry, Store

SLICE_S = 0.02  # per housekeeping tick (every 0.1 s): a rewrite takes at most ~20% of the loop
FLUSH_BYTES = 1 << 20


class File(Protocol):
    size: int

    def write(self, data: bytes | bytearray) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


def should_compact(size: int, live: int, min_size: int, ratio: float) -> bool:
    """Rewrite once the log is over the minimum size and `ratio` times what is live."""
    return size >= min_size and size > ratio * live


class Rewrite:
    """One rewrite in progress: call `step()` until it returns True, `start_bulk_sync()`, wait
    for `bulk_synced()`, then `flush()`, `sync()` and `install()` — separate steps, so tests
    can crash between any two."""

    def __init__(self, path: Path, file: File, store: Store, seqs: dict[str, int],
                 now_ms: int, tombstone_max_age_ms: int, clock: Callable[[], float]) -> None:
        self.path = path
        self.file = file
        self.store = store
        self.now_ms = now_ms
        self.cutoff_ms = now_ms - tombstone_max_age_ms
        self.clock = clock
        self.started = clock()
        self.bucket = 0  # the next bucket to snapshot
        self.buf = bytearray(MAGIC + encode_checkpoint(seqs))
        self.records = 1
        self.dropped_tombstones = 0
        self.bulk: threading.Thread | None = None
        self.bulk_error: OSError | None = None

    def add_tail(self, data: bytes, records: int) -> None:
        """Records just committed to the live log."""
        self.buf += data
        self.records += records

    def step(self) -> bool:
        """Snapshot buckets for one slice of time; True once every bucket is done."""
        deadline = self.clock() + SLICE_S
        while self.bucket < NBUCKETS:
            self._snapshot(self.bucket)
            self.bucket += 1
            if len(self.buf) >= FLUSH_BYTES:
                self.flush()
            if self.clock() >= deadline:
                break
        return self.bucket >= NBUCKETS

    def _snapshot(self, b: int) -> None:
        """One bucket's entries as one batch record (replay reads batches faster)."""
        now, cutoff, rows = self.now_ms, self.cutoff_ms, []
        for key, entry in self.store.bucket_items(b):
            if entry.value is not None and entry.expires_at and entry.expires_at <= now:
                entry = Entry(None, entry.stamp, entry.origin, 0)
            if entry.value is None and stamp_ms(entry.stamp) < cutoff:
                self.dropped_tombstones += 1
                continue
            rows.append((key, entry.value, entry.stamp, entry.origin, entry.expires_at, 0))
        self.buf += encode_rows(rows)
        self.records += len(rows)

    def start_bulk_sync(self) -> None:
        """Write what is buffered and fsync it in a helper thread: the bulk of a big rewrite
        (150 MB for a million keys) then reaches the disk without stalling the loop, which
        goes on copying the tail into `buf`. Only that small tail is fsynced in the loop."""
        self.flush()
        self.bulk = threading.Thread(target=self._sync_bulk, name="kvd-rewrite-fsync",
                                      daemon=True)
        self.bulk.start()

    def _sync_bulk(self) -> None:
        try:
            self.file.sync()
        except OSError as exc:
            self.bulk_error = exc

    def bulk_synced(self) -> bool:
        """True once the helper's fsync is done; raises the OSError if it failed."""
        if self.bulk is None or self.bulk.is_alive():
            return False
        if self.bulk_error is not None:
            raise self.bulk_error
        return True

    def flush(self) -> None:
        if self.buf:
            self.file.write(self.buf)
            self.buf = bytearray()

    def sync(self) -> None:
        self.file.sync()

    def install(self, final: Path) -> None:
        """Atomically put the rewritten file in place of the log (fsync the dir afterwards)."""
        os.rename(self.path, final)

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
