"""Hybrid logical clock (Kulkarni et al., 2014), packed into one integer.

A stamp is `physical_ms << 16 | logical`: it sorts like wall time, yet every stamp a node
issues is greater than every stamp it has issued or observed, so a write that causally follows
another always carries the greater stamp, even when wall clocks disagree by a little.
The wall clock is injected, so tests drive time by hand.

`time_ms()` is the node's time for data (expiry, TTL): the later of its wall clock and the
physical part of the latest stamp it issued or observed. Peers' heartbeats carry their stamps,
so it follows the fastest clock in the cluster within a heartbeat; a node whose wall clock runs
behind then neither sets expiries in the past of its peers nor keeps keys they have expired.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LOGICAL_BITS = 16


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def stamp_ms(stamp: int) -> int:
    """The physical part of a stamp, in Unix milliseconds."""
    return stamp >> LOGICAL_BITS


class HybridClock:
    def __init__(self, wall: Callable[[], int] = wall_ms) -> None:
        self._wall = wall
        self.last = 0

    def wall_ms(self) -> int:
        """The (injected) wall clock in ms, without issuing a stamp."""
        return self._wall()

    def time_ms(self) -> int:
        """The node's time for expiry: never behind a stamp it has issued or seen."""
        return max(self._wall(), self.last >> LOGICAL_BITS)

    def time_at(self, wall: int) -> int:
        """`time_ms` for a wall-clock reading the caller already has (one read per turn)."""
        return max(wall, self.last >> LOGICAL_BITS)

    def now(self) -> int:
        """A fresh stamp for a local event: greater than anything seen so far."""
        self.last = max(self._wall() << LOGICAL_BITS, self.last + 1)
        return self.last

    def observe(self, remote: int) -> None:
        """Take in a stamp received from a peer so later local stamps sort after it."""
        if remote > self.last:
            self.last = remote
