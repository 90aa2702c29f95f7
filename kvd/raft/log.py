"""The Raft log in memory: a snapshot, the entries after it, and how far they are stable,
committed and applied.

Invariants (checked by the simulator after every step):

- `entries[k].index == snapshot.index + 1 + k`; terms never go down along the log.
- snapshot.index <= applied <= committed <= last_index; committed never goes down.
- `stable` (the last index the caller has persisted) <= last_index; a truncation below it
  pulls it down, so the replacing entries are handed out to persist again.
- Committed entries are never truncated (`append` refuses: that would be a safety bug).
- `configs` holds (index, Config) for every config entry in `entries`; the configuration in
  force is the newest of them, else the snapshot's (see kvd.raft.config).
"""

from __future__ import annotations

from kvd.raft.config import ConfChange, Config, apply_change
from kvd.raft.messages import Entry, EntryKind, Snapshot


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: list[Entry], commit: int) -> None:
        for k, e in enumerate(entries):
            if e.index != snapshot.index + 1 + k:
                raise ValueError(f"entry {e.index} out of place after snapshot {snapshot.index}")
        self.snapshot = snapshot
        self.entries = list(entries)
        if not snapshot.index <= commit <= self.last_index:
            raise ValueError(f"commit {commit} outside the log [{snapshot.index}, "
                             f"{self.last_index}]")
        self.committed = commit
        self.applied = snapshot.index
        self.stable = self.last_index
        self.configs: list[tuple[int, Config]] = []
        self._track_configs(self.entries)

    # -- reading ----------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.snapshot.index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot.index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or not there yet."""
        offset = index - self.snapshot.index
        if offset == 0:
            return self.snapshot.term
        if 0 < offset <= len(self.entries):
            return self.entries[offset - 1].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries [lo, hi), lo >= first_index."""
        base = self.first_index
        assert lo >= base, f"slice from {lo}, compacted up to {base - 1}"
        return self.entries[lo - base:hi - base]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a candidate whose log ends at (last_index, last_term) at least as up to date?"""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last (index, term) at or below `index` whose term is <= `term`: every entry
        after it up to `index` has a bigger term and cannot match the leader's at `term`."""
        index = min(index, self.last_index)
        while index > self.snapshot.index:
            t = self.term(index)
            assert t is not None
            if t <= term:
                return index, t
            index -= 1
        return self.snapshot.index, self.snapshot.term

    @property
    def config(self) -> Config:
        return self.configs[-1][1] if self.configs else self.snapshot.config

    def config_at(self, index: int) -> Config:
        found = self.snapshot.config
        for at, config in self.configs:
            if at > index:
                break
            found = config
        return found

    @property
    def last_config_index(self) -> int:
        return self.configs[-1][0] if self.configs else self.snapshot.index

    def unstable(self) -> list[Entry]:
        return self.slice(self.stable + 1, self.last_index + 1)

    def to_apply(self) -> list[Entry]:
        return self.slice(self.applied + 1, self.committed + 1)

    # -- changing ---------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append `entries`, first cutting off whatever the log holds from their first index
        on (the caller found the conflict)."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise AssertionError(f"truncating committed entry {first} <= {self.committed}")
        if first > self.last_index + 1:
            raise AssertionError(f"gap: appending {first} after {self.last_index}")
        if first <= self.last_index:
            del self.entries[first - self.first_index:]
            self.stable = min(self.stable, first - 1)
            while self.configs and self.configs[-1][0] >= first:
                self.configs.pop()
        self.entries.extend(entries)
        self._track_configs(entries)

    def maybe_append(self, prev_index: int, prev_term: int, commit: int,
                     entries: list[Entry]) -> int | None:
        """A leader's AppendEntries: None if the log does not hold (prev_index, prev_term);
        otherwise the index up to which it now matches the leader's log. Entries already
        held are kept (a late duplicate must never cut off newer ones)."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for e in entries:
            if not self.match_term(e.index, e.term):
                self.append(entries[e.index - prev_index - 1:])
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            self.committed = min(index, self.last_index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a leader's snapshot."""
        self.snapshot = snapshot
        self.entries = []
        self.configs = []
        self.committed = self.stable = self.applied = snapshot.index

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Drop entries up to `index` (applied) in favour of a snapshot of the state there."""
        if not self.snapshot.index < index <= self.applied:
            raise ValueError(f"snapshot index {index} not in ({self.snapshot.index}, "
                             f"{self.applied}] (applied)")
        term = self.term(index)
        assert term is not None
        snap = Snapshot(index, term, self.config_at(index), data)
        del self.entries[:index - self.snapshot.index]
        self.configs = [(at, c) for at, c in self.configs if at > index]
        self.snapshot = snap
        return snap

    def _track_configs(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.kind is EntryKind.CONFIG:
                self.configs.append((e.index, apply_change(self.config, ConfChange.decode(e.data))))
