"""A fake file layer for kvd.raft.files.Files that can crash: what was appended but not synced
is lost, except a random prefix of it (a torn write), sometimes followed by junk."""

from __future__ import annotations

import random


class Crash(Exception):
    pass


class FakeFiles:
    """A file layer with a page cache: appends are lost at a crash unless synced, except a
    random prefix of them (a torn write), sometimes followed by junk. `replace` and
    `truncate` are atomic and durable, as the real ones are made to be (rename + fsyncs)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.durable: dict[str, bytes] = {}
        self.cached: dict[str, bytes] = {}  # appended, not yet synced
        self.crash_in: int | None = None  # crash when this many more operations have begun

    def _begin(self) -> None:
        if self.crash_in is not None:
            self.crash_in -= 1
            if self.crash_in < 0:
                raise Crash

    def read(self, name: str) -> bytes | None:
        if name not in self.durable and name not in self.cached:
            return None
        return self.durable.get(name, b"") + self.cached.get(name, b"")

    def append(self, name: str, data: bytes) -> None:
        self.cached[name] = self.cached.get(name, b"") + data
        self._begin()  # the bytes reached the cache; the crash may come before the fsync

    def sync(self, name: str) -> None:
        self._begin()
        self.durable[name] = self.durable.get(name, b"") + self.cached.pop(name, b"")

    def replace(self, name: str, data: bytes) -> None:
        self._begin()
        self.durable[name] = data
        self.cached.pop(name, None)

    def truncate(self, name: str, size: int) -> None:
        self._begin()
        self.durable[name] = (self.read(name) or b"")[:size]
        self.cached.pop(name, None)

    def crash(self) -> None:
        for name, data in self.cached.items():
            kept = data[:self.rng.randint(0, len(data))]
            if self.rng.random() < 0.3:
                kept += self.rng.randbytes(self.rng.randint(1, 12))
            self.durable[name] = self.durable.get(name, b"") + kept
        self.cached.clear()
        self.crash_in = None
