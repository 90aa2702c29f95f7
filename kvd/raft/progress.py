"""What a leader knows of one follower's log, and how it feeds it (etcd's tracker.Progress).

States (transitions are the methods below):

    PROBE      one AppendEntries in flight at a time: find where the logs match. Entered on
               election, after a rejection, after a snapshot. A success moves to REPLICATE.
    REPLICATE  the logs match up to `match`: stream entries optimistically (`next` runs ahead
               of `match`), at most `max_inflight` messages unacknowledged. A rejection falls
               back to PROBE at match + 1.
    SNAPSHOT   the entries it needs are compacted away: a snapshot is on its way, nothing else
               is sent. An acknowledgement at or past it returns to PROBE (then REPLICATE);
               silence for an election timeout returns to PROBE too, so a lost snapshot is sent
               again rather than waited for forever.

Invariant: match < next; match only grows (a follower never un-persists what it acknowledged).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False  # PROBE: wait for an answer (or a heartbeat) before the next
    pending_snapshot: int = 0  # SNAPSHOT: the index of the snapshot sent
    snapshot_ticks: int = 0  # SNAPSHOT: ticks since it went out
    recent_active: bool = False  # heard from within the current check-quorum window
    inflight: deque[int] = field(default_factory=deque)  # REPLICATE: last index per message

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1  # a snapshot that arrived was acknowledged into `match`
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """A success up to `index`; False if it says nothing new (a duplicate, a late one)."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.probe_sent = False
        return True

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """A rejection of prev_index `rejected`; the follower's log may match up to `hint`.
        False when it is stale (an answer to a message this state no longer waits for)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent(self, last: int) -> None:
        """An AppendEntries carrying entries up to `last` (or none: last == next - 1) left."""
        if self.state is ProgressState.REPLICATE and last >= self.next:
            self.next = last + 1
            self.inflight.append(last)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def free_to(self, index: int) -> None:
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True
