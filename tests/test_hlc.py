"""The hybrid logical clock, driven by a fake wall clock."""

from __future__ import annotations

from kvd.state.hlc import LOGICAL_BITS, HybridClock, stamp_ms


class FakeWall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_stamps_follow_wall_time_and_never_repeat() -> None:
    wall = FakeWall(1000)
    clock = HybridClock(wall)
    a, b = clock.now(), clock.now()
    assert stamp_ms(a) == 1000 and b == a + 1
    wall.ms = 2000
    assert clock.now() == 2000 << LOGICAL_BITS


def test_stamps_stay_monotonic_when_the_wall_clock_steps_back() -> None:
    wall = FakeWall(5000)
    clock = HybridClock(wall)
    first = clock.now()
    wall.ms = 4000
    assert clock.now() > first


def test_a_write_after_observing_a_fast_peer_sorts_after_the_peer() -> None:
    fast = HybridClock(FakeWall(10_000))
    slow = HybridClock(FakeWall(9_000))  # a node whose clock is one second behind
    remote = fast.now()
    slow.observe(remote)
    assert slow.now() > remote
    slow.observe(remote - 5)  # older stamps change nothing
    assert slow.last > remote


def test_time_for_expiry_is_never_behind_a_stamp_seen_nor_the_wall() -> None:
    wall = FakeWall(1000)
    clock = HybridClock(wall)
    assert clock.time_ms() == 1000
    clock.observe((31_000 << LOGICAL_BITS) + 7)  # a peer whose clock runs 30 s ahead
    assert clock.time_ms() == 31_000 and clock.wall_ms() == 1000
    wall.ms = 40_000
    assert clock.time_ms() == 40_000
