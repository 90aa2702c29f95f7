"""A node's durable Raft state: what it is, the interface to keep it, and a copy in memory.

Durable state is (HardState, Snapshot, entries after the snapshot). The rules a `Storage`
keeps, whatever its medium:

- `save` returns only once everything it was given is durable (for a file: fsync'ed). The
  core's messages are sent after `save`, so a crash can lose unsent messages but never make a
  node vote twice in a term or forget an entry it acknowledged.
- `save(entries=...)` whose first index is at or below the last stored entry replaces the
  stored suffix from that index on (a follower's conflicting, never-committed entries).
- `save(snapshot=...)` (a leader's snapshot a follower installs) replaces the whole stored log
  with it, before the entries of the same call are appended.
- `compact(snapshot)` (this node's own snapshot) drops the entries up to its index and keeps
  the rest.
- `load` gives back exactly what the last completed calls left, entries consecutive after the
  snapshot.

A fresh cluster's founders call `bootstrap(config)` on empty storage: they start from the same
snapshot at index 1, term 1, holding the founding configuration and an empty state machine
(empty snapshot data). A node that joins later starts empty (index 0) and gets that snapshot,
or a later one, from the leader: so it learns the configuration it joins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kvd.raft.config import Config
from kvd.raft.messages import Entry, Snapshot


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: str | None = None  # whom this node voted for in `term`
    commit: int = 0


EMPTY_SNAPSHOT = Snapshot(0, 0, Config())


@dataclass(slots=True)
class Restored:
    """What `load` returns and `Raft(...)` starts from."""

    hard_state: HardState = HardState()
    snapshot: Snapshot = EMPTY_SNAPSHOT
    entries: list[Entry] = field(default_factory=list)


def founding_state(config: Config) -> Restored:
    return Restored(HardState(term=1, commit=1), Snapshot(1, 1, config), [])


class Storage(Protocol):
    def load(self) -> Restored: ...

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None) -> None: ...

    def compact(self, snapshot: Snapshot) -> None: ...

    def bootstrap(self, config: Config) -> None: ...


def merge_entries(stored: list[Entry], base: int, entries: list[Entry]) -> None:
    """Append `entries` to `stored` (which starts after index `base`), replacing the suffix
    they overlap. Shared by both storages, so they agree on what a save means."""
    if not entries:
        return
    first = entries[0].index
    last = base + len(stored)
    if not base < first <= last + 1:
        raise ValueError(f"entries from {first} do not fit a log of ({base}, {last}]")
    del stored[first - base - 1:]
    stored.extend(entries)


class MemoryStorage:
    """Storage in memory, for the simulator: a crash loses the Raft object, never this."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot = EMPTY_SNAPSHOT
        self.entries: list[Entry] = []
        self.saves = 0

    def load(self) -> Restored:
        return Restored(self.hard_state, self.snapshot, list(self.entries))

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None) -> None:
        if snapshot is not None:
            self.snapshot, self.entries = snapshot, []
        merge_entries(self.entries, self.snapshot.index, entries)
        if hard_state is not None:
            self.hard_state = hard_state
        self.saves += 1

    def compact(self, snapshot: Snapshot) -> None:
        if snapshot.index <= self.snapshot.index:
            return
        del self.entries[:snapshot.index - self.snapshot.index]
        self.snapshot = snapshot

    def bootstrap(self, config: Config) -> None:
        if self.snapshot.index or self.entries or self.hard_state.term:
            raise ValueError("bootstrap needs empty storage")
        state = founding_state(config)
        self.hard_state, self.snapshot = state.hard_state, state.snapshot
