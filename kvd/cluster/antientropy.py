"""Anti-entropy: compare bucketed digests with one peer and exchange only what differs.

The store keeps one digest per bucket (NBUCKETS, over live data), maintained on every merge,
so a comparison costs one array. A pass ("walk") is pull-then-push, in bounded steps:

    asker  -- SYNC {digests, cursor} -->                     peer
           <-- SYNC_REPLY {buckets, entries, next, progress}
    asker merges the entries, then for the same buckets
           -- SYNC_PUSH {entries the peer lacks or holds older} -->
    and asks again from `next` until the peer answers next = -1.

Each reply carries whole buckets up to STEP_ENTRIES entries (at least one bucket), so memory
and message size stay bounded whatever the divergence; the asker has one step in flight at a
time (flow control by pull). Entries travel with their tombstones, so deletions win too.
Sans-IO: functions of the store, no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvd.cluster.peerwire import entry_size
from kvd.state.store import NBUCKETS, Entry, Store

STEP_ENTRIES = 1024

WireEntry = list  # [key, value|None, stamp, origin, expires_at]


def entry_to_wire(key: bytes, e: Entry) -> WireEntry:
    return [key, e.value, e.stamp, e.origin, e.expires_at]


def differing(mine: list[int], theirs: list[int], start: int) -> list[int]:
    """Buckets from `start` whose digests differ."""
    return [b for b in range(start, NBUCKETS) if mine[b] != theirs[b]]


def collect(store: Store, theirs: list[int], start: int, budget: int = STEP_ENTRIES,
            max_bytes: int = 1 << 62) -> tuple[list[int], list[WireEntry], int]:
    """Whole differing buckets from `start` up to `budget` entries and `max_bytes` wire bytes
    (always at least one bucket): (buckets, entries, next cursor or -1 when the walk is
    done)."""
    buckets: list[int] = []
    entries: list[WireEntry] = []
    size = 0
    for b in differing(store.bucket_digests, theirs, start):
        wire = [entry_to_wire(k, e) for k, e in store.bucket_items(b)]
        more = sum(map(entry_size, wire))
        if buckets and (len(entries) + len(wire) > budget or size + more > max_bytes):
            return buckets, entries, b
        buckets.append(b)
        entries.extend(wire)
        size += more
    return buckets, entries, -1


def to_push(store: Store, buckets: list[int], theirs: list[WireEntry],
            budget: int = STEP_ENTRIES,
            max_bytes: int = 1 << 62) -> tuple[list[WireEntry], int | None]:
    """Our entries in `buckets` that the peer lacks or holds an older version of, for whole
    buckets up to `budget` entries and `max_bytes` (always at least one bucket): (entries,
    the first bucket left for a later step or None). Bounded, so that a peer that holds little
    (one that joins empty) does not make us ship our whole store in one turn."""
    their_version = {w[0]: (w[2], w[3]) for w in theirs}
    out: list[WireEntry] = []
    size = 0
    for i, b in enumerate(buckets):
        wire = [entry_to_wire(key, e) for key, e in store.bucket_items(b)
                if (v := their_version.get(key)) is None or e.version > v]
        more = sum(map(entry_size, wire))
        if i and (len(out) + len(wire) > budget or size + more > max_bytes):
            return out, b
        out.extend(wire)
        size += more
    return out, None


@dataclass
class Walk:
    """The asker's side of one pass with one peer."""

    peer: str
    started: int  # ms
    sent: int  # ms, when the last step was asked for
    cursor: int = 0
    progress: dict | None = None  # the peer's replication progress at the first step
    buckets: int = 0
    pulled: int = 0
    pushed: int = 0


@dataclass
class Counters:
    rounds: int = 0  # passes completed
    aborted: int = 0  # passes given up (peer silent)
    buckets_repaired: int = 0
    keys_pulled: int = 0
    keys_pushed: int = 0
    last_sync: dict[str, int] = field(default_factory=dict)  # peer -> ms of last pass

    def info(self, now: int) -> dict:
        return {
            "ae_rounds": self.rounds,
            "ae_aborted": self.aborted,
            "ae_buckets_repaired": self.buckets_repaired,
            "ae_keys_pulled": self.keys_pulled,
            "ae_keys_pushed": self.keys_pushed,
            "ae_last_sync_ms_ago": {p: max(0, now - t) for p, t in sorted(self.last_sync.items())},
        }
