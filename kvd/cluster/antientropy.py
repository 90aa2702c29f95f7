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

from kvd.state.store import NBUCKETS, Entry, Store

STEP_ENTRIES = 4096

WireEntry = list  # [key, value|None, stamp, origin, expires_at]


def entry_to_wire(key: bytes, e: Entry) -> WireEntry:
    return [key, e.value, e.stamp, e.origin, e.expires_at]


def differing(mine: list[int], theirs: list[int], start: int) -> list[int]:
    """Buckets from `start` whose digests differ."""
    return [b for b in range(start, NBUCKETS) if mine[b] != theirs[b]]


def collect(store: Store, theirs: list[int], start: int,
            budget: int = STEP_ENTRIES) -> tuple[list[int], list[WireEntry], int]:
    """Whole differing buckets from `start` up to `budget` entries:
    (buckets, entries, next cursor or -1 when the walk is done)."""
    buckets: list[int] = []
    entries: list[WireEntry] = []
    for b in differing(store.bucket_digests, theirs, start):
        items = store.bucket_items(b)
        if buckets and len(entries) + len(items) > budget:
            return buckets, entries, b
        buckets.append(b)
        entries.extend(entry_to_wire(k, e) for k, e in items)
    return buckets, entries, -1


def to_push(store: Store, buckets: list[int], theirs: list[WireEntry]) -> list[WireEntry]:
    """Our entries in `buckets` that the peer lacks or holds an older version of."""
    their_version = {w[0]: (w[2], w[3]) for w in theirs}
    out = []
    for b in buckets:
        for key, e in store.bucket_items(b):
            v = their_version.get(key)
            if v is None or e.version > v:
                out.append(entry_to_wire(key, e))
    return out


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
