"""The coordination namespace, end to end over simulated Raft: client histories of CAS (by
value and by revision), PUT, DEL, GET, LOCK and UNLOCK under seeded faults must be
linearizable, and every node's Coordination must hold one state per index.

Each seed (tests/coordsim.py, `Harness`) draws the fault mix of tests/raftsim.py's `chaos`:
loss, duplication, delays that reorder, partitions and one-way cuts, crashes (some between
persisting and sending) and restarts, leader crashes and transfers, membership changes and
snapshots (the Coordination's own bytes, installed on laggards). Four register clients on
three keys and three lock clients on two locks (each with its own lease) run throughout; a
command whose fate a client cannot know is recorded as never returned.

400 seeds of 3 voters and 100 of 5 (one spare each), 150 ticks, then heal and settle.
A failing seed replays exactly: `Harness(seed, voters=...).run(150).check()`.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.coordsim import Harness
from tests.raftsim import Violation

TICKS = 150
CHUNK = 100


def _run(seeds: range, voters: int) -> Counter[str]:
    total: Counter[str] = Counter()
    for seed in seeds:
        harness = Harness(seed, voters=voters)
        try:
            harness.run(TICKS).check()
        except Violation as e:
            raise Violation(f"Harness({seed}, voters={voters}).run({TICKS}): {e}") from e
        total.update(harness.stats)
    return total


def _exercised(total: Counter[str]) -> None:
    """The runs did what this file claims (a harness that faults nothing passes trivially)."""
    for what in ("dropped", "partitions", "crashes", "crashes mid-ready", "restarts",
                 "snapshots", "never returned", "read returned", "write returned",
                 "cas returned", "delete returned", "lock returned", "unlock returned"):
        assert total[what] > 0, f"no {what} in these runs: {dict(total)}"
    assert total["proposed"] > 50 * CHUNK


@pytest.mark.parametrize("start", range(0, 400, CHUNK))
def test_three_nodes_histories_are_linearizable(start: int) -> None:
    _exercised(_run(range(start, start + CHUNK), voters=3))


@pytest.mark.parametrize("start", range(30_000, 30_100, CHUNK))
def test_five_nodes_histories_are_linearizable(start: int) -> None:
    _exercised(_run(range(start, start + CHUNK), voters=5))


def test_reads_off_the_log_are_caught() -> None:
    """The negative control: GETs answered from any node's local state, without the log,
    must fail the checker in some seed — the harness can fail. The rest stays sound: the
    lock history and the nodes' states still pass."""
    caught = []
    for seed in range(30):
        harness = Harness(seed, broken_reads=True).run(TICKS)
        verdicts = harness.verdicts()
        assert verdicts["lock"], verdicts["lock"].explain()
        if not verdicts["register"]:
            caught.append(seed)
            assert "read" in verdicts["register"].explain()
    assert len(caught) >= 5, caught


def test_a_seed_replays_exactly() -> None:
    one, two = Harness(7).run(TICKS), Harness(7).run(TICKS)
    assert one.registers == two.registers and one.locks == two.locks
    assert one.images == two.images
