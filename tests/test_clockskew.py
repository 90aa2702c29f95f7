"""Clock offsets from heartbeats (kvd.cluster.clockskew): smoothing and rate-limited warnings,
on made-up readings; the simulator (tests/test_sim_cluster.py) measures them between nodes."""

from __future__ import annotations

import pytest

from kvd.cluster.clockskew import WARN_EVERY_MS, ClockOffsets


@pytest.mark.parametrize(("readings", "expected"), [
    ([-30_000], -30_000),  # the first sample is taken as it is
    ([100, 100, 100], 100),
    ([0, 0, 0, 400], 100),  # one late heartbeat moves the estimate by a quarter
    ([0] + [800] * 12, 775),  # a clock step shows (nearly) in full within a dozen heartbeats
])
def test_offsets_are_smoothed(readings, expected) -> None:
    offsets = ClockOffsets(500)
    for i, reading in enumerate(readings):
        offsets.sample("p", 1_000_000 + i * 200 + reading, 1_000_000 + i * 200)
    assert offsets.of("p") == expected


def test_largest_is_in_absolute_value_over_the_peers_asked_about() -> None:
    offsets = ClockOffsets(500)
    offsets.sample("slow", 0, 700)
    offsets.sample("fast", 300, 0)
    assert offsets.largest(["slow", "fast"]) == 700
    assert offsets.largest(["fast", "never-heard"]) == 300
    assert offsets.largest([]) == 0 and offsets.of("never-heard") is None


def test_warnings_past_the_bound_come_once_a_minute_per_peer() -> None:
    offsets = ClockOffsets(500)
    offsets.sample("ok", 500, 0)  # at the bound: fine
    offsets.sample("off", 0, 501)
    assert offsets.due_warnings(["ok", "off"], 0) == [("off", -501)]
    assert offsets.due_warnings(["ok", "off"], WARN_EVERY_MS - 1) == []
    assert offsets.due_warnings(["ok", "off"], WARN_EVERY_MS) == [("off", -501)]
