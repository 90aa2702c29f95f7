"""Raft state in files: an append-only, checksummed log plus an atomically replaced snapshot
(the format is in kvd.raft.records).

- `save` appends TRUNCATE (when the entries overlap what is stored), ENTRY records, then the
  HARD_STATE, and fsyncs before returning. The hard state comes last, so a torn tail can cut
  off a vote or a commit index only together with the save that made it — a save that never
  returned, whose messages were never sent. A save that only moves the commit index is
  appended without an fsync (etcd's MustSync rule): no message promises a commit index, a
  node that forgets how far it knew the log committed learns it again from the leader, and
  on this path the fsync was one of three on a commit's critical path.
- A snapshot (installed from a leader, or this node's own) is written to raft.snap through
  write-fsync-rename-fsync(dir); then the log is rewritten the same way, starting with a BASE
  record naming the snapshot it follows. A crash between the two leaves a log whose BASE is
  older than the snapshot: on load its entries are kept after the snapshot only if the log
  holds the snapshot's own (index, term) entry — otherwise they belong to another history.
- Recovery drops a torn tail (and cuts it off the file) but refuses damage in the middle, a
  BASE newer than the snapshot, or records out of order, naming the file and the offset.

The stored entries are also kept in memory (the rewrite after a snapshot needs them).
"""

from __future__ import annotations

import logging
import os

from kvd.raft import records
from kvd.raft.config import Config
from kvd.raft.errors import StorageCorrupt
from kvd.raft.files import Files, OsFiles
from kvd.raft.messages import Entry, Snapshot
from kvd.raft.storage import EMPTY_SNAPSHOT, HardState, Restored, founding_state, merge_entries

log = logging.getLogger("kvd.raft.filestore")

LOG_NAME = "raft.log"
SNAP_NAME = "raft.snap"


