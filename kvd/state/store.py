"""The in-memory store: keys to versioned entries, merged by last-writer-wins.

Invariants:
- Every entry carries what replication needs: a hybrid-clock `stamp`, the `origin` node and an
  absolute expiry (`expires_at`, Unix ms, 0 for none). A deletion is a tombstone entry
  (`value is None`) with its own stamp, so a late, older write cannot bring a key back.
- `merge()` is the only way in: an entry replaces the stored one only if its (stamp, origin)
  is greater (`_newer`, a total order). Applying the same entries in any order, any number of
  times, gives the same store.
- Keys live in `NBUCKETS` buckets by a stable hash. A SCAN cursor is a bucket index, so a key
  that exists for the whole scan is returned (its bucket never changes). Anti-entropy compares
  the per-bucket digests and exchanges only the buckets that differ.
- The digest is the XOR of a 64-bit hash of every live (key, version, expiry), kept
  incrementally per bucket and overall: equal digests mean equal data, and reading it costs
  nothing. A version (stamp, origin) names one write, so it stands for the value, as the
  version vector does in Riak's active anti-entropy: the write path never reads the value.
- Expired entries are invisible at once (reads check the time) and reclaimed by
  `expire_due()` from a heap, turned into tombstones with the same stamp: no full scans.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterator

from kvd.state.glob import compile_glob

NBUCKETS = 1024  # part of the anti-entropy protocol: every node must use the same number
# Keys under this prefix are the node's own records (kvd.state.users): stored, logged and
# replicated like any key, never listed (keys, scan) — the commands never see them.
SYSTEM = b"\x00kv\x00"
_MASK64 = (1 << 64) - 1
_LOST = object()  # Store.replace: the stored entry won
LOST = _LOST


class Entry:
    __slots__ = ("value", "stamp", "origin", "expires_at")

    def __init__(self, value: bytes | None, stamp: int, origin: str, expires_at: int = 0) -> None:
        self.value = value
        self.stamp = stamp
        self.origin = origin
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"Entry({self.value!r}, {self.stamp}, {self.origin!r}, {self.expires_at})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and self.version == other.version and (
            self.value, self.expires_at) == (other.value, other.expires_at)

    __hash__ = None  # type: ignore[assignment]

    @property
    def version(self) -> tuple[int, str]:
        """What last-writer-wins compares: the stamp, ties broken by origin name."""
        return (self.stamp, self.origin)

    def live(self, now: int) -> bool:
        return self.value is not None and (self.expires_at == 0 or self.expires_at > now)


def _newer(new: Entry, old: Entry) -> bool:
    """Last-writer-wins as a total order, so every node picks the same winner.

    Versions are unique per write in practice (an origin never reuses a stamp); should two
    writes ever share one (a clock bug, a hand-made log), the data breaks the tie the same way
    on every node instead of leaving the winner to arrival order.
    """
    if new.stamp != old.stamp or new.origin != old.origin:
        return (new.stamp, new.origin) > (old.stamp, old.origin)
    return (new.value is not None, new.value or b"", new.expires_at) > (
        old.value is not None, old.value or b"", old.expires_at)


def bucket_of(key: bytes) -> int:
    return zlib.crc32(key) & (NBUCKETS - 1)


def entry_hash(key: bytes, entry: Entry) -> int:
    """A 64-bit hash of a live entry's key, version and expiry, the same in every process.

    Hashing ints and tuples of ints is not salted (hashing bytes and str is), so this is
    stable across nodes running the same CPython; names and keys enter as CRC-32s. CRCs alone
    would not do: they are linear, so an XOR of them collapses for sets like {k01, k10} and
    {k00, k11}; the tuple hash mixes them non-linearly. The value is not hashed: its version
    names it (two writes never share one; if a bug made them, `_newer` would still pick one
    winner everywhere, but anti-entropy would not see that pair differ). That keeps the cost
    of a write's digest update flat, whatever the size of the value.
    """
    return _hash_of(zlib.crc32(key), len(key), entry.stamp, entry.origin, entry.expires_at)


_ORIGIN_CRCS: dict[str, int] = {}  # a node name's CRC-32: a few members, computed once each


def _origin_crc(origin: str) -> int:
    crc = _ORIGIN_CRCS.get(origin)
    if crc is None:
        crc = zlib.crc32(origin.encode("utf-8", "surrogateescape"))
        if len(_ORIGIN_CRCS) < 4096:  # bounded, whatever names a log or a peer brings
            _ORIGIN_CRCS[origin] = crc
    return crc


def _hash_of(key_crc: int, key_len: int, stamp: int, origin: str, expires_at: int) -> int:
    """`entry_hash` given the key's CRC-32, which the write path has from bucketing already."""
    return hash((key_crc, key_len, stamp, _origin_crc(origin), expires_at)) & _MASK64


def matcher(pattern: bytes | None):
    """A predicate for a glob; plain `prefix*` patterns skip the regex engine."""
    if pattern is None or pattern == b"*":
        return None
    body = pattern[:-1]
    if pattern.endswith(b"*") and not any(c in body for c in b"*?[\\"):
        return lambda key: key.startswith(body)
    return compile_glob(pattern)


