"""Clock offsets to the peers, measured from the wall time their heartbeats carry.

An offset is a peer's wall clock minus ours, in ms (positive: the peer runs ahead). Each
HEARTBEAT gives one sample: the wall time it was sent at minus our wall time when we take it
in. That is the true offset less the one-way delay (the network, the sender's PUB queue, the
wait for our loop's turn), so a sample reads low by that delay: well under a millisecond on a
quiet LAN, tens of ms on a loaded machine. Samples are smoothed (an exponentially weighted mean
with weight 1/4, about the last 8 heartbeats), so one late heartbeat raises no false alarm,
while a clock step shows in full within a couple of seconds.

Why it matters: the hybrid clock follows the fastest member, so a skewed clock still orders
writes, but a fast node wins concurrent writes it should not, and a slow node's wall clock
would misjudge expiry (kvd.state.hlc.HybridClock.time_ms is what expiry reads instead).

Sans-IO: `due_warnings(live, now)` says which peers are past the bound and due a warning (at
most one per peer per WARN_EVERY_MS); the peer layer (kvd.cluster.peers) logs them.
"""

from __future__ import annotations

from collections.abc import Iterable

WEIGHT = 0.25  # of a new sample in the smoothed offset
WARN_EVERY_MS = 60_000  # per peer, while its offset stays past the bound


class ClockOffsets:
    def __init__(self, bound_ms: int) -> None:
        self.bound_ms = bound_ms
        self._offsets: dict[str, float] = {}
        self._warned: dict[str, int] = {}  # peer -> when we last warned about it

    def sample(self, peer: str, their_wall: int, our_wall: int) -> None:
        """One heartbeat's reading: sent at `their_wall` by the peer's clock, taken in at
        `our_wall` by ours."""
        reading = their_wall - our_wall
        old = self._offsets.get(peer)
        self._offsets[peer] = reading if old is None else old + WEIGHT * (reading - old)

    def of(self, peer: str) -> int | None:
        """The peer's smoothed offset in ms, or None when it never sent its wall time (a peer
        of an older version)."""
        offset = self._offsets.get(peer)
        return None if offset is None else round(offset)

    def largest(self, peers: Iterable[str]) -> int:
        """The largest offset, in absolute value, to any of `peers`; 0 when none measured."""
        return max((abs(o) for p in peers if (o := self.of(p)) is not None), default=0)

    def due_warnings(self, peers: Iterable[str], now: int) -> list[tuple[str, int]]:
        """(peer, offset) for each of `peers` past the bound and not warned about lately."""
        due = []
        for peer in peers:
            offset = self.of(peer)
            if offset is None or abs(offset) <= self.bound_ms:
                continue
            last = self._warned.get(peer)
            if last is None or now - last >= WARN_EVERY_MS:
                self._warned[peer] = now
                due.append((peer, offset))
        return due
