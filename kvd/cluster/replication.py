"""Replication streams: per-origin sequence numbers, the seen vector, gaps and the backlog.

Sans-IO bookkeeping; kvd.cluster.cluster moves the messages. Invariants:

- Each origin's writes form a stream numbered 1, 2, ... (`Node.seq`) within an *epoch*: the
  origin's start time in ms. A restart starts a new epoch at `base` (the next seq), so a node
  that lost its memory never reuses numbers its peers already saw.
- For every stream, `contiguous` is the highest seq below which everything was received.
  A write is applied only once (seq above `contiguous` and not already `ahead`): duplicates and
  stale retransmissions are dropped before they reach the store, which is what makes tombstone
  collection safe (an old write cannot come back after its tombstone was collected).
- `stable` is a stamp: every write of that origin stamped at or below it has been applied here.
  It advances when the origin's heartbeat marks (seq, stamp) are covered. A jump to a new epoch
  may skip writes of the old one that never arrived, so it freezes `stable` until a full
  anti-entropy pass (`adopt`) proves the store holds what a peer held.
- The backlog holds the last BACKLOG writes of each stream, contiguous, to serve catch-up
  (Redis PSYNC's backlog); a range that fell out of it is answered `gone`, and the asker falls
  back to anti-entropy.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from kvd.state.store import Entry

BACKLOG = 100_000  # writes kept per stream for catch-up
MARKS = 32  # heartbeat marks awaiting coverage, per stream
INF = math.inf

Item = tuple[int, bytes, Entry]  # (seq, key, entry)


@dataclass
class Stream:
    epoch: int = 0
    base: int = 1
    contiguous: int = 0
    ahead: dict[int, tuple[bytes, Entry]] = field(default_factory=dict)
    backlog: deque[Item] = field(default_factory=lambda: deque(maxlen=BACKLOG))
    marks: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=MARKS))
    stable: float = 0
    frozen: bool = True  # until we know we hold the origin's earlier epochs
    final: int | None = None  # the last seq of an origin that left
    received: int = 0


class Replication:
    def __init__(self, name: str, epoch: int, base: int) -> None:
        self.name = name
        self.streams: dict[str, Stream] = {}
        self.mine = self.streams[name] = Stream(epoch, base, base - 1, frozen=False)

    # -- writes in ----------------------------------------------------------------------

    def local(self, seq: int, key: bytes, entry: Entry) -> None:
        """One of our own writes, in order."""
        self.mine.contiguous = seq
        self.mine.backlog.append((seq, key, entry))
        self.mine.stable = entry.stamp

    def local_all(self, changes: list) -> None:
        """`local` for a turn's own writes at once (objects with .seq, .key and .entry, in
        order): one deque extend instead of a call per write."""
        mine = self.mine
        mine.backlog.extend([(c.seq, c.key, c.entry) for c in changes])
        mine.contiguous = changes[-1].seq
        mine.stable = changes[-1].entry.stamp

    def _stream(self, origin: str) -> Stream:
        stream = self.streams.get(origin)
        if stream is None:
            stream = self.streams[origin] = Stream(epoch=0)
        return stream

    def observe_epoch(self, origin: str, epoch: int, base: int) -> Stream | None:
        """Learn of an origin's epoch; returns the stream if it is the current one."""
        stream = self._stream(origin)
        if epoch > stream.epoch:
            stream.epoch, stream.base, stream.contiguous = epoch, base, base - 1
            stream.ahead.clear()
            stream.backlog.clear()
            stream.marks.clear()
            stream.final = None
            # A jump may skip the old epoch's lost tail; a first contact knows no history.
            stream.frozen = True
        return stream if epoch == stream.epoch else None

    def receive(self, origin: str, epoch: int, base: int,
                items: list[Item]) -> list[Item]:
        """Take in writes of one stream; returns those never received before, to apply."""
        if origin == self.name:
            return []
        stream = self.observe_epoch(origin, epoch, base)
        if stream is None:
            return []  # an older epoch: anti-entropy covers whatever it still holds
        fresh = []
        ahead, backlog = stream.ahead, stream.backlog
        for item in items:
            seq = item[0]
            if seq == stream.contiguous + 1 and not ahead:  # the usual case: next in line
                stream.contiguous = seq
                backlog.append(item)
            elif seq <= stream.contiguous or seq in ahead:
                continue
            else:
                ahead[seq] = item[1:]  # type: ignore[assignment]
            fresh.append(item)
        stream.received += len(fresh)
        self._advance(stream)
        return fresh

    def _advance(self, stream: Stream) -> None:
        ahead = stream.ahead
        while stream.contiguous + 1 in ahead:
            stream.contiguous += 1
            key, entry = ahead.pop(stream.contiguous)
            stream.backlog.append((stream.contiguous, key, entry))
        self._settle(stream)

    def _settle(self, stream: Stream) -> None:
        marks = stream.marks
        while marks and marks[0][0] <= stream.contiguous:
            _, stamp = marks.popleft()
            if not stream.frozen:
                stream.stable = max(stream.stable, stamp)
        if stream.final is not None and stream.contiguous >= stream.final and not stream.frozen:
            stream.stable = INF

    def mark(self, origin: str, epoch: int, base: int, seq: int, stamp: int) -> None:
        """The origin's heartbeat: its writes up to `seq` are stamped at or below `stamp`."""
        stream = self.observe_epoch(origin, epoch, base)
        if stream is None or origin == self.name:
            return
        stream.marks.append((seq, stamp))
        self._settle(stream)

    def finished(self, origin: str, epoch: int, seq: int) -> None:
        """The origin left after its write `seq`: once we hold it all, it holds nothing back."""
        stream = self.streams.get(origin)
        if stream is not None and stream.epoch == epoch:
            stream.final = seq
            self._settle(stream)

    # -- what we miss -------------------------------------------------------------------

    def vector(self) -> dict[str, list[int]]:
        """The seen vector: origin -> [epoch, base, contiguous]."""
        return {o: [s.epoch, s.base, s.contiguous] for o, s in self.streams.items() if s.epoch}

    def serve(self, origin: str, epoch: int, first: int, last: int,
              limit: int) -> list[Item] | None:
        """Up to `limit` writes of a stream from `first`, or None if the backlog lost them."""
        stream = self.streams.get(origin)
        if stream is None or stream.epoch != epoch or not stream.backlog:
            return None
        start = stream.backlog[0][0]
        if first < start:
            return None
        end = min(last, stream.contiguous, first + limit - 1)
        return [stream.backlog[i - start] for i in range(first, end + 1)]

    # -- after a full anti-entropy pass --------------------------------------------------

    def adopt(self, peer: dict[str, list]) -> None:
        """We now hold everything the peer held when the pass began: take over its progress.

        `peer` maps origin -> [epoch, base, contiguous, stable, frozen] as the peer reported
        at the start of the pass.
        """
        for origin, (epoch, base, seq, stable, frozen) in peer.items():
            if origin == self.name:
                continue
            stream = self.observe_epoch(origin, epoch, base)
            if stream is None:
                continue
            if seq > stream.contiguous:
                stream.contiguous = seq
                stream.backlog.clear()  # it would have a hole; catch-up falls back to us
                for s in [s for s in stream.ahead if s <= seq]:
                    del stream.ahead[s]
            if not frozen:
                stream.frozen = False
                stream.stable = max(stream.stable, stable)
            self._advance(stream)

    def vouch(self, origin: str) -> None:
        """Unfreeze a stream no one else can unfreeze (its origin left): a completed pass
        gave us what our peer held, which is as far as anyone can know."""
        stream = self.streams.get(origin)
        if stream is not None and stream.frozen:
            stream.frozen = False
            self._settle(stream)

    def progress(self) -> dict[str, list]:
        """What `adopt` takes: origin -> [epoch, base, contiguous, stable, frozen]."""
        return {o: [s.epoch, s.base, s.contiguous, _wire_stable(s.stable), s.frozen]
                for o, s in self.streams.items() if s.epoch}

    def low_water(self, origins: list[str]) -> float:
        """A stamp at or below which we hold every write of these origins."""
        stamps = [self.streams[o].stable if o in self.streams else 0 for o in origins]
        return min(stamps, default=INF)

def _wire_stable(stable: float) -> int:
    return -1 if stable == INF else int(stable)


def stable_from_wire(value: int) -> float:
    return INF if value == -1 else value
