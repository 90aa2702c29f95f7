"""The write-ahead log: every applied write goes to disk under one of three fsync policies.

The server calls `append(changes)` and then `commit()` once per loop turn, and sends the turn's
replies only after `commit()` returns, so under `always` one fsync covers every write drained
in the turn (group commit). The policies:

    always    a reply is sent only after its record is fsynced: an acknowledged write survives
              a crash of the process or of the machine
    everysec  records are written to the OS every turn and fsynced by a helper thread at least
              once a second: a process crash loses nothing, a machine crash up to about 1 s
    no        records are written to the OS every turn and fsynced when the OS decides:
              a process crash loses nothing, a machine crash whatever the OS had not flushed

Errors: if writing fails (disk full, I/O error) the file is cut back to the last committed
record and `StorageError` is raised, so the server undoes the turn and answers IO_ERROR; the
next turn tries again. If cutting back or fsync fails, what is on disk is no longer known, so
the log refuses every later write until kvd restarts (as PostgreSQL does after a failed
fsync); reads go on. Either way the daemon's log says so, and INFO tells the state now apart
from history: `log_writable` and `log_error` say whether the log takes writes at this moment
(and why not), `log_last_error` and `log_last_error_at` keep the last failure once it has
passed (a disk that was full and has space again), `log_errors` counts them all.

Compaction (kvd.log.compaction) runs in slices from `tick()`; every record committed meanwhile is
copied into the rewrite too, and the rewritten file replaces this one atomically.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path

from kvd.log.compaction import Rewrite, should_compact
from kvd.log.logfile import LogFile, Syncer, sync_dir
from kvd.log.record import MAGIC, encode_batch, encode_entries
from kvd.state.hlc import wall_ms
from kvd.state.node import Change
from kvd.state.store import Store
from shared.errors import StorageError

log = logging.getLogger("kvd.log.wal")

LOG_NAME = "kv.wal"
REWRITE_NAME = "kv.wal.rewrite"
EVERYSEC_S = 1.0
RETRY_S = 60.0  # after a failed compaction (e.g. disk full), wait before the next one


class WriteAheadLog:
    """The real `Log` of kvd.loop.Log, over one file in the data dir."""

    def __init__(self, data_dir: Path, file: LogFile, store: Store, policy: str, *,
                 records: int = 0, seqs: dict[str, int] | None = None, batches: bool = True,
                 compaction_ratio: float = 2.0, compaction_min_size: int = 64 << 20,
                 tombstone_max_age_s: float = 7 * 86400, syncer: Syncer | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], int] = wall_ms) -> None:
        self.data_dir = data_dir
        self.file = file
        self.store = store
        self.policy = policy
        self.records = records  # entries in the file, for the live-size estimate
        self.seqs = seqs or {}  # highest seq committed per origin
        # A turn as one batch record; False while the file is a KVWAL001 one (kvd.log.record),
        # which takes single entries until a rewrite replaces it.
        self.batches = batches
        self.compaction_ratio = compaction_ratio
        self.compaction_min_size = compaction_min_size
        self.tombstone_max_age_ms = int(tombstone_max_age_s * 1000)
        self.syncer = syncer if syncer is not None or policy != "everysec" else Syncer()
        self.clock, self.wall = clock, wall
        self.rewrite: Rewrite | None = None
        self.failed: str | None = None  # set once the file's state is unknown: no more writes
        self.last_error = ""  # the last failure of any kind, kept after it has passed
        self.last_error_at = 0  # ... and when it happened (Unix seconds; 0: never)
        self.refusing = ""  # the last write failed and none has succeeded since: why
        self.stats: dict[str, object] = {
            "log_errors": 0, "log_compactions": 0, "last_compaction_at": 0,
            "last_compaction_s": 0.0, "replayed_records": 0, "replay_s": 0.0,
        }
        self._turn: list[Change] = []
        self._dirty = False
        self._last_sync = clock()
        self._retry_at = 0.0  # no new rewrite before this, after one failed

    # -- the Log protocol -----------------------------------------------------------------

    def append(self, changes: list[Change]) -> None:
        if self.failed:
            raise StorageError(f"the log is not writable ({self.failed}) — restart kvd; "
                               "reads still work")
        self._turn.extend(changes)

    def commit(self) -> None:
        changes, self._turn = self._turn, []
        if not changes:
            return
        data = encode_batch(changes) if self.batches else encode_entries(changes)
        self._check_syncer()
        self._write(data)
        self.refusing = ""  # the disk took this write: whatever failed before has passed
        self._dirty = True
        self.records += len(changes)
        seqs = self.seqs
        for c in changes:
            if c.seq > seqs.get(c.entry.origin, 0):
                seqs[c.entry.origin] = c.seq
        if self.rewrite is not None:
            self.rewrite.add_tail(data, len(changes))

    def _write(self, data: bytes) -> None:
        committed = self.file.size
        try:
            self.file.write(data)
        except OSError as exc:
            self._refuse(exc, committed, "writing", sticky=False)
        if self.policy == "always":
            try:
                self.file.sync()
            except OSError as exc:
                self._refuse(exc, committed, "fsync of", sticky=True)

    def tick(self, now: float) -> None:
        if self.policy == "everysec" and self._dirty and now - self._last_sync >= EVERYSEC_S:
            self._dirty = False
            self._last_sync = now
            assert self.syncer is not None
            self.syncer.request(self.file)
        try:
            if self.rewrite is not None:
                self._step_rewrite()
            elif not self.failed and now >= self._retry_at and should_compact(
                self.file.size, self.live_bytes(), self.compaction_min_size,
                self.compaction_ratio):
                self.start_rewrite()
        except OSError as exc:
            self._abandon_rewrite(exc)

    def close(self) -> None:
        if self.rewrite is not None:
            self.rewrite.abandon()
            self.rewrite = None
        if self.syncer is not None:
            self.syncer.close()
        try:
            self.file.sync()
        except OSError as exc:
            log.error("final fsync of %s failed: %s", self.file.path, exc)
        self.file.close()

    def info(self) -> dict:
        return {
            "fsync": self.policy,
            "log_size": self.file.size,
            "log_fsyncs": self.file.syncs,
            "log_live_bytes": self.live_bytes(),
            "log_records": self.records,
            "log_error": self.failed or self.refusing,  # empty while the log is writable
            "log_writable": not (self.failed or self.refusing),
            "log_last_error": self.last_error,
            "log_last_error_at": self.last_error_at,
            "compacting": self.rewrite is not None,
            **self.stats,
        }

    # -- errors ---------------------------------------------------------------------------

    def _refuse(self, exc: OSError, committed: int, doing: str, sticky: bool) -> None:
        """Cut the file back to `committed` and raise. After a failed fsync, or if cutting
        back fails, what is on disk is unknown: stop writing until restart."""
        what = "no space left on the device" if exc.errno == errno.ENOSPC else str(exc)
        self._record(f"{doing} {self.file.path} failed: {what}")
        self.refusing = self.last_error
        try:
            self.file.truncate(committed)
        except OSError as again:
            self.failed = f"{self.last_error}; cutting it back failed too: {again}"
        if sticky and self.failed is None:
            self.failed = self.last_error
        log.error("%s — the write was refused", self.failed or self.last_error)
        raise StorageError(f"{self.last_error} — the write was not applied") from None

    def _record(self, error: str) -> None:
        self.stats["log_errors"] += 1  # type: ignore[operator]
        self.last_error, self.last_error_at = error, self.wall() // 1000

    def _check_syncer(self) -> None:
        """An everysec fsync that failed means acknowledged data may be gone: stop writing."""
        if self.syncer is not None and self.syncer.error is not None and not self.failed:
            self.failed = f"fsync of {self.file.path} failed: {self.syncer.error}"
            self._record(self.failed)
            log.error("%s — refusing writes until restart", self.failed)
        if self.failed:
            raise StorageError(f"the log is not writable ({self.failed}) — restart kvd")

    # -- compaction -----------------------------------------------------------------------

    def live_bytes(self) -> int:
        """An estimate of what a fresh rewrite would take: stored entries × mean record."""
        if self.records == 0:
            return 0
        mean = (self.file.size - len(MAGIC)) / self.records
        return int((self.store.live_count + self.store.tombstones) * mean) + len(MAGIC)

    def start_rewrite(self) -> None:
        log.info("compacting %s: %d bytes, about %d live", self.file.path, self.file.size,
                 self.live_bytes())
        path = self.data_dir / REWRITE_NAME
        self.rewrite = Rewrite(path, LogFile(path, truncate=True), self.store, dict(self.seqs),
                               self.wall(), self.tombstone_max_age_ms, self.clock)

    def _step_rewrite(self) -> None:
        rewrite = self.rewrite
        assert rewrite is not None
        if not rewrite.step():
            return
        if rewrite.bulk is None:
            rewrite.start_bulk_sync()
            return
        if not rewrite.bulk_synced():
            return
        rewrite.flush()  # the tail that came in during the bulk fsync
        rewrite.sync()
        rewrite.install(self.data_dir / LOG_NAME)  # from here on the new file is the log
        self.rewrite = None
        old, self.file = self.file, rewrite.file
        self.file.path = self.data_dir / LOG_NAME
        self.file.syncs += old.syncs  # INFO log_fsyncs counts on across a rewrite
        if self.syncer is not None:
            self.syncer.retarget(self.file)
        old.close()
        self.records = rewrite.records
        self.batches = True  # the rewrite is a file of this version's
        try:
            sync_dir(self.data_dir)
        except OSError as exc:
            # Until the rename is durable a power cut could bring the old file back and
            # lose what is appended to the new one: no more writes this run.
            self.failed = f"fsync of {self.data_dir} after compaction failed: {exc}"
            self._record(self.failed)
            log.error("%s — refusing writes until restart", self.failed)
            return
        self._compacted(rewrite)

    def _compacted(self, rewrite: Rewrite) -> None:
        elapsed = self.clock() - rewrite.started
        self.stats["log_compactions"] += 1  # type: ignore[operator]
        self.stats["last_compaction_at"] = self.wall() // 1000
        self.stats["last_compaction_s"] = round(elapsed, 3)
        log.info("compacted the log to %d bytes (%d records) in %.2f s; %d old tombstones "
                 "left out", self.file.size, self.records, elapsed, rewrite.dropped_tombstones)

    def _abandon_rewrite(self, exc: OSError) -> None:
        """A rewrite that fails costs nothing: the old log is still complete."""
        self._record(f"compaction failed: {exc}")
        log.error("%s — keeping the current log", self.last_error)
        if self.rewrite is not None:
            self.rewrite.abandon()
            self.rewrite = None
        self._retry_at = self.clock() + RETRY_S