class Store:
    def __init__(self) -> None:
        self._buckets: list[dict[bytes, Entry]] = [{} for _ in range(NBUCKETS)]
        self.bucket_digests: list[int] = [0] * NBUCKETS
        self.digest = 0
        self.live_count = 0  # live values, counting expired ones not yet reclaimed
        self.tombstones = 0
        self._expiry: list[tuple[int, bytes]] = []  # heap of (expires_at, key)
        self.expired: list[bytes] = []  # reclaimed by expire_due, until the loop takes them

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def lookup(self, key: bytes) -> Entry | None:
        """The stored entry, tombstone or expired included: what merging compares against."""
        return self._buckets[zlib.crc32(key) & (NBUCKETS - 1)].get(key)

    def get(self, key: bytes, now: int) -> Entry | None:
        """The live entry for a key, or None."""
        entry = self._buckets[zlib.crc32(key) & (NBUCKETS - 1)].get(key)
        if entry is None or entry.value is None:
            return None
        if entry.expires_at and entry.expires_at <= now:
            return None
        return entry

    def merge(self, key: bytes, entry: Entry) -> bool:
        """Last-writer-wins: store `entry` if it is newer than what is there. True if stored."""
        return self.replace(key, entry) is not _LOST

    def replace(self, key: bytes, entry: Entry) -> Entry | None | object:
        """`merge` that also returns what it replaced (None if nothing), or `LOST` if the
        stored entry is newer: one bucket lookup for the write path instead of two."""
        key_crc = zlib.crc32(key)  # the bucket and both entry hashes start from it
        b = key_crc & (NBUCKETS - 1)
        bucket = self._buckets[b]
        old = bucket.get(key)
        h = 0  # what leaves and joins the digests
        crcs = _ORIGIN_CRCS  # _hash_of, inlined twice below: the digest's share of every SET
        if old is not None:
            if old.stamp > entry.stamp or (old.stamp == entry.stamp and not _newer(entry, old)):
                return _LOST  # `not _newer(entry, old)`, its common case spelled out
            # _account(b, key, old, -1), inlined: every overwrite's path.
            if old.value is None:
                self.tombstones -= 1
            else:
                h = hash((key_crc, len(key), old.stamp,
                          crcs.get(old.origin) or _origin_crc(old.origin),
                          old.expires_at)) & _MASK64
                self.live_count -= 1
        bucket[key] = entry
        if entry.value is None:
            self.tombstones += 1
            if h:
                self.bucket_digests[b] ^= h
                self.digest ^= h
            return old
        # _account's live branch, inlined: this is every SET's path.
        h ^= hash((key_crc, len(key), entry.stamp,
                   crcs.get(entry.origin) or _origin_crc(entry.origin), entry.expires_at)) & _MASK64
        self.bucket_digests[b] ^= h
        self.digest ^= h
        self.live_count += 1
        if entry.expires_at:
            heapq.heappush(self._expiry, (entry.expires_at, key))
        return old

    def _account(self, b: int, key: bytes, entry: Entry | None, sign: int) -> None:
        if entry is None:
            return
        if entry.value is None:
            self.tombstones += sign
            return
        h = entry_hash(key, entry)
        self.bucket_digests[b] ^= h
        self.digest ^= h
        self.live_count += sign

    def remove(self, key: bytes) -> Entry | None:
        """Forget a key entirely (tombstone collection); not a deletion, which is a merge."""
        b = bucket_of(key)
        old = self._buckets[b].pop(key, None)
        self._account(b, key, old, -1)
        return old

    def expire_due(self, now: int, limit: int = 1 << 62) -> int:
        """Turn up to `limit` expired values into tombstones; returns how many."""
        heap, done = self._expiry, 0
        while heap and heap[0][0] <= now and done < limit:
            expires_at, key = heapq.heappop(heap)
            b = bucket_of(key)
            entry = self._buckets[b].get(key)
            if entry is None or entry.value is None or entry.expires_at != expires_at:
                continue  # overwritten since: a stale heap item
            tomb = Entry(None, entry.stamp, entry.origin, 0)
            self._buckets[b][key] = tomb
            self.expired.append(key)
            self._account(b, key, entry, -1)
            self._account(b, key, tomb, +1)
            done += 1
        return done

    def next_expiry(self) -> int | None:
        return self._expiry[0][0] if self._expiry else None

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        """Every stored entry, tombstones included (for snapshots and repair)."""
        for bucket in self._buckets:
            yield from bucket.items()

    def bucket_items(self, b: int) -> list[tuple[bytes, Entry]]:
        return list(self._buckets[b].items())

    def keys(self, pattern: bytes | None, now: int) -> list[bytes]:
        match = matcher(pattern)
        return [
            k
            for bucket in self._buckets
            for k, e in bucket.items()
            if e.live(now) and (match is None or match(k)) and k[:4] != SYSTEM
        ]

    def scan(
        self, cursor: int, pattern: bytes | None, count: int, now: int
    ) -> tuple[int, list[bytes]]:
        """Whole buckets from `cursor` until `count` keys are found or the budget is spent."""
        match = matcher(pattern)
        found: list[bytes] = []
        b = max(0, cursor)
        budget = max(NBUCKETS, count * 10)  # empty buckets are cheap: small stores take one call
        while b < NBUCKETS and len(found) < count and budget > 0:
            found.extend(
                k for k, e in self._buckets[b].items()
                if e.live(now) and (match is None or match(k)) and k[:4] != SYSTEM
            )
            b += 1
            budget -= 1
        return (0 if b >= NBUCKETS else b), found
