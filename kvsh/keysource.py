"""What completion asks the server: keys by prefix, their TTLs, and the cluster's members.

Completion runs in a worker thread (ThreadedCompleter) while the REPL's own client belongs to
the main thread, and a ZeroMQ socket must not be shared between threads: so this source owns a
second client, guarded by a lock, with a short timeout so a slow server cannot stall typing.

Keys come from `SCAN cursor MATCH <prefix>* COUNT n`, a few calls at most and at most `cap`
keys. Answers are cached for `ttl_s`; a complete (uncapped) answer for a prefix also answers
every longer prefix, so typing more letters costs no round trip. The REPL calls
`invalidate()` after every write, so a key just set completes at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import KvError

MAX_SCANS = 8  # SCAN calls per lookup: bounds the time a completion can take


def glob_escape(prefix: bytes) -> bytes:
    """Quote glob characters so MATCH reads them literally (fnmatch style: `[*]`)."""
    out = bytearray()
    for byte in prefix:
        ch = bytes([byte])
        out += b"[" + ch + b"]" if ch in (b"*", b"?", b"[") else ch
    return bytes(out)


@dataclass
class _Cached:
    at: float
    keys: list[bytes]
    complete: bool  # the server has no more keys under this prefix


class KeySource:
    def __init__(self, connect: Callable[[], object], ttl_s: float = 3.0, cap: int = 100,
                 count: int = 50, clock: Callable[[], float] = time.monotonic) -> None:
        self._connect = connect
        self._client = None
        self.ttl_s, self.cap, self.count = ttl_s, cap, count
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[bytes, _Cached] = {}
        self._members: tuple[float, list[dict]] | None = None

    def _conn(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def retarget(self, connect: Callable[[], object]) -> None:
        """Point at another node (CONNECT): drop the client and everything cached."""
        with self._lock:
            if self._client is not None:
                self._client.close()  # type: ignore[attr-defined]
            self._connect, self._client = connect, None
            self._keys.clear()
            self._members = None

    def invalidate(self) -> None:
        with self._lock:
            self._keys.clear()

    def close(self) -> None:
        self.retarget(self._connect)

    # -- keys -------------------------------------------------------------------------------

    def keys(self, prefix: bytes) -> list[bytes]:
        """Keys starting with `prefix`, sorted, at most `cap`; [] when the server is away."""
        with self._lock:
            cached = self._cached(prefix)
            if cached is None:
                cached = self._scan(prefix)
                self._keys[prefix] = cached
            return sorted(k for k in cached.keys if k.startswith(prefix))[: self.cap]

    def _cached(self, prefix: bytes) -> _Cached | None:
        now = self._clock()
        hit = self._keys.get(prefix)
        if hit and now - hit.at < self.ttl_s:
            return hit
        for shorter, entry in self._keys.items():
            if entry.complete and prefix.startswith(shorter) and now - entry.at < self.ttl_s:
                return entry
        return None

    def _scan(self, prefix: bytes) -> _Cached:
        found: set[bytes] = set()
        cursor, calls = 0, 0
        try:
            while True:
                cursor, batch = self._conn().scan(cursor, glob_escape(prefix) + b"*", self.count)
                found.update(batch)
                calls += 1
                if cursor == 0 or len(found) >= self.cap or calls >= MAX_SCANS:
                    break
        except KvError:
            return _Cached(self._clock(), sorted(found), False)
        return _Cached(self._clock(), sorted(found), cursor == 0 and len(found) < self.cap)

    def ttls(self, keys: list[bytes]) -> dict[bytes, int]:
        """TTL of each key in one pipelined round trip; {} when the server is away."""
        if not keys:
            return {}
        with self._lock:
            try:
                replies = self._conn().pipeline([("TTL", k) for k in keys])
            except KvError:
                return {}
        return {k: r.value for k, r in zip(keys, replies, strict=True)
                if isinstance(r.value, int)}

    # -- members ----------------------------------------------------------------------------

    def members(self) -> list[dict]:
        with self._lock:
            now = self._clock()
            if self._members and now - self._members[0] < self.ttl_s:
                return self._members[1]
            try:
                members = list(self._conn().members())
            except KvError:
                members = []
            self._members = (now, members)
            return members