class FileStorage:
    def __init__(self, directory: str | os.PathLike[str], files: Files | None = None) -> None:
        self.where = str(directory)
        self.files = files if files is not None else OsFiles(directory)
        self.hard_state = HardState()
        self.snapshot = EMPTY_SNAPSHOT
        self.entries: list[Entry] = []
        self._load()

    # -- the Storage interface --------------------------------------------------------------

    def load(self) -> Restored:
        return Restored(self.hard_state, self.snapshot, list(self.entries))

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None) -> None:
        if snapshot is not None:
            self._write_snapshot(snapshot)
            self.snapshot, self.entries = snapshot, []
            merge_entries(self.entries, snapshot.index, entries)
            if hard_state is not None:
                self.hard_state = hard_state
            self._rewrite()
            return
        out = []
        stored = self.hard_state
        must_sync = bool(entries) or (hard_state is not None and (
            hard_state.term != stored.term or hard_state.vote != stored.vote))
        if entries and entries[0].index <= self._last_index():
            out.append(records.truncate(entries[0].index))
        merge_entries(self.entries, self.snapshot.index, entries)
        out.append(records.entries(entries))
        if hard_state is not None:
            self.hard_state = hard_state
            out.append(records.hard_state(hard_state))
        data = b"".join(out)
        if data:
            self.files.append(LOG_NAME, data)
            if must_sync:
                self.files.sync(LOG_NAME)

    def compact(self, snapshot: Snapshot) -> None:
        if snapshot.index <= self.snapshot.index:
            return
        self._write_snapshot(snapshot)
        del self.entries[:snapshot.index - self.snapshot.index]
        self.snapshot = snapshot
        self._rewrite()

    def bootstrap(self, config: Config) -> None:
        if self.snapshot.index or self.entries or self.hard_state.term:
            raise ValueError(f"{self.where}: bootstrap needs empty Raft storage")
        state = founding_state(config)
        self._write_snapshot(state.snapshot)
        self.hard_state, self.snapshot = state.hard_state, state.snapshot
        self._rewrite()

    # -- writing ----------------------------------------------------------------------------

    def _last_index(self) -> int:
        return self.snapshot.index + len(self.entries)

    def _write_snapshot(self, s: Snapshot) -> None:
        self.files.replace(SNAP_NAME, records.snapshot_file(s))

    def _rewrite(self) -> None:
        s = self.snapshot
        self.files.replace(LOG_NAME, records.LOG_MAGIC + records.base(s.index, s.term)
                           + records.hard_state(self.hard_state) + records.entries(self.entries))

    # -- recovery ---------------------------------------------------------------------------

    def _corrupt(self, name: str, offset: int, reason: str) -> StorageCorrupt:
        return StorageCorrupt(os.path.join(self.where, name), offset, reason)

    def _load(self) -> None:
        snap_bytes = self.files.read(SNAP_NAME)
        if snap_bytes is not None:
            snap = records.parse_snapshot(snap_bytes)
            if isinstance(snap, str):  # written by rename: never torn, so damaged
                raise self._corrupt(SNAP_NAME, 0, snap)
            self.snapshot = snap
        data = self.files.read(LOG_NAME)
        if data is None:
            self._rewrite()
            return
        magic = len(records.LOG_MAGIC)
        if data[:magic] != records.LOG_MAGIC:
            raise self._corrupt(LOG_NAME, 0, "not a raft log (bad magic)")
        found = records.scan(data, magic)
        if found.damage is not None and not found.damage.torn:
            raise self._corrupt(LOG_NAME, found.damage.offset, found.damage.reason)
        base_index, base_term = self._replay(found.records)
        if found.damage is not None:
            log.warning("%s: dropping a torn tail of %d bytes at offset %d (a crash mid-save)",
                        os.path.join(self.where, LOG_NAME), len(data) - found.end, found.end)
            self.files.truncate(LOG_NAME, found.end)
        if base_index == self.snapshot.index and base_term != self.snapshot.term:
            raise self._corrupt(LOG_NAME, len(records.LOG_MAGIC),
                                f"the log follows a snapshot of term {base_term} at "
                                f"{base_index}, {SNAP_NAME} has term {self.snapshot.term}")
        if base_index < self.snapshot.index:
            self._reconcile(base_index)
        self.hard_state = _with_commit_at_least(self.hard_state, self.snapshot.index)

    def _replay(self, found: list[tuple[int, list]]) -> tuple[int, int]:
        """Apply the records; returns the log's BASE."""
        if not found or found[0][1][:1] != [records.Rec.BASE]:
            raise self._corrupt(LOG_NAME, len(records.LOG_MAGIC), "the log has no BASE record")
        base_index, base_term = 0, 0
        last = base_index
        for offset, payload in found:
            try:
                kind = records.Rec(payload[0])
                if kind is records.Rec.BASE:
                    if offset != len(records.LOG_MAGIC):
                        raise ValueError("a second BASE record")
                    _, base_index, base_term = payload
                    last = base_index
                elif kind is records.Rec.HARD_STATE:
                    self.hard_state = records.parse_hard_state(payload)
                elif kind is records.Rec.ENTRY:
                    entry = records.parse_entry(payload)
                    if entry.index != last + 1:
                        raise ValueError(f"entry {entry.index} after {last}")
                    self.entries.append(entry)
                    last = entry.index
                else:
                    _, cut = payload
                    if not base_index < cut <= last:
                        raise ValueError(f"truncation at {cut} outside ({base_index}, {last}]")
                    del self.entries[cut - base_index - 1:]
                    last = cut - 1
            except (ValueError, TypeError, IndexError) as exc:
                raise self._corrupt(LOG_NAME, offset, f"bad record: {exc}") from None
        if base_index > self.snapshot.index:
            raise self._corrupt(LOG_NAME, len(records.LOG_MAGIC),
                                f"the log follows snapshot {base_index}, newer than "
                                f"{SNAP_NAME}'s {self.snapshot.index}")
        return base_index, base_term

    def _reconcile(self, base_index: int) -> None:
        """A crash came between writing raft.snap and rewriting raft.log: finish the job."""
        s = self.snapshot
        held = self.entries[s.index - base_index - 1] if 0 < s.index - base_index <= \
            len(self.entries) else None
        if held is None or held.term != s.term:
            self.entries = []  # another history than the snapshot's (or nothing after it)
        else:
            self.entries = self.entries[s.index - base_index:]
        self._rewrite()


def _with_commit_at_least(hs: HardState, index: int) -> HardState:
    return hs if hs.commit >= index else HardState(hs.term, hs.vote, index)
